"""``simplex_linear``: a linear layer whose weights are a combination of k vertices, for
one point or S points in one call."""
from typing import List, Optional

import torch

from simplexkern import _checks
from simplexkern.ops import dispatch, reference, torch_backend, triton_backend

_BACKENDS = {"torch": torch_backend, "triton": triton_backend}


@torch.library.custom_op("simplexkern::simplex_linear", mutates_args=())
def _simplex_linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], coeffs: torch.Tensor,
                    trainable: List[int], backend: str) -> torch.Tensor:
    return _BACKENDS[backend].linear_forward(x, weight, bias, coeffs)


@_simplex_linear.register_fake
def _(x, weight, bias, coeffs, trainable, backend):
    return x.new_empty(coeffs.shape[0], x.shape[-2], weight.shape[1])


def _linear_grads(dy, x, weight, bias, coeffs, trainable, backend, needs):
    grads = _BACKENDS[backend].linear_backward(dy.contiguous(), x, weight, bias, coeffs, trainable, *needs)
    # A custom op returns tensors only: an empty tensor stands for "not needed".
    return [g if g is not None else dy.new_empty(0) for g in grads]


@torch.library.custom_op("simplexkern::simplex_linear_backward", mutates_args=())
def _simplex_linear_backward(dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                             coeffs: torch.Tensor, trainable: List[int], backend: str,
                             needs: List[bool]) -> List[torch.Tensor]:
    return _linear_grads(dy, x, weight, bias, coeffs, trainable, backend, needs)


@_simplex_linear_backward.register_fake
def _(dy, x, weight, bias, coeffs, trainable, backend, needs):
    shapes = [x, weight, bias, coeffs]
    return [t.new_empty(t.shape) if need and t is not None else dy.new_empty(0) for t, need in zip(shapes, needs)]


def _setup_context(ctx, inputs, output):
    x, weight, bias, coeffs, trainable, backend = inputs
    ctx.save_for_backward(x, weight, bias, coeffs)
    ctx.trainable, ctx.backend = trainable, backend


def _backward(ctx, dy, backward_op=_simplex_linear_backward):
    x, weight, bias, coeffs = ctx.saved_tensors
    need_x, need_w, need_b, need_c = ctx.needs_input_grad[:4]
    needs = [need_x, need_w and bool(ctx.trainable), need_b and bias is not None and bool(ctx.trainable), need_c]
    grads = backward_op(dy, x, weight, bias, coeffs, ctx.trainable, ctx.backend, needs)
    out = [g if need else None for g, need in zip(grads, needs)]
    if need_w and out[1] is None:
        out[1] = torch.zeros_like(weight)
    if need_b and bias is not None and out[2] is None:
        out[2] = torch.zeros_like(bias)
    return (*out, None, None)


_simplex_linear.register_autograd(_backward, setup_context=_setup_context)


class _SimplexLinearEager(torch.autograd.Function):
    """The same forward and backward without the custom-op layer, whose Python overhead
    (tens of microseconds per call) matters for weight-bound layers; used outside torch.compile."""

    @staticmethod
    def forward(ctx, x, weight, bias, coeffs, trainable, backend):  # ctx-style: no signature binding per call
        _setup_context(ctx, (x, weight, bias, coeffs, trainable, backend), None)
        return _BACKENDS[backend].linear_forward(x, weight, bias, coeffs)

    @staticmethod
    def backward(ctx, dy):
        return _backward(ctx, dy, _linear_grads)


# --------------------------------------------------------------------------- checks


def _trainable_indices(trainable, k, weight, bias):
    if trainable is None:
        return list(range(k)) if weight.requires_grad or (bias is not None and bias.requires_grad) else []
    if isinstance(trainable, torch.Tensor):
        if trainable.dtype == torch.bool:
            if trainable.shape != (k,):
                raise ValueError(f"trainable as a boolean mask must have shape ({k},), got {tuple(trainable.shape)}")
            return [int(i) for i in torch.nonzero(trainable.cpu()).flatten()]
        trainable = trainable.tolist()
    items = list(trainable)
    if all(isinstance(t, bool) for t in items) and items:
        if len(items) != k:
            raise ValueError(f"trainable as a list of bools must have {k} entries, got {len(items)}")
        return [i for i, t in enumerate(items) if t]
    for t in items:
        if isinstance(t, bool) or not isinstance(t, int):
            raise TypeError(f"trainable must be a boolean mask or a list of vertex indices, got {trainable!r}")
        if not 0 <= t < k:
            raise ValueError(f"trainable index {t} is out of range for {k} vertices")
    return sorted(set(items))


def _canonical(x, weight, bias, coeffs):
    """Checks shapes, dtypes and devices; returns x as (M, in) shared or (S, M, in), coeffs
    as (S, k), and the output shape."""
    for t, name in ((x, "x"), (weight, "weight"), (coeffs, "coeffs")):
        _checks.floating(t, name)
    if bias is not None:
        _checks.floating(bias, "bias")
    if weight.dim() != 3 or weight.shape[0] < 1:
        raise ValueError(f"weight must have shape (k, out, in) with k >= 1 vertices, got {tuple(weight.shape)}")
    k, out_features, in_features = weight.shape
    if bias is not None and bias.shape != (k, out_features):
        raise ValueError(f"bias must have shape (k, out) = ({k}, {out_features}), got {tuple(bias.shape)}")
    if coeffs.dim() not in (1, 2) or coeffs.shape[-1] != k:
        raise ValueError(f"coeffs must have shape ({k},) or (S, {k}) for weight with k={k} vertices, "
                         f"got {tuple(coeffs.shape)}")
    if x.dim() < 1 or x.shape[-1] != in_features:
        raise ValueError(f"x must have shape (..., in) with in={in_features}, got {tuple(x.shape)}")
    for t, name in ((x, "x"), (bias, "bias")):
        if t is not None and t.dtype != weight.dtype:
            raise TypeError(f"{name} must have the dtype of weight ({weight.dtype}), got {t.dtype}")
    for t, name in ((x, "x"), (bias, "bias"), (coeffs, "coeffs")):
        if t is not None and t.device != weight.device:
            raise ValueError(f"{name} is on {t.device} but weight is on {weight.device}")
    _checks.finite(coeffs, "coeffs")
    if coeffs.dim() == 1:
        return x.reshape(-1, in_features), coeffs[None], (*x.shape[:-1], out_features), True
    S = coeffs.shape[0]
    if x.dim() == 2:
        return x, coeffs, (S, x.shape[0], out_features), False
    if x.dim() < 3 or x.shape[0] != S:
        raise ValueError(f"with coeffs of shape (S, k) = {tuple(coeffs.shape)}, x must be (B, in) shared by all "
                         f"points or (S, ..., in) with S={S}, got {tuple(x.shape)}")
    return x.reshape(S, -1, in_features), coeffs, (*x.shape[:-1], out_features), False


def simplex_linear(x, weight, bias, coeffs, *, trainable=None, backend=None):
    """Linear layer at the points ``W_s = sum_i coeffs[s, i] weight[i]``, ``b_s = sum_i coeffs[s, i] bias[i]``.

    - ``weight`` (k, out, in); ``bias`` (k, out) or None; ``coeffs`` (k,) for one point or
      (S, k) for S points (any real coefficients).
    - ``x``: (..., in) with (k,) coeffs -> (..., out). With (S, k) coeffs: (B, in) shared by
      all points, or (S, ..., in) one input per point -> (S, ..., out).
    - ``trainable``: the vertices that receive gradients (boolean mask or index list; default
      all when ``weight`` or ``bias`` requires grad). Fixed vertices' gradient rows are zero.
    - ``backend``: "triton", "torch", "reference" or "auto" (default: the ``use_backend``
      context, else $SIMPLEXKERN_BACKEND, else auto).

    Gradients flow to ``x``, ``weight``, ``bias`` and ``coeffs``.
    """
    x2, c2, out_shape, single = _canonical(x, weight, bias, coeffs)
    weight = weight.contiguous()  # kernels and gradient views assume a dense store (no copy if it is)
    bias = bias.contiguous() if bias is not None else None
    k = weight.shape[0]
    trainable = _trainable_indices(trainable, k, weight, bias)
    name = dispatch.resolve(weight.device, backend)
    if name == "reference":
        y = reference.simplex_linear(x2, weight, bias, c2, trainable)
    elif torch.compiler.is_compiling():
        y = _simplex_linear(x2, weight, bias, c2, trainable, name)
    else:
        y = _SimplexLinearEager.apply(x2, weight, bias, c2, trainable, name)
    return y[0].reshape(out_shape) if single else y.reshape(out_shape)
