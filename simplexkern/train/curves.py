"""Curves of low loss between two trained models, and Fast Geometric Ensembling (Garipov et
al., 2018; SPEC §6)."""

import copy

import torch
from torch import nn

from simplexkern import _checks
from simplexkern import distributed as dist
from simplexkern._types import ModelOrPath
from simplexkern.data import Dataset
from simplexkern.data.batches import steps_per_epoch
from simplexkern.nn import checkpoint
from simplexkern.nn.convert import simplexify
from simplexkern.nn.model import SimplexModel
from simplexkern.nn.samplers import CurveSampler
from simplexkern.train.loop import Phase
from simplexkern.train.runs import (
    Run,
    as_plain,
    check_fits,
    device_of,
    fingerprint,
    member_key,
    train_member,
    train_phase,
)
from simplexkern.train.settings import CURVE, MODE, Execution, Optimisation, settings

KINDS = ("bezier", "polychain")


def curve_model(a: nn.Module, b: nn.Module, kind: str = "bezier", n_bends: int = 3) -> SimplexModel:
    """A SimplexModel whose vertices are the control points of a curve from ``a`` to ``b``
    (plain models of one architecture): vertex 0 = a and vertex n_bends - 1 = b (fixed,
    with their own BatchNorm statistics), the interior ones evenly spaced on the segment
    between them (trainable); its sampler draws t ~ U(0, 1)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    _checks.count(n_bends, "n_bends (control points, the two ends included)", minimum=3)
    model = simplexify(a)
    for _ in range(n_bends - 1):
        model.add_vertex("copy", noise=0)
    try:
        model.set_vertex(n_bends - 1, b.state_dict())
    except ValueError as err:
        raise ValueError(f"b is not a model of a's architecture: {err}") from None
    with torch.no_grad():
        ends = model.store.vertices()[[0, n_bends - 1]]
        for i in range(1, n_bends - 1):
            t = i / (n_bends - 1)
            model.store.set_vertex(i, (1 - t) * ends[0] + t * ends[1])
    model.fix(0)
    model.fix(n_bends - 1)
    model.sampler = CurveSampler(kind)
    return model


def train_curve(
    a: ModelOrPath,
    b: ModelOrPath,
    data: Dataset,
    kind: str = "bezier",
    n_bends: int = 3,
    *,
    n_samples: int = 5,
    optimisation: Optimisation | None = None,
    execution: Execution | None = None,
    **keywords,
) -> SimplexModel:
    """Trains a Bezier or polygonal-chain curve between the trained models ``a`` and ``b``
    (plain models or their checkpoints' paths): the endpoints stay fixed, the
    ``n_bends - 2`` interior control points (initialised on the segment) minimise
    E_{t ~ U(0,1)} L(φ(t)), estimated with ``n_samples`` (H) values of t per step in one
    forward. ``n_bends`` counts the control points, the two ends included (3: one trainable
    bend). Settings: ``optimisation`` (default ``settings.CURVE``: 50 epochs of SGD with
    momentum and a cosine schedule from lr 0.05) and ``execution``, or their fields as
    keywords (``epochs=``, ``lr=``, ``seed=``, ``out=``, ...).

    Returns the curve as a SimplexModel (vertex order = control points; sampler
    ``CurveSampler(kind)``), all vertices fixed. With ``out``, ``out/curve.pt`` is written
    after every epoch and a second call resumes. ``distributed="data"``: trained
    data-parallel by all processes of the process group (``simplexkern.distributed``).
    """
    optimisation, execution = settings("train_curve", keywords, optimisation, execution, CURVE)
    dist.check_mode(execution.distributed, (None, "data"))
    a, b = as_plain(a, "a"), as_plain(b, "b")
    check_fits(a, data, "a")
    check_fits(b, data, "b")
    model = curve_model(a, b, kind, n_bends)
    phase = optimisation.phase(n_samples=n_samples, compile=execution.compile)
    record = {**phase.settings(), "kind": kind, "n_bends": n_bends, "seed": execution.seed}
    run = Run(execution.out, "train_curve", record, data, data_parallel=execution.data_parallel)
    start = fingerprint(a) + ":" + fingerprint(b)
    device = device_of(execution.device)

    def train(model, resumed):
        train_phase(
            model,
            data,
            phase,
            run=run,
            name="curve",
            start=start,
            key=member_key(execution.seed, "train_curve", 0),
            execution=execution,
            describe=f"{kind} curve",
            resumed=resumed,
        )
        for i in range(1, n_bends - 1):
            model.fix(i)
        return {"epoch": phase.epochs, "done": True}

    load = lambda path: checkpoint.load(path, model=copy.deepcopy(a))
    return train_member(run, "curve", start, model, train, load=load, device=device).eval()


def fge(
    model: ModelOrPath,
    data: Dataset,
    cycles: int = 4,
    cycle_epochs: int = 2,
    lr1: float = 0.05,
    lr2: float = 0.0005,
    *,
    optimisation: Optimisation | None = None,
    execution: Execution | None = None,
    **keywords,
) -> list[nn.Module]:
    """Fast Geometric Ensembling: from the trained ``model`` (plain, or its checkpoint's
    path), ``cycles`` cycles of ``cycle_epochs`` epochs with a triangular learning rate
    lr1 -> lr2 -> lr1, and a snapshot at each cycle's minimum (the step run at lr2, the
    middle of the cycle). Returns the snapshots (plain models, in eval mode; their
    ``fge_snapshot`` attribute records the cycle, step and learning rate). Settings:
    ``optimisation``'s momentum, weight decay and batch size (its epochs and lr are the
    cycles') and ``execution``, or their fields as keywords.

    With ``out``, the run is checkpointed in ``out/fge.pt`` after every epoch and each
    snapshot in ``out/fge_snapshot_{c}.pt``; a second call resumes. ``distributed="data"``:
    trained data-parallel by all processes of the process group (``simplexkern.distributed``).
    """
    optimisation, execution = settings("fge", keywords, optimisation, execution, MODE, epochs=None)
    dist.check_mode(execution.distributed, (None, "data"))
    model = as_plain(model, "model")
    _checks.count(cycles, "cycles")
    _checks.count(cycle_epochs, "cycle_epochs")
    phase = Phase(
        epochs=cycles * cycle_epochs,
        lr=lr1,
        lr_min=lr2,
        schedule="cyclic",
        cycle_epochs=cycle_epochs,
        weight_decay=optimisation.weight_decay,
        momentum=optimisation.momentum,
        batch_size=optimisation.batch_size,
        compile=execution.compile,
    )
    if not lr2 < lr1:
        raise ValueError(f"lr2 (the cycle's minimum) must be below lr1, got lr1={lr1}, lr2={lr2}")
    check_fits(model, data)
    n = steps_per_epoch(len(data.x_train), phase.batch_size)
    per_cycle, middle = cycle_epochs * n, phase.cycle_minimum(n)
    if middle < 1:
        raise ValueError(
            f"a cycle of {per_cycle} step(s) has no middle step to snapshot: use more cycle_epochs or a "
            "smaller batch_size"
        )
    record = {**phase.settings(), "cycles": cycles, "seed": execution.seed}
    run = Run(execution.out, "fge", record, data, data_parallel=execution.data_parallel)
    start = fingerprint(model)
    device = device_of(execution.device)
    snapshots = {}

    def snapshot(model, step):
        if step % per_cycle == middle:
            c = step // per_cycle
            info = {"cycle": c, "step": step, "lr": phase.lr_at(step, n)}
            snap = copy.deepcopy(model).eval()
            snap.fge_snapshot = info
            snapshots[c] = snap
            run.save(f"fge_snapshot_{c}", snap, start, {**info, "done": True})

    def train(model, resumed):
        train_phase(
            model,
            data,
            phase,
            run=run,
            name="fge",
            start=start,
            key=member_key(execution.seed, "fge", 0),
            execution=execution,
            describe="fge",
            resumed=resumed,
            on_step=lambda step: snapshot(model, step),
        )
        return {"epoch": phase.epochs, "done": True}

    copied = copy.deepcopy(model)
    load = lambda path: checkpoint.load_module(path, model=copied)
    model = train_member(run, "fge", start, copied, train, load=load, device=device)
    for c in range(cycles):
        if c not in snapshots:  # taken before a resume: read back from its checkpoint
            snap_meta, _ = run.state(f"fge_snapshot_{c}", start)
            snap = checkpoint.load_module(run.path(f"fge_snapshot_{c}"), model=copy.deepcopy(model)).to(device).eval()
            snap.fge_snapshot = {k: snap_meta[k] for k in ("cycle", "step", "lr")}  # type: ignore[assignment]
            snapshots[c] = snap
    return [snapshots[c] for c in range(cycles)]
