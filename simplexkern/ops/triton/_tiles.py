"""Tile helpers shared by the implicit-GEMM convolution kernels."""

import triton
import triton.language as tl


@triton.jit
def combined_tile(v_ptrs, mask, c_ptr, NV, stride_vi, stride_ci, DTYPE: tl.constexpr):
    """sum_i c[i] * V_i over the k vertices at ``v_ptrs`` (vertex 0's addresses), in float32,
    returned in DTYPE: the point's filter tile, formed in the prologue."""
    w = tl.zeros(v_ptrs.shape, dtype=tl.float32)
    for i in range(NV):
        c = tl.load(c_ptr + i * stride_ci)
        w += c * tl.load(v_ptrs + i * stride_vi, mask=mask, other=0.0).to(tl.float32)
    return w.to(DTYPE)


@triton.jit
def pixel_coords(offs, OH, OW):
    """Flat pixel index over (B, OH, OW) -> (b, oh, ow); b in int64, as the batch and point
    offsets of large activations pass 2**31 elements."""
    hw = offs % (OH * OW)
    return (offs // (OH * OW)).to(tl.int64), hw // OW, hw % OW


@triton.jit
def point_group_block(pid, G, n_blocks):
    """Program id over (point, group, row block), row blocks fastest (neighbouring programs
    share filter tiles) -> (point as int64, group, row block)."""
    sg = pid // n_blocks
    return (sg // G).to(tl.int64), sg % G, pid % n_blocks
