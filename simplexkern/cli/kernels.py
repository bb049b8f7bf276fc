"""``simplexkern kernels`` and ``simplexkern info``: the compiled geometry core and the fused
ops at work, against NumPy and the per-point reference loop."""

import time

import numpy as np
import torch

import simplexkern
from simplexkern import _C, geometry, geometry_reference, ops
from simplexkern.ops.triton._config import AVAILABLE as TRITON


def _timed(fn, repeat):
    """Best wall time of ``repeat`` calls (synchronising the GPU), and the last result."""
    best = float("inf")
    for _ in range(repeat):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best, out


def info():
    cuda = "with CUDA kernels" if _C.cuda_enabled() else "CPU kernels only (no CUDA)"
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU visible"
    print(f"simplexkern {simplexkern.__version__}: torch {torch.__version__}, extension built {cuda}; {gpu}")


def run(args):
    info()
    device = torch.device(
        "cuda"
        if args.device == "auto" and torch.cuda.is_available()
        else "cpu"
        if args.device == "auto"
        else args.device
    )
    gen = torch.Generator(device=device).manual_seed(args.seed)
    n, batch = args.vertices, args.batch
    print(f"\n1. log-volumes of {batch:,} random {n - 1}-simplexes ({n} Gaussian vertices in R^{2 * n}) on {device}")
    x = torch.randn(batch, n, 2 * n, generator=gen, device=device, dtype=torch.float64)
    d = geometry.pairwise_sqdist(x)
    t_op, lv = _timed(lambda: geometry.log_volume(d), repeat=5)
    d_np = d.cpu().numpy()
    t_np, lv_np = _timed(lambda: geometry_reference.log_volume(d_np), repeat=1)
    err = np.abs(lv.cpu().numpy() - lv_np).max()
    print(f"   batched C++ log_volume      {1e3 * t_op:9.2f} ms")
    print(f"   NumPy loop over det(B)       {1e3 * t_np:9.2f} ms   ({t_np / t_op:.0f}x slower)")
    print(f"   max |difference| in log V    {err:.1e}")
    print(f"   log V: mean {lv.mean().item():.3f}, min {lv.min().item():.3f}, max {lv.max().item():.3f}")

    print("\n2. volume of a simplex of float32 weights grown around one trained point")
    p = 1_000_000
    centre = torch.randn(1, p, generator=gen, device=device)
    print(f"   {p:,} parameters; vertices = centre + spread * noise; log V vs spread (exact: +{n - 1} per e-fold)")
    print(
        "   float32 inner products: |a|^2 + |b|^2 - 2<a, b> of the vertices as they are (uncentred; nan where "
        "rounding left distances no simplex has), and of the vertices minus their mean (centred)"
    )
    for spread in (1e-1, 1e-2, 1e-3):
        v = centre + spread * torch.randn(n, p, generator=gen, device=device)
        exact = geometry.simplex_log_volume(v).item()
        uncentred, centred = (_inner_product_log_volume(u) for u in (v, v - v.mean(0)))
        print(
            f"   spread {spread:6.0e}: log V = {exact:10.3f} exact, {uncentred:10.3f} uncentred, {centred:10.3f} "
            "centred"
        )

    print("\n3. curve coefficients: the point at t on a 3-point Bezier curve / polygonal chain")
    t = torch.tensor([0.0, 0.25, 0.5, 1.0], dtype=torch.float64)
    for name, fn in (("Bezier", geometry.bezier_coefficients), ("polychain", geometry.polychain_coefficients)):
        rows = ", ".join(
            "t=%.2f: [%s]" % (ti, " ".join(f"{c:.3f}" for c in row)) for ti, row in zip(t.tolist(), fn(t, 3).tolist())
        )
        print(f"   {name:9s} {rows}")

    coeffs = geometry.sample_simplex(5, 4, generator=gen).to(device)
    layer = torch.randn(4, 1024, 1024, generator=gen, device=device) / 32
    x = torch.randn(64, 1024, generator=gen, device=device)
    _compare_backends(
        "4. simplex_linear: 5 sampled points of a 4-vertex 1024 x 1024 layer, batch 64, forward+backward",
        lambda backend: ops.simplex_linear(x, layer, None, coeffs, trainable=[3], backend=backend),
        layer,
        device,
    )
    filters = torch.randn(4, 64, 64, 3, 3, generator=gen, device=device) / 24
    images = torch.randn(5, 16, 64, 16, 16, generator=gen, device=device)
    _compare_backends(
        "5. simplex_conv2d: 5 sampled points of a 4-vertex 3x3 convolution, 64 -> 64 channels, one 16 x 16\n"
        "   input per point, batch 16, forward+backward",
        lambda backend: ops.simplex_conv2d(images, filters, None, coeffs, padding=1, trainable=[3], backend=backend),
        filters,
        device,
    )


def _inner_product_log_volume(v):
    """log V from float32 inner products, |a|^2 + |b|^2 - 2<a, b>; NaN when rounding left
    distances that no simplex has (what this part of the demo shows can happen)."""
    sq = (v * v).sum(-1)
    d = (sq[:, None] + sq[None, :] - 2 * (v @ v.T)).double().clamp_min(0)
    d = 0.5 * (d + d.T)
    d.fill_diagonal_(0)
    return geometry.log_volume(d, check=False).item()


def _compare_backends(title, op, store, device):
    """One forward+backward of ``op(backend)`` per backend: time, speed-up over the reference
    loop, difference from it, and the fixed vertices' gradient."""
    print("\n" + title)
    store.requires_grad_(True)
    results = {}
    for backend in ("reference", "torch") + (("triton",) if device.type == "cuda" and TRITON else ()):

        def step():
            store.grad = None
            y = op(backend)
            y.square().mean().backward()
            return y.detach(), store.grad

        results[backend] = _timed(step, repeat=3)
    t_ref, (y_ref, g_ref) = results["reference"]
    for backend, (t, (y, grad)) in results.items():
        err = max((y - y_ref).abs().max().item(), (grad - g_ref).abs().max().item())
        print(
            f"   {backend:10s} {1e3 * t:9.2f} ms   ({t_ref / t:4.1f}x the per-point loop)   max |difference| {err:.1e}"
        )
    print(f"   fixed vertices' gradient: {g_ref[:3].abs().max().item():.1f} (exactly zero)")
