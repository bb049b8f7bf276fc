"""Z = A @ [V_0; ..; V_{k-1}]^T against every vertex at once, with the combination over
vertices applied in the epilogue: the forward pass Y_s = sum_i c_si A_s V_i^T (+ b_s), or
the coefficient gradient dc_si = sum <dY_s, A_s V_i^T>.

Each program computes an (BLOCK_M, k * BLOCK_N) tile of Z with one dot whose B operand
gathers the same BLOCK_N output columns of all k vertices, so the vertex store is read once
per row tile and no combined weight W_s is ever formed. Rows of A are either shared by all S
points (SHARED) or belong to one point each (A = (S * M, K), point s = row // M).
"""

import torch
import triton
import triton.language as tl

from simplexkern.ops.triton._config import configs, dot_precision, next_pow2, smem_pruner

_GPU_CONFIGS = [
    triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk}, num_warps=w, num_stages=st)
    for bm, bn, bk, w, st in [
        (16, 16, 128, 4, 4),
        (16, 32, 128, 4, 4),
        (16, 64, 64, 4, 4),
        (32, 32, 64, 4, 4),
        (64, 32, 64, 4, 3),
        (64, 64, 64, 8, 3),
        (128, 32, 64, 8, 3),
        (16, 16, 64, 2, 3),
    ]
]

FORWARD, COEFF_GRAD = 0, 1


@triton.autotune(
    configs=configs(_GPU_CONFIGS, {"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 16}),
    key=["R", "N", "K", "NV_BLOCK", "S", "SHARED", "MODE"],
    reset_to_zero=["dc_ptr"],
    prune_configs_by={
        "early_config_prune": smem_pruner(lambda c, a: c["BLOCK_K"] * (c["BLOCK_M"] + a["NV_BLOCK"] * c["BLOCK_N"]))
    },
)
@triton.jit
def _linear_forward_kernel(
    a_ptr,
    v_ptr,
    c_ptr,
    bias_ptr,
    y_ptr,
    dc_ptr,
    S,
    R,
    M,
    N,
    K,
    NV,
    stride_ar,
    stride_ak,
    stride_vi,
    stride_vn,
    stride_vk,
    stride_cs,
    stride_ci,
    SHARED: tl.constexpr,
    MODE: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    NV_BLOCK: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    offs_r = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_j = tl.arange(0, NV_BLOCK * BLOCK_N)
    vert_j = offs_j // BLOCK_N
    col_j = pid_n * BLOCK_N + offs_j % BLOCK_N
    offs_k = tl.arange(0, BLOCK_K)
    mask_j = (vert_j < NV) & (col_j < N)
    acc = tl.zeros((BLOCK_M, NV_BLOCK * BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        kk = k0 + offs_k
        a = tl.load(
            a_ptr + offs_r[:, None] * stride_ar + kk[None, :] * stride_ak,
            mask=(offs_r[:, None] < R) & (kk[None, :] < K),
            other=0.0,
        )
        b = tl.load(
            v_ptr + vert_j[None, :] * stride_vi + col_j[None, :] * stride_vn + kk[:, None] * stride_vk,
            mask=mask_j[None, :] & (kk[:, None] < K),
            other=0.0,
        )
        acc = tl.dot(a, b, acc, input_precision=PRECISION)
    z = tl.reshape(acc, (BLOCK_M, NV_BLOCK, BLOCK_N))
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_i = tl.arange(0, NV_BLOCK)
    mask_rn = (offs_r[:, None] < R) & (offs_n[None, :] < N)
    if SHARED:  # every point reads this row tile: loop over the points
        for s in range(S):
            c = tl.load(c_ptr + s * stride_cs + offs_i * stride_ci, mask=offs_i < NV, other=0.0)
            y_tile = y_ptr + s * R * N + offs_r[:, None] * N + offs_n[None, :]
            if MODE == 0:
                y = tl.sum(z * c[None, :, None], axis=1)
                if HAS_BIAS:
                    y += tl.load(bias_ptr + s * N + offs_n, mask=offs_n < N, other=0.0).to(tl.float32)[None, :]
                tl.store(y_tile, y.to(y_ptr.dtype.element_ty), mask=mask_rn)
            else:
                dy = tl.load(y_tile, mask=mask_rn, other=0.0).to(tl.float32)
                part = tl.sum(tl.sum(z * dy[:, None, :], axis=2), axis=0)
                tl.atomic_add(dc_ptr + s * NV + offs_i, part, mask=offs_i < NV)
    else:  # row r belongs to point r // M
        s_r = offs_r // M
        y_tile = y_ptr + offs_r[:, None] * N + offs_n[None, :]
        if MODE == 0:
            c = tl.load(
                c_ptr + s_r[:, None] * stride_cs + offs_i[None, :] * stride_ci,
                mask=(offs_r[:, None] < R) & (offs_i[None, :] < NV),
                other=0.0,
            )
            y = tl.sum(z * c[:, :, None], axis=1)
            if HAS_BIAS:
                y += tl.load(bias_ptr + s_r[:, None] * N + offs_n[None, :], mask=mask_rn, other=0.0).to(tl.float32)
            tl.store(y_tile, y.to(y_ptr.dtype.element_ty), mask=mask_rn)
        else:
            dy = tl.load(y_tile, mask=mask_rn, other=0.0).to(tl.float32)
            part = tl.sum(z * dy[:, None, :], axis=2)
            tl.atomic_add(
                dc_ptr + s_r[:, None] * NV + offs_i[None, :], part, mask=(offs_r[:, None] < R) & (offs_i[None, :] < NV)
            )


def launch(a, M, shared, weight, c, mode, y, *, bias=None, dc=None):
    """Launches the kernel: ``a`` (R, K) rows (M shared, or S * M), ``weight`` (k, N, K), ``c``
    (S, k) float32; FORWARD writes ``y`` (S, M, N) (+ ``bias`` (S, N)), COEFF_GRAD reads dY
    from ``y`` and accumulates into ``dc`` (S, k), float32, zeroed."""
    S, k = c.shape
    R, K = a.shape
    N = weight.shape[1]
    grid = lambda meta: (triton.cdiv(R, meta["BLOCK_M"]), triton.cdiv(N, meta["BLOCK_N"]))
    if dc is None:  # the autotuner zeroes dc_ptr between trials: never alias it to an input
        dc = torch.empty(1, device=a.device, dtype=torch.float32)
    _linear_forward_kernel[grid](
        a,
        weight,
        c,
        bias if bias is not None else c,
        y,
        dc,
        S,
        R,
        M,
        N,
        K,
        k,
        a.stride(0),
        a.stride(1),
        weight.stride(0),
        weight.stride(1),
        weight.stride(2),
        c.stride(0),
        c.stride(1),
        SHARED=shared,
        MODE=mode,
        HAS_BIAS=bias is not None,
        NV_BLOCK=next_pow2(k),
        PRECISION=dot_precision(a.dtype),
    )
