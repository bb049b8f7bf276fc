"""Whole-store combination: (S, k) coefficients x (k, P) vertices -> (S, P) points, one pass
over the store with float32 accumulation (float64 for a float64 store)."""

import torch
import triton
import triton.language as tl

from simplexkern.ops.triton._config import MAX_POINTS_PER_PROGRAM, configs, next_pow2

_GPU_CONFIGS = [triton.Config({"BLOCK": b}, num_warps=w) for b, w in [(512, 4), (1024, 4), (2048, 8), (4096, 8)]]


@triton.autotune(configs=configs(_GPU_CONFIGS, {"BLOCK": 64}), key=["P", "NV", "S_BLOCK"])
@triton.jit
def _combine_kernel(
    c_ptr,
    v_ptr,
    out_ptr,
    S,
    P,
    NV,
    stride_cs,
    stride_ci,
    stride_vi,
    stride_os,
    S_BLOCK: tl.constexpr,
    BLOCK: tl.constexpr,
    ACC: tl.constexpr,
):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    offs_s = tl.arange(0, S_BLOCK)
    mask_s = offs_s < S
    acc = tl.zeros((S_BLOCK, BLOCK), dtype=ACC)
    for i in range(NV):
        v = tl.load(v_ptr + i * stride_vi + offs, mask=offs < P, other=0.0).to(ACC)
        c = tl.load(c_ptr + offs_s * stride_cs + i * stride_ci, mask=mask_s, other=0.0).to(ACC)
        acc += c[:, None] * v[None, :]
    tl.store(
        out_ptr + offs_s[:, None] * stride_os + offs[None, :],
        acc.to(out_ptr.dtype.element_ty),
        mask=mask_s[:, None] & (offs[None, :] < P),
    )


def combine(coeffs, store):
    """``coeffs`` (S, k), ``store`` (k, P) with unit stride along P -> (S, P) in the store's dtype."""
    S, NV = coeffs.shape
    P = store.shape[1]
    out = torch.empty(S, P, device=store.device, dtype=store.dtype)
    acc = tl.float64 if store.dtype == torch.float64 else tl.float32
    for s0 in range(0, S, MAX_POINTS_PER_PROGRAM):
        c = coeffs[s0 : s0 + MAX_POINTS_PER_PROGRAM]
        o = out[s0 : s0 + MAX_POINTS_PER_PROGRAM]
        grid = lambda meta: (triton.cdiv(P, meta["BLOCK"]),)
        _combine_kernel[grid](
            c,
            store,
            o,
            c.shape[0],
            P,
            NV,
            c.stride(0),
            c.stride(1),
            store.stride(0),
            o.stride(0),
            S_BLOCK=next_pow2(c.shape[0]),
            ACC=acc,
        )
    return out
