"""Where the time of a real-size training step goes: ``torch.profiler`` over a few steps of
``bench_real_step.RealStep``, simplex and the plain floor, the top aten ops per step; with
``--inference WIDTH``, over ``bench_step.InferenceAtPoints`` at M points, simplex and loop.

    python benchmarks/profile_step.py [--network resnet18] [--trainable 2] [--steps 3]
    python benchmarks/profile_step.py --inference 1/4 [--points 25]
"""

import argparse
import pathlib
import sys

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from benchmarks.bench_real_step import RealStep  # noqa: E402
from benchmarks.bench_step import InferenceAtPoints  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--network", default="resnet18", choices=["resnet18", "vgg16_bn"])
    parser.add_argument("--trainable", type=int, default=2, choices=[1, 2])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rows", type=int, default=10)
    parser.add_argument("--inference", choices=InferenceAtPoints.params[2], help="profile inference at this width")
    parser.add_argument("--points", type=int, default=25, choices=InferenceAtPoints.params[1])
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    for impl in ("simplex", "loop" if args.inference else "plain"):
        if args.inference:
            bench = InferenceAtPoints()
            bench.setup(impl, args.points, args.inference)
            run, what = bench.time_predict, f"inference at {args.points} points, width {args.inference}, cpu"
        else:
            bench = RealStep()
            bench.setup(impl, device, args.network, args.trainable if device == "cpu" else 1)
            run, what = bench.time_step, f"{args.network}, {device}"
        for _ in range(2):
            run()
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
        with profile(activities=activities) as prof:
            for _ in range(args.steps):
                run()
        total = sum(e.self_cpu_time_total for e in prof.key_averages()) / 1e3 / args.steps
        print(f"\n{impl}, {what}: self time per call, ms (all ops: {total:.1f})")
        events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
        for e in events[: args.rows]:
            print(f"  {e.key:45s} {e.self_cpu_time_total / 1e3 / args.steps:8.1f}  ({e.count // args.steps} calls)")


if __name__ == "__main__":
    main()
