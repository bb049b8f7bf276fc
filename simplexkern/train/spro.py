"""SPRO (Benton et al., 2021): simplexes and simplicial complexes of low loss, grown one
vertex at a time (SPEC §4-§5).

Each new vertex starts at the mean of the existing ones (in a complex of several modes,
the mean of the connectors found so far: their shared face lies in every simplex of the
complex, while the modes' mean lies between them, where the loss is high) plus a small
Gaussian perturbation (``noise``, relative to each layer tensor's RMS, so the simplex is not
degenerate and log V is finite), is the only trainable vertex, and is trained on

    L = (1/H) sum_h L(D; θ_h) - λ_v log V,        θ_h sampled from the simplex / complex,

with the H points in one multi-point forward. λ_v >= 0, so the regulariser always rewards
volume; ``reg_scale`` sets λ_v from ``reg`` = λ (``simplexkern.train.volume_reg``).
"""

import copy
import dataclasses
from collections.abc import Sequence

import torch

from simplexkern import _checks
from simplexkern import distributed as dist
from simplexkern._seeds import derive_seed
from simplexkern._types import ModelOrPath
from simplexkern.data import Dataset
from simplexkern.nn import checkpoint
from simplexkern.nn.convert import simplexify
from simplexkern.nn.model import SimplexModel
from simplexkern.nn.samplers import ComplexSampler, SimplexSampler
from simplexkern.train.loop import INIT, log_volume
from simplexkern.train.runs import (
    Resumed,
    Run,
    as_plain,
    check_fits,
    device_of,
    fingerprint,
    member_key,
    train_member,
    train_phase,
)
from simplexkern.train.settings import VERTEX, Execution, Optimisation, settings
from simplexkern.train.volume_reg import REG_SCALES, reg_for_vertex

_MODES = "trained models (or their checkpoints' paths)"


def _check_growth(reg, reg_scale, noise):
    if reg_scale not in REG_SCALES:
        raise ValueError(f"reg_scale must be one of {REG_SCALES}, got {reg_scale!r}")
    _checks.number(reg, "reg (λ)", minimum=0)
    _checks.number(noise, "noise", above=0)  # a new vertex at the mean of the others spans no volume


def fix_all(model):
    for i in range(model.n_vertices):
        if not model.fixed_mask()[i]:
            model.fix(i)


def complex_simplices(n_modes, n_vertices):
    """The simplexes of modes 0..m-1 joined through connectors m..n-1: (j, m, ..., n-1)
    for each mode j; None for one mode (the simplex of all vertices)."""
    if n_modes == 1:
        return None
    return [(j, *range(n_modes, n_vertices)) for j in range(n_modes)]


@dataclasses.dataclass(frozen=True)
class _Growth:
    """What ``_grow`` adds to a simplex model whose first ``n_modes`` vertices are the modes."""

    n_modes: int
    n_vertices: int
    noise: float
    reg: float
    reg_scale: str
    weighting: str = "volume"


def _grow(model, data, phase, growth, *, run, name, start, template, key, execution, describe, check=None):
    """Adds vertices to ``model`` up to ``growth.n_vertices``, one at a time, checkpointing
    ``name`` in ``run``; ``check(model, vertex, epoch)`` runs after every epoch
    (``train_phase``). A FloatingPointError says at which ``vertex`` and ``epoch``."""
    device = device_of(execution.device)

    def train(model, resumed):
        history = resumed.meta["history"] if resumed.meta is not None else list(model.metadata.get("history", []))
        first, optimizer_state = resumed.first_epoch, resumed.optimizer_state
        for v in range(model.n_vertices if resumed.meta is None else resumed.meta["vertices_done"], growth.n_vertices):
            if model.n_vertices == v:  # a new vertex; else resuming the one being trained
                _add_vertex(model, growth, v, key)
                first, optimizer_state = 0, None
            simplices = complex_simplices(growth.n_modes, v + 1)
            model.sampler = SimplexSampler() if simplices is None else ComplexSampler(simplices, growth.weighting)
            reg_v = reg_for_vertex(model, growth.reg, growth.reg_scale, v + 1, simplices, derive_seed(*key, v, INIT, 1))
            try:
                train_phase(
                    model,
                    data,
                    dataclasses.replace(phase, reg=reg_v, reg_simplices=simplices),
                    run=run,
                    name=name,
                    start=start,
                    key=(*key, v),
                    execution=execution,
                    describe=f"{describe}, vertex {v}",
                    resumed=Resumed(resumed.meta, first, optimizer_state),
                    record={"vertices_done": v, "history": history},
                    check=None if check is None else lambda epoch, v=v: check(model, v, epoch),
                )
            except FloatingPointError as err:
                err.vertex = v
                raise
            with torch.no_grad():
                history.append({"vertex": v, "reg": reg_v, "log_volume": float(log_volume(model, simplices))})
            run.save(name, model, start, {"vertices_done": v + 1, "epoch": 0, "done": False, "history": history})
        fix_all(model)
        model.metadata = {"algorithm": run.algorithm, "settings": run.settings, "history": history}
        return {"vertices_done": growth.n_vertices, "epoch": 0, "done": True, "history": history}

    load = lambda path: checkpoint.load(path, model=template)
    return train_member(run, name, start, model, train, load=load, device=device).eval()


def _add_vertex(model, growth, v, key):
    """Vertex ``v``, trainable, the others fixed: the mean of a simplex's vertices, or of a
    complex's connectors (their shared face, inside every simplex of the complex; the modes'
    mean is not) once there are any, plus ``growth.noise``."""
    fix_all(model)
    around = None if growth.n_modes == 1 or v == growth.n_modes else list(range(growth.n_modes, v))
    generator = torch.Generator().manual_seed(derive_seed(*key, v, INIT))
    model.add_vertex("mean", growth.noise, source=around, generator=generator)


def _start_model(model):
    """(simplex model to grow, a plain module of its architecture, fingerprint) of a mode
    given as a plain model, its checkpoint, or a SimplexModel to grow further."""
    if isinstance(model, SimplexModel):
        template = model.at(model.vertex_point(0), bn_stats="fresh")
        return copy.deepcopy(model), template, fingerprint(model)
    plain = as_plain(model, "model")
    return simplexify(plain), copy.deepcopy(plain), fingerprint(plain)


def _record(phase, execution, **fields):
    """The settings a run of vertex training records."""
    return dict(phase.settings(), **fields, seed=execution.seed)


def grow_simplex(
    model: ModelOrPath | SimplexModel,
    data: Dataset,
    n_vertices: int = 3,
    *,
    reg: float = 0.1,
    reg_scale: str = "none",
    noise: float = 0.01,
    n_samples: int = 5,
    optimisation: Optimisation | None = None,
    execution: Execution | None = None,
    **keywords,
) -> SimplexModel:
    """SPRO on one simplex: grows ``model`` (a trained plain model, its checkpoint's path,
    or a SimplexModel to extend) into a simplex of ``n_vertices`` vertices (the mode
    included), adding one vertex at a time, each trained on the mean loss of ``n_samples``
    (H) points per step minus λ_v log V (``reg``, ``reg_scale``: see
    ``simplexkern.train.volume_reg``). Settings: ``optimisation`` (default
    ``settings.VERTEX``: 30 epochs per vertex) and ``execution``, or their fields as keywords
    (``vertex_epochs=``, ``lr=``, ``seed=``, ``out=``, ...).

    Returns the SimplexModel with every vertex fixed; ``model.metadata["history"]`` lists
    λ_v and log V after each vertex. With ``out``, ``out/simplex.pt`` is written after every
    epoch and a second call resumes from it. ``distributed="data"``: trained data-parallel
    by all processes of the process group (``simplexkern.distributed``; the gradient of the
    trainable vertex averaged, rank 0 writing the checkpoints).
    """
    optimisation, execution = settings(
        "grow_simplex", keywords, optimisation, execution, VERTEX, epochs="vertex_epochs"
    )
    _check_growth(reg, reg_scale, noise)
    dist.check_mode(execution.distributed, (None, "data"))
    phase = optimisation.phase(n_samples=n_samples, compile=execution.compile)
    sm, template, start = _start_model(model)
    check_fits(template, data)
    _checks.count(n_vertices, "n_vertices", minimum=sm.n_vertices)
    growth = _Growth(1, n_vertices, noise, reg, reg_scale)
    record = _record(phase, execution, n_vertices=n_vertices, reg=reg, reg_scale=reg_scale, noise=noise)
    run = Run(execution.out, "grow_simplex", record, data, data_parallel=execution.data_parallel)
    key = member_key(execution.seed, "grow_simplex", 0)
    return _grow(
        sm,
        data,
        phase,
        growth,
        run=run,
        name="simplex",
        start=start,
        template=template,
        key=key,
        execution=execution,
        describe="simplex",
    )


def espro(
    modes: Sequence[ModelOrPath],
    data: Dataset,
    n_vertices: int = 3,
    *,
    reg: float = 0.1,
    reg_scale: str = "none",
    noise: float = 0.01,
    n_samples: int = 5,
    optimisation: Optimisation | None = None,
    execution: Execution | None = None,
    _screen=None,
    _grown=(),
    **keywords,
) -> list[SimplexModel]:
    """ESPRO: J independent simplexes, one grown from each trained mode in ``modes`` (plain
    models or paths of their checkpoints) by ``grow_simplex`` with these settings. Simplex
    j depends only on (mode j, seed, j). With ``out``, simplex j is checkpointed in
    ``out/simplex_{j}.pt`` and a second call resumes (with more modes: adds their
    simplexes). Returns the J simplex models. Settings: ``optimisation`` (default
    ``settings.VERTEX``: 30 epochs per vertex) and ``execution``, or their fields as keywords
    (``vertex_epochs=``, ``lr=``, ``seed=``, ``out=``, ...).

    Across the processes of a process group (``simplexkern.distributed``):
    ``distributed="members"``: ``modes`` is this process's share of the J modes (modes rank,
    rank + W, ..., as ``deep_ensemble(distributed="members")`` returns them; possibly none)
    and the simplexes of that share are grown and returned; ``"data"``: every simplex is
    grown data-parallel by all processes, one after another."""
    optimisation, execution = settings("espro", keywords, optimisation, execution, VERTEX, epochs="vertex_epochs")
    world = dist.check_mode(execution.distributed)
    members = execution.distributed == "members"
    if not _checks.sequence(modes, "modes", _MODES) and not members:
        raise ValueError(f"modes must be a non-empty list of {_MODES}")
    _check_growth(reg, reg_scale, noise)
    _checks.count(n_vertices, "n_vertices")
    phase = optimisation.phase(n_samples=n_samples, compile=execution.compile)
    n_modes = world.total(len(modes), "modes") if members else len(modes)
    if n_modes == 0:
        raise ValueError("modes: no process holds a mode")
    indices = world.members(n_modes) if members else range(n_modes)
    plains = [check_fits(as_plain(mode, f"modes[{j}]"), data, f"modes[{j}]") for j, mode in zip(indices, modes)]
    record = _record(phase, execution, n_vertices=n_vertices, reg=reg, reg_scale=reg_scale, noise=noise)
    run = Run(execution.out, "espro", record, data, data_parallel=execution.data_parallel)
    growth = _Growth(1, n_vertices, noise, reg, reg_scale)
    simplexes = []
    for i, (j, plain) in enumerate(zip(indices, plains)):
        if i < len(_grown):  # grown by an earlier round of choose_reg, with these settings
            simplexes.append(_grown[i])
            continue
        sm, template, start = _start_model(plain)  # one mode's copies at a time
        screen = _screen if j == 0 and not members else None  # choose_reg's early stop
        try:
            simplexes.append(
                _grow(
                    sm,
                    data,
                    phase,
                    growth,
                    run=run,
                    name=f"simplex_{j}",
                    start=start,
                    template=template,
                    key=member_key(execution.seed, "espro", j),
                    execution=execution,
                    describe=f"simplex {j}",
                    check=None if screen is None else _first_epoch_check(screen),
                )
            )
        except FloatingPointError as err:
            err.member = j  # type: ignore[attr-defined]  # which simplex diverged (choose_reg reports the lowest over processes)
            raise
    return simplexes


def _first_epoch_check(screen):
    def check(model, vertex, epoch):
        if vertex == 1 and epoch == 0:
            screen(model)

    return check


def _complex_start(modes, data):
    """A simplex model whose vertices 0..m-1 are the modes (all fixed, BatchNorm statistics
    each mode's own), a plain template and the modes' fingerprint."""
    plain = [check_fits(as_plain(m, f"modes[{j}]"), data, f"modes[{j}]") for j, m in enumerate(modes)]
    model = simplexify(plain[0])
    model.fix(0)
    for j in range(1, len(plain)):
        model.add_vertex("copy", noise=0, fixed=True)
        try:
            model.set_vertex(j, plain[j].state_dict())
        except ValueError as err:
            raise ValueError(f"modes[{j}] is not a model of modes[0]'s architecture: {err}") from None
    return model, copy.deepcopy(plain[0]), ":".join(fingerprint(p) for p in plain)


def spro_complex(
    modes: Sequence[ModelOrPath],
    data: Dataset,
    n_connectors: int = 2,
    *,
    reg: float = 1.0,
    reg_scale: str = "none",
    weighting: str = "volume",
    noise: float = 0.01,
    n_samples: int = 5,
    optimisation: Optimisation | None = None,
    execution: Execution | None = None,
    **keywords,
) -> SimplexModel:
    """SPRO on a simplicial complex: the m trained ``modes`` (fixed) joined through
    ``n_connectors`` shared connector vertices, K = {S(w_j, θ_0..θ_c) : j < m}, trained one
    at a time as ``grow_simplex`` trains a vertex, with points drawn from the whole complex
    (``weighting="volume"``: a simplex picked in proportion to its volume, i.e. uniform over
    the complex; or "uniform") and log V(K) = log of the sum of the simplexes' volumes.
    Settings: ``optimisation`` (default ``settings.VERTEX``: 30 epochs per vertex) and
    ``execution``, or their fields as keywords (``vertex_epochs=``, ``lr=``, ``seed=``,
    ``out=``, ...).

    Returns the SimplexModel: vertices 0..m-1 the modes, m.. the connectors, its sampler the
    complex. With ``out``, ``out/complex.pt`` is written after every epoch and a second call
    resumes. ``distributed="data"``: trained data-parallel, as ``grow_simplex``."""
    optimisation, execution = settings(
        "spro_complex", keywords, optimisation, execution, VERTEX, epochs="vertex_epochs"
    )
    dist.check_mode(execution.distributed, (None, "data"))
    if not _checks.sequence(modes, "modes", _MODES):
        raise ValueError(f"modes must be a non-empty list of {_MODES}")
    _check_growth(reg, reg_scale, noise)
    _checks.count(n_connectors, "n_connectors")
    if weighting not in ("volume", "uniform"):
        raise ValueError(f"weighting must be 'volume' or 'uniform', got {weighting!r}")
    phase = optimisation.phase(n_samples=n_samples, compile=execution.compile)
    model, template, start = _complex_start(modes, data)
    m = len(modes)
    record = _record(
        phase, execution, n_connectors=n_connectors, reg=reg, reg_scale=reg_scale, weighting=weighting, noise=noise
    )
    record["n_modes"] = m
    run = Run(execution.out, "spro_complex", record, data, data_parallel=execution.data_parallel)
    growth = _Growth(m, m + n_connectors, noise, reg, reg_scale, weighting)
    key = member_key(execution.seed, "spro_complex", 0)
    return _grow(
        model,
        data,
        phase,
        growth,
        run=run,
        name="complex",
        start=start,
        template=template,
        key=key,
        execution=execution,
        describe="complex",
    )


__all__ = ["grow_simplex", "espro", "spro_complex", "REG_SCALES"]
