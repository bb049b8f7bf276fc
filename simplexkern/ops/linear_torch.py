"""The ``torch`` backend of simplex_linear: materialise the S combined weights with one GEMM
over the vertices, then cuBLAS batched GEMMs; scatter the per-point weight gradients back to
the trainable vertices with one GEMM. The strong unfused baseline."""
import torch
import torch.nn.functional as F

from simplexkern.ops.vertices import bias_grads, combined, gemm_combine, weight_grads


def linear_forward(x, weight, bias, coeffs, combine=gemm_combine):
    """``x`` (M, in) shared or (S, M, in) -> (S, M, out). ``combine`` materialises the points'
    weights from the store."""
    S = coeffs.shape[0]
    w = combined(weight, coeffs, combine)  # (S, out, in)
    if S == 1:  # one point: a plain linear layer (cuBLASLt with the bias in its epilogue)
        b = (coeffs.to(bias.dtype) @ bias)[0] if bias is not None else None
        return F.linear(x if x.dim() == 2 else x[0], w[0], b)[None]
    xs = x.expand(S, *x.shape) if x.dim() == 2 else x
    if bias is None:
        return torch.bmm(xs, w.transpose(1, 2))
    b = coeffs.to(bias.dtype) @ bias  # (S, out)
    return torch.baddbmm(b.unsqueeze(1), xs, w.transpose(1, 2))


def linear_backward(dy, x, weight, bias, coeffs, trainable, need_dx, need_dw, need_db, need_dc,
                    combine=gemm_combine):
    """Gradients (dx, dweight, dbias, dcoeffs); None where not needed. Fixed vertices' rows
    of dweight and dbias are zero."""
    S = coeffs.shape[0]
    shared = x.dim() == 2
    dx = dw = dc = None
    if need_dx:
        w = combined(weight, coeffs, combine)
        if shared:  # sum_s dY_s W_s as one GEMM over (s, out)
            dx = dy.transpose(0, 1).reshape(x.shape[0], -1) @ w.reshape(-1, w.shape[-1])
        else:
            dx = torch.bmm(dy, w)
    if need_dw or need_dc:
        if S == 1:
            g = (dy[0].T @ (x if shared else x[0])).reshape(1, -1)
        else:
            xs = x.expand(S, *x.shape) if shared else x
            g = torch.bmm(dy.transpose(1, 2), xs).reshape(S, -1)  # G_s = dY_s^T X_s, (S, out * in)
        dw, dc = weight_grads(g, weight, coeffs, trainable, need_dw, need_dc, combine)
    db, dc = bias_grads(dy, bias, coeffs, trainable, need_db, need_dc, dc)
    return dx, dw, db, (dc.to(coeffs.dtype) if dc is not None else None)
