"""The one training loop every algorithm runs.

A ``Phase`` says what one optimisation run does: epochs, learning-rate schedule, SGD
settings, how many points H each step draws from a simplex model's sampler, and the
regularisation strength λ of ``- λ log V``. The algorithms differ only in which vertices
are trainable, the sampler and λ, never in the loop.

A step reads no tensor value on the host: running losses and the first non-finite step
stay on the device and are read once per progress update (``Phase.read_every`` steps and
at each epoch's end). All randomness of an epoch (data order, sampled points,
augmentation) comes from generators seeded by (seed, member, stage, epoch), so a run
resumed from an epoch checkpoint repeats the uninterrupted run exactly.
"""

import dataclasses
import math
from collections.abc import Callable
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from simplexkern import _checks
from simplexkern import distributed as dist
from simplexkern._seeds import derive_seed, seeded
from simplexkern.data.batches import batches, epoch_batches, steps_per_epoch
from simplexkern.data.dataset import Dataset, check_dataset
from simplexkern.eval.metrics import gaussian_nll
from simplexkern.nn.batchnorm import SimplexBatchNorm
from simplexkern.nn.model import SimplexModel

SCHEDULES = ("cosine", "constant", "cyclic")
INIT = 2**31 - 1  # the stage of a key that seeds initialisations (random vertices, fresh models)


@dataclasses.dataclass(frozen=True)
class Phase:
    """One optimisation run. ``schedule``: "cosine" (lr -> lr_min over the phase),
    "constant", or "cyclic" (FGE's triangle: lr -> lr_min -> lr every ``cycle_epochs``,
    reaching lr_min exactly at the middle step of each cycle)."""

    epochs: int
    lr: float
    schedule: str = "cosine"
    lr_min: float = 0.0
    cycle_epochs: Optional[int] = None
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 64
    n_samples: Optional[int] = None  # H points per step (simplex models)
    reg: float = 0.0  # λ: the loss is mean_h L(θ_h) - reg * log V
    reg_simplices: Optional[Sequence[Sequence[int]]] = None  # log V of the complex of these (None: all vertices)
    read_every: int = 25
    compile: bool = False  # the step's loss (forward, loss, log V and their backward) under torch.compile

    def __post_init__(self):
        # checked, and kept as Python numbers (a NumPy scalar would not go into a checkpoint's JSON)
        for name in ("epochs", "batch_size", "read_every"):
            object.__setattr__(self, name, _checks.count(getattr(self, name), name))
        if self.n_samples is not None:
            object.__setattr__(self, "n_samples", _checks.count(self.n_samples, "n_samples"))
        _checks.flag(self.compile, "compile")
        for name in ("lr", "lr_min", "momentum", "weight_decay", "reg"):
            object.__setattr__(self, name, _checks.number(getattr(self, name), name, minimum=0))
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.momentum >= 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.schedule == "cyclic":
            object.__setattr__(self, "cycle_epochs", _checks.count(self.cycle_epochs, "cycle_epochs"))
            if self.epochs % self.cycle_epochs:
                raise ValueError(f"epochs ({self.epochs}) must be a multiple of cycle_epochs ({self.cycle_epochs})")

    def settings(self) -> dict:
        """The fields a run records (λ and the complex are recorded by the algorithm)."""
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name not in ("reg", "reg_simplices", "read_every", "compile")
        }

    def gradient_evaluations(self, n_train: int, epochs: int | None = None) -> int:
        """The phase's cost in gradient evaluations, the same on any machine: training
        examples x points (H, or 1 for a plain model) summed over the steps of ``epochs``
        (default: all) epochs over ``n_train`` examples. Data-parallel processes share them."""
        epochs = self.epochs if epochs is None else epochs
        return epochs * epoch_batches(n_train, self.batch_size)[1] * (self.n_samples or 1)

    def lr_at(self, step: int, steps_per_epoch: int) -> float:
        """The learning rate of global step ``step`` (0-based)."""
        total = self.epochs * steps_per_epoch
        if self.schedule == "constant":
            return self.lr
        if self.schedule == "cosine":
            return self.lr_min + 0.5 * (self.lr - self.lr_min) * (1 + math.cos(math.pi * step / total))
        n = self._cycle_epochs() * steps_per_epoch
        i, mid = step % n, self.cycle_minimum(steps_per_epoch)
        if i <= mid:
            return self.lr + (self.lr_min - self.lr) * i / max(mid, 1)
        return self.lr_min + (self.lr - self.lr_min) * (i - mid) / (n - mid)

    def cycle_minimum(self, steps_per_epoch: int) -> int:
        """Index, within a cycle, of the step run at lr_min (the cyclic schedule's minimum)."""
        return self._cycle_epochs() * steps_per_epoch // 2

    def _cycle_epochs(self) -> int:
        if self.cycle_epochs is None:
            raise ValueError(f"a {self.schedule} schedule has no cycles")
        return self.cycle_epochs


def epoch_seed(key, epoch):
    """The seed of one epoch of the run with key ``key``."""
    return derive_seed(*key, epoch)


def loss_function(data):
    """The per-batch loss of a data set's task: cross-entropy, or the Gaussian negative log
    likelihood with the data set's fixed observation noise."""
    if data.task == "classification":
        return F.cross_entropy
    return lambda out, y: gaussian_nll(y, out, data.observation_noise, reduce=True)


def augment(x, kind, generator):
    """Training-batch augmentation on the device: "crop_flip" pads by 4, takes a random
    32x32-style crop of the original size and flips half the images horizontally."""
    if kind is None:
        return x
    b, _, h, w = x.shape
    padded = F.pad(x, (4, 4, 4, 4))
    dy = torch.randint(0, 9, (b,), generator=generator, device=x.device)
    dx = torch.randint(0, 9, (b,), generator=generator, device=x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None].expand(b, x.shape[1], h, w + 8)
    out = padded.gather(2, rows)
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :].expand(b, x.shape[1], h, w)
    out = out.gather(3, cols)
    flip = torch.rand(b, generator=generator, device=x.device) < 0.5
    return torch.where(flip[:, None, None, None], out.flip(3), out)


def log_volume(model, simplices=None, *, check=True):
    """log V of the simplex of all vertices, or of the complex ``simplices`` (the log of the
    sum of its simplexes' volumes); differentiable w.r.t. the trainable vertices."""
    if simplices is None:
        return model.log_volume(check=check)
    return torch.logsumexp(model.log_volume(simplices, check=check), 0)


def regulariser(model, phase):
    """log V of the simplex or of the complex ``phase.reg_simplices``, unchecked (a
    non-finite vertex shows as a non-finite loss)."""
    return log_volume(model, phase.reg_simplices, check=False)


class Progress:
    """Running loss and the first step whose loss or weights are not finite, kept on the
    device between reads; with a ``world`` of several data-parallel processes, a read
    combines theirs."""

    def __init__(self, device, world=dist.World()):
        self.world = world
        self.loss = torch.zeros((), dtype=torch.float64, device=device)
        self.count = torch.zeros((), dtype=torch.float64, device=device)
        self.step = torch.zeros((), dtype=torch.long, device=device)
        self.first_bad = torch.full((), -1, dtype=torch.long, device=device)

    def add(self, loss, params):
        value = loss.detach().to(torch.float64)
        # a finite loss can still come with a non-finite gradient: the weights tell
        weights = torch.stack(torch._foreach_norm([p.detach() for p in params])).sum()
        bad = ~(torch.isfinite(value) & torch.isfinite(weights))
        self.first_bad = torch.where(bad & (self.first_bad < 0), self.step, self.first_bad)
        self.loss += torch.where(bad, torch.zeros_like(value), value)
        self.count += 1
        self.step += 1

    def read(self, alone=False):
        """(mean loss since the last read, index of the first non-finite step or -1): one
        host synchronisation. ``alone``: this process's own, without asking the others (when
        a step failed here, they may not be reading)."""
        world = dist.World() if alone else self.world
        sums = world.sum(torch.stack([self.loss, self.count]))
        bad = world.max(self.first_bad)
        loss, count, bad = torch.cat([sums, bad.to(torch.float64)[None]]).tolist()
        self.loss.zero_()
        self.count.zero_()
        return (loss / count if count else float("nan")), int(bad)


def step_loss(model, loss_fn, phase, x, y, coeffs=None, forward=None):
    """The loss of one step: a plain model's, or a simplex model's at the H points ``coeffs``
    (the mean of their losses minus λ log V). ``forward`` runs the model (default: the model
    itself; its ``DistributedDataParallel`` wrapper in data-parallel training)."""
    forward = model if forward is None else forward
    if coeffs is None:
        return loss_fn(forward(x), y)
    out = forward(x, coeffs)  # (H, B, ...)
    loss = loss_fn(out.flatten(0, 1), y.repeat(phase.n_samples, *([1] * (y.dim() - 1))))
    if phase.reg:
        loss = loss - phase.reg * regulariser(model, phase)
    return loss


def _step(model, optimizer, loss_of, phase, x, y, generator, simplex, world):
    """One optimisation step; returns the loss (a device tensor, not read). ``loss_of(x, y,
    coeffs)``: the step's loss, compiled or not. With a data-parallel ``world``, this
    process computes its share of the batch (x, y), weighted so that the gradient the
    processes average is that of the whole batch."""
    # points sampled outside the loss, so that a compiled loss takes them as an input
    coeffs = _checks.known_finite(model.sampler.sample(phase.n_samples, model, generator)) if simplex else None
    if world.size > 1:
        n = len(x)
        share = dist.batch_share(n, world)
        x, y = x[share], y[share]
        loss = loss_of(x, y, coeffs) * (len(x) * world.size / n)
    else:
        loss = loss_of(x, y, coeffs)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss


def _diverged(describe, epoch, step, n_steps):
    """The FloatingPointError of a non-finite step; ``epoch`` (0-based) says where."""
    err = FloatingPointError(
        f"{describe}: the loss or the weights are not finite (NaN or inf) at epoch {epoch + 1}, "
        f"step {step + 1} of {n_steps}; the last checkpoint (if any) is the last good state"
    )
    err.epoch = epoch
    return err


def run_phase(
    model: torch.nn.Module,
    data: Dataset,
    phase: Phase,
    *,
    key: tuple[int, ...],
    device: torch.device,
    start_epoch: int = 0,
    optimizer_state: dict | None = None,
    on_epoch: Callable[[int, torch.optim.Optimizer], None] | None = None,
    on_step: Callable[[int], None] | None = None,
    bar=None,
    describe: str = "training",
    data_parallel: bool = False,
) -> torch.optim.Optimizer:
    """Trains ``model`` (plain or SimplexModel, already on ``device``) on ``data`` for the
    epochs of ``phase`` from ``start_epoch``; returns the optimizer.

    - simplex models: H = ``phase.n_samples`` points per step from ``model.sampler`` in one
      forward; the loss is the mean of their losses minus ``phase.reg * log V``; only
      ``model.store.trainable`` (the trainable vertices) is optimised.
    - ``on_epoch(epoch, optimizer)`` runs after each finished epoch whose losses were all
      finite (checkpoints); ``on_step(step)`` after each step, given the global step index.
    - A non-finite loss or non-finite weights raise ``FloatingPointError`` naming
      ``describe``, the epoch and the step; ``on_epoch`` is not called for that epoch, so
      the last checkpoint stays good.
    - Each epoch runs with torch's global generators seeded from (key, epoch), so dropout
      is as reproducible as the data order and the sampled points.
    - ``data_parallel``: this process is one of the W of the initialised process group
      (``simplexkern.distributed``) that train ``model`` together. Every process draws the
      same batches, augmentation and points; each computes its share of a batch's rows, and
      ``DistributedDataParallel`` averages the gradients of the trainable parameters (of a
      simplex model: the trainable vertices only; buffers such as the fixed vertices are
      never sent, and BatchNorm statistics are each process's own). Dropout masks are drawn
      per process (seeded by (key, epoch, rank)). Every global batch needs at least W rows
      (2W with BatchNorm, which normalises each share on its own).
    """
    check_dataset(data)
    simplex = isinstance(model, SimplexModel)
    if simplex and phase.n_samples is None:
        raise ValueError("a simplex model trains with n_samples (H) points per step")
    params = _trainable(model)
    if not params or not any(p.numel() for p in params):
        raise ValueError(f"{describe}: nothing to train (no trainable parameters)")
    optimizer = torch.optim.SGD(params, lr=phase.lr, momentum=phase.momentum, weight_decay=phase.weight_decay)
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)
    loss_fn = loss_function(data)
    world, forward = _data_parallel(model, data, phase, device) if data_parallel else (dist.World(), None)
    compute = torch.compile(step_loss) if phase.compile else step_loss

    def loss_of(x, y, coeffs):
        return compute(model, loss_fn, phase, x, y, coeffs, forward)

    n_steps = steps_per_epoch(len(data.x_train), phase.batch_size)
    model.train()
    for epoch in range(start_epoch, phase.epochs):
        seed = epoch_seed(key, epoch)
        # dropout and other users of torch's global generators; data-parallel processes draw
        # their own masks for their own rows (the same draw would repeat a mask on each share)
        with seeded(seed if world.size == 1 else derive_seed(seed, world.rank)):
            _epoch(
                model,
                data,
                phase,
                epoch,
                seed,
                device,
                optimizer,
                loss_of,
                params,
                simplex,
                n_steps,
                on_step,
                bar,
                describe,
                world,
            )
        if on_epoch is not None:
            on_epoch(epoch, optimizer)
    return optimizer


def _trainable(model: torch.nn.Module) -> list[torch.Tensor]:
    """What the optimizer trains: a simplex model's trainable vertices, a plain model's parameters."""
    if isinstance(model, SimplexModel):
        return [model.store.trainable]
    return [p for p in model.parameters() if p.requires_grad]


def _data_parallel(model, data, phase, device):
    """(world, the DistributedDataParallel wrapper of ``model`` that runs its forward)."""
    world = dist.world()
    if world.size == 1:
        raise ValueError(
            "data_parallel needs an initialised process group of several processes (launch with "
            "torchrun; see simplexkern.distributed)"
        )
    if phase.compile:
        raise ValueError("data-parallel training runs eagerly: compile=True is not supported with it")
    n, b = len(data.x_train), phase.batch_size
    n_batches, examples = epoch_batches(n, b)
    smallest = examples - (n_batches - 1) * b  # the last batch (a lone last row is dropped)
    rows = 2 if _has_batch_norm(model) else 1  # BatchNorm normalises each share: one row has no variance
    if smallest < rows * world.size:
        raise ValueError(
            f"data-parallel training over {world.size} processes needs every batch to have at least "
            f"{rows * world.size} rows ({rows} per process{' with BatchNorm' if rows > 1 else ''}): "
            f"batch_size {b} with {n} training examples gives a batch of {smallest}"
        )
    from torch.nn.parallel import DistributedDataParallel

    buffers = [name for name, _ in model.named_buffers()]  # fixed vertices, BatchNorm statistics: never sent
    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, buffers)
    ids = [device.index] if device.type == "cuda" else None
    return world, DistributedDataParallel(model, device_ids=ids)


def _has_batch_norm(model):
    return any(isinstance(m, (torch.nn.modules.batchnorm._BatchNorm, SimplexBatchNorm)) for m in model.modules())


def _epoch(
    model, data, phase, epoch, seed, device, optimizer, loss_of, params, simplex, n_steps, on_step, bar, describe, world
):
    """One epoch of ``run_phase``: reads the device once per progress update."""
    order = torch.Generator().manual_seed(seed)
    points = torch.Generator(device).manual_seed(seed)
    progress, shown = Progress(device, world), 0
    for i, (x, y) in enumerate(batches(data.x_train, data.y_train, phase.batch_size, device, order)):
        step = epoch * n_steps + i
        for group in optimizer.param_groups:
            group["lr"] = phase.lr_at(step, n_steps)
        x = augment(x, data.augment, points)
        try:
            loss = _step(model, optimizer, loss_of, phase, x, y, points, simplex, world)
        except (ValueError, RuntimeError) as err:  # the checks of a model whose weights went non-finite
            _, bad = progress.read(alone=True)
            if bad < 0 and all(bool(torch.isfinite(p).all()) for p in params):
                raise
            raise _diverged(describe, epoch, bad if bad >= 0 else i, n_steps) from err
        progress.add(loss, params)
        if on_step is not None:
            on_step(step)
        if i == n_steps - 1 or (i + 1) % phase.read_every == 0:
            mean, bad = progress.read()
            if bad >= 0:
                raise _diverged(describe, epoch, bad, n_steps)
            if bar is not None:
                bar.set_postfix_str(f"epoch {epoch + 1}/{phase.epochs} loss {mean:.4f}", refresh=False)
                bar.update(i + 1 - shown)
                shown = i + 1
