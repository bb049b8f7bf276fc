"""SPRO (Benton et al., 2021): simplexes and simplicial complexes of low loss, grown one
vertex at a time (SPEC §4-§5).

Each new vertex starts at the mean of the existing ones (in a complex of several modes,
the mean of the connectors found so far: their shared face lies in every simplex of the
complex, while the modes' mean lies between them, where the loss is high) plus a small
Gaussian perturbation (``noise``, relative to each layer tensor's RMS, so the simplex is not
degenerate and log V is finite), is the only trainable vertex, and is trained on

    L = (1/H) sum_h L(D; θ_h) - λ_v log V,        θ_h sampled from the simplex / complex,

with the H points in one multi-point forward. λ_v >= 0, so the regulariser always rewards
volume. ``reg_scale`` sets λ_v from ``reg`` = λ:

- "none" (default): λ_v = λ. The gradient of -λ log V with respect to the new vertex is
  -λ h / |h|^2, h its height above the affine hull of the others: a push of strength λ / |h|
  away from that hull, the same for every architecture, vertex count and data set.
  The push never weakens, so a new vertex drifts until the training loss stops it: the
  default λ = 0.1 keeps one simplex's points as good as its mode (at λ = 1 the vertices of
  digits' MLP end 1.4 |mode| away and its points generalise worse; README, "One simplex").
- "random": the paper's normalisation (its eq. A.3), λ_v = λ / log V(K̃_v), K̃_v a complex
  of the same structure whose vertices are fresh random initialisations of the
  architecture. Unlike the published code it uses log V (not log(V² + 1e-4), about 2 log V)
  and raises ValueError when log V(K̃_v) <= 0 (the published max(λ_v, 1e-8) silently turns
  the regulariser off there).
"""

import copy
import dataclasses
import inspect
import math
import pathlib
import time
from collections.abc import Sequence

import torch

from simplexkern import _checks, geometry
from simplexkern import distributed as dist
from simplexkern._seeds import derive_seed, seeded
from simplexkern._types import Device, Distributed, ModelOrPath, Path
from simplexkern.data import Dataset
from simplexkern.eval.metrics import metrics
from simplexkern.eval.predict import outputs_at, predict
from simplexkern.eval.surfaces import metrics_at
from simplexkern.nn import checkpoint
from simplexkern.nn.convert import simplexify
from simplexkern.nn.model import SimplexModel
from simplexkern.nn.samplers import ComplexSampler, SimplexSampler
from simplexkern.train.loop import INIT, Phase, log_volume
from simplexkern.train.runs import Run, as_plain, check_fits, device_of, fingerprint, member_key, train_phase

REG_SCALES = ("none", "random")


def _vertex_phase(vertex_epochs, lr, weight_decay, momentum, batch_size, n_samples, compile):
    return Phase(
        epochs=vertex_epochs,
        lr=lr,
        weight_decay=weight_decay,
        momentum=momentum,
        batch_size=batch_size,
        n_samples=n_samples,
        compile=compile,
    )


def _check_growth(reg, reg_scale, noise):
    if reg_scale not in REG_SCALES:
        raise ValueError(f"reg_scale must be one of {REG_SCALES}, got {reg_scale!r}")
    if isinstance(reg, bool) or not isinstance(reg, (int, float)) or not reg >= 0:
        raise ValueError(f"reg (λ) must be a number >= 0, got {reg!r}")
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not noise > 0:
        raise ValueError(
            f"noise must be a number > 0 (a new vertex at the mean of the others spans no volume), got {noise!r}"
        )


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


def random_vertices(model, n_vertices, seed):
    """(n_vertices, P) fresh random initialisations of the model's architecture (each
    layer's own ``reset_parameters``), drawn from ``seed``."""
    with seeded(seed), torch.no_grad():
        like = model.store.vertices()[0]
        return torch.stack([model._random_vertex(like) for _ in range(n_vertices)])


def random_log_volume(model, n_vertices, simplices, seed):
    """log V of a complex of the same structure as ``simplices`` over ``n_vertices``
    vertices, each a fresh random initialisation of the model's architecture (K̃)."""
    d = geometry.pairwise_sqdist(random_vertices(model, n_vertices, seed))
    if simplices is None:
        return float(geometry.log_volume(d))
    return float(torch.logsumexp(torch.stack([geometry.log_volume(d[list(s)][:, list(s)]) for s in simplices]), 0))


def reg_for_vertex(model, reg, reg_scale, n_vertices, simplices, seed):
    """λ_v for training vertex n_vertices - 1 (see the module docstring)."""
    if reg_scale == "none" or reg == 0:
        return float(reg)
    log_v = random_log_volume(model, n_vertices, simplices, seed)
    if not log_v > 0:
        raise ValueError(
            f"reg_scale='random': a random complex of this architecture with {n_vertices} vertices has "
            f"log V = {log_v:.3g} <= 0, so λ / log V would not reward volume; use reg_scale='none'"
        )
    return reg / log_v


def _grow(
    model,
    data,
    phase,
    *,
    n_modes,
    n_vertices,
    noise,
    reg,
    reg_scale,
    weighting,
    run,
    name,
    start,
    template,
    key,
    device,
    progress,
    describe,
    data_parallel=False,
    check=None,
):
    """Adds vertices to ``model`` (a SimplexModel whose first ``n_modes`` vertices are the
    modes) up to ``n_vertices``, one at a time, checkpointing ``name`` in ``run``;
    ``check(model, vertex, epoch)`` runs after every epoch (``train_phase``). A
    FloatingPointError says at which ``vertex`` and ``epoch``."""
    meta, first, optimizer_state = run.resume(name, start)
    history = list(model.metadata.get("history", []))
    if meta is not None:
        model = checkpoint.load(run.path(name), model=template)
        history = meta["history"]
    model.to(device)
    if meta is not None and meta["done"]:
        return model.eval()
    for v in range(model.n_vertices if meta is None else meta["vertices_done"], n_vertices):
        if model.n_vertices == v:  # a new vertex; else resuming the one being trained
            fix_all(model)
            # the mean of a simplex's vertices, or of a complex's connectors (their shared face,
            # inside every simplex of the complex; the modes' mean is not) once there are any
            around = None if n_modes == 1 or v == n_modes else list(range(n_modes, v))
            model.add_vertex(
                "mean", noise, source=around, generator=torch.Generator().manual_seed(derive_seed(*key, v, INIT))
            )
            first, optimizer_state = 0, None
        simplices = complex_simplices(n_modes, v + 1)
        model.sampler = SimplexSampler() if simplices is None else ComplexSampler(simplices, weighting)
        reg_v = reg_for_vertex(model, reg, reg_scale, v + 1, simplices, derive_seed(*key, v, INIT, 1))
        vertex_phase = dataclasses.replace(phase, reg=reg_v, reg_simplices=simplices)
        try:
            train_phase(
                model,
                data,
                vertex_phase,
                run=run,
                name=name,
                start=start,
                key=(*key, v),
                device=device,
                progress=progress,
                describe=f"{describe}, vertex {v}",
                first_epoch=first,
                optimizer_state=optimizer_state,
                record={"vertices_done": v, "history": history},
                data_parallel=data_parallel,
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
    run.save(name, model, start, {"vertices_done": n_vertices, "epoch": 0, "done": True, "history": history})
    return model.eval()


def _start_model(model):
    """(simplex model to grow, a plain module of its architecture, fingerprint) of a mode
    given as a plain model, its checkpoint, or a SimplexModel to grow further."""
    if isinstance(model, SimplexModel):
        template = model.at(model._one_hot(0), bn_stats="fresh")
        return copy.deepcopy(model), template, fingerprint(model)
    plain = as_plain(model, "model")
    return simplexify(plain), copy.deepcopy(plain), fingerprint(plain)


def grow_simplex(
    model: ModelOrPath | SimplexModel,
    data: Dataset,
    n_vertices: int = 3,
    *,
    reg: float = 0.1,
    reg_scale: str = "none",
    vertex_epochs: int = 30,
    lr: float = 0.05,
    weight_decay: float = 5e-4,
    momentum: float = 0.9,
    noise: float = 0.01,
    n_samples: int = 5,
    batch_size: int = 64,
    seed: int = 0,
    device: Device = None,
    out: Path | None = None,
    progress: bool = True,
    compile: bool = False,
    distributed: Distributed = None,
) -> SimplexModel:
    """SPRO on one simplex: grows ``model`` (a trained plain model, its checkpoint's path,
    or a SimplexModel to extend) into a simplex of ``n_vertices`` vertices (the mode
    included), adding one vertex at a time and training it for ``vertex_epochs`` epochs
    (SGD with momentum, cosine schedule from ``lr``) on the mean loss of ``n_samples`` (H)
    points per step minus λ_v log V (``reg``, ``reg_scale``: see the module docstring).

    Returns the SimplexModel with every vertex fixed; ``model.metadata["history"]`` lists
    λ_v and log V after each vertex. With ``out``, ``out/simplex.pt`` is written after every
    epoch and a second call resumes from it. ``distributed="data"``: trained data-parallel
    by all processes of the process group (``simplexkern.distributed``; the gradient of the
    trainable vertex averaged, rank 0 writing the checkpoints).
    """
    _check_growth(reg, reg_scale, noise)
    dist.check_mode(distributed, (None, "data"))
    phase = _vertex_phase(vertex_epochs, lr, weight_decay, momentum, batch_size, n_samples, compile)
    sm, template, start = _start_model(model)
    check_fits(template, data)
    if isinstance(n_vertices, bool) or not isinstance(n_vertices, int) or n_vertices < sm.n_vertices:
        raise ValueError(f"n_vertices must be an int >= the model's {sm.n_vertices} vertices, got {n_vertices!r}")
    parallel = distributed == "data"
    run = Run(
        out,
        "grow_simplex",
        dict(phase.settings(), n_vertices=n_vertices, reg=reg, reg_scale=reg_scale, noise=noise, seed=seed),
        data,
        data_parallel=parallel,
    )
    return _grow(
        sm,
        data,
        phase,
        n_modes=1,
        n_vertices=n_vertices,
        noise=noise,
        reg=reg,
        reg_scale=reg_scale,
        weighting="volume",
        run=run,
        name="simplex",
        start=start,
        template=template,
        key=member_key(seed, "grow_simplex", 0),
        device=device_of(device),
        progress=progress,
        describe="simplex",
        data_parallel=parallel,
    )


def espro(
    modes: Sequence[ModelOrPath],
    data: Dataset,
    n_vertices: int = 3,
    *,
    reg: float = 0.1,
    reg_scale: str = "none",
    vertex_epochs: int = 30,
    lr: float = 0.05,
    weight_decay: float = 5e-4,
    momentum: float = 0.9,
    noise: float = 0.01,
    n_samples: int = 5,
    batch_size: int = 64,
    seed: int = 0,
    device: Device = None,
    out: Path | None = None,
    progress: bool = True,
    compile: bool = False,
    distributed: Distributed = None,
    _screen=None,
    _grown=(),
) -> list[SimplexModel]:
    """ESPRO: J independent simplexes, one grown from each trained mode in ``modes`` (plain
    models or paths of their checkpoints) by ``grow_simplex`` with these settings. Simplex
    j depends only on (mode j, seed, j). With ``out``, simplex j is checkpointed in
    ``out/simplex_{j}.pt`` and a second call resumes (with more modes: adds their
    simplexes). Returns the J simplex models.

    Across the processes of a process group (``simplexkern.distributed``):
    ``distributed="members"``: ``modes`` is this process's share of the J modes (modes rank,
    rank + W, ..., as ``deep_ensemble(distributed="members")`` returns them; possibly none)
    and the simplexes of that share are grown and returned; ``"data"``: every simplex is
    grown data-parallel by all processes, one after another."""
    world = dist.check_mode(distributed)
    if not isinstance(modes, (list, tuple)) or not (modes or distributed == "members"):
        raise ValueError("modes must be a non-empty list of trained models (or their checkpoints' paths)")
    _check_growth(reg, reg_scale, noise)
    if isinstance(n_vertices, bool) or not isinstance(n_vertices, int) or n_vertices < 1:
        raise ValueError(f"n_vertices must be an int >= 1, got {n_vertices!r}")
    phase = _vertex_phase(vertex_epochs, lr, weight_decay, momentum, batch_size, n_samples, compile)
    members = distributed == "members"
    n_modes = world.total(len(modes), "modes") if members else len(modes)
    if n_modes == 0:
        raise ValueError("modes: no process holds a mode")
    indices = world.members(n_modes) if members else range(n_modes)
    plains = [check_fits(as_plain(mode, f"modes[{j}]"), data, f"modes[{j}]") for j, mode in zip(indices, modes)]
    parallel = distributed == "data"
    run = Run(
        out,
        "espro",
        dict(phase.settings(), n_vertices=n_vertices, reg=reg, reg_scale=reg_scale, noise=noise, seed=seed),
        data,
        data_parallel=parallel,
    )
    device = device_of(device)
    simplexes = []
    for i, (j, plain) in enumerate(zip(indices, plains)):
        if i < len(_grown):  # grown by an earlier round of choose_reg, with these settings
            simplexes.append(_grown[i])
            continue
        sm, template, start = _start_model(plain)  # one mode's copies at a time
        screen = _screen if j == 0 and not members else None  # choose_reg's early stop
        check = None if screen is None else _first_epoch_check(screen)
        try:
            simplexes.append(
                _grow(
                    sm,
                    data,
                    phase,
                    n_modes=1,
                    n_vertices=n_vertices,
                    noise=noise,
                    reg=reg,
                    reg_scale=reg_scale,
                    weighting="volume",
                    run=run,
                    name=f"simplex_{j}",
                    start=start,
                    template=template,
                    key=member_key(seed, "espro", j),
                    device=device,
                    progress=progress,
                    describe=f"simplex {j}",
                    data_parallel=parallel,
                    check=check,
                )
            )
        except FloatingPointError as err:
            err.member = j  # which simplex diverged (choose_reg reports the lowest over processes)
            raise
    return simplexes


def _first_epoch_check(screen):
    def check(model, vertex, epoch):
        if vertex == 1 and epoch == 0:
            screen(model)

    return check


_ESPRO_DEFAULTS = {
    k: p.default
    for k, p in inspect.signature(espro).parameters.items()
    if p.default is not inspect.Parameter.empty and not k.startswith("_")
}


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
    vertex_epochs: int = 30,
    lr: float = 0.05,
    weight_decay: float = 5e-4,
    momentum: float = 0.9,
    noise: float = 0.01,
    n_samples: int = 5,
    batch_size: int = 64,
    seed: int = 0,
    device: Device = None,
    out: Path | None = None,
    progress: bool = True,
    compile: bool = False,
    distributed: Distributed = None,
) -> SimplexModel:
    """SPRO on a simplicial complex: the m trained ``modes`` (fixed) joined through
    ``n_connectors`` shared connector vertices, K = {S(w_j, θ_0..θ_c) : j < m}, trained one
    at a time as ``grow_simplex`` trains a vertex, with points drawn from the whole complex
    (``weighting="volume"``: a simplex picked in proportion to its volume, i.e. uniform over
    the complex; or "uniform") and log V(K) = log of the sum of the simplexes' volumes.

    Returns the SimplexModel: vertices 0..m-1 the modes, m.. the connectors, its sampler the
    complex. With ``out``, ``out/complex.pt`` is written after every epoch and a second call
    resumes. ``distributed="data"``: trained data-parallel, as ``grow_simplex``."""
    dist.check_mode(distributed, (None, "data"))
    if not isinstance(modes, (list, tuple)) or not modes:
        raise ValueError("modes must be a non-empty list of trained models (or their checkpoints' paths)")
    _check_growth(reg, reg_scale, noise)
    if isinstance(n_connectors, bool) or not isinstance(n_connectors, int) or n_connectors < 1:
        raise ValueError(f"n_connectors must be an int >= 1, got {n_connectors!r}")
    if weighting not in ("volume", "uniform"):
        raise ValueError(f"weighting must be 'volume' or 'uniform', got {weighting!r}")
    phase = _vertex_phase(vertex_epochs, lr, weight_decay, momentum, batch_size, n_samples, compile)
    model, template, start = _complex_start(modes, data)
    parallel = distributed == "data"
    run = Run(
        out,
        "spro_complex",
        dict(
            phase.settings(),
            n_connectors=n_connectors,
            reg=reg,
            reg_scale=reg_scale,
            weighting=weighting,
            noise=noise,
            seed=seed,
            n_modes=len(modes),
        ),
        data,
        data_parallel=parallel,
    )
    m = len(modes)
    return _grow(
        model,
        data,
        phase,
        n_modes=m,
        n_vertices=m + n_connectors,
        noise=noise,
        reg=reg,
        reg_scale=reg_scale,
        weighting=weighting,
        run=run,
        name="complex",
        start=start,
        template=template,
        key=member_key(seed, "spro_complex", 0),
        device=device_of(device),
        progress=progress,
        describe="complex",
        data_parallel=parallel,
    )


def choose_reg(
    modes: Sequence[ModelOrPath],
    data: Dataset,
    regs: Sequence[float] = (0.1, 0.3, 1.0, 3.0),
    *,
    n_points: int = 25,
    out: Path | None = None,
    stop_early: bool = True,
    **settings,
) -> tuple[float, list[SimplexModel], list[dict]]:
    """ESPRO with each λ in ``regs`` (other settings as ``espro``'s ``settings``), scored by
    the NLL of the ensemble's prediction on ``data``'s validation split (never the test
    split; load the data with ``val_fraction=``). Returns (best λ, its simplexes, rows).

    ``stop_early`` (default), in two rounds when there are several λ:

    1. Each λ grows simplex 0 (with ``distributed="members"``, each process its first
       simplex, so the search's cost depends on the number of processes). It stops after
       the first epoch of its first added vertex when simplex 0's validation NLL there has
       lost more than half of what its mode knew: it is above the mode's validation NLL plus
       half the way from there to log C, the NLL of a uniform guess over C classes (not with
       "members", where the processes train at once).
    2. The better half of the λ left (by simplex 0's validation NLL) grow the other
       simplexes and are scored as ensembles; the others stop there. Where one diverges,
       the next in line takes its place.

    A λ that wrecks the model costs one vertex epoch and one in the worse half one simplex,
    instead of J. Without ``stop_early``, every λ grows every simplex.

    Each row: "reg", "val_nll" and "val_accuracy" (of the ensemble; inf and NaN for a λ that
    stopped or diverged), "simplex0_val_nll", "log_volume" (of simplex 0), "train_s",
    "gradient_evaluations" (the λ's training cost: examples x points over its steps),
    "stopped" / "diverged" (None, or why), "saturated" (every validation probability at
    least 1 - 1e-6: hard 0/1 outputs, whose NLL cannot rank λ), "near_hard" (at least 95%
    of them at least 0.999) and "zero_val_error". A saturated λ is chosen only when every λ
    is. With ``out``, λ's run is checkpointed in ``out/reg_{λ}``, and a second call resumes.

    ``distributed`` as ``espro``'s. Every process returns the same λ and rows (rank 0's;
    with "members" the ensemble's validation prediction is gathered from all processes,
    with "data" rank 0 scores the simplexes all hold) and its simplexes (with "members" its
    own share). A λ diverged when any process diverged; the row names the lowest simplex's
    error."""
    mode = settings.get("distributed")
    world = dist.check_mode(mode)
    together = mode is not None and world.size > 1  # collectives only when the processes train together
    if data.x_val is None:
        raise ValueError("choose_reg scores λ on a validation split: load the data with val_fraction= (e.g. 0.2)")
    if not isinstance(regs, (list, tuple)) or not regs:
        raise ValueError(f"regs must be a non-empty list of λ values, got {regs!r}")
    _checks.count(n_points, "n_points")
    if not isinstance(stop_early, bool):
        raise TypeError(f"stop_early must be a bool, got {type(stop_early).__name__}")
    for i, reg in enumerate(regs):
        if isinstance(reg, bool) or not isinstance(reg, (int, float)):
            raise TypeError(f"regs[{i}] must be a number, got {type(reg).__name__}")
        if not (math.isfinite(reg) and reg >= 0):
            raise ValueError(f"regs[{i}] must be a finite number >= 0, got {reg}")
    if len(set(regs)) != len(regs):
        raise ValueError(f"regs lists a λ more than once: {list(regs)}")
    if data.task != "classification":
        raise ValueError(
            "choose_reg ranks λ by the validation NLL of class probabilities: it needs a classification data set"
        )
    search = _RegSearch(modes, data, n_points, settings, out, world, together)
    halving = stop_early and search.cost.n_modes > 1 and len(regs) > 1
    first = modes[:1] if halving else modes
    wreck = search.wreck_check(modes[0]) if stop_early and len(regs) > 1 and mode != "members" else None
    rows = {reg: search.run(reg, first, wreck, score=not halving) for reg in regs}
    if halving:  # the better half by simplex 0 grow every simplex; the next in line where one diverges
        alive = sorted((r for r in regs if _finished(rows[r])), key=lambda r: _nan_last(rows[r]["simplex0_val_nll"]))
        wanted, done = math.ceil(len(alive) / 2), 0
        for reg in alive:
            if done < wanted:
                rows[reg] = search.run(
                    reg,
                    modes,
                    None,
                    rows[reg]["train_s"],
                    grown=search.simplexes.pop(reg),
                    simplex0_nll=rows[reg]["simplex0_val_nll"],
                )
                done += _finished(rows[reg])
            else:
                rows[reg] = {
                    **rows[reg],
                    **search.stopped(
                        f"stopped after simplex 0: its validation NLL "
                        f"{rows[reg]['simplex0_val_nll']:.4f} is in the worse half "
                        "of the λ",
                        search.cost.first_simplexes(),
                    ),
                }
    best = {}
    for reg in regs:  # the best of the saturated and of the other λ, kept apart
        row = rows[reg]
        if _finished(row):
            kind = row["saturated"]
            if kind not in best or row["val_nll"] < best[kind][0]:
                best[kind] = (row["val_nll"], reg)
    if not best:
        raise FloatingPointError(
            f"every λ in {list(regs)} diverged or wrecked the model in its first vertex epoch; try smaller values"
        )
    _, reg = best.get(False, best.get(True))
    return reg, search.simplexes[reg], [rows[r] for r in regs]


def _finished(row):
    return row["diverged"] is None and row["stopped"] is None


def _nan_last(value):
    return math.inf if math.isnan(value) else value


SATURATED = 1 - 1e-6  # a validation prediction this sure of its class is a hard 0/1 (its NLL says nothing)
NEAR_HARD = 0.999  # a top probability this high, on nearly every example, leaves NLL little to rank λ by


class _Stopped(Exception):
    """choose_reg's early stop of one λ after the first vertex epoch."""


class _RegSearch:
    """ESPRO runs of one λ at a time for ``choose_reg``, with their rows."""

    def __init__(self, modes, data, n_points, settings, out, world, together):
        self.data, self.n_points, self.settings, self.out = data, n_points, settings, out
        self.world, self.together, self.mode = world, together, settings.get("distributed")
        self.seed = settings.get("seed", 0)
        self.cost = _EsproCost(modes, data, settings, world if self.mode == "members" else dist.World())
        self.simplexes = {}

    def _val_nll(self, members):
        """The validation NLL of ``members``, computed on rank 0 when the processes train
        together, and known to every process."""
        nll = None
        if not self.together or self.world.is_main:
            nll = metrics(
                predict(members, self.data, split="val", n_points=self.n_points, seed=self.seed), self.data.y_val
            )["nll"]
        return self.world.from_main(nll) if self.together else nll

    def wreck_check(self, mode):
        """The ``espro`` screen of round 1: stops simplex 0 after its first vertex epoch when
        its validation NLL is above the mode's plus half the way to log C."""
        reference, uniform = self._val_nll([as_plain(mode, "modes[0]")]), math.log(self.data.n_classes)
        if not reference < uniform:  # a mode no better than a uniform guess: nothing to lose
            return None
        limit = reference + (uniform - reference) / 2

        def screen(model):
            nll = self._val_nll([model])
            if not nll <= limit:  # NaN included
                raise _Stopped(
                    f"stopped after the first vertex epoch: simplex 0's validation NLL {nll:.4f} is above "
                    f"{limit:.4f}, half the way from its mode's {reference:.4f} to a uniform guess's "
                    f"{uniform:.4f}"
                )

        return screen

    def stopped(self, why, evaluations):
        return {
            "val_nll": math.inf,
            "val_accuracy": math.nan,
            "stopped": why,
            "gradient_evaluations": evaluations,
            "saturated": False,
            "near_hard": False,
            "zero_val_error": False,
        }

    def run(self, reg, modes, screen, seconds=0.0, grown=(), simplex0_nll=None, score=True):
        """The row of λ ``reg`` after ``espro`` on ``modes`` (a prefix of choose_reg's, or all
        of them), with this process's first simplexes ``grown`` in an earlier round; ``seconds``
        of earlier rounds are added to its time, and simplex 0's validation NLL is
        ``simplex0_nll`` when an earlier round measured it. ``score``: the ensemble's
        validation metrics too (round 1 of the halving needs simplex 0's alone)."""
        sub = None if self.out is None else pathlib.Path(self.out) / f"reg_{reg:g}"
        started = time.perf_counter()
        simplexes, diverged, stopped = [], None, None
        try:
            simplexes = espro(modes, self.data, reg=reg, out=sub, _screen=screen, _grown=grown, **self.settings)
        except FloatingPointError as err:  # too strong a push: the loss diverged
            diverged = (getattr(err, "member", 0), str(err), self.cost.until(err))
        except _Stopped as err:
            stopped = str(err)
        if self.together:  # every process learns whether any diverged, and the lowest simplex's error
            diverged = min((d for d in self.world.objects(diverged) if d is not None), default=None)
        row = {"reg": reg, "simplex0_val_nll": math.nan, "log_volume": math.nan, "stopped": None, "diverged": None}
        if diverged is not None:
            row.update(self.stopped(None, diverged[2]), diverged=diverged[1])
        elif stopped is not None:
            row.update(self.stopped(stopped, self.cost.epochs(1)))
        else:
            for device in {s.device for s in simplexes if s.device.type == "cuda"}:
                torch.cuda.synchronize(device)
            if self.together:
                self.world.barrier()
            whole = self.cost.n_modes == (
                self.world.total(len(modes), "modes") if self.mode == "members" else len(modes)
            )
            main = self.mode != "data" or self.world.is_main  # data-parallel processes hold the same simplexes
            if score and main:
                val = predict(
                    simplexes,
                    self.data,
                    split="val",
                    n_points=self.n_points,
                    seed=self.seed,
                    distributed=self.together and self.mode == "members",
                )
                m, top = metrics(val, self.data.y_val), val.max(1).values
                row.update(
                    val_nll=m["nll"],
                    val_accuracy=m["accuracy"],
                    saturated=bool((top >= SATURATED).all()),
                    near_hard=bool((top >= NEAR_HARD).double().mean() >= 0.95),
                    zero_val_error=m["accuracy"] == 1.0,
                )
            if simplex0_nll is None:  # one simplex in all: the ensemble's (rank 0's row is the one kept)
                simplex0_nll = row.get("val_nll") if score and self.cost.n_modes == 1 else self._val_nll(simplexes[:1])
            row.update(simplex0_val_nll=simplex0_nll, log_volume=_last_log_volume(simplexes))
            row["gradient_evaluations"] = self.cost.whole() if whole else self.cost.first_simplexes()
            self.simplexes[reg] = simplexes
        row["train_s"] = seconds + time.perf_counter() - started
        return self.world.from_main(row) if self.together else row  # rank 0's, so that all pick the same λ


class _EsproCost:
    """Gradient evaluations of ESPRO's training with choose_reg's ``settings`` (``espro``'s
    defaults where not given) on this process's ``modes`` (all J, or with a ``world`` of
    "members" processes the whole ensemble's)."""

    def __init__(self, modes, data, settings, world):
        given = {**_ESPRO_DEFAULTS, **settings}
        self.phase = _vertex_phase(
            given["vertex_epochs"],
            given["lr"],
            given["weight_decay"],
            given["momentum"],
            given["batch_size"],
            given["n_samples"],
            False,
        )
        self.n_added = given["n_vertices"] - 1
        self.n_modes = world.total(len(modes), "modes") if world.size > 1 else len(modes)
        self.n_train, self.processes = len(data.x_train), world.size

    def epochs(self, n):
        return self.phase.gradient_evaluations(self.n_train, epochs=n)

    def simplex(self):
        return self.n_added * self.epochs(self.phase.epochs)

    def whole(self):
        return self.n_modes * self.simplex()

    def first_simplexes(self):
        """Round 1's: one simplex, or with "members" processes one per process (so the
        search's cost depends on their number)."""
        return min(self.processes, self.n_modes) * self.simplex()

    def until(self, err):
        """The work before a FloatingPointError of ``espro``, the epoch that diverged counted whole."""
        vertices = getattr(err, "member", 0) * self.n_added + getattr(err, "vertex", 1) - 1
        return vertices * self.epochs(self.phase.epochs) + self.epochs(getattr(err, "epoch", 0) + 1)


def _last_log_volume(simplexes):
    """log V of simplex 0 when this process holds it (rank 0 does), else NaN."""
    history = simplexes[0].metadata["history"] if simplexes else []
    return history[-1]["log_volume"] if history else math.nan


def dimensionality_sweep(
    modes: ModelOrPath | Sequence[ModelOrPath],
    data: Dataset,
    max_connectors: int = 4,
    *,
    n_points: int = 25,
    seed: int = 0,
    **settings,
) -> tuple[SimplexModel, list[dict]]:
    """The dimensionality of the low-loss region (paper §4.3): trains ``spro_complex(modes,
    data, max_connectors, seed=seed, **settings)`` (for one mode: a simplex grown vertex by
    vertex) and, for each number of connectors c = 1..max_connectors, evaluates the
    sub-complex of the first c connectors: its log V and ``n_points`` points sampled from
    it. Returns (model, rows), each row a dict: "connectors", "vertices", "log_volume",
    "train_loss" / "train_error" / "test_error" (mean over the points), "train_error_max"
    (the worst point) and "test_error_ensemble" (the points' averaged prediction)."""
    modes = list(modes) if isinstance(modes, (list, tuple)) else [modes]
    _checks.count(max_connectors, "max_connectors")
    if len(modes) == 1:
        model = grow_simplex(modes[0], data, 1 + max_connectors, seed=seed, **settings)
    else:
        model = spro_complex(modes, data, max_connectors, seed=seed, **settings)
    m = len(modes)
    rows = []
    with torch.no_grad():
        for c in range(1, max_connectors + 1):
            simplices = [(j, *range(m, m + c)) for j in range(m)]
            generator = torch.Generator(model.device).manual_seed(derive_seed(seed, c))
            points = ComplexSampler(simplices).sample(n_points, model, generator)
            values = metrics_at(model, points, data)
            probs = torch.cat(
                [
                    torch.softmax(out.float(), -1).mean(0).cpu()
                    for _, out in outputs_at(model, data.x_test, points, bn_inputs=data.x_train)
                ]
            )
            rows.append(
                {
                    "connectors": c,
                    "vertices": m + c,
                    "log_volume": float(log_volume(model, simplices)),
                    "train_loss": float(values["train_loss"].mean()),
                    "train_error": float(values["train_error"].mean()),
                    "train_error_max": float(values["train_error"].max()),
                    "test_error": float(values["test_error"].mean()),
                    "test_error_ensemble": 1 - metrics(probs, data.y_test)["accuracy"],
                }
            )
    return model, rows


__all__ = ["grow_simplex", "espro", "choose_reg", "spro_complex", "dimensionality_sweep", "REG_SCALES"]
