"""dV_i = sum_s c_si dY_s^T X_s for the trainable vertices i only, written in the epilogue
straight into their rows of the gradient (fixed vertices' rows are never touched).

The reduction runs over the S * M rows of dY (point s = row // M), each scaled by c_si as
it is loaded; X rows are per point, or shared (row r reads X[r % M]).
"""

import triton
import triton.language as tl

from simplexkern.ops.triton._config import configs, dot_precision, smem_pruner

_GPU_CONFIGS = [
    triton.Config({"BLOCK_R": br, "BLOCK_N": bn, "BLOCK_K": bk}, num_warps=w, num_stages=st)
    for br, bn, bk, w, st in [
        (32, 64, 64, 4, 4),
        (64, 64, 64, 4, 3),
        (32, 128, 64, 4, 4),
        (64, 128, 128, 8, 3),
        (64, 64, 128, 4, 3),
    ]
]


@triton.autotune(
    configs=configs(_GPU_CONFIGS, {"BLOCK_R": 16, "BLOCK_N": 16, "BLOCK_K": 16}),
    key=["R", "N", "K", "SHARED_X"],
    prune_configs_by={"early_config_prune": smem_pruner(lambda c, a: c["BLOCK_R"] * (c["BLOCK_N"] + c["BLOCK_K"]))},
)
@triton.jit
def _linear_weight_grad_kernel(
    dy_ptr,
    x_ptr,
    c_ptr,
    train_ptr,
    dv_ptr,
    R,
    M,
    N,
    K,
    stride_yr,
    stride_yn,
    stride_xr,
    stride_xk,
    stride_cs,
    stride_ci,
    stride_vi,
    stride_vn,
    stride_vk,
    SHARED_X: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    offs_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    i = tl.load(train_ptr + tl.program_id(2))
    offs = tl.arange(0, BLOCK_R)
    acc = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
    for r0 in range(0, R, BLOCK_R):
        rr = r0 + offs
        c = tl.load(c_ptr + (rr // M) * stride_cs + i * stride_ci, mask=rr < R, other=0.0)
        dy = tl.load(
            dy_ptr + rr[None, :] * stride_yr + offs_n[:, None] * stride_yn,
            mask=(rr[None, :] < R) & (offs_n[:, None] < N),
            other=0.0,
        )
        dy = (dy.to(tl.float32) * c[None, :]).to(x_ptr.dtype.element_ty)
        xr = rr % M if SHARED_X else rr
        x = tl.load(
            x_ptr + xr[:, None] * stride_xr + offs_k[None, :] * stride_xk,
            mask=(rr[:, None] < R) & (offs_k[None, :] < K),
            other=0.0,
        )
        acc = tl.dot(dy, x, acc, input_precision=PRECISION)
    tl.store(
        dv_ptr + i * stride_vi + offs_n[:, None] * stride_vn + offs_k[None, :] * stride_vk,
        acc.to(dv_ptr.dtype.element_ty),
        mask=(offs_n[:, None] < N) & (offs_k[None, :] < K),
    )


def launch(dy, a, M, c, idx, dw, shared_x):
    """Launches the kernel: dV_i for the vertices ``idx`` (int32, on the device) from ``dy``
    (S * M, N) and the input rows ``a`` (M shared, or S * M), written into their rows of
    ``dw`` (k, N, K)."""
    N, K = dw.shape[1:]
    grid = lambda meta: (triton.cdiv(N, meta["BLOCK_N"]), triton.cdiv(K, meta["BLOCK_K"]), len(idx))
    _linear_weight_grad_kernel[grid](
        dy,
        a,
        c,
        idx,
        dw,
        dy.shape[0],
        M,
        N,
        K,
        dy.stride(0),
        dy.stride(1),
        a.stride(0),
        a.stride(1),
        c.stride(0),
        c.stride(1),
        dw.stride(0),
        dw.stride(1),
        dw.stride(2),
        SHARED_X=shared_x,
        PRECISION=dot_precision(dy.dtype),
    )
