"""``simplex_linear``: a linear layer whose weights are a combination of k vertices, for
one point or S points in one call."""

from collections.abc import Iterable

import torch

from simplexkern.ops import _fused, dispatch, linear_torch, reference


def _backend(name):
    """The module of backend ``name``; the Triton one is imported on first use (Triton is optional)."""
    if name == "torch":
        return linear_torch
    from simplexkern.ops import linear_triton

    return linear_triton


def _forward(x, weight, bias, coeffs, trainable, backend):
    return _backend(backend).linear_forward(x, weight, bias, coeffs)


def _backward(dy, x, weight, bias, coeffs, trainable, backend, needs):
    return _backend(backend).linear_backward(dy.contiguous(), x, weight, bias, coeffs, trainable, *needs)


_op = _fused.FusedOp(
    "simplex_linear",
    "int[] trainable, str backend",
    _forward,
    _backward,
    lambda x, weight, coeffs, *_: (coeffs.shape[0], x.shape[-2], weight.shape[1]),
    shared_dims=2,
)


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
        raise ValueError(
            f"with coeffs of shape (S, k) = {tuple(coeffs.shape)}, x must be (B, in) shared by all "
            f"points or (S, ..., in) with S={S}, got {tuple(x.shape)}"
        )
    return x.reshape(S, -1, in_features), coeffs, (*x.shape[:-1], out_features), False


def simplex_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    coeffs: torch.Tensor,
    *,
    trainable: torch.Tensor | Iterable[int] | None = None,
    backend: str | None = None,
) -> torch.Tensor:
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
    y = linear(x2, weight, bias, c2, _fused.trainable_indices(trainable, weight.shape[0], weight, bias), backend)
    return y[0].reshape(out_shape) if single else y.reshape(out_shape)


def linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    coeffs: torch.Tensor,
    trainable: list[int],
    backend: str | None = None,
) -> torch.Tensor:
    """``simplex_linear`` without its checks, for callers that made its operands valid (the
    simplex layers): ``x`` (M, in) shared or (S, M, in), ``coeffs`` (S, k) finite,
    ``weight`` and ``bias`` dense per vertex (a store's views), ``trainable`` a sorted index
    list -> (S, M, out).
    ``coeffs`` (k,) (one point; batched under a SimplexModel's vmap) -> (M, out)."""
    name = dispatch.resolve(weight.device, backend, dtype=weight.dtype)
    if name != "reference" and not (torch.compiler.is_compiling() and name == "torch"):
        return (_op.point if coeffs.dim() == 1 else _op)(x, weight, bias, coeffs, trainable, name)
    single = coeffs.dim() == 1
    c = coeffs[None] if single else coeffs
    if name == "reference":
        y = reference.simplex_linear(x, weight, bias, c, trainable)
    else:  # compiling: plain aten ops, which the compiler sees and fuses
        y = linear_torch.linear_forward(
            x, _fused.gradient_rows(weight, trainable), _fused.gradient_rows(bias, trainable), c
        )
    return y[0] if single else y
