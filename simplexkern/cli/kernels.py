"""``simplexkern kernels`` and ``simplexkern info``: the compiled geometry core and the fused
ops at work, against NumPy and the per-point reference loop."""

import time

import numpy as np
import torch

import simplexkern
from simplexkern import _C, geometry, geometry_reference, ops
from simplexkern.ops.triton._config import AVAILABLE as TRITON


def _timed(compute, repeat):
    """Best wall time of ``repeat`` calls (synchronising the GPU), and the last result."""
    best = float("inf")
    for _ in range(repeat):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = compute()
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
    generator = torch.Generator(device=device).manual_seed(args.seed)
    _log_volumes(args.vertices, args.batch, generator, device)
    _float32_volumes(args.vertices, generator, device)
    _curve_coefficients()
    _fused_ops(generator, device)


def _log_volumes(n_vertices, batch, generator, device):
    print(
        f"\n1. log-volumes of {batch:,} random {n_vertices - 1}-simplexes ({n_vertices} Gaussian vertices in "
        f"R^{2 * n_vertices}) on {device}"
    )
    vertices = torch.randn(batch, n_vertices, 2 * n_vertices, generator=generator, device=device, dtype=torch.float64)
    distances = geometry.pairwise_sqdist(vertices)
    op_s, log_volumes = _timed(lambda: geometry.log_volume(distances), repeat=5)
    distances_numpy = distances.cpu().numpy()
    numpy_s, numpy_log_volumes = _timed(lambda: geometry_reference.log_volume(distances_numpy), repeat=1)
    difference = np.abs(log_volumes.cpu().numpy() - numpy_log_volumes).max()
    print(f"   batched C++ log_volume      {1e3 * op_s:9.2f} ms")
    print(f"   NumPy loop over det(B)       {1e3 * numpy_s:9.2f} ms   ({numpy_s / op_s:.0f}x slower)")
    print(f"   max |difference| in log V    {difference:.1e}")
    print(
        f"   log V: mean {log_volumes.mean().item():.3f}, min {log_volumes.min().item():.3f}, "
        f"max {log_volumes.max().item():.3f}"
    )


def _float32_volumes(n_vertices, generator, device):
    print("\n2. volume of a simplex of float32 weights grown around one trained point")
    n_parameters = 1_000_000
    centre = torch.randn(1, n_parameters, generator=generator, device=device)
    print(
        f"   {n_parameters:,} parameters; vertices = centre + spread * noise; log V vs spread (exact: "
        f"+{n_vertices - 1} per e-fold)"
    )
    print(
        "   float32 inner products: |a|^2 + |b|^2 - 2<a, b> of the vertices as they are (uncentred; nan where "
        "rounding left distances no simplex has), and of the vertices minus their mean (centred)"
    )
    for spread in (1e-1, 1e-2, 1e-3):
        vertices = centre + spread * torch.randn(n_vertices, n_parameters, generator=generator, device=device)
        exact = geometry.simplex_log_volume(vertices).item()
        uncentred, centred = (_inner_product_log_volume(points) for points in (vertices, vertices - vertices.mean(0)))
        print(
            f"   spread {spread:6.0e}: log V = {exact:10.3f} exact, {uncentred:10.3f} uncentred, {centred:10.3f} "
            "centred"
        )


def _curve_coefficients():
    print("\n3. curve coefficients: the point at t on a 3-point Bezier curve / polygonal chain")
    positions = torch.tensor([0.0, 0.25, 0.5, 1.0], dtype=torch.float64)
    for name, coefficients in (
        ("Bezier", geometry.bezier_coefficients),
        ("polychain", geometry.polychain_coefficients),
    ):
        rows = ", ".join(
            "t=%.2f: [%s]" % (position, " ".join(f"{value:.3f}" for value in row))
            for position, row in zip(positions.tolist(), coefficients(positions, 3).tolist())
        )
        print(f"   {name:9s} {rows}")


def _fused_ops(generator, device):
    coeffs = geometry.sample_simplex(5, 4, generator=generator).to(device)
    layer = torch.randn(4, 1024, 1024, generator=generator, device=device) / 32
    inputs = torch.randn(64, 1024, generator=generator, device=device)
    _compare_backends(
        "4. simplex_linear: 5 sampled points of a 4-vertex 1024 x 1024 layer, batch 64, forward+backward",
        lambda backend: ops.simplex_linear(inputs, layer, None, coeffs, trainable=[3], backend=backend),
        layer,
        device,
    )
    filters = torch.randn(4, 64, 64, 3, 3, generator=generator, device=device) / 24
    images = torch.randn(5, 16, 64, 16, 16, generator=generator, device=device)
    _compare_backends(
        "5. simplex_conv2d: 5 sampled points of a 4-vertex 3x3 convolution, 64 -> 64 channels, one 16 x 16\n"
        "   input per point, batch 16, forward+backward",
        lambda backend: ops.simplex_conv2d(images, filters, None, coeffs, padding=1, trainable=[3], backend=backend),
        filters,
        device,
    )


def _inner_product_log_volume(vertices):
    """log V from float32 inner products, |a|^2 + |b|^2 - 2<a, b>; NaN when rounding left
    distances that no simplex has (what this part of the demo shows can happen)."""
    squared_norms = (vertices * vertices).sum(-1)
    distances = (squared_norms[:, None] + squared_norms[None, :] - 2 * (vertices @ vertices.T)).double().clamp_min(0)
    distances = 0.5 * (distances + distances.T)
    distances.fill_diagonal_(0)
    return geometry.log_volume(distances, check=False).item()


def _compare_backends(title, op, store, device):
    """One forward+backward of ``op(backend)`` per backend: time, speed-up over the reference
    loop, difference from it, and the fixed vertices' gradient."""
    print("\n" + title)
    store.requires_grad_(True)
    results = {}
    for backend in ("reference", "torch") + (("triton",) if device.type == "cuda" and TRITON else ()):

        def step():
            store.grad = None
            outputs = op(backend)
            outputs.square().mean().backward()
            return outputs.detach(), store.grad

        results[backend] = _timed(step, repeat=3)
    reference_s, (reference_outputs, reference_grad) = results["reference"]
    for backend, (seconds, (outputs, grad)) in results.items():
        difference = max((outputs - reference_outputs).abs().max().item(), (grad - reference_grad).abs().max().item())
        print(
            f"   {backend:10s} {1e3 * seconds:9.2f} ms   ({reference_s / seconds:4.1f}x the per-point loop)   "
            f"max |difference| {difference:.1e}"
        )
    print(f"   fixed vertices' gradient: {reference_grad[:3].abs().max().item():.1f} (exactly zero)")
