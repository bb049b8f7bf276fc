"""simplex_linear with the points' weights materialised: the S combined weights formed from
the store by ``combine2d`` (a GEMM in the ``torch`` backend, the Triton combine kernel in the
``triton`` backend's compute-bound regime), then cuBLAS batched GEMMs; the per-point weight
gradients scattered back to the trainable vertices by ``combine2d`` too. A shared input with
fewer vertices than points is instead multiplied by the k vertices and the k products
combined (``combines_products``)."""

import torch
import torch.nn.functional as F

from simplexkern.ops.vertices import (
    bias_grads,
    combine_vertices,
    inner,
    rows_out,
    single_row_grad,
    single_trainable,
    weight_grads,
)


def combines_products(x, weight, coeffs):
    """Whether to multiply a shared input by the k vertices' weights and combine the k products,
    ``y_s = sum_i c_si x W_i^T + b_s`` (exact while x is shared), instead of by the S points'
    weights: k < S products' worth of work instead of S."""
    return x.dim() == 2 and weight.shape[0] < coeffs.shape[0]


def forward(x, weight, bias, coeffs, combine2d):
    """``x`` (M, in) shared or (S, M, in) -> (S, M, out). ``combine2d`` materialises the
    points' weights from the store."""
    S = coeffs.shape[0]
    if combines_products(x, weight, coeffs):
        y = combine_vertices(coeffs, torch.matmul(x, weight.transpose(1, 2)))  # (k, M, out) combined into (S, M, out)
        return y if bias is None else y.add_((coeffs.to(bias.dtype) @ bias)[:, None, :].to(y.dtype))
    w = combine_vertices(coeffs, weight, combine2d)  # (S, out, in)
    if S == 1:  # one point: a plain linear layer (cuBLASLt with the bias in its epilogue)
        b = (coeffs.to(bias.dtype) @ bias)[0] if bias is not None else None
        return F.linear(x if x.dim() == 2 else x[0], w[0], b)[None]
    xs = x.expand(S, *x.shape) if x.dim() == 2 else x
    if bias is None:
        return torch.bmm(xs, w.transpose(1, 2))
    b = coeffs.to(bias.dtype) @ bias  # (S, out)
    return torch.baddbmm(b.unsqueeze(1), xs, w.transpose(1, 2))


def backward(dy, x, weight, bias, coeffs, trainable, need_dx, need_dw, need_db, need_dc, combine2d):
    """Gradients (dx, dweight, dbias, dcoeffs); None where not needed. Fixed vertices' rows
    of dweight and dbias are zero."""
    if combines_products(x, weight, coeffs):
        dx, dw, dc = _products_backward(dy, x, weight, coeffs, trainable, need_dx, need_dw, need_dc)
    else:
        dx, dw, dc = _points_backward(dy, x, weight, coeffs, trainable, need_dx, need_dw, need_dc, combine2d)
    db, dc = bias_grads(dy, bias, coeffs, trainable, need_db, need_dc, dc)
    return dx, dw, db, (dc.to(coeffs.dtype) if dc is not None else None)


def _points_backward(dy, x, weight, coeffs, trainable, need_dx, need_dw, need_dc, combine2d):
    """(dx, dweight, dcoeffs) from the S points' combined weights: dx = dY_s W_s, and the
    per-point weight gradients G_s = dY_s^T X_s scattered to the vertices."""
    S = coeffs.shape[0]
    shared = x.dim() == 2
    dx = dw = dc = None
    if need_dx:
        w = combine_vertices(coeffs, weight, combine2d)
        if shared:  # sum_s dY_s W_s as one GEMM over (s, out)
            dx = dy.transpose(0, 1).reshape(x.shape[0], -1) @ w.reshape(-1, w.shape[-1])
        else:
            dx = torch.bmm(dy, w)
    t = single_trainable(trainable, need_dw, need_dc)
    if t is not None:  # dV_t = sum_s c_st dY_s^T X_s: one GEMM over all S x M rows
        dw, row = single_row_grad(weight, t)
        c = coeffs[:, t].to(dy.dtype)
        if shared:
            torch.mm(torch.tensordot(c, dy, 1).T, x, out=row)
        else:
            torch.mm((dy * c[:, None, None]).reshape(-1, dy.shape[-1]).T, x.reshape(-1, x.shape[-1]), out=row)
    elif need_dw or need_dc:
        if S == 1:
            g = (dy[0].T @ (x if shared else x[0])).reshape(1, -1)
        else:
            xs = x.expand(S, *x.shape) if shared else x
            g = torch.bmm(dy.transpose(1, 2), xs).reshape(S, -1)  # G_s = dY_s^T X_s, (S, out * in)
        dw, dc = weight_grads(g, weight, coeffs, trainable, need_dw, need_dc, combine2d)
    return dx, dw, dc


def _products_backward(dy, x, weight, coeffs, trainable, need_dx, need_dw, need_dc):
    """(dx, dweight, dcoeffs) of the ``combines_products`` form: with G_i = sum_s c_si dY_s,
    dx = sum_i G_i W_i (one GEMM over (i, out)), dW_i = G_i^T x for the trainable i only, and
    dc_si = <dY_s, x W_i^T>."""
    grad = combine_vertices(coeffs.T, dy)  # (k, M, out)
    dx = dw = dc = None
    if need_dx:
        dx = grad.transpose(0, 1).reshape(x.shape[0], -1) @ weight.reshape(-1, weight.shape[-1])
    if need_dw:
        dw, idx = rows_out(weight, trainable)
        if idx is not None:
            dw[idx] = torch.matmul(grad[idx].transpose(1, 2), x)
    if need_dc:
        dc = inner(dy, torch.matmul(x, weight.transpose(1, 2)))
    return dx, dw, dc
