"""Passes over the vertex store that every backend shares: combining the vertices into the
points' weights, sum_i c_si V_i (``combine``: public and checked; ``matmul_combine`` and
``combine_vertices``: the unchecked forms the backends use), and turning per-point weight
gradients G_s into the vertices' gradients dV_i = sum_s c_si G_s (trainable rows only) and
the coefficients' dc_si = <G_s, V_i>."""

import torch

from simplexkern import _checks
from simplexkern.ops.triton._config import AVAILABLE, INTERPRET


def matmul_combine(coeffs, store):
    """(S, k) x (k, P) -> (S, P) with one GEMM in the store's dtype."""
    return coeffs.to(store.dtype) @ store


def combine_vertices(coeffs, per_vertex, combine2d=matmul_combine):
    """sum_i coeffs[s, i] t_i for ``coeffs`` (S, k) and ``per_vertex`` (k, ...) -> (S, ...),
    by ``combine2d`` on the flattened (k, P) tensor (default: one GEMM in its dtype)."""
    k = per_vertex.shape[0]
    return combine2d(coeffs, per_vertex.reshape(k, -1)).view(coeffs.shape[0], *per_vertex.shape[1:])


def inner(a, b):
    """<a_s, b_i> over all but the first dimension, for (S, ...) and (k, ...) -> (S, k),
    accumulated in float32 at least (the sums run over whole layers)."""
    acc = torch.promote_types(a.dtype, torch.float32)
    return a.reshape(a.shape[0], -1).to(acc) @ b.reshape(b.shape[0], -1).to(acc).T


def rows(trainable, device):
    """``trainable`` (a sorted index list) as a slice when it is a run of consecutive rows
    (a SimplexModel's trainable rows always are), else an index tensor; a slice needs no
    host-to-device copy."""
    if trainable == list(range(trainable[0], trainable[-1] + 1)):
        return slice(trainable[0], trainable[-1] + 1)
    return torch.tensor(trainable, device=device, dtype=torch.long)


def rows_out(t, trainable):
    """An uninitialised tensor like ``t`` (k, ...) for a gradient whose rows outside
    ``trainable`` are zero (the caller fills the others), and the index of the trainable rows
    (None when there are none). Only the rows left out are zeroed."""
    out = torch.empty(t.shape, dtype=t.dtype, device=t.device)
    if not trainable:
        return out.zero_(), None
    idx = rows(trainable, t.device)
    left_out = (
        [out[: idx.start], out[idx.stop :]]
        if isinstance(idx, slice)
        else [out[i] for i in range(len(out)) if i not in trainable]
    )  # one memset each, not an element-wise scatter
    for part in left_out:
        if part.numel():
            part.zero_()
    return out, idx


def single_trainable(trainable, need_dw, need_dc):
    """The trainable vertex when it is the only one and only its weight gradient is needed (the
    SPRO / ESPRO step): then dV_t = sum_s c_st G_s is one product over all points' examples,
    the same work as the plain layer's weight gradient, without the S per-point gradients G_s
    or a pass to combine them. None otherwise."""
    return trainable[0] if need_dw and not need_dc and len(trainable) == 1 else None


def single_row_grad(weight, t):
    """dweight for the single trainable vertex ``t``: zero but for row t, and that row (a view)."""
    dw, _ = rows_out(weight, [t])
    return dw, dw[t]


def weight_grads(g, weight, coeffs, trainable, need_dw, need_dc, combine2d=matmul_combine):
    """From G = the per-point weight gradients (S, P): (dweight, dcoeffs), None where not
    needed; dweight's fixed rows are zero."""
    k = weight.shape[0]
    dw = dc = None
    if need_dw:
        dw, idx = rows_out(weight, trainable)
        if idx is not None:
            c = coeffs[:, idx].T
            flat = dw.view(k, -1)
            if isinstance(idx, slice) and combine2d is matmul_combine and g.dtype == dw.dtype:
                torch.mm(c.to(g.dtype), g, out=flat[idx])  # straight into the trainable rows
            else:
                flat[idx] = combine2d(c.contiguous(), g).to(weight.dtype)
    if need_dc:
        dc = inner(g, weight)
    return dw, dc


def bias_grads(dy, bias, coeffs, trainable, need_db, need_dc, dc, sum_dims=(1,)):
    """The bias's share of the gradients: dbias (fixed rows zero) and dc + <g_s, b_i> with
    g_s = dY_s summed over ``sum_dims`` (all but the point and channel dimensions),
    accumulated in float32 (or float64 for float64 inputs). Returns (db, dc)."""
    if bias is None or not (need_db or need_dc):
        return None, dc
    acc = torch.promote_types(dy.dtype, torch.float32)
    gb = dy.sum(sum_dims, dtype=acc)  # (S, out)
    db = None
    if need_db:
        db, idx = rows_out(bias, trainable)
        if idx is not None:
            db[idx] = (coeffs[:, idx].to(acc).T @ gb).to(bias.dtype)
    if need_dc:
        dc = gb @ bias.to(acc).T + (dc if dc is not None else 0)
    return db, dc


def combine(coeffs: torch.Tensor, store: torch.Tensor) -> torch.Tensor:
    """The S points ``coeffs @ store`` of a store of k vertices: ``coeffs`` (S, k), ``store``
    (k, P) -> (S, P) in the store's dtype, accumulated in float32 (float64 for a float64
    store). One Triton pass over the store on a GPU (and on CPU tensors under
    TRITON_INTERPRET=1); a matrix product on the CPU."""
    _checks.floating(coeffs, "coeffs")
    _checks.floating(store, "store")
    if store.dim() != 2 or store.shape[0] < 1:
        raise ValueError(f"store must have shape (k, P) with k >= 1 vertices, got {tuple(store.shape)}")
    k = store.shape[0]
    if coeffs.dim() != 2 or coeffs.shape[1] != k or coeffs.shape[0] < 1:
        raise ValueError(
            f"coeffs must have shape (S, {k}) with S >= 1 for a store of {k} vertices, got {tuple(coeffs.shape)}"
        )
    if coeffs.device != store.device:
        raise ValueError(f"coeffs is on {coeffs.device} but store is on {store.device}")
    _checks.finite(coeffs, "coeffs")
    store = store.contiguous()  # the kernel walks P with unit stride (no copy if it already is)
    if AVAILABLE and (store.device.type == "cuda" or INTERPRET):
        from simplexkern.ops.triton.combine import combine as launch

        return launch(coeffs.contiguous(), store)
    acc = torch.promote_types(store.dtype, torch.float32)
    return (coeffs.to(acc) @ store.to(acc)).to(store.dtype)
