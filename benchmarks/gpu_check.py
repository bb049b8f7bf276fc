"""Everything that needs a GPU, in one run of under 8 minutes: the CUDA tests, then the GPU
benchmarks, written to benchmarks/results/DATE-GPU.md with the targets they are held to.

    python benchmarks/gpu_check.py [--out FILE] [--dry-run]

Benchmarks (benchmarks/benchmarks/, batch 128, full width): the training step of VGG16-BN and
ResNet-18 (S = 5 points, k = 4 vertices) eager, compiled, captured in a CUDA graph, on the
``reference`` backend and the plain floor, with each one's peak GPU memory; ESPRO inference
(J = 8 simplexes x M = 25 points) against ``vmap`` over materialised points.

``--dry-run`` runs the same pipeline on the CPU with the tests only collected and the small
CPU step benchmark, to check the script itself where no GPU is.
"""

import argparse
import datetime
import pathlib
import platform
import subprocess
import sys
import time

import torch

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT)]  # the benchmark classes, and simplexkern built in place

import standalone  # noqa: E402

TEST_PATHS = ["python_tests/ops", "python_tests/nn", "python_tests/test_geometry.py"]
GPU_BENCHMARKS = [("bench_real_step", {"device": {"cuda"}}), ("bench_step.Inference.", {"device": {"cuda"}})]
DRY_BENCHMARKS = [
    (
        "bench_step.TrainingStep.time_step",
        {"device": {"cpu"}, "network": {"vgg16"}, "implementation": {"simplex", "reference", "plain"}},
    )
]


def run_tests(dry_run, timeout_s):
    """(summary line, passed): the CUDA and Triton cases of the GPU-relevant test files."""
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        *TEST_PATHS,
        "-k",
        "cuda or triton",
        "--ignore=python_tests/ops/test_triton_aot.py",
    ]  # compiles for GPUs on any machine: make test has it
    if dry_run:
        cmd.append("--collect-only")
    try:
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return f"timed out after {timeout_s} s: `{' '.join(cmd[2:])}`", False
    tail = [line for line in done.stdout.strip().splitlines() if line.strip()][-1:] or ["(no output)"]
    print(done.stdout[-4000:], done.stderr[-2000:], sep="\n", flush=True)
    return f"`{' '.join(cmd[2:])}`: {tail[0]}", done.returncode == 0


def targets(rows):
    """Lines checking the GPU targets: step <= 1.25x the floor and >= 5x reference, ESPRO
    inference >= 1.2x vmap, peak memory <= 1.2x the floor's."""
    value = {(label.rsplit(".", 1)[-1], p.get("network"), p.get("implementation")): v for label, p, v, _ in rows}
    lines = []

    def check(what, ratio, ok):
        lines.append(f"- {what}: {ratio:.2f}x ({'met' if ok else 'missed'})")

    for network in ("resnet18", "vgg16_bn"):
        floor, ref = value.get(("time_step", network, "plain")), value.get(("time_step", network, "reference"))
        mem = value.get(("track_gpu_memory", network, "plain"))
        for impl in ("simplex", "compiled", "graphed"):
            t = value.get(("time_step", network, impl))
            if t and floor:
                check(f"{network} {impl} step over the floor (target <= 1.25x)", t / floor, t / floor <= 1.25)
            if t and ref:
                check(f"{network} {impl} step speed-up over reference (target >= 5x)", ref / t, ref / t >= 5)
            m = value.get(("track_gpu_memory", network, impl))
            if m and mem:
                check(f"{network} {impl} peak memory over the floor's (target <= 1.2x)", m / mem, m / mem <= 1.2)
    simplex, vmap = value.get(("time_predict", None, "simplex")), value.get(("time_predict", None, "vmap"))
    if simplex and vmap:
        check("ESPRO inference speed-up over vmap (target >= 1.2x)", vmap / simplex, vmap / simplex >= 1.2)
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, help="default: benchmarks/results/DATE-GPU.md")
    parser.add_argument("--dry-run", action="store_true", help="check the script on the CPU")
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--budget", type=float, default=3.0, help="seconds per benchmark at most")
    args = parser.parse_args()
    if not args.dry_run and not torch.cuda.is_available():
        sys.exit(
            "gpu_check: no CUDA device here (torch.cuda.is_available() is False); --dry-run checks the script "
            "on the CPU"
        )
    date = datetime.date.today().isoformat()
    out = args.out or HERE / "results" / f"{date}-GPU.md"
    start = time.perf_counter()
    test_line, tests_ok = run_tests(args.dry_run, timeout_s=240)
    rows = []
    for text, where in DRY_BENCHMARKS if args.dry_run else GPU_BENCHMARKS:
        rows += standalone.run(text, 1 if args.dry_run else args.repeat, 0 if args.dry_run else args.budget, where)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"no GPU ({platform.machine()})"
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:  # optional: the triton backend's rows are then absent
        triton_version = "not installed"

    text = "\n".join(
        [
            f"# simplexkern GPU check{' (dry run on the CPU)' if args.dry_run else ''}",
            "",
            f"{date}, {device}, torch {torch.__version__}, triton {triton_version}, "
            f"{time.perf_counter() - start:.0f} s",
            "",
            f"Command: `python benchmarks/gpu_check.py {' '.join(sys.argv[1:])}`",
            "",
            f"Tests: {test_line}",
            "",
            "## Targets",
            "",
            *(targets(rows) or ["- (no target benchmark ran)"]),
            "",
            "## Benchmarks",
            "",
            standalone.table(rows),
            "",
        ]
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)
    print(f"written to {out}")
    sys.exit(0 if tests_ok else 1)


if __name__ == "__main__":
    main()
