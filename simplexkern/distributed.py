"""Work across processes with ``torch.distributed``, launched by ``torchrun``.

Two ways to spread a run:

- **member-parallel** (ensembles): the J independent members (modes, ESPRO simplexes) go
  round-robin to the W processes, member j to rank j mod W. A member's result depends on
  (seed, j) only, never on the rank, so W processes train the same members as one. Their
  predictions are gathered in member order, so every process computes the same ensemble.
- **data-parallel** (one simplex, complex or curve): every process runs the same step on
  its share of each batch, and ``DistributedDataParallel`` averages the gradient of the
  trainable vertices (the only parameter a simplex model has: fixed vertices are buffers and
  are never sent).

``World`` is the process group as this library uses it; ``world()`` is the initialised
default group, or a world of one process.
"""

import dataclasses
import datetime
import os

import torch
import torch.distributed as dist

TIMEOUT_MINUTES = 1440.0  # a day: processes wait for one another while others train unevenly many members
MODES = (None, "members", "data")  # the ``distributed`` argument of the trainers


def check_mode(value: str | None, allowed: tuple = MODES) -> "World":
    """``value`` of a trainer's ``distributed`` argument, checked; the world it runs in."""
    if value not in allowed:
        raise ValueError(f"distributed must be one of {allowed}, got {value!r}")
    w = world()
    if value is not None and w.size == 1 and launched():
        raise ValueError(f"distributed={value!r}: the process group is not initialised (simplexkern.distributed.init)")
    if value == "data" and w.size == 1:
        raise ValueError(
            "distributed='data' needs an initialised process group of several processes (launch with "
            "torchrun; see simplexkern.distributed)"
        )
    return w


@dataclasses.dataclass(frozen=True)
class World:
    """Rank ``rank`` of ``size`` processes; ``device`` is what collectives of the backend
    run on (CUDA for NCCL, else CPU)."""

    rank: int = 0
    size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def members(self, n: int) -> list[int]:
        """The members of an ensemble of ``n`` that this process trains: rank, rank + W, ..."""
        return list(range(self.rank, n, self.size))

    def total(self, count: int, what: str = "members") -> int:
        """n, the size of an ensemble of which this process holds ``count`` members (its share
        ``members(n)``); ValueError when the processes' counts are not such shares."""
        counts = self.objects(count)
        n = sum(counts)
        if counts != [len(range(r, n, self.size)) for r in range(self.size)]:
            raise ValueError(
                f"the processes hold {counts} {what}; with {n} in all, rank r holds members r, r + "
                f"{self.size}, ... ({[len(range(r, n, self.size)) for r in range(self.size)]})"
            )
        return n

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier()

    def gather_members(self, local: list[torch.Tensor], n: int) -> torch.Tensor:
        """The (n, ...) stack of all members' tensors, in member order, on every process (on the
        CPU), from ``local``: this process's list of len(self.members(n)) CPU tensors of one
        shape and dtype."""
        mine = len(self.members(n))
        if len(local) != mine:
            raise ValueError(f"rank {self.rank} holds {len(local)} members' results, expected {mine} of {n}")
        if self.size == 1:
            return torch.stack(local)
        if n < self.size:  # the processes of rank >= n hold none: rank 0 tells them the shape
            shape, dtype = self.from_main((tuple(local[0].shape), local[0].dtype) if self.is_main else None)
        else:
            shape, dtype = tuple(local[0].shape), local[0].dtype
        width = len(range(0, n, self.size))  # the most members a process holds: rank 0's
        padded = torch.zeros(width, *shape, dtype=dtype)
        if local:
            padded[:mine] = torch.stack(local)
        parts = [torch.empty_like(padded, device=self.device) for _ in range(self.size)]
        dist.all_gather(parts, padded.to(self.device))
        out = torch.empty(n, *shape, dtype=dtype)
        for r, part in enumerate(parts):
            rows = list(range(r, n, self.size))
            out[rows] = part[: len(rows)].cpu()
        return out

    def objects(self, value: object) -> list:
        """[each process's ``value``] (picklable objects), in rank order, on every process."""
        if self.size == 1:
            return [value]
        values = [None] * self.size
        dist.all_gather_object(values, value)
        return values

    def from_main(self, value: object) -> object:
        """Rank 0's ``value`` (a picklable object), on every process."""
        return self.objects(value)[0]

    def all_same(self, value: object, what: str) -> None:
        """ValueError on every process unless ``value`` (a picklable object) is the same on
        all of them; ``what`` names it."""
        values = self.objects(value)
        odd = [r for r, v in enumerate(values) if v != values[0]]
        if odd:
            raise ValueError(
                f"{what} differ between processes: rank(s) {', '.join(map(str, odd))} have other {what} than rank 0"
            )

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        """Sum of the tensor ``t`` over the processes (a new tensor on t's device)."""
        if self.size == 1:
            return t.clone()
        out = t.to(self.device, copy=True)
        dist.all_reduce(out)
        return out.to(t.device)

    def max(self, t: torch.Tensor) -> torch.Tensor:
        if self.size == 1:
            return t.clone()
        out = t.to(self.device, copy=True)
        dist.all_reduce(out, op=dist.ReduceOp.MAX)
        return out.to(t.device)


def world() -> World:
    """The initialised default process group as a ``World``, else a world of one process."""
    if not (dist.is_available() and dist.is_initialized()):
        return World()
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    return World(dist.get_rank(), dist.get_world_size(), device)


def launched() -> bool:
    """Whether this process was started by ``torchrun`` (or another launcher that sets the
    ``torch.distributed`` environment) as one of several processes."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(device: torch.device, timeout_minutes: float = TIMEOUT_MINUTES) -> tuple[World, torch.device]:
    """Joins the process group of a ``torchrun`` launch: NCCL when ``device`` is a GPU (each
    process on GPU ``LOCAL_RANK``), gloo on CPUs; collectives give up after
    ``timeout_minutes``. Returns (world, this process's device)."""
    if not launched():
        return World(), device
    if dist.is_initialized():
        return world(), device
    if not timeout_minutes > 0:
        raise ValueError(f"timeout must be > 0 minutes, got {timeout_minutes}")
    timeout = datetime.timedelta(minutes=timeout_minutes)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", timeout=timeout, device_id=device)
    else:
        dist.init_process_group("gloo", timeout=timeout)
    return world(), device


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def batch_share(n: int, w: World) -> slice:
    """The rows of a batch of ``n`` that rank ``w.rank`` of ``w`` computes, as a slice: the
    batch cut into W contiguous parts whose sizes differ by at most one."""
    base, extra = divmod(n, w.size)
    start = w.rank * base + min(w.rank, extra)
    return slice(start, start + base + (w.rank < extra))
