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

from simplexkern.ops import linear_materialised, vertices
from simplexkern.ops.triton import linear_forward as forward_kernel
from simplexkern.ops.triton import linear_input_grad as input_grad_kernel
from simplexkern.ops.triton import linear_weight_grad as weight_grad_kernel
from simplexkern.ops.triton.combine import combine

#: Rows per point up to which the fused kernels run. Measured on an H100: fused faster at 16
#: and 64 rows, materialised at 8192; the crossover in between has not been located.
FUSED_MAX_ROWS = 256


def _rows(x, S):
    """A as rows: (M, K) shared, or (S * M, K) per point; and M."""
    if x.dim() == 2:
        return x.contiguous(), x.shape[0]
    return x.reshape(S * x.shape[1], x.shape[2]).contiguous(), x.shape[1]


def linear_forward(x, weight, bias, coeffs):
    weight = weight.contiguous()  # the kernels walk a dense store (a model's store slots are views)
    S, k = coeffs.shape
    if x.shape[-2] > FUSED_MAX_ROWS:
        return linear_materialised.forward(x, weight, bias, coeffs, _triton_combine)
    c = coeffs.float().contiguous()
    a, M = _rows(x, S)
    y = torch.empty(S, M, weight.shape[1], device=x.device, dtype=x.dtype)
    b = (c @ bias.float()).to(x.dtype).contiguous() if bias is not None else None
    forward_kernel.launch(a, M, x.dim() == 2, weight, c, forward_kernel.FORWARD, y, bias=b)
    return y


def linear_backward(dy, x, weight, bias, coeffs, trainable, need_dx, need_dw, need_db, need_dc):
    weight = weight.contiguous()  # the kernels walk a dense store (a model's store slots are views)
    S, k = coeffs.shape
    if x.shape[-2] > FUSED_MAX_ROWS:
        return linear_materialised.backward(
            dy, x, weight, bias, coeffs, trainable, need_dx, need_dw, need_db, need_dc, _triton_combine
        )
    c = coeffs.float().contiguous()
    shared = x.dim() == 2
    a, M = _rows(x, S)
    N, K = weight.shape[1:]
    dy_rows = dy.reshape(S * M, N).contiguous()
    dx = dw = db = dc = None
    if need_dx:
        if shared:  # A_i = sum_s c_si dY_s, small, formed here
            ai = torch.einsum("si,smn->imn", c, dy.float()).to(dy.dtype).contiguous()
            dx = input_grad_kernel.launch(ai, M, M, weight, c, scale_rows=False)
        else:
            dx = input_grad_kernel.launch(dy_rows, S * M, M, weight, c, scale_rows=True).view(S, M, K)
    if need_dw:
        dw, idx = vertices.rows_out(weight, trainable)
        if idx is not None:
            idx = (
                torch.arange(idx.start, idx.stop, device=weight.device, dtype=torch.int32)  # made on the device
                if isinstance(idx, slice)
                else idx.to(torch.int32)
            )
            weight_grad_kernel.launch(dy_rows, a, M, c, idx, dw, shared)
    if need_dc:
        dc = torch.zeros(S, k, device=dy.device, dtype=torch.float32)
        forward_kernel.launch(a, M, shared, weight, c, forward_kernel.COEFF_GRAD, dy_rows, dc=dc)
    db, dc = vertices.bias_grads(dy, bias, c, trainable, need_db, need_dc, dc)
    return dx, dw, db, (dc.to(coeffs.dtype) if dc is not None else None)


def _triton_combine(coeffs, store):
    return combine(coeffs.float().contiguous(), store)
