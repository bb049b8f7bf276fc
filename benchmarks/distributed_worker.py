"""Times one piece of distributed training in the processes of a torchrun launch (or in one
process without it) and prints the seconds, measured on rank 0 between barriers, as JSON:

    python -m torch.distributed.run --standalone --nproc_per_node=2 benchmarks/distributed_worker.py curve
    python benchmarks/distributed_worker.py espro

- ``curve``: one step of data-parallel curve training (a Bezier curve between two MLPs on
  digits, H = 5 points, batch 64), averaged over an epoch after a warm-up epoch.
- ``espro``: a member-parallel ESPRO epoch: J = 2 simplexes (a vertex added to each of two
  MLP modes) each trained for one epoch, members spread over the processes, after a
  warm-up run.
"""

import json
import sys
import time

import torch

from simplexkern import data as datasets
from simplexkern import distributed, models, train
from simplexkern.train.loop import steps_per_epoch


def _timed(world, fn):
    world.barrier()
    start = time.perf_counter()
    fn()
    world.barrier()
    return time.perf_counter() - start


def curve_step(d, world):
    torch.manual_seed(0)
    a, b = models.for_data("mlp", d), models.for_data("mlp", d)
    model = train.curve_model(a, b)
    phase = train.Phase(epochs=1, lr=0.05, n_samples=5, batch_size=64)
    mode = "data" if world.size > 1 else None

    def epoch():
        train.run_phase(model, d, phase, key=(0,), device=torch.device("cpu"), data_parallel=mode == "data")

    epoch()  # warm-up
    return _timed(world, epoch) / steps_per_epoch(len(d.x_train), phase.batch_size)


def espro_epoch(d, world):
    modes = []
    for j in world.members(2):
        torch.manual_seed(j)
        modes.append(models.for_data("mlp", d))

    def epoch():
        train.espro(
            modes, d, n_vertices=2, vertex_epochs=1, reg=1.0, progress=False, device="cpu", distributed="members"
        )

    epoch()  # warm-up
    return _timed(world, epoch)


def main():
    world, _ = distributed.init(torch.device("cpu"))
    d = datasets.load("digits")
    seconds = {"curve": curve_step, "espro": espro_epoch}[sys.argv[1]](d, world)
    if world.is_main:
        print(json.dumps({"seconds": seconds, "processes": world.size, "threads": torch.get_num_threads()}))
    distributed.shutdown()


if __name__ == "__main__":
    main()
