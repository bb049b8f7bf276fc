"""Ordinary training of plain models: one mode (``train_mode``) and the deep-ensemble
baseline (``deep_ensemble``), J independently initialised and trained models."""

import copy
from collections.abc import Callable

from torch import nn

from simplexkern import _checks, models
from simplexkern import distributed as dist
from simplexkern._seeds import derive_seed, seeded
from simplexkern.data import Dataset
from simplexkern.nn import checkpoint
from simplexkern.train.loop import INIT
from simplexkern.train.runs import (
    Run,
    check_fits,
    check_plain,
    device_of,
    fingerprint,
    member_key,
    train_member,
    train_phase,
)
from simplexkern.train.settings import MODE, Execution, Optimisation, settings


def train_mode(
    model: nn.Module,
    data: Dataset,
    *,
    optimisation: Optimisation | None = None,
    execution: Execution | None = None,
    **keywords,
) -> nn.Module:
    """Ordinary training of the plain ``model`` on ``data`` (a ``simplexkern.data.Dataset``)
    with ``optimisation`` (default ``settings.MODE``: 100 epochs of SGD with momentum 0.9,
    weight decay 5e-4, batches of 64 and a cosine schedule from lr 0.05 to 0) and
    ``execution``, or their fields as keywords (``epochs=``, ``lr=``, ``seed=``,
    ``device=``, ...). Returns the trained model, a copy on the device (default: the GPU if
    any) in eval mode; ``model`` itself is left as it was.

    With ``out`` (a folder) it writes ``out/mode.pt`` after every epoch; calling again with
    the same folder resumes from there (and returns the finished model at once when done).
    ``compile=True`` runs each step's loss under ``torch.compile`` (see ``Phase``).
    ``distributed="data"``: trained data-parallel by all processes of the process group
    (``simplexkern.distributed``), rank 0 writing the checkpoint.
    """
    optimisation, execution = settings("train_mode", keywords, optimisation, execution, MODE)
    check_plain(model, "model")
    dist.check_mode(execution.distributed, (None, "data"))
    check_fits(model, data)
    phase = optimisation.phase(compile=execution.compile)
    run = Run(
        execution.out,
        "train_mode",
        {**phase.settings(), "seed": execution.seed},
        data,
        data_parallel=execution.data_parallel,
    )
    key = member_key(execution.seed, "train_mode", 0)
    return _train(model, data, phase, run, "mode", key, execution, "mode")


def _train(model, data, phase, run, name, key, execution, describe):
    """Member ``name`` of ``run``: a copy of the plain ``model`` trained for ``phase``."""
    device, copied = device_of(execution.device), copy.deepcopy(model)

    def train(model, resumed):
        train_phase(
            model,
            data,
            phase,
            run=run,
            name=name,
            start=start,
            key=key,
            execution=execution,
            describe=describe,
            resumed=resumed,
        )
        return {"epoch": phase.epochs, "done": True}

    start = fingerprint(model)
    load = lambda path: checkpoint.load_module(path, model=copied)  # into the copy, in place
    return train_member(run, name, start, copied, train, load=load, device=device).eval()


def deep_ensemble(
    architecture: str | Callable[[], nn.Module],
    data: Dataset,
    n_models: int = 3,
    *,
    optimisation: Optimisation | None = None,
    execution: Execution | None = None,
    **keywords,
) -> list[nn.Module]:
    """The deep-ensemble baseline: ``n_models`` (J) models, each initialised from its own
    seed and trained as ``train_mode`` does (the same settings and keywords).
    ``architecture``: a ``simplexkern.models`` name (sized for ``data`` by
    ``models.for_data``) or a function returning a fresh model. Member j's result depends
    only on (seed, j). With ``out``, member j is checkpointed in ``out/mode_{j}.pt`` and a
    second call resumes (with a larger ``n_models``: adds members). Returns the J trained
    models.

    Across the processes of a process group (``simplexkern.distributed``):
    ``distributed="members"`` trains this process's share, members rank, rank + W, ..., and
    returns those; ``"data"`` trains every member data-parallel with all processes, one
    after another, and returns all J."""
    optimisation, execution = settings("deep_ensemble", keywords, optimisation, execution, MODE)
    _checks.count(n_models, "n_models")
    if isinstance(architecture, str):

        def factory():
            return models.for_data(architecture, data)
    elif callable(architecture):
        factory = architecture
    else:
        raise TypeError(
            f"architecture must be a model name or a function returning a model, got {type(architecture).__name__}"
        )
    world = dist.check_mode(execution.distributed)
    phase = optimisation.phase(compile=execution.compile)
    run = Run(
        execution.out,
        "deep_ensemble",
        {**phase.settings(), "seed": execution.seed},
        data,
        data_parallel=execution.data_parallel,
    )
    members = []
    for j in world.members(n_models) if execution.distributed == "members" else range(n_models):
        key = member_key(execution.seed, "deep_ensemble", j)
        with seeded(derive_seed(*key, INIT)):  # the initialisation comes from the member's own seed
            model = factory()
        check_plain(model, "the model the architecture gives")
        check_fits(model, data, "the model the architecture gives")
        members.append(_train(model, data, phase, run, f"mode_{j}", key, execution, f"mode {j}"))
    return members
