"""The ``torch`` backend of simplex_conv2d: materialise the S combined filters with one GEMM
over the vertices, run the S convolutions, and scatter the per-point filter gradients back
to the trainable vertices with one GEMM.

The S convolutions run either as one grouped convolution (the points side by side as groups
of channels; for an input shared by all points, one convolution with S times the output
channels) or as a loop of S convolutions. The grouped form is one launch and always wins on
a GPU; on the CPU neither wins everywhere, and ``grouped_on_cpu`` picks from measurements.
"""

import torch
import torch.nn.functional as F

from simplexkern.ops._fused import output_size
from simplexkern.ops.vertices import (
    bias_grads,
    combine_vertices,
    inner,
    rows_out,
    single_row_grad,
    single_trainable,
    weight_grads,
)


def grouped_on_cpu(shared, in_per_group, macs_per_point, out_pixels):
    """Whether one grouped convolution beats the per-point loop on the CPU, from
    benchmarks/conv_strategy_cpu.py (VGG16 layers at 1/2 to 1/16 width, batch 16 and 64,
    2 threads, S = 5): a shared input always (one convolution, no copies); per-point inputs
    when the per-point work is small enough for the loop's per-call cost to matter and the
    groups are not too narrow (few channels at a large image: the copies into and out of
    the grouped layout dominate)."""
    if shared:
        return True
    return in_per_group >= 8 and (macs_per_point <= 24e6 or (macs_per_point <= 48e6 and out_pixels <= 256))


def _grouped(x, weight, conv):
    if x.device.type != "cpu":
        return True
    O, Cg, KH, KW = weight.shape[1:]
    OH, OW = output_size(x.shape[-2:], (KH, KW), *conv[:3])
    return grouped_on_cpu(x.dim() == 4, Cg, x.shape[-4] * OH * OW * O * Cg * KH * KW, OH * OW)


def _points_as_channels(t):
    """(S, B, C, H, W) -> (B, S * C, H, W), keeping a channels-last layout channels-last."""
    S, B, C, H, W = t.shape
    if t[0].is_contiguous(memory_format=torch.channels_last) and not t[0].is_contiguous():
        return t.permute(1, 3, 4, 0, 2).reshape(B, H, W, S * C).permute(0, 3, 1, 2)
    return t.transpose(0, 1).reshape(B, S * C, H, W)


def _shared_filters(w, g):
    """(S, O, Cg, kh, kw) -> (g * S * Og, Cg, kh, kw): group-major, then point."""
    S, O = w.shape[:2]
    return w.unflatten(1, (g, O // g)).transpose(0, 1).reshape(S * O, *w.shape[2:])


def _from_shared_filters(w, g, n):
    """The inverse of ``_shared_filters`` for n points: (g * n * Og, ...) -> (n, O, ...)."""
    return w.unflatten(0, (g, n, -1)).transpose(0, 1).flatten(1, 2)


def _as_grouped(t, g):
    """(n, B, O, H, W) -> (B, g * n * O / g, H, W), the layout of a convolution with
    ``_shared_filters``."""
    n, B, O = t.shape[:3]
    return t.unflatten(2, (g, O // g)).permute(1, 2, 0, 3, 4, 5).reshape(B, g * n * (O // g), *t.shape[3:])


def _from_grouped(y, g, n):
    """The inverse of ``_as_grouped``: (B, g * n * Og, H, W) -> an (n, B, O, H, W) view."""
    return y.unflatten(1, (g, n, -1)).permute(2, 0, 1, 3, 4, 5).flatten(2, 3)


def combines_products(x, weight, coeffs):
    """Whether to convolve a shared input with the k vertices' filters and combine the k outputs,
    ``y_s = sum_i c_si (x * W_i) + b_s`` (exact while x is shared), instead of convolving
    it with the S points' filters: k < S convolutions' worth of work instead of S."""
    return x.dim() == 4 and weight.shape[0] < coeffs.shape[0]


def _vertex_outputs(x, weight, conv):
    """x * W_i for every vertex i, in the grouped layout (B, g * k * O / g, H', W')."""
    stride, padding, dilation, g = conv
    return F.conv2d(x, _shared_filters(weight, g), None, stride, padding, dilation, g)


def conv_forward(x, weight, bias, coeffs, conv):
    """``x`` (B, C, H, W) shared or (S, B, C, H, W) -> (S, B, O, H', W'), a view of an
    example-major (B, S, O, H', W') buffer (with ``x`` example-major too, no copies).
    ``conv`` = (stride, padding, dilation, groups)."""
    stride, padding, dilation, g = conv
    S, O = coeffs.shape[0], weight.shape[1]
    b = coeffs.to(bias.dtype) @ bias if bias is not None else None  # (S, O)
    if combines_products(x, weight, coeffs):
        yk = _vertex_outputs(x, weight, conv).unflatten(1, (g, weight.shape[0], O // g))  # (B, g, k, O/g, H', W')
        y = torch.matmul(coeffs.to(weight.dtype), yk.flatten(3))  # (B, g, S, O / g * H' * W'): one small GEMM each
        # (S, B, O, H', W'), example-major underneath (as a SimplexModel merges points) when g = 1
        y = y.unflatten(3, yk.shape[3:]).transpose(1, 2).flatten(2, 3).transpose(0, 1)
        return y if b is None else y.add_(b[:, None, :, None, None].to(y.dtype))
    w = combine_vertices(coeffs, weight)  # (S, O, Cg, kh, kw)
    shared = x.dim() == 4
    if S == 1:  # one point: no copy into a points dimension
        return F.conv2d(x if shared else x[0], w[0], b[0] if b is not None else None, *conv)[None]
    if not _grouped(x, weight, conv):
        return torch.stack(
            [F.conv2d(x if shared else x[s], w[s], b[s] if b is not None else None, *conv) for s in range(S)], 1
        ).transpose(0, 1)  # example-major underneath
    if shared:  # one convolution with the S points' filters side by side in each group
        bg = b.unflatten(1, (g, O // g)).transpose(0, 1).reshape(-1) if b is not None else None
        return _from_grouped(F.conv2d(x, _shared_filters(w, g), bg, stride, padding, dilation, g), g, S)
    y = F.conv2d(
        _points_as_channels(x),
        w.flatten(0, 1),
        b.reshape(-1) if b is not None else None,
        stride,
        padding,
        dilation,
        S * g,
    )
    return y.unflatten(1, (S, O)).transpose(0, 1)


def _conv_backward(dy, x, w, conv, groups, need_dx, need_g):
    stride, padding, dilation, _ = conv
    return torch.ops.aten.convolution_backward(
        dy, x, w, None, stride, padding, dilation, False, [0, 0], groups, [need_dx, need_g, False]
    )[:2]


def conv_backward(dy, x, weight, bias, coeffs, conv, trainable, need_dx, need_dw, need_db, need_dc):
    """Gradients (dx, dweight, dbias, dcoeffs); None where not needed. Fixed vertices' rows
    of dweight and dbias are zero."""
    g = conv[3]
    S = coeffs.shape[0]
    shared = x.dim() == 4
    need_g = need_dw or need_dc
    dx = dw = dc = None
    products = combines_products(x, weight, coeffs)
    t = None if products else single_trainable(trainable, need_dw, need_dc)
    if t is not None:
        dw, need_g = _single_weight_grad(dy, x, weight, coeffs, conv, t), False
    if products and (need_dx or need_g):
        dx, dw, dc = _products_backward(dy, x, weight, coeffs, conv, trainable, need_dx, need_dw, need_dc)
    elif need_dx or need_g:
        w = combine_vertices(coeffs, weight)
        if S == 1 or not _grouped(x, weight, conv):
            parts = [_conv_backward(dy[s], x if shared else x[s], w[s], conv, g, need_dx, need_g) for s in range(S)]
            if need_dx:
                dx = sum(p[0] for p in parts) if shared else torch.stack([p[0] for p in parts])
            gw = torch.stack([p[1] for p in parts]).reshape(S, -1) if need_g else None
        elif shared:
            dx, gw = _conv_backward(_as_grouped(dy, g), x, _shared_filters(w, g), conv, g, need_dx, need_g)
            gw = _from_shared_filters(gw, g, S).reshape(S, -1) if need_g else None
        else:
            dxg, gw = _conv_backward(
                _points_as_channels(dy), _points_as_channels(x), w.flatten(0, 1), conv, S * g, need_dx, need_g
            )
            dx = dxg.unflatten(1, (S, x.shape[2])).transpose(0, 1) if need_dx else None
            gw = gw.reshape(S, -1) if need_g else None
        if need_g:
            dw, dc = weight_grads(gw, weight, coeffs, trainable, need_dw, need_dc)
    db, dc = bias_grads(dy, bias, coeffs, trainable, need_db, need_dc, dc, sum_dims=(1, 3, 4))
    return dx, dw, db, (dc.to(coeffs.dtype) if dc is not None else None)


def _merged(t, example_major):
    """(S, B, ...) -> (S * B, ...) in example-major or point-major order (a view where the
    memory already is in that order)."""
    return t.transpose(0, 1).flatten(0, 1) if example_major else t.flatten(0, 1)


def _single_weight_grad(dy, x, weight, coeffs, conv, t):
    """dweight for one trainable vertex t: dV_t = sum_s c_st dY_s * X_s as one filter gradient
    over all S x B examples (a shared input: over B, with sum_s c_st dY_s)."""
    dw, row = single_row_grad(weight, t)
    c = coeffs[:, t].to(dy.dtype)
    if x.dim() == 4:
        grad, inputs = torch.tensordot(c, dy, 1), x
    else:
        S = x.shape[0]
        example_major = S > 1 and x.stride(1) == S * x.stride(0)
        grad = _merged(dy * c[:, None, None, None, None], example_major)
        inputs = _merged(x, example_major)
    row.copy_(_conv_backward(grad, inputs, weight[t], conv, conv[3], False, True)[1])
    return dw


def _products_backward(dy, x, weight, coeffs, conv, trainable, need_dx, need_dw, need_dc):
    """(dx, dweight, dcoeffs) of the ``combines_products`` form: with G_i = sum_s c_si dY_s, dx
    is the input gradient of the k vertices' convolution at G, dW_i its filter gradient for
    the trainable i only, and dc_si = <dY_s, x * W_i>."""
    g, k = conv[3], weight.shape[0]
    grad = combine_vertices(coeffs.T, dy)  # (k, B, O, H', W')
    dx = dw = dc = None
    if need_dx:
        dx = _conv_backward(_as_grouped(grad, g), x, _shared_filters(weight, g), conv, g, True, False)[0]
    if need_dw:
        dw, idx = rows_out(weight, trainable)
        if idx is not None:
            t = weight[idx]
            gw = _conv_backward(_as_grouped(grad[idx], g), x, _shared_filters(t, g), conv, g, False, True)[1]
            dw[idx] = _from_shared_filters(gw, g, t.shape[0])
    if need_dc:
        dc = inner(dy, _from_grouped(_vertex_outputs(x, weight, conv), g, k))
    return dx, dw, dc
