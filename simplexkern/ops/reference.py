"""Slow, obviously correct fused ops, written the way the published research code works:
one combined weight and one plain PyTorch call per sampled point. The correctness oracle of
the tests and the baseline of every benchmark. Autograd is PyTorch's own; fixed vertices
are detached, so they receive no gradient."""
import torch.nn.functional as F
import torch


def _vertices(tensor, trainable):
    return [tensor[i] if i in trainable else tensor[i].detach() for i in range(tensor.shape[0])]


def simplex_linear(x, weight, bias, coeffs, trainable):
    """``x`` (M, in) shared or (S, M, in); ``coeffs`` (S, k) -> (S, M, out)."""
    trainable = set(trainable)
    weights = _vertices(weight, trainable)
    biases = _vertices(bias, trainable) if bias is not None else None
    outs = []
    for s in range(coeffs.shape[0]):
        w = sum(coeffs[s, i].to(weight.dtype) * weights[i] for i in range(len(weights)))
        b = sum(coeffs[s, i].to(weight.dtype) * biases[i] for i in range(len(biases))) if biases else None
        outs.append(F.linear(x if x.dim() == 2 else x[s], w, b))
    return torch.stack(outs)
