"""``simplex_linear``: a linear layer whose weights are a combination of k vertices, for
one point or S points in one call."""
from collections.abc import Iterable
from typing import List, Optional

import torch
from torch.autograd.function import once_differentiable

from simplexkern.ops import _fused, dispatch, linear_torch, reference


def _backend(name):
    """The module of backend ``name``; the Triton one is imported on first use (Triton is optional)."""
    if name == "torch":
        return linear_torch
    from simplexkern.ops import linear_triton

    return linear_triton


@torch.library.custom_op("simplexkern::simplex_linear", mutates_args=())
def _simplex_linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], coeffs: torch.Tensor,
                    trainable: List[int], backend: str) -> torch.Tensor:
    return _backend(backend).linear_forward(x, weight, bias, coeffs)


@_simplex_linear.register_fake
def _(x, weight, bias, coeffs, trainable, backend):
    return x.new_empty(coeffs.shape[0], x.shape[-2], weight.shape[1])


def _linear_grads(dy, x, weight, bias, coeffs, trainable, backend, needs):
    grads = _backend(backend).linear_backward(dy.contiguous(), x, weight, bias, coeffs, trainable, *needs)
    return _fused.as_op_outputs(grads, dy)


@torch.library.custom_op("simplexkern::simplex_linear_backward", mutates_args=())
def _simplex_linear_backward(dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                             coeffs: torch.Tensor, trainable: List[int], backend: str,
                             needs: List[bool]) -> List[torch.Tensor]:
    return _linear_grads(dy, x, weight, bias, coeffs, trainable, backend, needs)


@_simplex_linear_backward.register_fake
def _(dy, x, weight, bias, coeffs, trainable, backend, needs):
    return _fused.fake_grads(dy, x, weight, bias, coeffs, needs)


def _setup_context(ctx, inputs, output):
    x, weight, bias, coeffs, trainable, backend = inputs
    ctx.save_for_backward(x, weight, bias, coeffs)
    ctx.trainable, ctx.backend = trainable, backend


def _backward(ctx, dy, backward_op=_simplex_linear_backward):
    x, weight, bias, coeffs = ctx.saved_tensors
    needs = _fused.needed_grads(ctx.needs_input_grad, bias, ctx.trainable)
    grads = backward_op(dy, x, weight, bias, coeffs, ctx.trainable, ctx.backend, needs)
    return _fused.autograd_outputs(grads, needs, ctx.needs_input_grad, weight, bias, 2)


_simplex_linear.register_autograd(_backward, setup_context=_setup_context)


class _SimplexLinearEager(torch.autograd.Function):
    """The same forward and backward without the custom-op layer, whose Python overhead
    (tens of microseconds per call) matters for weight-bound layers; used outside torch.compile."""

    @staticmethod
    def forward(ctx, x, weight, bias, coeffs, trainable, backend):  # ctx-style: no signature binding per call
        _setup_context(ctx, (x, weight, bias, coeffs, trainable, backend), None)
        return _backend(backend).linear_forward(x, weight, bias, coeffs).detach()  # in-place ops allowed on it

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        return _backward(ctx, dy, _linear_grads)


def _canonical(x, weight, bias, coeffs):
    """Checks shapes, dtypes and devices; returns x as (M, in) shared or (S, M, in), coeffs
    as (S, k), and the output shape."""
    _fused.check_operands(x, weight, bias, coeffs, 3, "(k, out, in)")
    in_features, out_features = weight.shape[2], weight.shape[1]
    if x.dim() < 1 or x.shape[-1] != in_features:
        raise ValueError(f"x must have shape (..., in) with in={in_features}, got {tuple(x.shape)}")
    if coeffs.dim() == 1:
        return x.reshape(-1, in_features), coeffs[None], (*x.shape[:-1], out_features), True
    S = coeffs.shape[0]
    if x.dim() == 2:
        return x, coeffs, (S, x.shape[0], out_features), False
    if x.dim() < 3 or x.shape[0] != S:
        raise ValueError(f"with coeffs of shape (S, k) = {tuple(coeffs.shape)}, x must be (B, in) shared by all "
                         f"points or (S, ..., in) with S={S}, got {tuple(x.shape)}")
    return x.reshape(S, -1, in_features), coeffs, (*x.shape[:-1], out_features), False


def simplex_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, coeffs: torch.Tensor, *,
                   trainable: torch.Tensor | Iterable[int] | None = None, backend: str | None = None) -> torch.Tensor:
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
    trainable = _fused.trainable_indices(trainable, k, weight, bias)
    name = dispatch.resolve(weight.device, backend)
    if name == "reference":
        y = reference.simplex_linear(x2, weight, bias, c2, trainable)
    elif torch.compiler.is_compiling() and name == "torch":  # plain aten ops: the compiler sees and fuses them
        y = linear_torch.linear_forward(x2, _fused.gradient_rows(weight, trainable),
                                        _fused.gradient_rows(bias, trainable), c2)
    elif torch.compiler.is_compiling():
        y = _simplex_linear(x2, weight, bias, c2, trainable, name)
    else:
        y = _SimplexLinearEager.apply(x2, weight, bias, c2, trainable, name)
    return y[0].reshape(out_shape) if single else y.reshape(out_shape)
