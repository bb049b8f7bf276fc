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
import triton

from simplexkern.ops._fused import output_size
from simplexkern.ops.triton._config import dot_precision
from simplexkern.ops.triton.conv_forward import _conv_forward_kernel
from simplexkern.ops.triton.conv_input_grad import _conv_input_grad_kernel
from simplexkern.ops.triton.conv_weight_grad import _conv_weight_grad_kernel
from simplexkern.ops.vertices import bias_grads, weight_grads

#: The filter-gradient reduction is split until there are about this many programs per SM ...
PROGRAMS_PER_SM = 4
#: ... but never into chunks of fewer rows than this.
MIN_ROWS_PER_SPLIT = 4096


def _precision(dtype):
    return dot_precision(dtype, allow_tf32=torch.backends.cudnn.allow_tf32)  # as F.conv2d


def _point_strides(t):
    """(point, b, c, h, w) strides of a (B, C, H, W) shared tensor (point stride 0) or an (S, B, C, H, W) one."""
    return (0, *t.stride()) if t.dim() == 4 else t.stride()


def _empty(shape, like, dtype):
    """An (S, B, C, H, W) or (B, C, H, W) tensor, channels-last per point where ``like`` is."""
    sample = like if like.dim() == 4 else like[0]
    if sample.is_contiguous(memory_format=torch.channels_last) and not sample.is_contiguous():
        *lead, C, H, W = shape
        return torch.empty(*lead, H, W, C, device=like.device, dtype=dtype).movedim(-1, -3)
    return torch.empty(shape, device=like.device, dtype=dtype)


def _geometry(x, weight, conv):
    stride, padding, dilation, G = conv
    B, C, H, W = x.shape[-4:]
    O, Cg, KH, KW = weight.shape[1:]
    OH, OW = output_size((H, W), (KH, KW), stride, padding, dilation)
    return B, C, H, W, O, Cg, KH, KW, OH, OW, G, (*stride, *padding, *dilation)


def conv_forward(x, weight, bias, coeffs, conv):
    S, k = coeffs.shape
    B, C, H, W, O, Cg, KH, KW, OH, OW, G, hyper = _geometry(x, weight, conv)
    c = coeffs.float().contiguous()
    y = _empty((S, B, O, OH, OW), x, x.dtype)
    b = (c @ bias.float()).contiguous() if bias is not None else None
    M = B * OH * OW
    if M == 0:
        return y
    grid = lambda meta: (triton.cdiv(M, meta["BLOCK_M"]) * S * G, triton.cdiv(O // G, meta["BLOCK_N"]))
    _conv_forward_kernel[grid](
        x, weight, c, b if b is not None else c, y,
        M, H, W, OH, OW, Cg, O // G, G, k, KH, KW, *hyper,
        *_point_strides(x), *weight.stride(), *c.stride(), *y.stride(),
        HAS_BIAS=b is not None, PRECISION=_precision(x.dtype))
    return y


def _split(rows, tiles, device):
    """(chunks, rows per chunk) of a filter-gradient reduction over ``rows`` rows with ``tiles``
    output tiles: enough programs to fill the GPU, chunks of at least MIN_ROWS_PER_SPLIT rows."""
    sms = torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 1
    split = max(1, min(triton.cdiv(PROGRAMS_PER_SM * sms, tiles), rows // MIN_ROWS_PER_SPLIT))
    per_chunk = max(triton.cdiv(rows, split), 1)
    return max(triton.cdiv(rows, per_chunk), 1), per_chunk


def _filter_grad(dy, x, weight, cmat, rows, out, conv, n_out, per_point):
    """out[rows[j]] (+)= sum_s cmat[s, j] G_s, or out[s] = G_s when ``per_point`` (cmat unused).
    ``out`` must be zero and float32 where the reduction is split. Returns nothing."""
    B, C, H, W, O, Cg, KH, KW, OH, OW, G, hyper = _geometry(x, weight, conv)
    S, M, Og = dy.shape[0], B * OH * OW, O // G
    tiles = triton.cdiv(Og, 64) * KH * KW * triton.cdiv(Cg, 64) * n_out * G
    split = _split(M if per_point else S * M, tiles, weight.device)
    if split[0] > 1 and out.dtype != torch.float32:
        raise AssertionError("a split filter-gradient reduction accumulates into float32")
    grid = lambda meta: (n_out * G * split[0], KH * KW * triton.cdiv(Cg, meta["BLOCK_K"]),
                         triton.cdiv(Og, meta["BLOCK_N"]))
    _conv_weight_grad_kernel[grid](
        dy, x, cmat, rows, out,
        S * M, M, H, W, OH, OW, Cg, Og, G, KH, KW, *split, *hyper,
        *dy.stride(), *_point_strides(x), *cmat.stride(), *out.stride(),
        PER_POINT=per_point, PRECISION=_precision(x.dtype))


def conv_backward(dy, x, weight, bias, coeffs, conv, trainable, need_dx, need_dw, need_db, need_dc):
    S, k = coeffs.shape
    B, C, H, W, O, Cg, KH, KW, OH, OW, G, hyper = _geometry(x, weight, conv)
    c = coeffs.float().contiguous()
    shared = x.dim() == 4
    dx = dw = dc = None
    if need_dx:
        dx = _empty(x.shape, x, x.dtype)
        M = B * H * W
        grid = lambda meta: (triton.cdiv(M, meta["BLOCK_M"]) * G * (1 if shared else S),
                             triton.cdiv(Cg, meta["BLOCK_N"]))
        if B:
            _conv_input_grad_kernel[grid](
                dy, weight, c, dx,
                M, H, W, OH, OW, Cg, O // G, G, k, KH, KW, S if shared else 1, *hyper,
                *dy.stride(), *weight.stride(), *c.stride(), *_point_strides(dx),
                PRECISION=_precision(dy.dtype))
    if need_dw or need_dc:
        dev = weight.device
        if need_dc or len(trainable) != 1:  # the S per-point gradients, then one GEMM over the store
            g = torch.zeros(S, *weight.shape[1:], device=dev, dtype=torch.float32)
            if B:  # an empty batch leaves the gradient zero
                points = torch.arange(S, device=dev, dtype=torch.int32)
                _filter_grad(dy, x, weight, c, points, g, conv, S, per_point=True)
            dw, dc = weight_grads(g.view(S, -1), weight, c, trainable, need_dw, need_dc)
        else:  # straight into the trainable vertex's row (through float32 for a half-precision store)
            i = trainable[0]
            dw = torch.zeros_like(weight)
            direct = weight.dtype == torch.float32
            out = dw if direct else torch.zeros(1, *weight.shape[1:], device=dev, dtype=torch.float32)
            if B:  # an empty batch leaves the gradient zero
                rows = torch.full((1,), i if direct else 0, device=dev, dtype=torch.int32)  # made on the device
                _filter_grad(dy, x, weight, c[:, i:i + 1], rows, out, conv, 1, per_point=False)
            if not direct:
                dw[i] = out[0]
    db, dc = bias_grads(dy, bias, c, trainable, need_db, need_dc, dc, sum_dims=(1, 3, 4))
    return dx, dw, db, (dc.to(coeffs.dtype) if dc is not None else None)
