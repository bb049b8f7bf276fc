"""The data a run trains and scores on: the data set of its settings, with the validation
split of its seed, and the out-of-distribution inputs it is told from."""

from simplexkern import data as datasets


def load_data(settings):
    """The data set of ``settings`` (``data``, ``val_fraction``, ``gaussian_noise``), which the
    command needs to be a classification task. The validation split is drawn with the run's
    ``seed`` (evaluate and surface: their source's, ``split_seed``), so that runs of other
    seeds are replicates of the whole protocol."""
    data = datasets.load(
        settings["data"],
        val_fraction=settings["val_fraction"],
        gaussian_noise=settings.get("gaussian_noise"),
        split_seed=split_seed(settings),
    )
    if data.task != "classification":
        raise ValueError(
            f"--data {settings['data']} is a regression task; the simplexkern command runs "
            "classification (use simplexkern.train and simplexkern.eval from Python for regression)"
        )
    return data


def split_seed(settings):
    """The seed of the validation split: the source's (evaluate, surface), the run's, or the
    first of ``compare``'s seeds."""
    return settings.get("split_seed", settings.get("seed", (settings.get("seeds") or [0])[0]))


def ood_inputs(settings, data):
    """The out-of-distribution inputs of ``--ood-data`` / ``--ood-gaussian-noise``, or None."""
    if settings.get("ood_data") is None and settings.get("ood_gaussian_noise") is None:
        return None
    return datasets.load_ood(
        settings["data"],
        ood_data=settings.get("ood_data"),
        gaussian_noise=settings.get("ood_gaussian_noise"),
        val_fraction=settings["val_fraction"],
        split_seed=split_seed(settings),
    )
