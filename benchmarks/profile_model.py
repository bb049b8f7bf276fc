"""GPU kernel time of one simplex-model training step, by kernel, next to the plain model
at batch S x B (the floor): where the time of a simplex model goes.

    python benchmarks/profile_model.py [--network resnet18] [--backend auto]
"""

import argparse
import pathlib
import sys

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from benchmarks.bench_models import SimplexModelStep  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--network", default="resnet18")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--rows", type=int, default=25)
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    for impl in (args.backend, "plain"):
        bench = SimplexModelStep()
        bench.setup(impl, device, args.network)
        for _ in range(3):
            bench.time_forward_backward()
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
        with profile(activities=activities) as prof:
            for _ in range(5):
                bench.time_forward_backward()
        sort = "cuda_time_total" if device == "cuda" else "cpu_time_total"
        print(f"\n## {args.network}, {impl}: 5 steps\n")
        print(prof.key_averages().table(sort_by=sort, row_limit=args.rows, max_name_column_width=70))


if __name__ == "__main__":
    main()
