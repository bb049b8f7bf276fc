"""GPU time of simplex_linear forward+backward per backend, from the CUDA kernels the torch
profiler records (host overhead excluded), next to the wall-clock time of the same loop.

    python benchmarks/profile_linear.py [--kernels BACKEND]

Shapes as in benchmarks/benchmarks/bench_linear.py (k = 4, vertex 3 trainable, bfloat16).
"""

import argparse
import time

import torch

import simplexkern.ops as ops

CASES = {"weight_bound_b16": (5, 16), "weight_bound_b64": (5, 64), "compute_bound_b8192": (1, 8192)}


def setup(S, batch, n=4096, k=4):
    w = (torch.randn(k, n, n, device="cuda", dtype=torch.bfloat16) / n**0.5).requires_grad_(True)
    b = torch.zeros(k, n, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    c = torch.rand(S, k, device="cuda")
    x = torch.randn(batch, n, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    dy = torch.randn(S, batch, n, device="cuda", dtype=torch.bfloat16)
    return w, b, c, x, dy


def step(backend, w, b, c, x, dy):
    for t in (w, b, x):
        t.grad = None
    if backend == "plain_linear":
        torch.nn.functional.linear(x, w[0], b[0]).backward(dy[0])
    else:
        ops.simplex_linear(x, w, b, c, trainable=[3], backend=backend).backward(dy)


def measure(backend, case, reps=10):
    S, batch = CASES[case]
    args = setup(S, batch)
    for _ in range(3):
        step(backend, *args)
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            step(backend, *args)
        torch.cuda.synchronize()
    gpu = sum(e.self_device_time_total for e in prof.key_averages()) / reps / 1e3
    start = time.perf_counter()
    for _ in range(reps):
        step(backend, *args)
    torch.cuda.synchronize()
    return gpu, (time.perf_counter() - start) / reps * 1e3, prof


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--kernels", help="also print the kernel table of this backend (weight_bound_b16)")
    args = parser.parse_args()
    print("| case | backend | GPU kernel time (ms) | wall time (ms) |\n|---|---|---|---|")
    for case in CASES:
        for backend in ["reference", "torch", "triton"] + (["plain_linear"] if CASES[case][0] == 1 else []):
            gpu, wall, prof = measure(backend, case)
            print(f"| {case} | {backend} | {gpu:.3f} | {wall:.3f} |", flush=True)
            if backend == args.kernels and case == "weight_bound_b16":
                print(
                    prof.key_averages().table(sort_by="self_device_time_total", row_limit=8, max_name_column_width=50)
                )


if __name__ == "__main__":
    main()
