"""OUT[s] = A[s] @ B(W_s), W_s = sum_i c[s, i] V_i: a matmul whose B operand is a convex
combination of k stored vertices, formed tile by tile in the prologue (W_s is never
written to memory). All points of a chunk share each program, so every vertex tile is read
once per output tile whatever S is.

B is W_s^T for the forward pass (Y = X W_s^T + b_s) and W_s for the input gradient
(dX = dY W_s); the caller picks by the vertex strides. With a shared A (one input for all
points) A is read once and broadcast; with REDUCE_S the points' products are summed (the
input gradient of a shared input).
"""
import torch
import triton
import triton.language as tl

from simplexkern.ops.triton._config import MAX_POINTS_PER_PROGRAM, configs, dot_precision, next_pow2

_GPU_CONFIGS = [
    triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk}, num_warps=w, num_stages=st)
    for bm, bn, bk, w, st in [
        (16, 32, 64, 4, 4), (16, 64, 64, 4, 4), (32, 32, 64, 4, 4), (64, 64, 32, 4, 3),
        (64, 64, 64, 8, 3), (128, 64, 32, 8, 3), (128, 128, 32, 8, 3),
    ]
]


@triton.autotune(configs=configs(_GPU_CONFIGS, {"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 16}),
                 key=["M", "N", "K", "NV", "S_BLOCK", "SHARED_A", "REDUCE_S"])
@triton.jit
def _combined_matmul_kernel(
    a_ptr, v_ptr, c_ptr, bias_ptr, out_ptr,
    S, M, N, K, NV,
    stride_as, stride_am, stride_ak,
    stride_vi, stride_vk, stride_vn,
    stride_cs, stride_ci,
    stride_os, stride_om, stride_on,
    S_BLOCK: tl.constexpr, SHARED_A: tl.constexpr, REDUCE_S: tl.constexpr, HAS_BIAS: tl.constexpr,
    PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    offs_s = tl.arange(0, S_BLOCK)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    mask_s = offs_s < S
    acc = tl.zeros((S_BLOCK, BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        kk = k0 + offs_k
        if SHARED_A:
            a2 = tl.load(a_ptr + offs_m[:, None] * stride_am + kk[None, :] * stride_ak,
                         mask=(offs_m[:, None] < M) & (kk[None, :] < K), other=0.0)
            a = tl.broadcast_to(a2[None, :, :], (S_BLOCK, BLOCK_M, BLOCK_K))
        else:
            a = tl.load(a_ptr + offs_s[:, None, None] * stride_as + offs_m[None, :, None] * stride_am
                        + kk[None, None, :] * stride_ak,
                        mask=mask_s[:, None, None] & (offs_m[None, :, None] < M) & (kk[None, None, :] < K),
                        other=0.0)
        w = tl.zeros((S_BLOCK, BLOCK_K, BLOCK_N), dtype=tl.float32)
        v_mask = (kk[:, None] < K) & (offs_n[None, :] < N)
        for i in range(NV):
            v = tl.load(v_ptr + i * stride_vi + kk[:, None] * stride_vk + offs_n[None, :] * stride_vn,
                        mask=v_mask, other=0.0).to(tl.float32)
            c = tl.load(c_ptr + offs_s * stride_cs + i * stride_ci, mask=mask_s, other=0.0).to(tl.float32)
            w += c[:, None, None] * v[None, :, :]
        acc = tl.dot(a, w.to(a.dtype), acc, input_precision=PRECISION)
    if HAS_BIAS:  # bias_ptr holds the combined biases b_s, (S, N) contiguous
        b = tl.load(bias_ptr + offs_s[:, None] * N + offs_n[None, :],
                    mask=mask_s[:, None] & (offs_n[None, :] < N), other=0.0).to(tl.float32)
        acc += b[:, None, :]
    mask_mn = (offs_m[:, None] < M) & (offs_n[None, :] < N)
    if REDUCE_S:
        tl.store(out_ptr + offs_m[:, None] * stride_om + offs_n[None, :] * stride_on,
                 tl.sum(acc, axis=0).to(out_ptr.dtype.element_ty), mask=mask_mn)
    else:
        tl.store(out_ptr + offs_s[:, None, None] * stride_os + offs_m[None, :, None] * stride_om
                 + offs_n[None, None, :] * stride_on,
                 acc.to(out_ptr.dtype.element_ty), mask=mask_s[:, None, None] & mask_mn[None, :, :])


def combined_matmul(a, vertices, coeffs, *, transpose_vertices, bias=None, reduce_points=False):
    """``a`` (M, K) shared or (S, M, K); ``vertices`` (NV, R, C); ``coeffs`` (S, NV) float32.

    B = W_s^T (K = C, N = R) when ``transpose_vertices``, else W_s (K = R, N = C).
    ``bias``: combined biases (S, N) or None. Returns (S, M, N), or (M, N) summed over the
    points when ``reduce_points``. Points are processed in chunks of MAX_POINTS_PER_PROGRAM.
    """
    shared = a.dim() == 2
    S, NV = coeffs.shape
    M, K = a.shape[-2:]
    if transpose_vertices:
        N = vertices.shape[1]
        svk, svn = vertices.stride(2), vertices.stride(1)
    else:
        N = vertices.shape[2]
        svk, svn = vertices.stride(1), vertices.stride(2)
    step = MAX_POINTS_PER_PROGRAM
    chunks = range(0, S, step)
    if reduce_points:
        out = torch.empty(len(chunks), M, N, device=a.device, dtype=a.dtype)
    else:
        out = torch.empty(S, M, N, device=a.device, dtype=a.dtype)
    for n_chunk, s0 in enumerate(chunks):
        c = coeffs[s0 : s0 + step]
        s_here = c.shape[0]
        a_here = a if shared else a[s0 : s0 + step]
        o = out[n_chunk] if reduce_points else out[s0 : s0 + step]
        b = bias[s0 : s0 + step].contiguous() if bias is not None else c
        grid = lambda meta: (triton.cdiv(M, meta["BLOCK_M"]), triton.cdiv(N, meta["BLOCK_N"]))
        _combined_matmul_kernel[grid](
            a_here, vertices, c, b, o,
            s_here, M, N, K, NV,
            0 if shared else a_here.stride(0), a_here.stride(-2), a_here.stride(-1),
            vertices.stride(0), svk, svn,
            c.stride(0), c.stride(1),
            0 if reduce_points else o.stride(0), o.stride(-2), o.stride(-1),
            S_BLOCK=next_pow2(s_here), SHARED_A=shared, REDUCE_S=reduce_points,
            HAS_BIAS=bias is not None, PRECISION=dot_precision(a.dtype),
        )
    return out.sum(0) if reduce_points and len(chunks) > 1 else (out[0] if reduce_points else out)
