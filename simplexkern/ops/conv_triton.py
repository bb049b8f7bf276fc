"""The ``triton`` backend of simplex_conv2d: implicit-GEMM kernels with the vertex
combination fused in (simplexkern.ops.triton.conv_*). The S points run in one launch per
pass; the S combined filters are never stored; the filter gradient is combined over points
as it is accumulated and written only into the trainable vertices' rows.

With exactly one trainable vertex and no coefficient gradient (the SPRO / ESPRO step), the
filter-gradient kernel writes dV_i = sum_s c_si G_s directly. Otherwise it produces the S
per-point gradients G_s once and one GEMM over the store gives every trainable dV_i and
dc_si = <G_s, V_i> (k trainable vertices would otherwise cost k passes).
"""

import torch

from simplexkern.ops.triton import conv_forward as forward_kernel
from simplexkern.ops.triton import conv_input_grad as input_grad_kernel
from simplexkern.ops.triton import conv_weight_grad as weight_grad_kernel
from simplexkern.ops.triton._conv_launch import conv_shape
from simplexkern.ops.vertices import bias_grads, weight_grads


def _empty(shape, like, dtype):
    """An (S, B, C, H, W) or (B, C, H, W) tensor, channels-last per point where ``like`` is."""
    sample = like if like.dim() == 4 else like[0]
    if sample.is_contiguous(memory_format=torch.channels_last) and not sample.is_contiguous():
        *lead, C, H, W = shape
        return torch.empty(*lead, H, W, C, device=like.device, dtype=dtype).movedim(-1, -3)
    return torch.empty(shape, device=like.device, dtype=dtype)


def conv_forward(x, weight, bias, coeffs, conv):
    weight = weight.contiguous()  # the kernels walk a dense store (a model's store slots are views)
    S, k = coeffs.shape
    B, C, H, W, O, Cg, KH, KW, OH, OW, G, hyper = conv_shape(x, weight, conv)
    c = coeffs.float().contiguous()
    y = _empty((S, B, O, OH, OW), x, x.dtype)
    b = (c @ bias.float()).contiguous() if bias is not None else None
    if B * OH * OW:
        forward_kernel.launch(x, weight, c, b, y, conv)
    return y


def conv_backward(dy, x, weight, bias, coeffs, conv, trainable, need_dx, need_dw, need_db, need_dc):
    weight = weight.contiguous()  # the kernels walk a dense store (a model's store slots are views)
    S, k = coeffs.shape
    B, C, H, W, O, Cg, KH, KW, OH, OW, G, hyper = conv_shape(x, weight, conv)
    c = coeffs.float().contiguous()
    dx = dw = dc = None
    if need_dx:
        dx = _empty(x.shape, x, x.dtype)
        if B:
            input_grad_kernel.launch(dy, weight, c, dx, conv)
    if need_dw or need_dc:
        dev = weight.device
        if need_dc or len(trainable) != 1:  # the S per-point gradients, then one GEMM over the store
            g = torch.zeros(S, *weight.shape[1:], device=dev, dtype=torch.float32)
            if B:  # an empty batch leaves the gradient zero
                points = torch.arange(S, device=dev, dtype=torch.int32)
                weight_grad_kernel.launch(dy, x, weight, c, points, g, conv, S, per_point=True)
            dw, dc = weight_grads(g.view(S, -1), weight, c, trainable, need_dw, need_dc)
        else:  # straight into the trainable vertex's row (through float32 for a half-precision store)
            i = trainable[0]
            dw = torch.zeros_like(weight)
            direct = weight.dtype == torch.float32
            out = dw if direct else torch.zeros(1, *weight.shape[1:], device=dev, dtype=torch.float32)
            if B:  # an empty batch leaves the gradient zero
                rows = torch.full((1,), i if direct else 0, device=dev, dtype=torch.int32)  # made on the device
                weight_grad_kernel.launch(dy, x, weight, c[:, i : i + 1], rows, out, conv, 1, per_point=False)
            if not direct:
                dw[i] = out[0]
    db, dc = bias_grads(dy, bias, c, trainable, need_db, need_dc, dc, sum_dims=(1, 3, 4))
    return dx, dw, db, (dc.to(coeffs.dtype) if dc is not None else None)
