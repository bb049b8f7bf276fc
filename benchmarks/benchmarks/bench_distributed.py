"""Training across processes (gloo on the CPU, launched with torchrun) against one process,
in the same run: a data-parallel curve training step and a member-parallel ESPRO epoch on
digits (``benchmarks/distributed_worker.py`` says what is timed). Each process runs one
thread, as torchrun sets it, so 2 processes use 2 cores where 1 process uses 1; the figures
are seconds measured inside the processes, without their start-up."""

import json
import os
import pathlib
import subprocess
import sys

WORKER = pathlib.Path(__file__).resolve().parents[1] / "distributed_worker.py"


def _seconds(piece, processes):
    launch = (
        [sys.executable]
        if processes == 1
        else [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    )
    out = subprocess.run(
        [*launch, str(WORKER), piece],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])["seconds"]


class Distributed:
    params = ([1, 2],)
    param_names = ["processes"]
    unit = "seconds"
    timeout = 900

    def track_curve_step(self, processes):
        return _seconds("curve", processes)

    def track_espro_epoch(self, processes):
        return _seconds("espro", processes)
