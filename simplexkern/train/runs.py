"""An output folder of a training run: one checkpoint per member, written atomically after
every epoch and every finished vertex / member, each recording the algorithm, its settings,
what it started from and how far it got; calling an algorithm again with the same folder
resumes from there."""

import dataclasses
import hashlib
import json
import os
import pathlib
import zlib
from collections.abc import Callable
from typing import TypeVar

import torch
from tqdm.auto import tqdm

from simplexkern import _checks, distributed
from simplexkern._atomic import remove_leftovers
from simplexkern.data.dataset import check_dataset
from simplexkern.nn import checkpoint
from simplexkern.nn.model import SimplexModel
from simplexkern.train.loop import run_phase, steps_per_epoch


def _digest(named_tensors, prefix=""):
    """SHA-256 of (name, tensor) pairs: names, shapes, dtypes and values."""
    h = hashlib.sha256(prefix.encode())
    for name, t in named_tensors:
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def fingerprint(module):
    """SHA-256 of a module's state: what a run started from."""
    return _digest(module.state_dict().items())


def member_key(seed, algorithm, member):
    """The seed key of one member: its result depends on (seed, algorithm, member) only, not
    on which other members were trained in the same run."""
    _checks.count(seed, "seed", minimum=0)
    return (seed, zlib.crc32(algorithm.encode()), member)


def device_of(device):
    """``device`` as a torch.device; None picks the GPU when there is one."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:N' or a torch.device, got {device!r}") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be a CPU or a CUDA device, got {device}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device} was asked for, but no CUDA GPU is available")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"device {device} was asked for, but there are {torch.cuda.device_count()} CUDA GPUs")
    return device


def data_fingerprint(data, all_splits=False):
    """SHA-256 of a data set's training split (a run resumes only on the data it started on),
    or of all its splits."""
    names = ("train", "val", "test") if all_splits else ("train",)
    return _digest(
        [
            (f"{xy}_{split}", getattr(data, f"{xy}_{split}"))
            for split in names
            for xy in "xy"
            if getattr(data, f"{xy}_{split}") is not None
        ],
        data.task,
    )


M = TypeVar("M", bound=torch.nn.Module)
_MEMBER_COUNTS = ("n_models", "n_modes")  # recorded by earlier ensembles; their members do not depend on them


class Run:
    """Checkpoints of one algorithm's members in ``out`` (None: nothing is written). The
    settings recorded with them include the fingerprint of ``data``'s training split.
    ``data_parallel``: the run of all processes of the process group together; rank 0
    writes for all, and all must resume from the same point."""

    def __init__(self, out, algorithm, settings, data, data_parallel=False):
        check_dataset(data)
        self.algorithm, self.world = algorithm, distributed.world() if data_parallel else distributed.World()
        self.writes = self.world.is_main
        if out is not None:
            settings = {**settings, "data": data_fingerprint(data)}
        self.settings = json.loads(json.dumps(settings))  # as it reads back (tuples become lists)
        self.out = None
        if out is not None:  # made at the first checkpoint: a refusal before training writes nothing
            if not isinstance(out, (str, os.PathLike)) or not os.fspath(out):
                raise TypeError(f"out must be the path of a folder or None, got {out!r}")
            self.out = pathlib.Path(out)
            if self.out.exists() and not self.out.is_dir():
                raise ValueError(f"out: {self.out} exists and is not a folder")
            if self.out.is_dir() and self.writes:
                remove_leftovers(self.out)

    def path(self, name):
        return None if self.out is None else self.out / f"{name}.pt"

    def state(self, name, start):
        """(progress metadata, training state) of member ``name``'s checkpoint, or (None, None)
        when there is none. ``start`` is the fingerprint of what the member starts from; a
        checkpoint of another algorithm, other settings or another start is refused."""
        path = self.path(name)
        if path is None or not path.exists():
            return None, None
        meta, state = checkpoint.read_training_state(path)
        recorded = {
            k: v for k, v in (meta.get("settings") or {}).items() if k in self.settings or k not in _MEMBER_COUNTS
        }
        theirs = meta.get("algorithm"), recorded
        if theirs != (self.algorithm, self.settings):
            changed = sorted(
                k for k in set(self.settings) | set(theirs[1] or {}) if (theirs[1] or {}).get(k) != self.settings.get(k)
            )
            raise ValueError(
                f"{path} belongs to another run ({theirs[0]}; settings that differ: "
                f"{', '.join(changed) or 'none'}); use another out folder, or remove it to start over"
            )
        if meta.get("start") != start:
            raise ValueError(
                f"{path} was trained from other starting weights than the model given; use another out "
                "folder, or remove it to start over"
            )
        return meta, state

    def resume(self, name, start):
        """(progress metadata or None, the first epoch to run, the optimizer state) of member
        ``name``: where an unfinished checkpoint left off, else from the start."""
        meta, state = self.state(name, start)
        where = None if meta is None else {k: meta.get(k) for k in ("done", "epoch", "vertices_done")}
        self.world.all_same(where, f"the checkpoints of {name} (done, epoch, vertices) in {self.out}")
        if meta is None or meta.get("done"):
            return meta, 0, None
        return meta, meta["epoch"], (state or {}).get("optimizer")

    def save(self, name, model, start, progress, optimizer=None):
        """Writes member ``name``'s checkpoint: the model, ``progress`` (a JSON dict) and the
        optimizer's state when given."""
        if self.out is None or not self.writes:
            return
        meta = {"algorithm": self.algorithm, "settings": self.settings, "start": start, **progress}
        state = {"optimizer": optimizer.state_dict()} if optimizer is not None else None
        self.out.mkdir(parents=True, exist_ok=True)
        checkpoint.save(model, self.path(name), metadata=meta, training_state=state)


@dataclasses.dataclass(frozen=True)
class Resumed:
    """Where a member's training goes on: its checkpoint's progress metadata (None: there is
    none), the first epoch to run and the optimizer's state."""

    meta: dict | None
    first_epoch: int = 0
    optimizer_state: dict | None = None


def train_member(
    run: "Run",
    name: str,
    start: str,
    model: M,
    train: Callable[[M, Resumed], dict],
    *,
    load: Callable[[pathlib.Path], M],
    device: torch.device,
) -> M:
    """The lifecycle of member ``name`` of ``run``, which starts from weights of fingerprint
    ``start``: resumed from its checkpoint when there is one (``load(path)`` gives the model
    saved there, else ``model`` is used), returned at once when that checkpoint is finished,
    else ``train(model, resumed)`` trains it and returns the progress metadata of its final
    checkpoint, which is written. Returns the model, on ``device``."""
    meta, first, optimizer_state = run.resume(name, start)
    if meta is not None:
        model = load(run.path(name))
    model.to(device)
    if meta is None or not meta.get("done"):
        run.save(name, model, start, train(model, Resumed(meta, first, optimizer_state)))
    return model


def check_plain(model, name, what="a plain torch.nn.Module"):
    if isinstance(model, SimplexModel) or not isinstance(model, torch.nn.Module):
        raise TypeError(f"{name} must be {what}, got {type(model).__name__}")
    return model


def check_fits(model, data, name="model"):
    """ValueError unless the plain ``model`` takes ``data``'s inputs (its floating-point
    parameters of their dtype) and gives one row of ``data.n_outputs`` outputs per input: one
    forward of two training inputs in eval mode, without gradients, the mode put back."""
    check_dataset(data)
    if data.vocab_size is None:  # token ids are indices, whatever the parameters' dtype
        _checks.parameters_match(model, data.x_train, name, f"the inputs of {data.name}")
    param = next(model.parameters(), None)
    x = data.x_train[:2].to(param.device if param is not None else "cpu")
    was_training = model.training
    try:
        with torch.no_grad():
            out = model.eval()(x)
    except (RuntimeError, ValueError, TypeError, IndexError, AssertionError) as err:
        raise ValueError(f"{name} does not take the inputs of {data.describe()}: {_checks.reason(err)}") from None
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor) or out.shape != (len(x), data.n_outputs):
        what = tuple(out.shape[1:]) if isinstance(out, torch.Tensor) else type(out).__name__
        got = f"{what[0]} outputs" if isinstance(what, tuple) and len(what) == 1 else f"outputs {what}"
        need = f"{data.n_classes} classes" if data.task == "classification" else "1 output (regression)"
        raise ValueError(f"{name} gives {got} per input; {data.name} needs {need}")
    return model


def as_plain(model, name) -> torch.nn.Module:
    """A plain model given as a module or as the path of a checkpoint of one."""
    if isinstance(model, (str, os.PathLike)):
        return checkpoint.load_module(model)
    return check_plain(model, name, "a plain torch.nn.Module or the path of its checkpoint")


def train_phase(
    model,
    data,
    phase,
    *,
    run,
    name,
    start,
    key,
    execution,
    describe,
    resumed=Resumed(None),
    record=None,
    on_step=None,
    check=None,
):
    """``run_phase`` with ``execution``'s device, progress bar and distribution, from where
    ``resumed`` says, and a checkpoint after every epoch; ``record`` (a JSON dict) goes into
    every checkpoint's progress metadata; ``check(epoch)``, when given, runs before each
    epoch's checkpoint is written (an exception it raises stops the phase with the previous
    checkpoint in place). A data-parallel phase shows its bar on rank 0 only."""
    progress, data_parallel = _checks.flag(execution.progress, "progress"), execution.data_parallel
    n = steps_per_epoch(len(data.x_train), phase.batch_size)
    world, label, position = distributed.world(), describe, None
    if data_parallel and not world.is_main:
        progress = False
    elif world.size > 1 and not data_parallel:  # one line per process
        label, position = f"rank {world.rank}: {describe}", world.rank
    with tqdm(
        total=phase.epochs * n,
        initial=resumed.first_epoch * n,
        desc=label,
        disable=not progress,
        unit="step",
        position=position,
    ) as bar:

        def on_epoch(epoch, optimizer):
            if check is not None:
                check(epoch)
            run.save(name, model, start, {**(record or {}), "epoch": epoch + 1, "done": False}, optimizer)

        return run_phase(
            model,
            data,
            phase,
            key=key,
            device=device_of(execution.device),
            start_epoch=resumed.first_epoch,
            optimizer_state=resumed.optimizer_state,
            on_epoch=on_epoch,
            on_step=on_step,
            bar=bar,
            describe=describe,
            data_parallel=data_parallel,
        )
