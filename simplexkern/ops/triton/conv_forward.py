"""Implicit-GEMM forward convolution at S points in one launch: Y_s = conv(X_s, W_s) + b_s
with W_s = sum_i c_si V_i formed tile by tile in the prologue (never stored).

The GEMM per (point, group): rows = output pixels (B * OH * OW), columns = the group's output
channels, reduction over (kernel row, kernel column, input channel), the input gathered
im2col-style on the fly. Any input / output strides (NCHW or channels-last); the input's
point stride is 0 when all points share it.
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
        (128, 128, 64, 8, 3),
        (64, 64, 64, 4, 3),
        (32, 64, 32, 4, 4),
        (128, 32, 32, 4, 4),
    ]
]


@triton.autotune(
    configs=configs(_GPU_CONFIGS, {"BLOCK_M": 128, "BLOCK_N": 32, "BLOCK_K": 32}),
    key=["M", "Og", "Cg", "KH", "KW", "G", "stride_h", "stride_w"],
    prune_configs_by={"early_config_prune": smem_pruner(lambda c, a: c["BLOCK_K"] * (c["BLOCK_M"] + c["BLOCK_N"]))},
)
@triton.jit
def _conv_forward_kernel(
    x_ptr,
    v_ptr,
    c_ptr,
    b_ptr,
    y_ptr,
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
    stride_h,
    stride_w,
    pad_h,
    pad_w,
    dil_h,
    dil_w,
    sxs,
    sxb,
    sxc,
    sxh,
    sxw,
    svi,
    svo,
    svc,
    svh,
    svw,
    scs,
    sci,
    sys,
    syb,
    syo,
    syh,
    syw,
    HAS_BIAS: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    s, g, block_m = point_group_block(tl.program_id(0), G, tl.cdiv(M, BLOCK_M))
    offs_m = block_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    b, oh, ow = pixel_coords(offs_m, OH, OW)
    mask_m = offs_m < M
    mask_n = offs_n < Og
    o = g * Og + offs_n
    x_pix = x_ptr + s * sxs + b * sxb + (g * Cg) * sxc
    c_s = c_ptr + s * scs
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for rt in range(KH * KW):
        r = rt // KW
        t = rt % KW
        ih = oh * stride_h - pad_h + r * dil_h
        iw = ow * stride_w - pad_w + t * dil_w
        valid = mask_m & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
        x_row = x_pix + ih * sxh + iw * sxw
        v_rt = v_ptr + o[None, :] * svo + r * svh + t * svw
        for c0 in range(0, Cg, BLOCK_K):
            cc = c0 + offs_k
            a = tl.load(x_row[:, None] + cc[None, :] * sxc, mask=valid[:, None] & (cc[None, :] < Cg), other=0.0)
            w = combined_tile(
                v_rt + cc[:, None] * svc,
                (cc[:, None] < Cg) & mask_n[None, :],
                c_s,
                NV,
                svi,
                sci,
                x_ptr.dtype.element_ty,
            )
            acc = tl.dot(a, w, acc, input_precision=PRECISION)
    if HAS_BIAS:
        acc += tl.load(b_ptr + s * G * Og + o, mask=mask_n, other=0.0)[None, :]
    y = y_ptr + s * sys + b[:, None] * syb + o[None, :] * syo + oh[:, None] * syh + ow[:, None] * syw
    tl.store(y, acc.to(y_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])


def launch(x, weight, c, b, y, conv):
    """Launches the kernel: ``y`` (S, B, O, OH, OW) = the convolution of ``x`` at the points
    ``c`` (S, k) float32, plus ``b`` (S, O) when given."""
    S, k = c.shape
    B, C, H, W, O, Cg, KH, KW, OH, OW, G, hyper = conv_shape(x, weight, conv)
    M = B * OH * OW
    grid = lambda meta: (triton.cdiv(M, meta["BLOCK_M"]) * S * G, triton.cdiv(O // G, meta["BLOCK_N"]))
    _conv_forward_kernel[grid](
        x,
        weight,
        c,
        b if b is not None else c,
        y,
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
        *hyper,
        *point_strides(x),
        *weight.stride(),
        *c.stride(),
        *y.stride(),
        HAS_BIAS=b is not None,
        PRECISION=precision(x.dtype),
    )
