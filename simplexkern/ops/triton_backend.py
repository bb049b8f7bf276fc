"""The ``triton`` backend: the fused kernels of simplexkern.ops.triton (combination in the
GEMM prologue, all points of a chunk per program, gradient scatter in the epilogue)."""
import torch

from simplexkern.ops.triton.combined_matmul import combined_matmul
from simplexkern.ops.triton.vertex_grad import vertex_grad


def linear_forward(x, weight, bias, coeffs):
    c = coeffs.float().contiguous()
    b = (c @ bias.float()).to(x.dtype) if bias is not None else None
    return combined_matmul(x, weight.contiguous(), c, transpose_vertices=True, bias=b)


def linear_backward(dy, x, weight, bias, coeffs, trainable, need_dx, need_dw, need_db, need_dc):
    S, k = coeffs.shape
    c = coeffs.float().contiguous()
    weight = weight.contiguous()
    dx = dw = db = dc = None
    if need_dx:
        dx = combined_matmul(dy, weight, c, transpose_vertices=False, reduce_points=x.dim() == 2)
    if need_dw or need_dc:
        mask = torch.zeros(k, dtype=torch.int8, device=weight.device)
        mask[list(trainable)] = 1
        dw, dc = vertex_grad(dy, x, c, weight, mask, need_dv=need_dw, need_dc=need_dc)
    if bias is not None and (need_db or need_dc):
        gb = dy.sum(1, dtype=torch.float32)  # (S, out)
        if need_db:
            db = torch.zeros_like(bias)
            idx = list(trainable)
            if idx:
                db[idx] = (c[:, idx].T @ gb).to(bias.dtype)
        if need_dc:
            dc = dc + gb @ bias.float().T
    return dx, dw, db, (dc.to(coeffs.dtype) if dc is not None else None)
