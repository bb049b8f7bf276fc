"""The ``torch`` backend of simplex_linear: the materialised form with one GEMM over the
vertices as the combination; the strong unfused baseline."""

from simplexkern.ops import linear_materialised
from simplexkern.ops.linear_materialised import combines_products
from simplexkern.ops.vertices import matmul_combine


def linear_forward(x, weight, bias, coeffs):
    return linear_materialised.forward(x, weight, bias, coeffs, matmul_combine)


def linear_backward(dy, x, weight, bias, coeffs, trainable, need_dx, need_dw, need_db, need_dc):
    return linear_materialised.backward(
        dy, x, weight, bias, coeffs, trainable, need_dx, need_dw, need_db, need_dc, matmul_combine
    )


__all__ = ["linear_forward", "linear_backward", "combines_products"]
