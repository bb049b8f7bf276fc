"""Ordinary training of plain models: one mode (``train_mode``) and the deep-ensemble
baseline (``deep_ensemble``), J independently initialised and trained models."""

import copy
from collections.abc import Callable

from torch import nn

from simplexkern import distributed as dist
from simplexkern import models
from simplexkern._seeds import derive_seed, seeded
from simplexkern._types import Device, Distributed, Path
from simplexkern.data import Dataset
from simplexkern.nn import checkpoint
from simplexkern.train.loop import INIT, Phase
from simplexkern.train.runs import Run, check_fits, check_plain, device_of, fingerprint, member_key, train_phase


def train_mode(
    model: nn.Module,
    data: Dataset,
    *,
    epochs: int = 100,
    lr: float = 0.05,
    weight_decay: float = 5e-4,
    momentum: float = 0.9,
    batch_size: int = 64,
    seed: int = 0,
    device: Device = None,
    out: Path | None = None,
    progress: bool = True,
    compile: bool = False,
    distributed: Distributed = None,
) -> nn.Module:
    """Ordinary training of the plain ``model`` on ``data`` (a ``simplexkern.data.Dataset``):
    SGD with momentum, weight decay and a cosine schedule from ``lr`` to 0 (SPEC defaults:
    lr 0.05, weight decay 5e-4). Returns the trained model, a copy on ``device`` (default:
    the GPU if any) in eval mode; ``model`` itself is left as it was.

    With ``out`` (a folder) it writes ``out/mode.pt`` after every epoch; calling again with
    the same folder resumes from there (and returns the finished model at once when done).
    ``compile=True`` runs each step's loss under ``torch.compile`` (see ``Phase``).
    ``distributed="data"``: trained data-parallel by all processes of the process group
    (``simplexkern.distributed``), rank 0 writing the checkpoint.
    """
    check_plain(model, "model")
    dist.check_mode(distributed, (None, "data"))
    check_fits(model, data)
    phase = Phase(
        epochs=epochs, lr=lr, weight_decay=weight_decay, momentum=momentum, batch_size=batch_size, compile=compile
    )
    parallel = distributed == "data"
    run = Run(out, "train_mode", {**phase.settings(), "seed": seed}, data, data_parallel=parallel)
    return _train(
        model,
        data,
        phase,
        run,
        "mode",
        member_key(seed, "train_mode", 0),
        device_of(device),
        progress,
        "mode",
        parallel,
    )


def _train(model, data, phase, run, name, key, device, progress, describe, data_parallel=False):
    start = fingerprint(model)
    meta, first, optimizer_state = run.resume(name, start)
    model = copy.deepcopy(model).to(device)
    if meta is not None:
        checkpoint.load_module(run.path(name), model=model)  # into the copy, in place
        model.to(device)
        if meta.get("done"):
            return model.eval()
    train_phase(
        model,
        data,
        phase,
        run=run,
        name=name,
        start=start,
        key=key,
        device=device,
        progress=progress,
        describe=describe,
        first_epoch=first,
        optimizer_state=optimizer_state,
        data_parallel=data_parallel,
    )
    run.save(name, model, start, {"epoch": phase.epochs, "done": True})
    return model.eval()


def deep_ensemble(
    architecture: str | Callable[[], nn.Module],
    data: Dataset,
    n_models: int = 3,
    *,
    epochs: int = 100,
    lr: float = 0.05,
    weight_decay: float = 5e-4,
    momentum: float = 0.9,
    batch_size: int = 64,
    seed: int = 0,
    device: Device = None,
    out: Path | None = None,
    progress: bool = True,
    compile: bool = False,
    distributed: Distributed = None,
) -> list[nn.Module]:
    """The deep-ensemble baseline: ``n_models`` (J) models, each initialised from its own
    seed and trained as ``train_mode`` does. ``architecture``: a ``simplexkern.models``
    name (sized for ``data`` by ``models.for_data``) or a function returning a fresh model.
    Member j's result depends only on (seed, j). With ``out``, member j is checkpointed in
    ``out/mode_{j}.pt`` and a second call resumes (with a larger ``n_models``: adds members).
    Returns the J trained models.

    Across the processes of a process group (``simplexkern.distributed``):
    ``distributed="members"`` trains this process's share, members rank, rank + W, ..., and
    returns those; ``"data"`` trains every member data-parallel with all processes, one
    after another, and returns all J."""
    if isinstance(n_models, bool) or not isinstance(n_models, int) or n_models < 1:
        raise ValueError(f"n_models must be an int >= 1, got {n_models!r}")
    if isinstance(architecture, str):

        def factory():
            return models.for_data(architecture, data)
    elif callable(architecture):
        factory = architecture
    else:
        raise TypeError(
            f"architecture must be a model name or a function returning a model, got {type(architecture).__name__}"
        )
    world = dist.check_mode(distributed)
    phase = Phase(
        epochs=epochs, lr=lr, weight_decay=weight_decay, momentum=momentum, batch_size=batch_size, compile=compile
    )
    parallel = distributed == "data"
    run = Run(out, "deep_ensemble", {**phase.settings(), "seed": seed}, data, data_parallel=parallel)
    device = device_of(device)
    members = []
    for j in world.members(n_models) if distributed == "members" else range(n_models):
        key = member_key(seed, "deep_ensemble", j)
        with seeded(derive_seed(*key, INIT)):  # the initialisation comes from the member's own seed
            model = factory()
        check_plain(model, "the model the architecture gives")
        check_fits(model, data, "the model the architecture gives")
        members.append(_train(model, data, phase, run, f"mode_{j}", key, device, progress, f"mode {j}", parallel))
    return members
