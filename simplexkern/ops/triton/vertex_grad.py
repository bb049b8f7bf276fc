"""Gradients of the vertices and coefficients of a simplex linear layer in one pass.

For points s with output gradients dY_s (M, N) and inputs X_s (M, K), each program owns one
(N, K) tile: it accumulates G_s = dY_s^T X_s for every point of the chunk, then in the
epilogue writes dV_i = sum_s c[s, i] G_s straight into the rows of the trainable vertices
(fixed rows are never touched) and adds <G_s, V_i> over its tile to dc[s, i].
"""
import torch
import triton
import triton.language as tl

from simplexkern.ops.triton._config import MAX_POINTS_PER_PROGRAM, configs, dot_precision, next_pow2

_GPU_CONFIGS = [
    triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk}, num_warps=w, num_stages=st)
    for bm, bn, bk, w, st in [
        (32, 32, 32, 4, 3), (64, 32, 32, 4, 3), (64, 64, 32, 4, 3), (32, 64, 64, 4, 3),
        (64, 64, 64, 8, 3), (64, 128, 64, 8, 3), (128, 64, 64, 8, 3),
    ]
]


@triton.autotune(configs=configs(_GPU_CONFIGS, {"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 16}),
                 key=["M", "N", "K", "NV", "S_BLOCK", "SHARED_X", "NEED_DV", "NEED_DC"],
                 reset_to_zero=["dc_ptr"])
@triton.jit
def _vertex_grad_kernel(
    dy_ptr, x_ptr, c_ptr, v_ptr, train_ptr, dv_ptr, dc_ptr,
    S, M, N, K, NV,
    stride_ys, stride_ym, stride_yn,
    stride_xs, stride_xm, stride_xk,
    stride_cs, stride_ci,
    stride_vi, stride_vn, stride_vk,
    S_BLOCK: tl.constexpr, SHARED_X: tl.constexpr, NEED_DV: tl.constexpr, NEED_DC: tl.constexpr,
    PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    offs_s = tl.arange(0, S_BLOCK)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    offs_m = tl.arange(0, BLOCK_M)
    mask_s = offs_s < S
    g = tl.zeros((S_BLOCK, BLOCK_N, BLOCK_K), dtype=tl.float32)
    for m0 in range(0, M, BLOCK_M):
        mm = m0 + offs_m
        dy = tl.load(dy_ptr + offs_s[:, None, None] * stride_ys + offs_n[None, :, None] * stride_yn
                     + mm[None, None, :] * stride_ym,
                     mask=mask_s[:, None, None] & (offs_n[None, :, None] < N) & (mm[None, None, :] < M), other=0.0)
        if SHARED_X:
            x2 = tl.load(x_ptr + mm[:, None] * stride_xm + offs_k[None, :] * stride_xk,
                         mask=(mm[:, None] < M) & (offs_k[None, :] < K), other=0.0)
            x = tl.broadcast_to(x2[None, :, :], (S_BLOCK, BLOCK_M, BLOCK_K))
        else:
            x = tl.load(x_ptr + offs_s[:, None, None] * stride_xs + mm[None, :, None] * stride_xm
                        + offs_k[None, None, :] * stride_xk,
                        mask=mask_s[:, None, None] & (mm[None, :, None] < M) & (offs_k[None, None, :] < K), other=0.0)
        g = tl.dot(dy, x, g, input_precision=PRECISION)
    mask_nk = (offs_n[:, None] < N) & (offs_k[None, :] < K)
    tile = offs_n[:, None] * stride_vn + offs_k[None, :] * stride_vk
    for i in range(NV):
        c = tl.load(c_ptr + offs_s * stride_cs + i * stride_ci, mask=mask_s, other=0.0).to(tl.float32)
        if NEED_DV:
            if tl.load(train_ptr + i) != 0:
                dv = tl.sum(c[:, None, None] * g, axis=0)
                tl.store(dv_ptr + i * stride_vi + tile, dv.to(dv_ptr.dtype.element_ty), mask=mask_nk)
        if NEED_DC:
            v = tl.load(v_ptr + i * stride_vi + tile, mask=mask_nk, other=0.0).to(tl.float32)
            part = tl.sum(tl.sum(g * v[None, :, :], axis=2), axis=1)
            tl.atomic_add(dc_ptr + offs_s * NV + i, part, mask=mask_s)


def vertex_grad(dy, x, coeffs, vertices, trainable_mask, *, need_dv, need_dc):
    """``dy`` (S, M, N); ``x`` (M, K) shared or (S, M, K); ``coeffs`` (S, NV) float32;
    ``vertices`` (NV, N, K); ``trainable_mask`` (NV,) int8 on the device.

    Returns (dv, dc): dv (NV, N, K) in the vertices' dtype with zero rows for fixed
    vertices (or None), dc (S, NV) float32 (or None).
    """
    shared = x.dim() == 2
    S, NV = coeffs.shape
    M, N = dy.shape[-2:]
    K = x.shape[-1]
    dv = None
    if need_dv:
        dv = torch.empty_like(vertices)
        dv[trainable_mask == 0] = 0
    dc = torch.zeros(S, NV, device=dy.device, dtype=torch.float32)
    step = MAX_POINTS_PER_PROGRAM
    partial = [] if need_dv and S > step else None
    for s0 in range(0, S, step):
        c = coeffs[s0 : s0 + step]
        s_here = c.shape[0]
        y_here = dy[s0 : s0 + step]
        x_here = x if shared else x[s0 : s0 + step]
        out_dv = torch.empty_like(vertices) if partial is not None else dv
        if partial is not None:
            out_dv[trainable_mask == 0] = 0
        grid = lambda meta: (triton.cdiv(N, meta["BLOCK_N"]), triton.cdiv(K, meta["BLOCK_K"]))
        _vertex_grad_kernel[grid](
            y_here, x_here, c, vertices, trainable_mask, out_dv if need_dv else vertices, dc[s0 : s0 + step],
            s_here, M, N, K, NV,
            y_here.stride(0), y_here.stride(1), y_here.stride(2),
            0 if shared else x_here.stride(0), x_here.stride(-2), x_here.stride(-1),
            c.stride(0), c.stride(1),
            vertices.stride(0), vertices.stride(1), vertices.stride(2),
            S_BLOCK=next_pow2(s_here), SHARED_X=shared, NEED_DV=need_dv, NEED_DC=need_dc,
            PRECISION=dot_precision(dy.dtype),
        )
        if partial is not None:
            partial.append(out_dv)
    if partial is not None:
        dv = torch.stack(partial).sum(0, dtype=torch.float32).to(vertices.dtype)
    return dv, (dc if need_dc else None)
