"""Implicit-GEMM filter gradient of the simplex convolution, combined over points as it is
accumulated: out[rows[j]] = sum_s C[s, j] * G_s with G_s = dY_s^T (*) X_s the point's filter
gradient. With C = the trainable columns of the coefficients and out = the vertex gradient,
each trainable vertex's gradient is written straight into its row (fixed rows untouched).
PER_POINT (C the identity, not read) gives the S points' G_s, each reducing over its own
point's rows only.

Each program owns a tile of (output channel) x (input channel) at one kernel position (r, t)
and reduces over the rows (point, b, oh, ow), each dY row scaled by C[s, j] as it is loaded.
The reduction is split into SPLIT chunks of ROWS_PER_SPLIT rows (per point with PER_POINT),
accumulated atomically into a float32 ``out``, when the tile grid alone would leave the GPU idle.
"""

import torch
import triton
import triton.language as tl

from simplexkern.ops.triton._config import configs, smem_pruner
from simplexkern.ops.triton._conv_launch import conv_shape, point_strides, precision
from simplexkern.ops.triton._tiles import pixel_coords

_GPU_CONFIGS = [
    triton.Config({"BLOCK_R": br, "BLOCK_N": bn, "BLOCK_K": bk}, num_warps=w, num_stages=st)
    for br, bn, bk, w, st in [
        (64, 64, 64, 4, 3),
        (32, 64, 64, 4, 4),
        (64, 128, 64, 8, 3),
        (64, 64, 32, 4, 4),
        (32, 128, 128, 8, 3),
    ]
]


@triton.autotune(
    configs=configs(_GPU_CONFIGS, {"BLOCK_R": 128, "BLOCK_N": 32, "BLOCK_K": 32}),
    key=["R", "Og", "Cg", "KH", "KW", "G", "SPLIT", "PER_POINT", "stride_h", "stride_w"],
    reset_to_zero=["out_ptr"],
    prune_configs_by={"early_config_prune": smem_pruner(lambda c, a: c["BLOCK_R"] * (c["BLOCK_N"] + c["BLOCK_K"]))},
)
@triton.jit
def _conv_weight_grad_kernel(
    dy_ptr,
    x_ptr,
    cmat_ptr,
    rows_ptr,
    out_ptr,
    R,
    M,
    H,
    W,
    OH,
    OW,
    Cg,
    Og,
    G,
    KH,
    KW,
    SPLIT,
    ROWS_PER_SPLIT,
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
    sxs,
    sxb,
    sxc,
    sxh,
    sxw,
    scs,
    scj,
    soj,
    soo,
    soc,
    soh,
    sow,
    PER_POINT: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    # axis 0: (output j, group, chunk); axis 1: (kernel position, input-channel block); axis 2: output-channel block
    n_cblocks = tl.cdiv(Cg, BLOCK_K)
    rt = tl.program_id(1) // n_cblocks
    r = rt // KW
    t = rt % KW
    offs_n = tl.program_id(2) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_c = (tl.program_id(1) % n_cblocks) * BLOCK_K + tl.arange(0, BLOCK_K)
    split = tl.program_id(0) % SPLIT
    g = (tl.program_id(0) // SPLIT) % G
    j = tl.program_id(0) // (SPLIT * G)
    mask_n = offs_n < Og
    mask_c = offs_c < Cg
    o = g * Og + offs_n
    offs = tl.arange(0, BLOCK_R)
    acc = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
    if PER_POINT:
        start = j.to(tl.int64) * M + split * ROWS_PER_SPLIT
        end = tl.minimum(start + ROWS_PER_SPLIT, (j + 1).to(tl.int64) * M)
    else:
        start = split.to(tl.int64) * ROWS_PER_SPLIT
        end = tl.minimum(start + ROWS_PER_SPLIT, R)
    for r0 in range(start, end, BLOCK_R):
        rows = r0 + offs
        mask_r = rows < end
        s = (rows // M).to(tl.int64)
        b, oh, ow = pixel_coords(rows % M, OH, OW)
        dy = tl.load(
            dy_ptr + (s * sys + b * syb + oh * syh + ow * syw)[None, :] + o[:, None] * syo,
            mask=mask_r[None, :] & mask_n[:, None],
            other=0.0,
        )
        if not PER_POINT:
            coef = tl.load(cmat_ptr + s * scs + j * scj, mask=mask_r, other=0.0)
            dy = (dy.to(tl.float32) * coef[None, :]).to(x_ptr.dtype.element_ty)
        ih = oh * stride_h - pad_h + r * dil_h
        iw = ow * stride_w - pad_w + t * dil_w
        valid = mask_r & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
        x = tl.load(
            x_ptr + (s * sxs + b * sxb + ih * sxh + iw * sxw)[:, None] + (g * Cg + offs_c)[None, :] * sxc,
            mask=valid[:, None] & mask_c[None, :],
            other=0.0,
        )
        acc = tl.dot(dy, x, acc, input_precision=PRECISION)
    row = tl.load(rows_ptr + j)
    out = out_ptr + row * soj + o[:, None] * soo + offs_c[None, :] * soc + r * soh + t * sow
    mask = mask_n[:, None] & mask_c[None, :]
    if SPLIT == 1:
        tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=mask)
    else:
        tl.atomic_add(out, acc, mask=mask)


#: The filter-gradient reduction is split until there are about this many programs per SM ...
PROGRAMS_PER_SM = 4
#: ... but never into chunks of fewer rows than this.
MIN_ROWS_PER_SPLIT = 4096


def _split(rows, tiles, device):
    """(chunks, rows per chunk) of a filter-gradient reduction over ``rows`` rows with ``tiles``
    output tiles: enough programs to fill the GPU, chunks of at least MIN_ROWS_PER_SPLIT rows."""
    sms = torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 1
    split = max(1, min(triton.cdiv(PROGRAMS_PER_SM * sms, tiles), rows // MIN_ROWS_PER_SPLIT))
    per_chunk = max(triton.cdiv(rows, split), 1)
    return max(triton.cdiv(rows, per_chunk), 1), per_chunk


def launch(dy, x, weight, cmat, rows, out, conv, n_out, per_point):
    """out[rows[j]] (+)= sum_s cmat[s, j] G_s, or out[s] = G_s when ``per_point`` (cmat unused).
    ``out`` must be zero and float32 where the reduction is split. Returns nothing."""
    B, C, H, W, O, Cg, KH, KW, OH, OW, G, hyper = conv_shape(x, weight, conv)
    S, M, Og = dy.shape[0], B * OH * OW, O // G
    tiles = triton.cdiv(Og, 64) * KH * KW * triton.cdiv(Cg, 64) * n_out * G
    split = _split(M if per_point else S * M, tiles, weight.device)
    if split[0] > 1 and out.dtype != torch.float32:
        raise AssertionError("a split filter-gradient reduction accumulates into float32")
    grid = lambda meta: (
        n_out * G * split[0],
        KH * KW * triton.cdiv(Cg, meta["BLOCK_K"]),
        triton.cdiv(Og, meta["BLOCK_N"]),
    )
    _conv_weight_grad_kernel[grid](
        dy,
        x,
        cmat,
        rows,
        out,
        S * M,
        M,
        H,
        W,
        OH,
        OW,
        Cg,
        Og,
        G,
        KH,
        KW,
        *split,
        *hyper,
        *dy.stride(),
        *point_strides(x),
        *cmat.stride(),
        *out.stride(),
        PER_POINT=per_point,
        PRECISION=precision(x.dtype),
    )
