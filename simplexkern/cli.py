"""The ``simplexkern`` command."""
import argparse
import sys
import time

import numpy as np
import torch

import simplexkern
from simplexkern import _C, geometry, geometry_reference, ops


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


def kernels(args):
    info()
    device = torch.device(args.device)
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
    for spread in (1e-1, 1e-2, 1e-3):
        v = centre + spread * torch.randn(n, p, generator=gen, device=device)
        exact = geometry.simplex_log_volume(v).item()
        sq = (v * v).sum(-1)  # |a|^2 + |b|^2 - 2<a, b> in float32, as inner-product code does
        naive_d = (sq[:, None] + sq[None, :] - 2 * (v @ v.T)).double().clamp_min(0)
        naive_d = 0.5 * (naive_d + naive_d.T)
        naive_d.fill_diagonal_(0)
        naive = geometry.log_volume(naive_d).item()
        print(f"   spread {spread:6.0e}: log V = {exact:10.3f} (exact differences)   {naive:10.3f} (float32 inner products)")

    print("\n3. curve coefficients: the point at t on a 3-point Bezier curve / polygonal chain")
    t = torch.tensor([0.0, 0.25, 0.5, 1.0], dtype=torch.float64)
    for name, fn in (("Bezier", geometry.bezier_coefficients), ("polychain", geometry.polychain_coefficients)):
        rows = ", ".join("t=%.2f: [%s]" % (ti, " ".join(f"{c:.3f}" for c in row)) for ti, row in zip(t.tolist(), fn(t, 3).tolist()))
        print(f"   {name:9s} {rows}")

    coeffs = geometry.sample_simplex(5, 4, generator=gen).to(device)
    layer = torch.randn(4, 1024, 1024, generator=gen, device=device) / 32
    x = torch.randn(64, 1024, generator=gen, device=device)
    _compare_backends(
        "4. simplex_linear: 5 sampled points of a 4-vertex 1024 x 1024 layer, batch 64, forward+backward",
        lambda backend: ops.simplex_linear(x, layer, None, coeffs, trainable=[3], backend=backend), layer, device)
    filters = torch.randn(4, 64, 64, 3, 3, generator=gen, device=device) / 24
    images = torch.randn(5, 16, 64, 16, 16, generator=gen, device=device)
    _compare_backends(
        "5. simplex_conv2d: 5 sampled points of a 4-vertex 3x3 convolution, 64 -> 64 channels, one 16 x 16\n"
        "   input per point, batch 16, forward+backward",
        lambda backend: ops.simplex_conv2d(images, filters, None, coeffs, padding=1, trainable=[3], backend=backend),
        filters, device)



def _compare_backends(title, op, store, device):
    """One forward+backward of ``op(backend)`` per backend: time, speed-up over the reference
    loop, difference from it, and the fixed vertices' gradient."""
    print("\n" + title)
    store.requires_grad_(True)
    results = {}
    for backend in ("reference", "torch") + (("triton",) if device.type == "cuda" else ()):
        def step():
            store.grad = None
            y = op(backend)
            y.square().mean().backward()
            return y.detach(), store.grad
        results[backend] = _timed(step, repeat=3)
    t_ref, (y_ref, g_ref) = results["reference"]
    for backend, (t, (y, grad)) in results.items():
        err = max((y - y_ref).abs().max().item(), (grad - g_ref).abs().max().item())
        print(f"   {backend:10s} {1e3 * t:9.2f} ms   ({t_ref / t:4.1f}x the per-point loop)   max |difference| {err:.1e}")
    print(f"   fixed vertices' gradient: {g_ref[:3].abs().max().item():.1f} (exactly zero)")


def demo(args):
    from simplexkern import demo as experiment

    info()
    result = experiment.espro_vs_deep_ensemble(
        args.data, model=args.model, n_modes=args.modes, n_vertices=1 + args.vertices, regs=args.regs,
        mode_epochs=args.epochs, vertex_epochs=args.vertex_epochs, lr=args.lr, batch_size=args.batch_size,
        n_points=args.eval_samples, seed=args.seed, device=None if args.device == "auto" else args.device,
        out=args.out, progress=not args.quiet)
    print()
    print(experiment.format_result(result))


def _regs(text):
    try:
        values = [float(r) for r in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values or any(not v >= 0 for v in values):
        raise argparse.ArgumentTypeError(f"λ values must be >= 0, got {text!r}")
    return tuple(values)


def _device(text):
    from simplexkern.train.runs import device_of

    if text == "auto":
        return text
    try:
        return str(device_of(text))
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _positive(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def main(argv=None):
    parser = argparse.ArgumentParser(prog="simplexkern", description=simplexkern.__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="versions, extension build and GPU")
    d = sub.add_parser("demo", help="ESPRO against a deep ensemble of the same modes (default: on digits)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    d.add_argument("--data", default="digits", help="a data set name or a .npz file")
    d.add_argument("--model", default="mlp", help="architecture, sized for the data")
    d.add_argument("--modes", type=_positive, default=3, help="J, the number of modes")
    d.add_argument("--vertices", type=_positive, default=2, help="vertices added to each mode's simplex")
    d.add_argument("--regs", type=_regs, default="0,1,3,10,30,100", help="λ values to choose from on validation NLL")
    d.add_argument("--epochs", type=_positive, default=40, help="epochs per mode")
    d.add_argument("--vertex-epochs", type=_positive, default=30, help="epochs per added vertex")
    d.add_argument("--lr", type=float, default=0.05, help="learning rate of modes and vertices")
    d.add_argument("--batch-size", type=_positive, default=64)
    d.add_argument("--eval-samples", type=_positive, default=25, help="M, points per simplex when predicting")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--device", type=_device, default="auto", help="cpu, cuda, cuda:N or auto")
    d.add_argument("--out", default=None, help="folder for checkpoints (a second run resumes)")
    d.add_argument("--quiet", action="store_true", help="no progress bars")
    p = sub.add_parser("kernels", help="show the compiled geometry core and fused ops at work")
    p.add_argument("--batch", type=int, default=10_000, help="simplexes in the batch (default 10000)")
    p.add_argument("--vertices", type=int, default=11, help="vertices per simplex (default 11)")
    p.add_argument("--device", type=_device, default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.command == "info":
        info()
    elif args.command == "demo":
        try:
            demo(args)
        except (ValueError, TypeError) as err:
            print(f"simplexkern demo: error: {err}", file=sys.stderr)
            return 2
    else:
        if args.batch < 1 or args.vertices < 2:
            parser.error("--batch must be >= 1 and --vertices >= 2")
        kernels(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
