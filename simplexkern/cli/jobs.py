"""What each ``simplexkern`` subcommand computes, on top of ``simplexkern.train`` /
``eval`` / ``data``. A job takes the command's settings (a dict of its flags), the data, the
run folder and ``How`` to run (device, progress bars, compiled steps, processes;
``evaluate`` and ``surface`` also take their source's models, loaded and checked first), and
returns its part of the report (``simplexkern.cli.report`` documents the schema).

Every training command trains its modes with ``train.deep_ensemble`` under the same seed,
so ``ensemble``, ``espro``, ``spro``, ``curve`` and ``fge`` with the same data, model, mode
settings and ``--seed`` start from the same modes, and their reports compare like with like.

Launched as several processes (``torchrun``; ``simplexkern.distributed``), the independent
members (modes, ESPRO simplexes) are spread over the processes, each predicting its own;
one model (a curve, a complex, FGE's run) is trained and evaluated by rank 0 while the
others wait. With ``--data-parallel`` every model is trained by all processes together
instead, one after another. Rank 0 writes the report and the plots; on the other processes
a job returns None.
"""

import dataclasses
import pathlib
import time

import numpy as np
import torch

from simplexkern import _checks, distributed, train
from simplexkern import data as datasets
from simplexkern import eval as evaluation
from simplexkern.cli import details as report_details
from simplexkern.cli import plots
from simplexkern.cli.folder import read_report
from simplexkern.cli.records import Member, MethodRow, Metrics, OodDetection, Temperature, Uncertainty
from simplexkern.cli.report import ReportPart
from simplexkern.eval.predict import member_points, outputs_at
from simplexkern.eval.surfaces import _three_point_model, plane_basis
from simplexkern.nn import checkpoint
from simplexkern.nn.model import SimplexModel
from simplexkern.nn.samplers import CurveSampler
from simplexkern.train.loop import Phase, steps_per_epoch

PROFILE_POINTS = 21  # values of t in a curve's profile; odd, so t = 1/2 is one of them


@dataclasses.dataclass(frozen=True)
class How:
    """How a job runs, as opposed to what it computes (not recorded in run.json): on which
    device, with progress bars or not, compiled steps or not, in which ``world`` of
    processes, and whether they train each model together (``data_parallel``)."""

    device: torch.device
    progress: bool = True
    compile: bool = False
    world: distributed.World = distributed.World()
    data_parallel: bool = False

    @property
    def spread(self):
        """The ``distributed`` mode of the ensemble trainers."""
        return "data" if self.data_parallel else ("members" if self.world.size > 1 else None)

    @property
    def single(self):
        """The ``distributed`` mode of a one-model trainer (None: rank 0 trains it alone)."""
        return "data" if self.data_parallel else None

    @property
    def trains_single(self):
        """Whether this process takes part in training one model."""
        return self.data_parallel or self.world.is_main


def load_data(settings):
    """The data set of ``settings`` (``data``, ``val_fraction``, ``gaussian_noise``), which the
    command needs to be a classification task. The validation split is drawn with the run's
    ``seed`` (evaluate and surface: their source's, ``split_seed``), so that runs of other
    seeds are replicates of the whole protocol."""
    d = datasets.load(
        settings["data"],
        val_fraction=settings["val_fraction"],
        gaussian_noise=settings.get("gaussian_noise"),
        split_seed=split_seed(settings),
    )
    if d.task != "classification":
        raise ValueError(
            f"--data {settings['data']} is a regression task; the simplexkern command runs "
            "classification (use simplexkern.train and simplexkern.eval from Python for regression)"
        )
    return d


def split_seed(settings):
    """The seed of the validation split: the source's (evaluate, surface), the run's, or the
    first of ``compare``'s seeds."""
    return settings.get("split_seed", settings.get("seed", (settings.get("seeds") or [0])[0]))


def _timed(fn, device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return out, time.perf_counter() - start


def _modes(s, d, folder, how, n_modes):
    """This process's share of the J modes (all J with --data-parallel): the deep ensemble
    of ``s``'s model and mode settings, in ``modes/``."""
    with folder.phase("modes"):
        return train.deep_ensemble(
            s["model"],
            d,
            n_modes,
            epochs=s["epochs"],
            lr=s["lr"],
            batch_size=s["batch_size"],
            seed=s["seed"],
            device=how.device,
            out=folder.sub("modes"),
            progress=how.progress,
            compile=how.compile,
            distributed=how.spread,
        )


def _all_modes(s, d, folder, how, n_modes):
    """(this process's share of the J modes, all J on a process that trains a model of them
    (rank 0, or every process with --data-parallel) else []): rank 0 reads the others'
    modes from their checkpoints."""
    share = _modes(s, d, folder, how, n_modes)
    if how.spread != "members":
        return _share(how, share), share
    if not how.world.is_main:
        return share, []
    return share, [checkpoint.load_model(p).to(how.device).eval() for p in _mode_paths(folder, n_modes)]


def _mode_paths(folder, n_modes):
    return [folder.sub(f"modes/mode_{j}.pt") for j in range(n_modes)]


def _share(how, models_):
    """This process's share of models every process holds (--data-parallel): members rank,
    rank + W, ...; otherwise ``models_`` as they are (already a share)."""
    return [models_[j] for j in how.world.members(len(models_))] if how.spread == "data" else models_


def _single(how, model):
    """The share of one model: the model on rank 0, nothing on the others."""
    return [model] if how.world.is_main else []


def _per_member(how, values):
    """A list over all members, in member order, of this process's members' ``values``."""
    if how.spread != "members":
        return values
    parts = how.world.objects(values)
    out = [None] * sum(len(p) for p in parts)
    for r, part in enumerate(parts):
        out[r :: how.world.size] = part
    return out


def ood_inputs(s, d):
    """The out-of-distribution inputs of ``--ood-data`` / ``--ood-gaussian-noise``, or None."""
    if s.get("ood_data") is None and s.get("ood_gaussian_noise") is None:
        return None
    return datasets.load_ood(
        s["data"],
        ood_data=s.get("ood_data"),
        gaussian_noise=s.get("ood_gaussian_noise"),
        val_fraction=s["val_fraction"],
        split_seed=split_seed(s),
    )


@dataclasses.dataclass
class Scores:
    """What ``score`` finds for an ensemble."""

    probs: torch.Tensor  # the members' test probabilities (J, N, C)
    predict_s: float  # wall seconds of predicting the test split
    test: Metrics  # of the ensemble: the members' probabilities averaged
    per_member: list[Metrics]
    val: Metrics | None  # on the validation split (None without one, or not asked for)
    temperature: Temperature | None  # fitted on the validation split
    uncertainty: Uncertainty


def score(members, d, n_points, seed, device, world=distributed.World(), ood=None, validation=True):
    """Test metrics of the ensemble of ``members`` and of each member, the members'
    probabilities, prediction time, uncertainty metrics (with ``ood`` inputs, how well the
    ensemble's uncertainty tells them from the test inputs) and, with a validation split
    (and ``validation``), the validation metrics and the temperature fitted there with the
    test metrics after it. With a ``world`` of several processes, ``members`` is this
    process's share and every process gets the scores of the whole ensemble."""
    spread = world.size > 1
    probs, seconds = _timed(
        lambda: evaluation.predict(members, d, per_member=True, n_points=n_points, seed=seed, distributed=spread),
        device,
    )
    if probs.shape[-1] != d.n_classes:
        raise ValueError(f"the models predict {probs.shape[-1]} classes, the data has {d.n_classes}")
    y = d.y_test
    out = Scores(
        probs=probs,
        predict_s=seconds,
        test=Metrics.of(probs.mean(0), y),
        per_member=[Metrics.of(p, y) for p in probs],
        val=None,
        temperature=None,
        uncertainty=Uncertainty(
            **evaluation.uncertainty.summary(probs, y),
            ood=None,
            point_disagreement=_point_disagreement(members, d, n_points, seed, world),
        ),
    )
    if ood is not None:
        away = evaluation.predict(members, ood, n_points=n_points, seed=seed, bn_data=d.x_train, distributed=spread)
        out.uncertainty.ood = {
            name: OodDetection.from_json(evaluation.uncertainty.ood_detection(probs.mean(0), away, name))
            for name in evaluation.uncertainty.SCORES
        }
    if validation and d.x_val is not None:
        val = evaluation.predict(members, d, split="val", n_points=n_points, seed=seed, distributed=spread)
        out.val = Metrics.of(val, d.y_val)
        t, problem = evaluation.temperature_fit(val, d.y_val)
        if problem:  # a degenerate fit: T = 1, and the report says why
            out.temperature = Temperature(value=1.0, test=out.test, note=problem)
        else:
            out.temperature = Temperature(
                value=t, test=Metrics.of(evaluation.apply_temperature(probs.mean(0), t), y), note=None
            )
    return out


def _point_disagreement(members, d, n_points, seed, world):
    """The mean over simplex members (of several vertices, at ``n_points`` >= 2 points) of
    their points' disagreement on the test split, or None when there is none; ``members``
    is this process's share."""
    n = world.total(len(members)) if world.size > 1 else len(members)
    values = [
        (
            j,
            evaluation.uncertainty.disagreement(
                evaluation.point_probabilities(m, d, n_points=n_points, seed=seed, member=j)
            ),
        )
        for j, m in zip(world.members(n), members)
        if isinstance(m, SimplexModel) and m.n_vertices > 1 and n_points > 1
    ]
    if world.size > 1:  # in member order, as one process sums them
        values = sorted(v for part in world.objects(values) for v in part)
    return float(np.mean([v for _, v in values])) if values else None


def _row(name, metrics, train_s, predict_s, cost=None):
    return MethodRow(name=name, test=metrics, train_s=train_s, predict_s=predict_s, gradient_evaluations=cost)


def _rows(name, sc, train_s, cost=None):
    """Table rows of one method: as is, and temperature-scaled where there was a validation split."""
    rows = [_row(name, sc.test, train_s, sc.predict_s, cost)]
    if sc.temperature is not None and sc.temperature.note is None:
        rows.append(
            _row(
                f"{name}, temperature {sc.temperature.value:.2f}",
                sc.temperature.test,
                train_s,
                sc.predict_s,
                cost,
            )
        )
    return rows


def _table(first, *groups):
    """Rows ``first``, then each group's (``_rows``) plain row, then their temperature-scaled rows."""
    return [*first, *(g[0] for g in groups), *(r for g in groups for r in g[1:])]


def _single_mode_row(sc, n_modes, train_s, cost=None):
    mean = Metrics(
        **{
            field.name: float(np.mean([getattr(m, field.name) for m in sc.per_member]))
            for field in dataclasses.fields(Metrics)
        }
    )
    return _row(
        f"single mode (mean of the {n_modes})" if n_modes > 1 else "single mode",
        mean,
        train_s / n_modes,
        sc.predict_s / n_modes,
        cost,
    )


def _members(folder, names, paths, sc):
    return [Member(name=n, checkpoint=folder.relative(p), test=m) for n, p, m in zip(names, paths, sc.per_member)]


def _main(sc, members, methods, details=None, plot_files=()):
    return ReportPart(
        test=sc.test,
        val=sc.val,
        uncertainty=sc.uncertainty,
        temperature=sc.temperature,
        members=members,
        methods=methods,
        details=details or report_details.Details(),
        plots=list(plot_files),
    )


def uncertainty_plot(folder, d, probs, title):
    """The reliability diagram and risk-coverage curves of each method's ensemble in
    ``probs`` ({label: member probabilities (J, N, C)})."""
    means = {label: p.mean(0) for label, p in probs.items()}
    return plots.uncertainty(
        {label: evaluation.uncertainty.reliability(p, d.y_test) for label, p in means.items()},
        {label: evaluation.uncertainty.risk_coverage(p, d.y_test) for label, p in means.items()},
        folder.sub("uncertainty.png"),
        title,
    )


def _size_curves(curves, d):
    return {name: evaluation.ensemble_size_curve(probs, d.y_test) for name, probs in curves.items()}


def run_train(s, d, folder, how):
    modes = _modes(s, d, folder, how, 1)
    sc = score(_share(how, modes), d, 1, s["seed"], how.device, how.world, ood_inputs(s, d))
    if not how.world.is_main:
        return None
    methods = _rows("mode", sc, folder.seconds("modes"), mode_cost(s, d))
    files = [uncertainty_plot(folder, d, {"mode": sc.probs}, f"one mode on {d.name}")]
    return _main(sc, _members(folder, ["mode 0"], _mode_paths(folder, 1), sc), methods, plot_files=files)


def run_ensemble(s, d, folder, how):
    j = s["modes"]
    modes = _modes(s, d, folder, how, j)
    sc = score(_share(how, modes), d, 1, s["seed"], how.device, how.world, ood_inputs(s, d))
    if not how.world.is_main:
        return None
    t, m = folder.seconds("modes"), mode_cost(s, d)
    methods = [_single_mode_row(sc, j, t, m), *_rows(f"deep ensemble ({j} modes)", sc, t, j * m)]
    sizes = _size_curves({"deep ensemble": sc.probs}, d)
    files = [
        plots.ensemble_size(sizes, folder.sub("ensemble_size.png"), f"deep ensemble on {d.name}"),
        uncertainty_plot(folder, d, {"deep ensemble": sc.probs}, f"deep ensemble on {d.name}"),
    ]
    return _main(
        sc,
        _members(folder, [f"mode {i}" for i in range(j)], _mode_paths(folder, j), sc),
        methods,
        report_details.EnsembleDetails(ensemble_size=sizes),
        files,
    )


def _vertex_settings(s, how):
    return dict(
        n_vertices=1 + s["vertices"],
        reg_scale=s["reg_scale"],
        vertex_epochs=s["vertex_epochs"],
        lr=s["lr"],
        n_samples=s["samples"],
        batch_size=s["batch_size"],
        seed=s["seed"],
        device=how.device,
        progress=how.progress,
        compile=how.compile,
    )


def mode_cost(s, d):
    """Gradient evaluations of training one mode with ``s``'s settings."""
    return Phase(epochs=s["epochs"], lr=s["lr"], batch_size=s["batch_size"]).gradient_evaluations(len(d.x_train))


def simplex_cost(s, d, added):
    """Gradient evaluations of training ``added`` vertices with ``s``'s settings."""
    phase = Phase(epochs=s["vertex_epochs"], lr=s["lr"], batch_size=s["batch_size"], n_samples=s["samples"])
    return added * phase.gradient_evaluations(len(d.x_train))


def fge_cost(s, d, cycles=None):
    """Gradient evaluations of FGE's ``cycles`` (default: all) cycles with ``s``'s settings."""
    phase = Phase(epochs=s["cycle_epochs"], lr=s["lr_max"], batch_size=s["batch_size"])
    return (s["cycles"] if cycles is None else cycles) * phase.gradient_evaluations(len(d.x_train))


def train_espro(s, d, folder, how, modes):
    """(λ, this process's simplexes, choose_reg's rows or [], wall seconds of the chosen λ's
    vertices) of ESPRO on ``modes`` (this process's share), in ``espro/``. With a λ search
    the seconds are the chosen λ's share of the search's (phase "vertices", which adds up
    resumed invocations) by gradient evaluations."""
    settings = dict(_vertex_settings(s, how), distributed=how.spread)
    rows = []
    with folder.phase("vertices"):
        if len(s["reg"]) > 1:
            reg, simplexes, rows = train.choose_reg(
                modes, d, s["reg"], n_points=s["eval_samples"], out=folder.sub("espro"), **settings
            )
        else:
            (reg,) = s["reg"]
            simplexes = train.espro(modes, d, reg=reg, out=folder.sub("espro"), **settings)
    seconds = folder.seconds("vertices")
    if rows:
        seconds *= next(r["gradient_evaluations"] for r in rows if r["reg"] == reg) / sum(
            r["gradient_evaluations"] for r in rows
        )
    return reg, simplexes, rows, seconds


def espro_costs(s, d, rows):
    """ESPRO's training cost in gradient evaluations: one mode's, the chosen λ's (modes and
    simplexes) and with the λ search."""
    m, j = mode_cost(s, d), s["modes"]
    espro = j * m + j * simplex_cost(s, d, s["vertices"])
    return {
        "mode": m,
        "espro": espro,
        "with_search": j * m + sum(r["gradient_evaluations"] for r in rows) if rows else espro,
    }


def run_espro(s, d, folder, how):
    j = s["modes"]
    modes = _modes(s, d, folder, how, j)
    reg, simplexes, reg_rows, vertices_s = train_espro(s, d, folder, how, modes)
    cost = espro_costs(s, d, reg_rows)
    n_equal = {"espro": cost["espro"] // cost["mode"], "with_search": cost["with_search"] // cost["mode"]}
    members = modes
    if s["equal_compute"] and n_equal["with_search"] > j:
        with folder.phase("equal-compute modes"):
            members = _modes(s, d, folder, how, n_equal["with_search"])
    with folder.phase("predict"):
        ood = ood_inputs(s, d)
        de = score(_share(how, modes), d, 1, s["seed"], how.device, how.world, ood)
        es = score(_share(how, simplexes), d, s["eval_samples"], s["seed"], how.device, how.world, ood)
        more = (
            de
            if members is modes
            else score(_share(how, members), d, 1, s["seed"], how.device, how.world, validation=False)
        )  # its test probabilities alone are used
    log_volumes = _per_member(
        how, [sm.metadata["history"][-1]["log_volume"] if sm.metadata["history"] else None for sm in simplexes]
    )
    if not how.world.is_main:
        return None
    t_modes = folder.seconds("modes")
    m = cost["mode"]
    de_rows = _rows(f"deep ensemble ({j} modes)", de, t_modes, j * m)
    es_rows = _rows(f"ESPRO ({j} simplexes of {1 + s['vertices']} vertices)", es, t_modes + vertices_s, cost["espro"])
    methods = _table([_single_mode_row(de, j, t_modes, m)], de_rows, es_rows)
    if s["equal_compute"]:
        n_all = len(more.per_member)
        seconds = (t_modes + folder.seconds("equal-compute modes") if n_all > j else t_modes) / n_all
        buys = [("espro", "ESPRO's training")] + (
            [("with_search", "ESPRO's training and λ search")] if n_equal["with_search"] != n_equal["espro"] else []
        )
        for key, what in buys:
            n = max(1, n_equal[key])  # the first n modes: what n modes' training buys
            methods.append(
                _row(
                    f"deep ensemble of {n} modes: the compute of {what}",
                    Metrics.of(more.probs[:n].mean(0), d.y_test),
                    seconds * n,
                    more.predict_s * n / n_all,
                    n * m,
                )
            )
    sizes = _size_curves({"deep ensemble": more.probs, "ESPRO": es.probs}, d)
    files = [
        plots.ensemble_size(
            sizes, folder.sub("ensemble_size.png"), f"ESPRO and the deep ensemble of its modes on {d.name}"
        )
    ]
    files.append(
        uncertainty_plot(
            folder,
            d,
            {"deep ensemble": de.probs, "ESPRO": es.probs},
            f"ESPRO and the deep ensemble of its modes on {d.name}",
        )
    )
    if reg_rows:
        files.append(plots.reg_choice(reg_rows, reg, folder.sub("reg_choice.png")))
    details = report_details.EsproDetails(
        reg=reg,
        reg_rows=reg_rows,
        ensemble_size=sizes,
        vertices_train_s=vertices_s,
        log_volume=log_volumes,
        cost=report_details.EsproCost(**cost),
        equal_compute_modes=n_equal,
        deep_ensemble=report_details.DeepEnsembleScores(test=de.test, members=de.per_member),
    )
    paths = [folder.sub(f"{'espro' if not reg_rows else f'espro/reg_{reg:g}'}/simplex_{i}.pt") for i in range(j)]
    return _main(es, _members(folder, [f"simplex {i}" for i in range(j)], paths, es), methods, details, files)


def run_spro(s, d, folder, how):
    j, (reg,) = s["modes"], s["reg"]
    share, modes = _all_modes(s, d, folder, how, j)
    settings = _vertex_settings(s, how)
    del settings["n_vertices"]
    with folder.phase("connectors"):
        model = sweep = None
        if how.trains_single:
            model, sweep = train.dimensionality_sweep(
                modes,
                d,
                s["vertices"],
                n_points=s["eval_samples"],
                reg=reg,
                out=folder.sub("spro"),
                distributed=how.single,
                **settings,
            )
    with folder.phase("predict"):
        de = score(share, d, 1, s["seed"], how.device, how.world)
        cx = score(_single(how, model), d, s["eval_samples"], s["seed"], how.device, how.world, ood_inputs(s, d))
    if not how.world.is_main:
        return None
    t_modes, m = folder.seconds("modes"), mode_cost(s, d)
    what = (
        f"complex of {j} modes and {s['vertices']} connectors" if j > 1 else f"simplex of {1 + s['vertices']} vertices"
    )
    groups = [_rows(f"deep ensemble ({j} modes)", de, t_modes, j * m)] if j > 1 else []
    groups.append(
        _rows(
            f"{what} (M = {s['eval_samples']})",
            cx,
            t_modes + folder.seconds("connectors"),
            j * m + simplex_cost(s, d, s["vertices"]),
        )
    )
    methods = _table([_single_mode_row(de, j, t_modes, m)], *groups)
    files = [
        plots.dimensionality(sweep, folder.sub("dimensionality.png"), f"SPRO {what} on {d.name}"),
        uncertainty_plot(
            folder, d, {**({"deep ensemble": de.probs} if j > 1 else {}), what: cx.probs}, f"SPRO on {d.name}"
        ),
    ]
    path = folder.sub("spro/complex.pt" if j > 1 else "spro/simplex.pt")
    details = report_details.SproDetails(
        sweep=sweep, deep_ensemble=report_details.DeepEnsembleScores(test=de.test, members=de.per_member)
    )
    return _main(cx, _members(folder, [what], [path], cx), methods, details, files)


def run_curve(s, d, folder, how):
    share, modes = _all_modes(s, d, folder, how, 2)
    with folder.phase("curve"):
        curve = None
        if how.trains_single:
            curve = train.train_curve(
                modes[0],
                modes[1],
                d,
                s["kind"],
                s["bends"],
                epochs=s["curve_epochs"],
                lr=s["lr"],
                n_samples=s["samples"],
                batch_size=s["batch_size"],
                seed=s["seed"],
                device=how.device,
                out=folder.sub("curve"),
                progress=how.progress,
                compile=how.compile,
                distributed=how.single,
            )
    with folder.phase("predict"):
        ends = score(share, d, 1, s["seed"], how.device, how.world)
        cv = score(_single(how, curve), d, s["eval_samples"], s["seed"], how.device, how.world, ood_inputs(s, d))
        profile = evaluation.curve_profile(curve, d, PROFILE_POINTS) if how.world.is_main else None
    if not how.world.is_main:
        return None
    t_modes, m = folder.seconds("modes"), mode_cost(s, d)
    curve_phase = Phase(epochs=s["curve_epochs"], lr=s["lr"], batch_size=s["batch_size"], n_samples=s["samples"])
    methods = [
        _row(f"endpoint {i}", metrics, t_modes / 2, ends.predict_s / 2, m) for i, metrics in enumerate(ends.per_member)
    ]
    curve_rows = _rows(
        f"{s['kind']} curve (M = {s['eval_samples']} points)",
        cv,
        t_modes + folder.seconds("curve"),
        2 * m + curve_phase.gradient_evaluations(len(d.x_train)),
    )
    methods = _table(methods, _rows("ensemble of the endpoints", ends, t_modes, 2 * m), curve_rows)
    files = [
        plots.curve_profile(
            profile, folder.sub("curve_profile.png"), f"{s['kind']} curve between two modes on {d.name}"
        ),
        uncertainty_plot(
            folder,
            d,
            {"ensemble of the endpoints": ends.probs, f"{s['kind']} curve": cv.probs},
            f"{s['kind']} curve on {d.name}",
        ),
    ]
    details = report_details.CurveDetails(profile=profile, midpoint=_midpoints(profile))
    return _main(
        cv, _members(folder, [f"{s['kind']} curve"], [folder.sub("curve/curve.pt")], cv), methods, details, files
    )


def _midpoints(profile):
    """Metrics at t = 1/2 on the curve and on the segment (the profile's middle grid point)."""
    middle = int(np.argmin(np.abs(profile["t"] - 0.5)))
    return {
        "t": float(profile["t"][middle]),
        **{path: {k: float(v[middle]) for k, v in profile[path].items()} for path in ("curve", "segment")},
    }


def run_fge(s, d, folder, how):
    share, modes = _all_modes(s, d, folder, how, 1)
    with folder.phase("fge"):
        snapshots = []
        if how.trains_single:
            snapshots = train.fge(
                modes[0],
                d,
                s["cycles"],
                s["cycle_epochs"],
                s["lr_max"],
                s["lr_min"],
                batch_size=s["batch_size"],
                seed=s["seed"],
                device=how.device,
                out=folder.sub("fge"),
                progress=how.progress,
                compile=how.compile,
                distributed=how.single,
            )
    with folder.phase("predict"):
        ood = ood_inputs(s, d)
        start = score(share, d, 1, s["seed"], how.device, how.world)
        if how.spread != "members":
            sc = score(_share(how, snapshots), d, 1, s["seed"], how.device, how.world, ood)
        elif how.world.is_main:  # rank 0 alone took the snapshots
            sc = score(snapshots, d, 1, s["seed"], how.device, ood=ood)
    if not how.world.is_main:
        return None
    t_mode, m = folder.seconds("modes"), mode_cost(s, d)
    methods = [
        _row("the mode FGE starts from", start.test, t_mode, start.predict_s, m),
        *_rows(f"FGE ({s['cycles']} snapshots)", sc, t_mode + folder.seconds("fge"), m + fge_cost(s, d)),
    ]
    sizes = _size_curves({"FGE": sc.probs}, d)
    files = [
        plots.ensemble_size(sizes, folder.sub("ensemble_size.png"), f"FGE on {d.name}"),
        uncertainty_plot(folder, d, {"FGE": sc.probs}, f"FGE on {d.name}"),
    ]
    paths = [folder.sub(f"fge/fge_snapshot_{c}.pt") for c in range(s["cycles"])]
    details = report_details.FgeDetails(
        ensemble_size=sizes, start=start.test, snapshots=[snap.fge_snapshot for snap in snapshots]
    )
    return _main(
        sc, _members(folder, [f"snapshot {c}" for c in range(s["cycles"])], paths, sc), methods, details, files
    )


def read_source(source):
    """(command that made it, [(name, checkpoint path)], its recorded settings) of an earlier
    output folder or checkpoint file ``source``."""
    path = pathlib.Path(source)
    if path.is_file():
        return None, [(path.stem, path)], {}
    if not path.is_dir():
        raise ValueError(f"source {source}: no such file or folder")
    report = path / "report.json"
    if not report.is_file():
        if (path / "run.json").is_file():
            raise ValueError(
                f"source {source} holds an unfinished run (no report.json yet): run its command again to finish it"
            )
        raise ValueError(f"source {source} holds no checkpoints of a simplexkern run (no report.json)")
    rep = read_report(report)
    members = [(m["name"], path / m["checkpoint"]) for m in rep["members"] if m["checkpoint"]]
    if not members:
        raise ValueError(f"source {source} is a '{rep['command']}' run, which has no checkpoints to evaluate")
    return rep["command"], members, rep["settings"]


def _load(members, device):
    loaded = []
    for _, path in members:
        if not path.is_file():
            raise ValueError(f"the checkpoint {path} is missing")
        loaded.append(checkpoint.load_model(path).to(device).eval())
    return loaded


def check_fits(models_, names, d):
    """ValueError unless each model takes ``d``'s inputs and predicts its classes (one test
    input through one point of each; for token ids, also the inputs holding the largest id)."""
    x = d.x_test[:1]
    if d.vocab_size is not None:
        i, k = (int(t.flatten(1).amax(1).argmax()) for t in (d.x_train, d.x_test))
        x = torch.cat([x, d.x_train[i : i + 1], d.x_test[k : k + 1]])
    for j, (model, name) in enumerate(zip(models_, names)):
        try:
            with torch.no_grad():
                _, out = next(outputs_at(model, x, member_points(model, 1, 0, j), bn_inputs=d.x_train[:8]))
        except (RuntimeError, ValueError, IndexError, TypeError) as err:
            raise ValueError(f"{name} does not take the inputs of {d.describe()}: {_checks.reason(err)}") from None
        if out.shape[-1] != d.n_classes:
            raise ValueError(f"{name} predicts {out.shape[-1]} classes; {d.name} has {d.n_classes}")


def load_source(members, d, device):
    """[(name, model, path)] of the source's ``members`` (from ``read_source``), each loaded
    and checked to fit ``d``."""
    loaded = _load(members, device)
    check_fits(loaded, [n for n, _ in members], d)
    return [(n, m, p) for (n, p), m in zip(members, loaded)]


def check_settings(command, s, d, source=None):
    """ValueError for settings that cannot run on the data ``d`` (and the loaded ``source``
    of evaluate / surface), found before anything is written."""
    if command in ("fge", "compare"):
        if not s["lr_min"] < s["lr_max"]:
            raise ValueError(f"--lr-min ({s['lr_min']:g}) must be below --lr-max ({s['lr_max']:g})")
        n = steps_per_epoch(len(d.x_train), s["batch_size"])
        if s["cycle_epochs"] * n // 2 < 1:
            raise ValueError(
                f"--cycle-epochs {s['cycle_epochs']} of {n} step(s) (--batch-size {s['batch_size']}, "
                f"{len(d.x_train)} training examples) leave a cycle no middle step to snapshot; use "
                "more --cycle-epochs or a smaller --batch-size"
            )
    if "epochs" in s and len(d.x_train) < 2:
        raise ValueError(
            f"--val-fraction {s['val_fraction']:g} leaves {len(d.x_train)} training example of "
            f"{d.name}; training needs at least 2"
        )
    if command == "surface":
        model, points, _ = plane_points(source, s)
        try:  # three points that span no plane are refused here, not after --out is made
            plane_basis(*((model, points) if model is not None else _three_point_model(points)))
        except ValueError as err:
            raise ValueError(f"{s['source']}, --points {','.join(map(str, s['points']))}: {err}") from None


def run_evaluate(s, d, folder, how, source):
    names, models_ = [n for n, _, _ in source], [m for _, m, _ in source]
    with folder.phase("predict"):
        sc = score(models_, d, s["eval_samples"], s["seed"], how.device, ood=ood_inputs(s, d))
    name = f"ensemble of {len(names)} members" if len(names) > 1 else names[0]
    files = [uncertainty_plot(folder, d, {name: sc.probs}, f"{name} on {d.name}")]
    details = report_details.EvaluateDetails(source=s["source"])
    if len(names) > 1:
        details.ensemble_size = _size_curves({name: sc.probs}, d)
        files.append(plots.ensemble_size(details.ensemble_size, folder.sub("ensemble_size.png"), f"{name} on {d.name}"))
    return _main(
        sc,
        [Member(name=n, checkpoint=str(p), test=m) for (n, _, p), m in zip(source, sc.per_member)],
        _rows(name, sc, None),
        details,
        files,
    )


def _vertex_indices(text, limit, what):
    if len(text) != 3 or len(set(text)) != 3 or min(text) < 0 or max(text) >= limit:
        raise ValueError(
            f"--points must be three different {what} indices in 0..{limit - 1}, got {','.join(map(str, text))}"
        )
    return list(text)


def plane_points(source, s):
    """(SimplexModel or None, three coefficient vectors or three plain models, their names)
    of the plane ``surface`` draws: a curve's endpoints and midpoint, three vertices of a
    simplex or complex (``--points``, of ESPRO's simplex ``--member``), or three plain
    members (``--points``)."""
    names, models_ = [n for n, _, _ in source], [m for _, m, _ in source]
    if all(not isinstance(m, SimplexModel) for m in models_):
        if len(models_) < 3:
            raise ValueError(
                f"the source has {len(models_)} plain model(s); a plane needs three points (a simplex, a "
                "curve, or an ensemble of at least three members)"
            )
        idx = _vertex_indices(s["points"], len(models_), "member")
        return None, [models_[i] for i in idx], [names[i] for i in idx]
    if not 0 <= s["member"] < len(models_):
        raise ValueError(f"--member must be in 0..{len(models_) - 1}, got {s['member']}")
    model = models_[s["member"]]
    if not isinstance(model, SimplexModel):
        raise ValueError(
            f"--member {s['member']}: {names[s['member']]} is a plain model; a plane through vertices "
            "needs a simplex, complex or curve member"
        )
    if isinstance(model.sampler, CurveSampler):
        t = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64, device=model.device)
        return model, model.sampler.coefficients(t, model).double(), ["t = 0", "t = 1/2", "t = 1"]
    idx = _vertex_indices(s["points"], model.n_vertices, "vertex")
    return model, torch.eye(model.n_vertices, dtype=torch.float64)[idx], [f"vertex {i}" for i in idx]


def run_surface(s, d, folder, how, source):
    model, points, names = plane_points(source, s)
    with folder.phase("plane"):
        plane = evaluation.loss_plane(points, d, model=model, grid=s["grid"], margin=s["margin"])
    np.savez(
        folder.sub("plane.npz"),
        x=plane["x"],
        y=plane["y"],
        points=plane["points"],
        **{k: plane[k] for k in ("train_loss", "train_error", "test_loss", "test_error")},
    )
    where = source[s["member"]][0] if model is not None else "members"
    title = f"{where} of {pathlib.Path(s['source']).name} on {d.name}"
    files = [plots.loss_plane(plane, names, folder.sub("plane.png"), title)]
    at = plane["at_points"]
    details = report_details.SurfaceDetails(
        source=s["source"],
        file="plane.npz",
        points=[
            {"name": n, "x": float(x), "y": float(y), **{k: float(v[i]) for k, v in at.items()}}
            for i, (n, (x, y)) in enumerate(zip(names, plane["points"]))
        ],
        range={
            k: {"min": float(plane[k].min()), "max": float(plane[k].max())}
            for k in ("train_loss", "train_error", "test_loss", "test_error")
        },
    )
    return ReportPart(
        test=None,
        val=None,
        uncertainty=None,
        temperature=None,
        members=[],
        methods=[],
        details=details,
        plots=files,
    )


JOBS = {
    "train": run_train,
    "ensemble": run_ensemble,
    "espro": run_espro,
    "demo": run_espro,
    "spro": run_spro,
    "curve": run_curve,
    "fge": run_fge,
    "evaluate": run_evaluate,
    "surface": run_surface,
}
