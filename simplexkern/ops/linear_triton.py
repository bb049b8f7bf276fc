"""The ``triton`` backend.

Up to FUSED_MAX_ROWS rows per point (the weight-bound regime) the fused kernels run: every
product is taken against the whole vertex store at once and the combination over vertices
is applied to the small operand (the activations or their gradients) in the prologue or
epilogue, so the store is read once per pass, no combined weight W_s is formed, and only the
trainable vertices' gradient rows are written. Above it (compute-bound: the GEMMs dominate
and the fused forms would do k times their arithmetic) the S weights are materialised by the
Triton combine kernel, one pass over the store, and cuBLAS runs the GEMMs.
The caller (simplexkern.ops.linear) passes a contiguous weight.
"""
import torch
import triton

from simplexkern.ops import linear_torch, vertices
from simplexkern.ops.triton._config import dot_precision, next_pow2
from simplexkern.ops.triton.combine import combine
from simplexkern.ops.triton.vertex_input_grad import _vertex_input_grad_kernel
from simplexkern.ops.triton.vertex_matmul import COEFF_GRAD, FORWARD, _vertex_matmul_kernel
from simplexkern.ops.triton.vertex_weight_grad import _vertex_weight_grad_kernel

#: Rows per point up to which the fused kernels run. Measured on an H100: fused faster at 16
#: and 64 rows, materialised at 8192; the crossover in between has not been located.
FUSED_MAX_ROWS = 256


def _rows(x, S):
    """A as rows: (M, K) shared, or (S * M, K) per point; and M."""
    if x.dim() == 2:
        return x.contiguous(), x.shape[0]
    return x.reshape(S * x.shape[1], x.shape[2]).contiguous(), x.shape[1]


def _vertex_matmul(a, M, shared, weight, c, mode, y, *, bias=None, dc=None):
    S, k = c.shape
    R, K = a.shape
    N = weight.shape[1]
    grid = lambda meta: (triton.cdiv(R, meta["BLOCK_M"]), triton.cdiv(N, meta["BLOCK_N"]))
    if dc is None:  # the autotuner zeroes dc_ptr between trials: never alias it to an input
        dc = torch.empty(1, device=a.device, dtype=torch.float32)
    _vertex_matmul_kernel[grid](
        a, weight, c, bias if bias is not None else c, y, dc,
        S, R, M, N, K, k,
        a.stride(0), a.stride(1), weight.stride(0), weight.stride(1), weight.stride(2), c.stride(0), c.stride(1),
        SHARED=shared, MODE=mode, HAS_BIAS=bias is not None, NV_BLOCK=next_pow2(k), PRECISION=dot_precision(a.dtype))


def linear_forward(x, weight, bias, coeffs):
    S, k = coeffs.shape
    if x.shape[-2] > FUSED_MAX_ROWS:
        return linear_torch.linear_forward(x, weight, bias, coeffs, combine=_combine)
    c = coeffs.float().contiguous()
    a, M = _rows(x, S)
    y = torch.empty(S, M, weight.shape[1], device=x.device, dtype=x.dtype)
    b = (c @ bias.float()).to(x.dtype).contiguous() if bias is not None else None
    _vertex_matmul(a, M, x.dim() == 2, weight, c, FORWARD, y, bias=b)
    return y


def linear_backward(dy, x, weight, bias, coeffs, trainable, need_dx, need_dw, need_db, need_dc):
    S, k = coeffs.shape
    if x.shape[-2] > FUSED_MAX_ROWS:
        return linear_torch.linear_backward(dy, x, weight, bias, coeffs, trainable, need_dx, need_dw, need_db,
                                             need_dc, combine=_combine)
    c = coeffs.float().contiguous()
    shared = x.dim() == 2
    a, M = _rows(x, S)
    N, K = weight.shape[1:]
    dy_rows = dy.reshape(S * M, N).contiguous()
    precision = dot_precision(dy.dtype)
    dx = dw = db = dc = None
    if need_dx:
        if shared:  # A_i = sum_s c_si dY_s, small, formed here
            ai = torch.einsum("si,smn->imn", c, dy.float()).to(dy.dtype).contiguous()
            strides, rows = (ai.stride(0), ai.stride(1), ai.stride(2)), M
        else:
            ai, strides, rows = dy_rows, (0, dy_rows.stride(0), dy_rows.stride(1)), S * M
        dx = torch.empty(rows, K, device=dy.device, dtype=dy.dtype)
        grid = lambda meta: (triton.cdiv(rows, meta["BLOCK_M"]), triton.cdiv(K, meta["BLOCK_N"]))
        _vertex_input_grad_kernel[grid](
            ai, weight, c, dx, rows, M, N, K, k, *strides,
            weight.stride(0), weight.stride(1), weight.stride(2), c.stride(0), c.stride(1),
            SCALE_ROWS=not shared, PRECISION=precision)
        dx = dx if shared else dx.view(S, M, K)
    if need_dw:
        dw = torch.empty_like(weight)
        for i in range(k):  # fixed rows: one memset each (list indexing would scatter element-wise)
            if i not in trainable:
                dw[i].zero_()
        if trainable:
            idx = vertices.rows(trainable, weight.device)
            idx = (torch.arange(idx.start, idx.stop, device=weight.device, dtype=torch.int32)  # made on the device
                   if isinstance(idx, slice) else idx.to(torch.int32))
            grid = lambda meta: (triton.cdiv(N, meta["BLOCK_N"]), triton.cdiv(K, meta["BLOCK_K"]), len(trainable))
            _vertex_weight_grad_kernel[grid](
                dy_rows, a, c, idx, dw, S * M, M, N, K,
                dy_rows.stride(0), dy_rows.stride(1), a.stride(0), a.stride(1), c.stride(0), c.stride(1),
                dw.stride(0), dw.stride(1), dw.stride(2), SHARED_X=shared, PRECISION=precision)
    if need_dc:
        dc = torch.zeros(S, k, device=dy.device, dtype=torch.float32)
        _vertex_matmul(a, M, shared, weight, c, COEFF_GRAD, dy_rows, dc=dc)
    db, dc = vertices.bias_grads(dy, bias, c, trainable, need_db, need_dc, dc)
    return dx, dw, db, (dc.to(coeffs.dtype) if dc is not None else None)


def _combine(coeffs, store):
    return combine(coeffs.float().contiguous(), store)
