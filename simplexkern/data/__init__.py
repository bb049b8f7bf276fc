"""Data sets: ``load(name | path.npz)`` gives a ``Dataset`` with train / test tensors, the
input shape and the number of classes a model needs.

Names: ``digits`` (scikit-learn's 8x8 digits, the default), ``mnist1d`` (generated
locally), ``spirals``, ``regression`` (the 1-D toy of the simplex paper, section 6.1),
``cifar10`` / ``cifar100`` (from a local folder), or the path of a ``.npz`` file with
``x_train``, ``y_train``, ``x_test``, ``y_test``.
"""

import os

import torch

from simplexkern._types import Path
from simplexkern.data import sources
from simplexkern.data.dataset import GAUSSIAN_NOISE, Dataset, corrupt, hold_out, scaler, standardize

NAMES = ("digits", "mnist1d", "spirals", "regression", "cifar10", "cifar100")


def load(
    name: Path = "digits",
    *,
    root: Path | None = None,
    val_fraction: float = 0.0,
    split_seed: int = 0,
    gaussian_noise: int | None = None,
    task: str | None = None,
    standardize_features: bool = True,
) -> Dataset:
    """The data set ``name`` (one of ``NAMES``) or the ``.npz`` file at that path.

    - ``root``: the folder CIFAR is read from (default ``$SIMPLEXKERN_DATA``).
    - ``val_fraction``: part of the training split held out as ``x_val`` / ``y_val``
      (drawn with ``split_seed``), for choosing settings without looking at the test split.
    - ``gaussian_noise``: a corruption level 1-5 applied to the test features (the
      CIFAR-10-C severities: noise of 0.04-0.10 times the training features' value range,
      clipped to that range), for dataset-shift evaluations.
    - ``task``: for a ``.npz``, "classification" (default) or "regression".
    - ``standardize_features``: scale features by the training split's mean and standard
      deviation (per channel for images and signals, per feature for vectors). An ``.npz``
      whose features are integers in [0, 2**24) holds token ids: they are kept as they are, and
      ``vocab_size`` says how many there are.

    Bad files raise ``ValueError`` naming the file and the problem.
    """
    if not isinstance(standardize_features, bool):
        raise TypeError(f"standardize_features must be a bool, got {type(standardize_features).__name__}")
    if not isinstance(name, (str, os.PathLike)):
        raise TypeError(f"name must be a data set name or the path of a .npz file, got {type(name).__name__}")
    text = os.fspath(name)
    if text.endswith(".npz"):
        if task not in (None, "classification", "regression"):
            raise ValueError(f"task must be 'classification' or 'regression', got {task!r}")
        task = task or "classification"
        arrays, vocab_size = sources.npz(text, task)
        label = os.path.basename(text)
    elif text in NAMES:
        vocab_size = None
        if task is not None:
            raise ValueError(f"task is only for .npz files; {text} is a fixed task")
        task = "regression" if text == "regression" else "classification"
        if text.startswith("cifar"):
            arrays = sources.cifar(text, root)
        else:
            arrays = getattr(sources, text)()
        label = text
    else:
        raise ValueError(f"unknown data set {text!r}: expected one of {', '.join(NAMES)} or a path ending in .npz")
    x_train, y_train, x_test, y_test, n_classes = arrays
    if gaussian_noise is not None:
        lo, hi = float(x_train.min()), float(x_train.max())
        x_test = corrupt(x_test, gaussian_noise, (lo, hi), torch.Generator().manual_seed(split_seed))
        label = f"{label} (gaussian noise {gaussian_noise})"
    data = Dataset(
        label,
        task,
        x_train,
        y_train,
        x_test,
        y_test,
        n_classes,
        noise_std=sources.REGRESSION_NOISE if text == "regression" else None,
        augment="crop_flip" if text.startswith("cifar") else None,
        vocab_size=vocab_size,
    )
    data = hold_out(data, val_fraction, split_seed)
    return standardize(data) if standardize_features and vocab_size is None else data


def load_ood(
    name: Path,
    *,
    ood_data: Path | None = None,
    gaussian_noise: int | None = None,
    root: Path | None = None,
    val_fraction: float = 0.0,
    split_seed: int = 0,
) -> torch.Tensor:
    """Inputs out of the distribution of data set ``name`` (loaded as ``load`` loads it with
    these settings), for out-of-distribution detection: the test inputs of ``ood_data`` (a
    name or ``.npz``), or ``name``'s own test inputs corrupted with Gaussian noise of level
    ``gaussian_noise`` (1-5); standardised with ``name``'s training statistics, as its own
    inputs are. Give exactly one of ``ood_data`` and ``gaussian_noise``."""
    if (ood_data is None) == (gaussian_noise is None):
        raise ValueError("give exactly one of ood_data (a data set) and gaussian_noise (a level 1-5)")
    if gaussian_noise is not None:
        return load(
            name, root=root, val_fraction=val_fraction, split_seed=split_seed, gaussian_noise=gaussian_noise
        ).x_test
    own = load(name, root=root, val_fraction=val_fraction, split_seed=split_seed, standardize_features=False)
    other = load(ood_data, root=root, standardize_features=False)
    if other.input_shape != own.input_shape:
        raise ValueError(
            f"ood_data {other.name} has inputs of shape {tuple(other.input_shape)}, {own.name} of "
            f"{tuple(own.input_shape)}: a model of one cannot read the other"
        )
    if (own.vocab_size is None) != (other.vocab_size is None):
        raise ValueError(f"ood_data {other.name} and {own.name} must both hold token ids or both features")
    if own.vocab_size is not None:
        if other.vocab_size > own.vocab_size:
            raise ValueError(
                f"ood_data {other.name} holds token ids up to {other.vocab_size - 1}, beyond the "
                f"{own.vocab_size} of {own.name}"
            )
        return other.x_test
    return scaler(own.x_train)(other.x_test)


__all__ = ["load", "load_ood", "Dataset", "NAMES", "corrupt", "hold_out", "standardize", "GAUSSIAN_NOISE"]
