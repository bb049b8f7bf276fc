"""dX = sum_i A_i @ V_i over the vertex store: the input gradient of a simplex linear layer.

A_i is formed in the prologue: per point, row r of point s = r // M gets c_si dY_r
(SCALE_ROWS); for an input shared by all points, A_i = sum_s c_si dY_s is passed ready
(k x M x N, small) and read as is. Each vertex tile is read once per row tile.
"""

import torch
import triton
import triton.language as tl

from simplexkern.ops.triton._config import configs, dot_precision, smem_pruner

_GPU_CONFIGS = [
    triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk}, num_warps=w, num_stages=st)
    for bm, bn, bk, w, st in [
        (16, 32, 128, 4, 4),
        (16, 16, 128, 4, 4),
        (16, 64, 64, 4, 4),
        (32, 64, 64, 4, 4),
        (64, 64, 64, 4, 3),
        (64, 128, 64, 8, 3),
        (128, 128, 64, 8, 3),
    ]
]


@triton.autotune(
    configs=configs(_GPU_CONFIGS, {"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 16}),
    key=["R", "N", "K", "NV", "SCALE_ROWS"],
    prune_configs_by={"early_config_prune": smem_pruner(lambda c, a: c["BLOCK_K"] * (c["BLOCK_M"] + c["BLOCK_N"]))},
)
@triton.jit
def _linear_input_grad_kernel(
    a_ptr,
    v_ptr,
    c_ptr,
    dx_ptr,
    R,
    M,
    N,
    K,
    NV,
    stride_ai,
    stride_ar,
    stride_an,
    stride_vi,
    stride_vn,
    stride_vk,
    stride_cs,
    stride_ci,
    SCALE_ROWS: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    # BLOCK_N: output columns (input features); BLOCK_K: reduction chunk over the N outputs.
    offs_r = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_c = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    s_r = offs_r // M
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for i in range(NV):
        if SCALE_ROWS:
            c = tl.load(c_ptr + s_r * stride_cs + i * stride_ci, mask=offs_r < R, other=0.0)
        for k0 in range(0, N, BLOCK_K):
            kk = k0 + offs_k
            a = tl.load(
                a_ptr + i * stride_ai + offs_r[:, None] * stride_ar + kk[None, :] * stride_an,
                mask=(offs_r[:, None] < R) & (kk[None, :] < N),
                other=0.0,
            )
            if SCALE_ROWS:
                a = (a.to(tl.float32) * c[:, None]).to(v_ptr.dtype.element_ty)
            b = tl.load(
                v_ptr + i * stride_vi + kk[:, None] * stride_vn + offs_c[None, :] * stride_vk,
                mask=(kk[:, None] < N) & (offs_c[None, :] < K),
                other=0.0,
            )
            acc = tl.dot(a, b, acc, input_precision=PRECISION)
    tl.store(
        dx_ptr + offs_r[:, None] * K + offs_c[None, :],
        acc.to(dx_ptr.dtype.element_ty),
        mask=(offs_r[:, None] < R) & (offs_c[None, :] < K),
    )


def launch(a, rows, M, weight, c, scale_rows):
    """Launches the kernel: ``a`` (k, M, N) A_i ready (``scale_rows`` False) or (S * M, N) dY
    rows scaled in the prologue; ``weight`` (k, N, K); returns dX (rows, K)."""
    k, N, K = weight.shape
    strides = (0, a.stride(0), a.stride(1)) if scale_rows else (a.stride(0), a.stride(1), a.stride(2))
    dx = torch.empty(rows, K, device=a.device, dtype=a.dtype)
    grid = lambda meta: (triton.cdiv(rows, meta["BLOCK_M"]), triton.cdiv(K, meta["BLOCK_N"]))
    _linear_input_grad_kernel[grid](
        a,
        weight,
        c,
        dx,
        rows,
        M,
        N,
        K,
        k,
        *strides,
        weight.stride(0),
        weight.stride(1),
        weight.stride(2),
        c.stride(0),
        c.stride(1),
        SCALE_ROWS=scale_rows,
        PRECISION=dot_precision(a.dtype),
    )
    return dx
