"""The published training loop, the baseline of the step benchmarks: per sampled point, every
weight combined from the k vertices (the last trainable) and one plain forward, the S losses
averaged."""

import torch


class PublishedLoop:
    def __init__(self, plain: torch.nn.Module, k: int) -> None:
        self.plain = plain
        named = dict(plain.named_parameters())  # tied parameters once, as the plain model has them
        self.fixed = {
            n: torch.stack([p.detach() + 0.01 * torch.randn_like(p) for _ in range(k - 1)]) for n, p in named.items()
        }
        self.free = {n: p.detach().clone().requires_grad_(True) for n, p in named.items()}
        self.buffers = dict(plain.named_buffers())
        self.parameters = list(self.free.values())

    def loss(self, x, y, coeffs, loss):
        total = 0
        for c in coeffs:
            weights = {n: torch.einsum("k,k...->...", c[:-1], f) + c[-1] * self.free[n] for n, f in self.fixed.items()}
            total = total + loss(torch.func.functional_call(self.plain, {**weights, **self.buffers}, (x,)), y)
        return total / len(coeffs)
