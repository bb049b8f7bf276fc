"""Slow, obviously correct fused ops, written the way the published research code works:
one combined weight and one plain PyTorch call per sampled point. The correctness oracle of
the tests and the baseline of every benchmark. Autograd is PyTorch's own; fixed vertices
are detached, so they receive no gradient."""

import torch
import torch.nn.functional as F


def _points(weight, bias, coeffs, trainable):
    """Per point s: (W_s, b_s) = sum_i c_si (V_i, bias_i), fixed vertices detached."""

    def vertices(t):
        return [t[i] if i in trainable else t[i].detach() for i in range(t.shape[0])]

    weights = vertices(weight)
    biases = vertices(bias) if bias is not None else None
    for c in coeffs.to(weight.dtype):
        w = sum(c[i] * weights[i] for i in range(len(weights)))
        yield w, (sum(c[i] * biases[i] for i in range(len(biases))) if biases else None)


def simplex_linear(x, weight, bias, coeffs, trainable):
    """``x`` (M, in) shared or (S, M, in); ``coeffs`` (S, k) -> (S, M, out)."""
    return torch.stack(
        [
            F.linear(x if x.dim() == 2 else x[s], w, b)
            for s, (w, b) in enumerate(_points(weight, bias, coeffs, set(trainable)))
        ]
    )


def simplex_conv2d(x, weight, bias, coeffs, conv, trainable):
    """``x`` (B, C, H, W) shared or (S, B, C, H, W); ``coeffs`` (S, k) -> (S, B, O, H', W').
    ``conv`` = (stride, padding, dilation, groups)."""
    return torch.stack(
        [
            F.conv2d(x if x.dim() == 4 else x[s], w, b, *conv)
            for s, (w, b) in enumerate(_points(weight, bias, coeffs, set(trainable)))
        ]
    )
