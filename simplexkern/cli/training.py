"""The training step of each command's job, in the phases and subfolders of its run folder.

Every training command trains its modes with ``train.deep_ensemble`` under the same seed,
so ``ensemble``, ``espro``, ``spro``, ``curve`` and ``fge`` with the same data, model, mode
settings and ``--seed`` start from the same modes, and their reports compare like with like.
Under torchrun the modes and ESPRO's simplexes are spread over the processes, and one model
(a complex, a curve, FGE's run) is trained by rank 0 alone or, with --data-parallel, by
all processes together (``simplexkern.cli.runtime``).
"""

import dataclasses

from simplexkern import train
from simplexkern.cli import costs
from simplexkern.cli.settings import optimisation
from simplexkern.nn import checkpoint


def train_modes(context, n_modes):
    """This process's share of ``n_modes`` modes (all of them with --data-parallel): the
    deep ensemble of the settings' model and mode settings, in ``modes/``."""
    settings, runtime, folder = context.settings, context.runtime, context.folder
    with folder.phase("modes"):
        return train.deep_ensemble(
            settings["model"],
            context.data,
            n_modes,
            optimisation=optimisation(settings),
            execution=runtime.execution(settings["seed"], folder.sub("modes"), runtime.ensemble_mode),
        )


def mode_paths(folder, n_modes):
    return [folder.sub(f"modes/mode_{index}.pt") for index in range(n_modes)]


@dataclasses.dataclass
class ModesOfOneModel:
    """The modes a complex, a curve or FGE starts from."""

    share: list  # this process's share of the modes
    all: list  # all of them on a process that trains the model (rank 0, or all with --data-parallel), else []


def modes_of_one_model(context, n_modes):
    """The modes of a model trained from them: rank 0 reads the other processes' modes from
    their checkpoints."""
    runtime = context.runtime
    trained = train_modes(context, n_modes)
    if runtime.ensemble_mode != "members":
        return ModesOfOneModel(share=runtime.share(trained), all=trained)
    if not runtime.world.is_main:
        return ModesOfOneModel(share=trained, all=[])
    loaded = [checkpoint.load_model(path).to(runtime.device).eval() for path in mode_paths(context.folder, n_modes)]
    return ModesOfOneModel(share=trained, all=loaded)


def vertex_settings(settings, runtime, distributed=None):
    """The keywords of the simplex trainers for ``settings``' vertices (``out`` given apart)."""
    return dict(
        n_vertices=1 + settings["vertices"],
        reg_scale=settings["reg_scale"],
        n_samples=settings["samples"],
        optimisation=optimisation(settings, "vertex_epochs"),
        execution=runtime.execution(settings["seed"], None, distributed),
    )


@dataclasses.dataclass
class EsproSimplexes:
    """ESPRO's simplexes of the chosen λ."""

    reg: float  # the chosen λ
    simplexes: list  # this process's share
    reg_rows: list[dict]  # choose_reg's rows ([] for one λ)
    # wall seconds of the chosen λ's vertices: with a λ search, its share of the search's
    # (phase "vertices", which adds up resumed invocations) by gradient evaluations
    vertices_s: float


def train_espro(context, modes):
    """ESPRO on ``modes`` (this process's share), in ``espro/``: with several --reg, the λ
    chosen on the validation split."""
    settings, folder = context.settings, context.folder
    keywords = vertex_settings(settings, context.runtime, context.runtime.ensemble_mode)
    rows = []
    with folder.phase("vertices"):
        if len(settings["reg"]) > 1:
            reg, simplexes, rows = train.choose_reg(
                modes,
                context.data,
                settings["reg"],
                n_points=settings["eval_samples"],
                out=folder.sub("espro"),
                **keywords,
            )
        else:
            (reg,) = settings["reg"]
            simplexes = train.espro(modes, context.data, reg=reg, out=folder.sub("espro"), **keywords)
    seconds = folder.seconds("vertices")
    if rows:
        chosen = next(row["gradient_evaluations"] for row in rows if row["reg"] == reg)
        seconds *= chosen / sum(row["gradient_evaluations"] for row in rows)
    return EsproSimplexes(reg=reg, simplexes=simplexes, reg_rows=rows, vertices_s=seconds)


def train_one_mode(context):
    """``train``: one mode."""
    return train_modes(context, 1)


def train_ensemble(context):
    """``ensemble``: the deep ensemble of --modes modes."""
    return train_modes(context, context.settings["modes"])


@dataclasses.dataclass
class EsproTraining:
    modes: list  # this process's share of the J modes (all J with --data-parallel)
    espro: EsproSimplexes
    cost: dict  # espro_costs
    equal_compute_counts: dict[str, int]  # {"espro", "with_search"}: the modes each cost buys
    equal_compute_ensemble: list  # the modes of those ensembles (``modes`` without --equal-compute)


def train_espro_command(context):
    """``espro``, ``demo``: J modes, a simplex grown around each, and with --equal-compute the
    modes its cost buys."""
    settings, n_modes = context.settings, context.settings["modes"]
    modes = train_modes(context, n_modes)
    espro = train_espro(context, modes)
    cost = costs.espro_costs(settings, context.data, espro.reg_rows)
    counts = {"espro": cost["espro"] // cost["mode"], "with_search": cost["with_search"] // cost["mode"]}
    equal_compute_ensemble = modes
    if settings["equal_compute"] and counts["with_search"] > n_modes:
        with context.folder.phase("equal-compute modes"):
            equal_compute_ensemble = train_modes(context, counts["with_search"])
    return EsproTraining(modes, espro, cost, counts, equal_compute_ensemble)


@dataclasses.dataclass
class SproTraining:
    modes: ModesOfOneModel
    model: object  # the complex (J = 1: the simplex) on the processes that trained it, else None
    sweep: list[dict] | None  # the dimensionality sweep, where the model is


def train_spro(context):
    """``spro``: a complex of J modes and its connectors (J = 1: a simplex), with the sweep
    over its sub-complexes."""
    settings, runtime = context.settings, context.runtime
    modes = modes_of_one_model(context, settings["modes"])
    (reg,) = settings["reg"]
    keywords = vertex_settings(settings, runtime, runtime.model_mode)
    del keywords["n_vertices"]
    model = sweep = None
    with context.folder.phase("connectors"):
        if runtime.trains_model:
            model, sweep = train.dimensionality_sweep(
                modes.all,
                context.data,
                settings["vertices"],
                n_points=settings["eval_samples"],
                reg=reg,
                out=context.folder.sub("spro"),
                **keywords,
            )
    return SproTraining(modes, model, sweep)


@dataclasses.dataclass
class CurveTraining:
    modes: ModesOfOneModel  # its two ends
    curve: object  # on the processes that trained it, else None


def train_curve(context):
    """``curve``: two modes and a curve of low loss between them."""
    settings, runtime = context.settings, context.runtime
    modes = modes_of_one_model(context, 2)
    curve = None
    with context.folder.phase("curve"):
        if runtime.trains_model:
            curve = train.train_curve(
                modes.all[0],
                modes.all[1],
                context.data,
                settings["kind"],
                settings["bends"],
                n_samples=settings["samples"],
                optimisation=optimisation(settings, "curve_epochs"),
                execution=runtime.execution(settings["seed"], context.folder.sub("curve"), runtime.model_mode),
            )
    return CurveTraining(modes, curve)


def fge_snapshots(context, mode):
    """FGE's snapshots from ``mode``, in ``fge/``."""
    settings, runtime = context.settings, context.runtime
    return train.fge(
        mode,
        context.data,
        settings["cycles"],
        settings["cycle_epochs"],
        settings["lr_max"],
        settings["lr_min"],
        batch_size=settings["batch_size"],
        execution=runtime.execution(settings["seed"], context.folder.sub("fge"), runtime.model_mode),
    )


@dataclasses.dataclass
class FgeTraining:
    modes: ModesOfOneModel  # the one mode FGE starts from
    snapshots: list  # on the processes that took them, else []


def train_fge(context):
    """``fge``: a mode and FGE's snapshots from it."""
    modes = modes_of_one_model(context, 1)
    snapshots = []
    with context.folder.phase("fge"):
        if context.runtime.trains_model:
            snapshots = fge_snapshots(context, modes.all[0])
    return FgeTraining(modes, snapshots)


def nothing(context):
    """``evaluate``, ``surface``: no training, their source's models are trained."""
    return None
