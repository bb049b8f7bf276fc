"""``simplex_conv2d``: a 2-D convolution whose filters are a combination of k vertices, for
one point or S points in one call."""

import numbers
from collections.abc import Iterable

import torch
import torch.nn.functional as F

from simplexkern import _checks
from simplexkern.ops import _fused, conv_torch, dispatch, reference


def _backend(name):
    """The module of backend ``name``; the Triton one is imported on first use (Triton is optional)."""
    if name == "torch":
        return conv_torch
    from simplexkern.ops import conv_triton

    return conv_triton


def _forward(x, weight, bias, coeffs, stride, padding, dilation, groups, trainable, backend):
    return _backend(backend).conv_forward(x, weight, bias, coeffs, (stride, padding, dilation, groups))


def _backward(dy, x, weight, bias, coeffs, stride, padding, dilation, groups, trainable, backend, needs):
    return _backend(backend).conv_backward(
        dy, x, weight, bias, coeffs, (stride, padding, dilation, groups), trainable, *needs
    )


def _output_shape(x, weight, coeffs, stride, padding, dilation, *_):
    return (
        coeffs.shape[0],
        x.shape[-4],
        weight.shape[1],
        *_fused.output_size(x.shape[-2:], weight.shape[-2:], stride, padding, dilation),
    )


_op = _fused.FusedOp(
    "simplex_conv2d",
    "int[] stride, int[] padding, int[] dilation, int groups, int[] trainable, str backend",
    _forward,
    _backward,
    _output_shape,
    shared_dims=4,
)


def _pair(value, name, minimum):
    items = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(items) != 2 or any(isinstance(v, bool) or not isinstance(v, numbers.Integral) for v in items):
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    if any(v < minimum for v in items):
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return [int(v) for v in items]


def _padding(padding, stride, dilation, kernel_hw):
    """Symmetric padding (top, left) and the extra bottom/right row and column that "same"
    needs for an even effective kernel size."""
    if isinstance(padding, str):
        if padding == "valid":
            return [0, 0], [0, 0]
        if padding != "same":
            raise ValueError(f"padding must be an int, a pair of ints, 'same' or 'valid', got {padding!r}")
        if stride != [1, 1]:
            raise ValueError(f"padding='same' needs stride 1, got stride={stride}")
        total = [d * (kk - 1) for d, kk in zip(dilation, kernel_hw)]
        return [t // 2 for t in total], [t - t // 2 * 2 for t in total]
    return _pair(padding, "padding", 0), [0, 0]


def _canonical(x, weight, bias, coeffs, groups):
    """Checks shapes; returns x as (B, C, H, W) shared or (S, B, C, H, W), coeffs as (S, k),
    and whether a single point was asked for."""
    _fused.check_operands(x, weight, bias, coeffs, 5, "(k, out, in / groups, kh, kw)")
    _checks.count(groups, "groups")
    out_channels, in_per_group = weight.shape[1:3]
    if out_channels % groups:
        raise ValueError(f"weight's out channels ({out_channels}) must be divisible by groups={groups}")
    single = coeffs.dim() == 1
    S = 1 if single else coeffs.shape[0]
    if x.dim() == 5 and not single and x.shape[0] != S:
        raise ValueError(
            f"x of shape (S, B, C, H, W) must have S={S} points, as coeffs {tuple(coeffs.shape)}; got {tuple(x.shape)}"
        )
    if x.dim() != 4 and (single or x.dim() != 5):
        expected = "(B, C, H, W)" if single else f"(B, C, H, W) shared by all points or (S={S}, B, C, H, W)"
        raise ValueError(f"x must have shape {expected}, got {tuple(x.shape)}")
    if x.shape[-3] != in_per_group * groups:
        raise ValueError(
            f"x must have {in_per_group * groups} channels (weight's in / groups = {in_per_group}, "
            f"groups={groups}), got {x.shape[-3]}"
        )
    return x, (coeffs[None] if single else coeffs), single


def simplex_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    coeffs: torch.Tensor,
    stride: int | tuple[int, int] | list[int] = 1,
    padding: int | tuple[int, int] | list[int] | str = 0,
    dilation: int | tuple[int, int] | list[int] = 1,
    groups: int = 1,
    *,
    trainable: torch.Tensor | Iterable[int] | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    """2-D convolution at the points ``W_s = sum_i coeffs[s, i] weight[i]``, ``b_s = sum_i coeffs[s, i] bias[i]``.

    - ``weight`` (k, out, in / groups, kh, kw); ``bias`` (k, out) or None; ``coeffs`` (k,)
      for one point or (S, k) for S points (any real coefficients).
    - ``x``: (B, C, H, W) with (k,) coeffs -> (B, out, H', W'). With (S, k) coeffs:
      (B, C, H, W) shared by all points, or (S, B, C, H, W) one input per point ->
      (S, B, out, H', W'). Any memory layout (NCHW, channels_last); the output may be a
      strided view.
    - ``stride``, ``padding`` (int, pair, "same" or "valid"), ``dilation``, ``groups``: as
      ``torch.nn.functional.conv2d``.
    - ``trainable``, ``backend``: as ``simplex_linear``.

    Gradients flow to ``x``, ``weight``, ``bias`` and ``coeffs``.
    """
    x, c2, single = _canonical(x, weight, bias, coeffs, groups)
    conv, extra = conv_arguments(stride, padding, dilation, weight.shape[-2:], groups)
    if any(extra):  # "same" with an even kernel: the odd row/column goes at the bottom/right, as in PyTorch
        x = F.pad(x, (0, extra[1], 0, extra[0]))
    weight = weight.contiguous()
    bias = bias.contiguous() if bias is not None else None
    y = conv2d(x, weight, bias, c2, conv, _fused.trainable_indices(trainable, weight.shape[0], weight, bias), backend)
    return y[0] if single else y


def conv_arguments(stride, padding, dilation, kernel_hw, groups):
    """((stride, padding, dilation, groups) as lists of two ints and an int, the extra
    (bottom, right) padding of "same" with an even kernel), checked."""
    stride = _pair(stride, "stride", 1)
    dilation = _pair(dilation, "dilation", 1)
    padding, extra = _padding(padding, stride, dilation, list(kernel_hw))
    return (stride, padding, dilation, int(groups)), extra


def conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    coeffs: torch.Tensor,
    conv: tuple[list[int], list[int], list[int], int],
    trainable: list[int],
    backend: str | None = None,
) -> torch.Tensor:
    """``simplex_conv2d`` without its checks, for callers that made its operands valid (the
    simplex layers): ``x`` (B, C, H, W) shared or (S, B, C, H, W), ``coeffs`` (S, k)
    finite, ``weight`` and ``bias`` dense per vertex (a store's views), ``conv`` from
    ``conv_arguments``, ``trainable`` a sorted index list -> (S, B, out, H', W'). ``coeffs`` (k,) (one point;
    batched under a SimplexModel's vmap) -> (B, out, H', W')."""
    stride, padding, dilation, _ = conv
    kernel_hw = weight.shape[-2:]
    if min(_fused.output_size(x.shape[-2:], kernel_hw, stride, padding, dilation)) < 1:
        raise ValueError(
            f"the input of size {tuple(x.shape[-2:])} (padded by {padding}) is smaller than the "
            f"kernel {tuple(kernel_hw)} at dilation {dilation}"
        )
    name = dispatch.resolve(weight.device, backend, gpu_auto="torch", dtype=weight.dtype)
    if name != "reference" and not (torch.compiler.is_compiling() and name == "torch"):
        return (_op.point if coeffs.dim() == 1 else _op)(x, weight, bias, coeffs, *conv, trainable, name)
    single = coeffs.dim() == 1
    c = coeffs[None] if single else coeffs
    if name == "reference":
        y = reference.simplex_conv2d(x, weight, bias, c, conv, trainable)
    else:  # compiling: plain aten ops, which the compiler sees and fuses
        y = conv_torch.conv_forward(
            x, _fused.gradient_rows(weight, trainable), _fused.gradient_rows(bias, trainable), c, conv
        )
    return y[0] if single else y
