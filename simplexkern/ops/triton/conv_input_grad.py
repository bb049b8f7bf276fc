"""Implicit-GEMM input gradient of the simplex convolution: dX_s = conv_transpose(dY_s, W_s),
W_s = sum_i c_si V_i formed in the prologue. For an input shared by all points the points'
contributions are summed in the same accumulator (the reduction runs over points too).

The GEMM per (point, group): rows = input pixels (B * H * W), columns = the group's input
channels, reduction over (kernel row, kernel column, output channel); an output pixel
contributes where (h + pad - r * dil) is a multiple of the stride.
"""

import triton
import triton.language as tl

from simplexkern.ops.triton._config import configs, smem_pruner
from simplexkern.ops.triton._conv_launch import conv_shape, point_strides, precision
from simplexkern.ops.triton._tiles import combined_tile, pixel_coords, point_group_block

_GPU_CONFIGS = [
    triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk}, num_warps=w, num_stages=st)
    for bm, bn, bk, w, st in [
        (128, 128, 32, 8, 3),
        (128, 64, 32, 4, 4),
        (64, 128, 32, 4, 4),
        (64, 64, 32, 4, 4),
        (128, 64, 64, 8, 3),
        (64, 64, 64, 4, 3),
        (64, 32, 32, 4, 4),
    ]
]


@triton.autotune(
    configs=configs(_GPU_CONFIGS, {"BLOCK_M": 128, "BLOCK_N": 32, "BLOCK_K": 32}),
    key=["M", "Og", "Cg", "KH", "KW", "G", "S_LOOP", "stride_h", "stride_w"],
    prune_configs_by={"early_config_prune": smem_pruner(lambda c, a: c["BLOCK_K"] * (c["BLOCK_M"] + c["BLOCK_N"]))},
)
@triton.jit
def _conv_input_grad_kernel(
    dy_ptr,
    v_ptr,
    c_ptr,
    dx_ptr,
    M,
    H,
    W,
    OH,
    OW,
    Cg,
    Og,
    G,
    NV,
    KH,
    KW,
    S_LOOP,
    stride_h,
    stride_w,
    pad_h,
    pad_w,
    dil_h,
    dil_w,
    sys,
    syb,
    syo,
    syh,
    syw,
    svi,
    svo,
    svc,
    svh,
    svw,
    scs,
    sci,
    sxs,
    sxb,
    sxc,
    sxh,
    sxw,
    PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    # program axis 0: (point, group, row block) with S_LOOP = 1, or (group, row block) with S_LOOP = S points summed
    p, g, block_m = point_group_block(tl.program_id(0), G, tl.cdiv(M, BLOCK_M))
    s0 = p * S_LOOP
    offs_m = block_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    b, h, w = pixel_coords(offs_m, H, W)
    mask_m = offs_m < M
    mask_n = offs_n < Cg
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for ds in range(S_LOOP):
        s = s0 + ds  # int64, as s0
        dy_pix = dy_ptr + s * sys + b * syb + (g * Og) * syo
        for rt in range(KH * KW):
            r = rt // KW
            t = rt % KW
            nh = h + pad_h - r * dil_h
            nw = w + pad_w - t * dil_w
            oh = nh // stride_h
            ow = nw // stride_w
            valid = mask_m & (nh >= 0) & (nw >= 0) & (nh % stride_h == 0) & (nw % stride_w == 0) & (oh < OH) & (ow < OW)
            dy_row = dy_pix + oh * syh + ow * syw
            v_rt = v_ptr + offs_n[None, :] * svc + r * svh + t * svw
            for o0 in range(0, Og, BLOCK_K):
                oo = o0 + offs_k
                a = tl.load(dy_row[:, None] + oo[None, :] * syo, mask=valid[:, None] & (oo[None, :] < Og), other=0.0)
                wt = combined_tile(
                    v_rt + (g * Og + oo)[:, None] * svo,
                    (oo[:, None] < Og) & mask_n[None, :],
                    c_ptr + s * scs,
                    NV,
                    svi,
                    sci,
                    dy_ptr.dtype.element_ty,
                )
                acc = tl.dot(a, wt, acc, input_precision=PRECISION)
    dx = dx_ptr + s0 * sxs + b[:, None] * sxb + (g * Cg + offs_n)[None, :] * sxc + h[:, None] * sxh + w[:, None] * sxw
    tl.store(dx, acc.to(dx_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])


def launch(dy, weight, c, dx, conv):
    """Launches the kernel: ``dx`` ((B, C, H, W) shared, summed over the points, or (S, B, C,
    H, W)) from ``dy`` (S, B, O, OH, OW) at the points ``c`` (S, k) float32."""
    S, k = c.shape
    B, C, H, W, O, Cg, KH, KW, OH, OW, G, hyper = conv_shape(dx, weight, conv)
    shared, M = dx.dim() == 4, B * H * W
    grid = lambda meta: (triton.cdiv(M, meta["BLOCK_M"]) * G * (1 if shared else S), triton.cdiv(Cg, meta["BLOCK_N"]))
    _conv_input_grad_kernel[grid](
        dy,
        weight,
        c,
        dx,
        M,
        H,
        W,
        OH,
        OW,
        Cg,
        O // G,
        G,
        k,
        KH,
        KW,
        S if shared else 1,
        *hyper,
        *dy.stride(),
        *weight.stride(),
        *c.stride(),
        *point_strides(dx),
        PRECISION=precision(dy.dtype),
    )
