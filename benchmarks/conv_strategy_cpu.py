"""On the CPU, time the torch backend of simplex_conv2d both ways, one grouped convolution
over the points and a loop of per-point convolutions, forward+backward over the VGG16-on-CIFAR
layer shapes at reduced widths; the data behind ``conv_torch.grouped_on_cpu``.

    python benchmarks/conv_strategy_cpu.py [--widths 4 16] [--batches 16 64] [--repeat 3]
"""

import argparse
import time

import torch

from simplexkern.ops import conv_torch, simplex_conv2d

VGG16_CIFAR = [
    (3, 64, 32),
    (64, 64, 32),
    (64, 128, 16),
    (128, 128, 16),
    (128, 256, 8),
    (256, 256, 8),
    (256, 512, 4),
    (512, 512, 4),
    (512, 512, 2),
]  # distinct (in, out, size); 3x3, padding 1


def time_layer(c_in, c_out, size, batch, S, k, grouped, repeat, backward=True):
    conv_torch.grouped_on_cpu = lambda *a: grouped
    gen = torch.Generator().manual_seed(0)
    shared = c_in == 3
    x = torch.randn(*(() if shared else (S,)), batch, c_in, size, size, generator=gen, requires_grad=not shared)
    w = torch.randn(k, c_out, c_in, 3, 3, generator=gen, requires_grad=True)
    b = torch.zeros(k, c_out, requires_grad=True)
    c = torch.rand(S, k, generator=gen)
    best = float("inf")
    for _ in range(repeat + 1):
        w.grad = b.grad = x.grad = None
        t = time.perf_counter()
        with torch.set_grad_enabled(backward):
            y = simplex_conv2d(x, w, b, c, padding=1, trainable=[k - 1], backend="torch")
            if backward:
                y.sum().backward()
        best = min(best, time.perf_counter() - t)
    return best


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--widths", type=int, nargs="+", default=[4, 16], help="width divisors")
    p.add_argument("--batches", type=int, nargs="+", default=[16, 64])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("-S", type=int, default=5)
    p.add_argument("-k", type=int, default=4)
    p.add_argument("--forward", action="store_true", help="time the forward pass alone (no autograd)")
    a = p.parse_args()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, S={a.S}, k={a.k}, "
        f"{'forward' if a.forward else 'fwd+bwd'}, best of {a.repeat}"
    )
    print(
        f"{'width':>5} {'batch':>5} {'in':>4} {'out':>4} {'size':>4} {'loop ms':>9} {'grouped ms':>10} "
        f"{'loop/grouped':>12}  rule"
    )
    original = conv_torch.grouped_on_cpu
    try:
        for wd in a.widths:
            for batch in a.batches:
                for c_in, c_out, size in VGG16_CIFAR:
                    c_in = c_in if c_in == 3 else c_in // wd
                    c_out //= wd
                    loop = time_layer(c_in, c_out, size, batch, a.S, a.k, False, a.repeat, not a.forward)
                    grouped = time_layer(c_in, c_out, size, batch, a.S, a.k, True, a.repeat, not a.forward)
                    macs = batch * size * size * c_out * c_in * 9
                    pick = "grouped" if original(c_in == 3, c_in, macs, size * size) else "loop"
                    print(
                        f"{wd:>5} {batch:>5} {c_in:>4} {c_out:>4} {size:>4} {1e3 * loop:>9.2f} "
                        f"{1e3 * grouped:>10.2f} {loop / grouped:>12.2f}  {pick}",
                        flush=True,
                    )
    finally:
        conv_torch.grouped_on_cpu = original


if __name__ == "__main__":
    main()
