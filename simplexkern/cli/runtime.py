"""How a job runs, as opposed to what it computes: its device, progress bars, compiled steps
and processes, and which models each process holds."""

import dataclasses

import torch

from simplexkern import distributed
from simplexkern.train.settings import Execution


@dataclasses.dataclass(frozen=True)
class Runtime:
    """How a job runs (not recorded in run.json): on which device, with progress bars or not,
    compiled steps or not, in which ``world`` of processes, and whether they train each
    model together (``data_parallel``).

    Launched as several processes (``torchrun``; ``simplexkern.distributed``), the
    independent members (modes, ESPRO simplexes) are spread over the processes, each
    predicting its own; one model (a curve, a complex, FGE's run) is trained and evaluated
    by rank 0 while the others wait. With ``data_parallel`` every model is trained by all
    processes together instead, one after another."""

    device: torch.device
    progress: bool = True
    compile: bool = False
    world: distributed.World = distributed.World()
    data_parallel: bool = False

    @property
    def ensemble_mode(self):
        """The ``distributed`` mode of the ensemble trainers: "data", "members" or None."""
        return "data" if self.data_parallel else ("members" if self.world.size > 1 else None)

    @property
    def model_mode(self):
        """The ``distributed`` mode of a one-model trainer (None: rank 0 trains it alone)."""
        return "data" if self.data_parallel else None

    @property
    def trains_model(self):
        """Whether this process takes part in training one model."""
        return self.data_parallel or self.world.is_main

    def execution(self, seed, out, distributed=None):
        """The trainers' ``Execution`` of this runtime for a run from ``seed`` in ``out``."""
        return Execution(
            seed=seed,
            device=self.device,
            out=out,
            progress=self.progress,
            compile=self.compile,
            distributed=distributed,
        )

    def share(self, models):
        """This process's share of models every process holds (--data-parallel): members
        rank, rank + W, ...; otherwise ``models`` as they are (already a share)."""
        if self.ensemble_mode != "data":
            return models
        return [models[member] for member in self.world.members(len(models))]

    def model_share(self, model):
        """This process's share of one model: the model on rank 0, nothing on the others."""
        return [model] if self.world.is_main else []

    def in_member_order(self, values):
        """A list over all members, in member order, of this process's members' ``values``."""
        if self.ensemble_mode != "members":
            return values
        parts = self.world.objects(values)
        ordered = [None] * sum(len(part) for part in parts)
        for rank, part in enumerate(parts):
            ordered[rank :: self.world.size] = part
        return ordered
