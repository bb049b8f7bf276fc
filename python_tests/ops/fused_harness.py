"""What the fused-op tests share: devices, tolerances, relative error, and the two sides of
every comparison — an op run on fresh leaves, and the float64 gradients of an independent
formula with the fixed vertices' rows zeroed."""

import pytest
import torch

from simplexkern.ops import dispatch

from conftest import cuda

DEVICES = ["cpu", pytest.param("cuda", marks=cuda)]
# Relative error ||got - ref|| / ||ref|| allowed per dtype (float32 accumulation throughout).
RTOL = {torch.float32: 2e-5, torch.float64: 1e-12, torch.bfloat16: 2e-2, torch.float16: 4e-3}


def skip_unless_runnable(device, backend):
    if device == "cpu" and backend == "triton" and not dispatch.INTERPRET:
        pytest.skip("the triton backend runs on CPU tensors only under TRITON_INTERPRET=1")


def rel_err(got, ref, typical=0.0):
    """||got - ref|| / ||ref||; with ``typical``, relative to at least that size (a sum of many
    terms of random sign that came out much smaller than usual carries the rounding error of
    its usual size)."""
    return ((got.double() - ref).norm() / ref.norm().clamp_min(max(typical, 1e-30))).item()


def typical_sum(formula, x, weight, bias, coeffs, dy, n_terms):
    """The usual size of dcoeffs: the norm of its float64 reference with every term made
    positive, over sqrt(n_terms), the size of a sum of ``n_terms`` terms of random sign."""
    pos = [t.abs() if t is not None else None for t in (x, weight, bias)]
    return expected(formula, *pos, coeffs, [], dy.abs())[4].norm().item() / n_terms**0.5


def example_major(x):
    """Per-point inputs (S, B, ...) laid out example by example, as a SimplexModel passes them."""
    return x.transpose(0, 1).contiguous().transpose(0, 1)


def expected(formula, x, weight, bias, coeffs, trainable, dy):
    """(y, dx, dweight, dbias, dcoeffs) in float64 from ``formula(x, weight, bias, coeffs)``;
    the fixed vertices' rows of dweight and dbias are zero."""
    x64, w64, c64 = (t.detach().double().requires_grad_(True) for t in (x, weight, coeffs))
    b64 = bias.detach().double().requires_grad_(True) if bias is not None else None
    y = formula(x64, w64, b64, c64)
    y.backward(dy.double())
    fixed = [i for i in range(weight.shape[0]) if i not in trainable]
    dw = w64.grad.clone()
    dw[fixed] = 0
    db = None
    if b64 is not None:
        db = b64.grad.clone()
        db[fixed] = 0
    return y.detach(), x64.grad, dw, db, c64.grad


def run(op, x, weight, bias, coeffs, dy, coeffs_grad=True, **kwargs):
    """(y, and the gradients of x, weight, bias, coeffs) from ``op`` on fresh leaves; with
    ``coeffs_grad=False`` the coefficients need none (a training step's sampled points)."""
    leaves = [t.detach().clone().requires_grad_(True) if t is not None else None for t in (x, weight, bias, coeffs)]
    leaves[3].requires_grad_(coeffs_grad)
    y = op(*leaves, **kwargs)
    y.backward(dy)
    return (y.detach(), *[t.grad if t is not None else None for t in leaves])
