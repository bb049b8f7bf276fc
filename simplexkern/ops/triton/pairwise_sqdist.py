"""Pairwise squared distances of k vertices in one pass over a (k, P) store: each program
walks a run of coordinate blocks, forms every pair's differences exactly in float64 and
adds its partial sums to the (k, k) result with float64 atomics."""

import torch
import triton
import triton.language as tl

from simplexkern.ops.triton._config import INTERPRET, next_pow2


@triton.jit
def _pairwise_sqdist_kernel(
    v_ptr, out_ptr, P, NV, stride_vi, BLOCKS_PER_PROGRAM, NV_BLOCK: tl.constexpr, BLOCK: tl.constexpr
):
    offs_i = tl.arange(0, NV_BLOCK)
    acc = tl.zeros((NV_BLOCK, NV_BLOCK), dtype=tl.float64)
    for b in range(BLOCKS_PER_PROGRAM):
        offs = (tl.program_id(0) * BLOCKS_PER_PROGRAM + b) * BLOCK + tl.arange(0, BLOCK)
        x = tl.load(
            v_ptr + offs_i[:, None] * stride_vi + offs[None, :],
            mask=(offs_i[:, None] < NV) & (offs[None, :] < P),
            other=0.0,
        ).to(tl.float64)
        diff = x[:, None, :] - x[None, :, :]
        acc += tl.sum(diff * diff, axis=2)
    tl.atomic_add(
        out_ptr + offs_i[:, None] * NV + offs_i[None, :], acc, mask=(offs_i[:, None] < NV) & (offs_i[None, :] < NV)
    )


def pairwise_sqdist(store):
    """``store`` (k, P) with unit stride along P -> (k, k) float64 squared distances."""
    NV, P = store.shape
    out = torch.zeros(NV, NV, device=store.device, dtype=torch.float64)
    if P == 0:
        return out
    nv_block = max(2, next_pow2(NV))
    block = max(16, 4096 // (nv_block * nv_block))  # the (NV_BLOCK, NV_BLOCK, BLOCK) differences stay in registers
    blocks = triton.cdiv(P, block)
    programs = 4 if INTERPRET else 8 * torch.cuda.get_device_properties(store.device).multi_processor_count
    per_program = triton.cdiv(blocks, min(programs, blocks))
    _pairwise_sqdist_kernel[(triton.cdiv(blocks, per_program),)](
        store, out, P, NV, store.stride(0), per_program, NV_BLOCK=nv_block, BLOCK=block, num_warps=4
    )
    return out
