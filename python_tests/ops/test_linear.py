"""simplex_linear: every backend against an independent float64 formula on fresh random data."""

import pytest
import torch

import simplexkern.ops as ops
from simplexkern.ops import dispatch, linear_torch

from . import fused_harness
from .fused_harness import BACKENDS, DEVICES, RTOL, FusedOpTester, rel_err, skip_unless_runnable


def einsum_linear(x, weight, bias, coeffs):
    """W_s = sum_i c_si V_i, y_s = x_s W_s^T + b_s."""
    ws = torch.einsum("si,ioj->soj", coeffs, weight)
    y = torch.einsum("mj,soj->smo" if x.dim() == 2 else "smj,soj->smo", x, ws)
    return y + (coeffs @ bias)[:, None, :] if bias is not None else y


W, X = torch.randn(3, 4, 5), torch.randn(2, 5)


class TestLinear(FusedOpTester):
    op = staticmethod(ops.simplex_linear)
    formula = staticmethod(einsum_linear)
    VERTEX_CASES = [
        (1, 1, True, [0]),
        (2, 3, False, [1]),
        (3, 5, True, [0, 2]),
        (4, 2, False, [0, 1, 2, 3]),
        (8, 8, True, [5]),
        (5, 9, False, [0, 4]),
        (6, 4, True, []),
        (2, 7, True, [1]),
        (3, 9, True, []),
    ]
    OPCHECK_CASES = [(True, 3, 2), (False, 3, 2), (True, 2, 4)]
    HALF = dict(batch=6, n_in=40, n_out=33)
    GRADCHECK = dict(batch=3, n_in=4, n_out=5)
    OPCHECK = dict(batch=4, n_in=7, n_out=5)
    GPU = dict(batch=16, n_in=64, n_out=48)
    GPU_AUTO = "triton"
    BAD = [
        (lambda: ops.simplex_linear(X, W, None, torch.ones(4) / 4), ValueError, r"coeffs must have shape \(3,\)"),
        (lambda: ops.simplex_linear(X, W, torch.randn(2, 4), torch.ones(3)), ValueError, "bias must have shape"),
        (lambda: ops.simplex_linear(torch.randn(2, 6), W, None, torch.ones(3)), ValueError, "x must have shape"),
        (
            lambda: ops.simplex_linear(torch.randn(2, 5), W[0], None, torch.ones(3)),
            ValueError,
            "weight must have shape",
        ),
        (lambda: ops.simplex_linear(torch.randn(2, 5), W[:0], None, torch.ones(0)), ValueError, "k >= 1"),
        (
            lambda: ops.simplex_linear(torch.randn(2, 0), W[..., :0], None, torch.ones(3)),
            ValueError,
            "no empty dimension",
        ),
        (lambda: ops.simplex_linear(torch.randn(2, 5), W, None, torch.ones(0, 3)), ValueError, "with S >= 1"),
        (lambda: ops.simplex_linear(torch.randn(4, 2, 5), W, None, torch.ones(3, 3)), ValueError, "S=3"),
        (lambda: ops.simplex_linear(X.double(), W, None, torch.ones(3)), TypeError, "x must have the dtype"),
        (
            lambda: ops.simplex_linear(X, W, None, torch.tensor([0.5, float("nan"), 0.5])),
            ValueError,
            "coeffs must be finite",
        ),
        (
            lambda: ops.simplex_linear(X, W, None, torch.ones(3, dtype=torch.int64)),
            TypeError,
            "coeffs must be a floating",
        ),
        (
            lambda: ops.simplex_linear(torch.randn(2, 5), W, None, torch.ones(3), trainable=[3]),
            ValueError,
            "out of range",
        ),
        (
            lambda: ops.simplex_linear(torch.randn(2, 5), W, None, torch.ones(3), trainable=[True]),
            ValueError,
            "3 entries",
        ),
        (lambda: ops.simplex_linear(X, W, None, torch.ones(3), trainable=["a"]), TypeError, "trainable must be"),
        (lambda: ops.simplex_linear(X, W, None, torch.ones(3), backend="fast"), ValueError, "backend must be one of"),
        (
            lambda: (
                ops.simplex_linear(torch.randn(2, 5), W, None, torch.ones(3), backend="triton")
                if not dispatch.INTERPRET
                else (_ for _ in ()).throw(ValueError("needs CUDA"))
            ),
            ValueError,
            "needs CUDA",
        ),
    ]

    def shapes(self, batch=5, n_in=19, n_out=23):
        return (batch, n_in), (n_out, n_in), {}

    def typical_dcoeffs(self, args, dy):
        # dcoeffs[s, i] sums batch * out * (in + 1) terms: with one vertex and one point it is one such sum
        n_out, n_in = args[1].shape[1:]
        return fused_harness.typical_sum(einsum_linear, *args, dy, dy.shape[-2] * n_out * (n_in + 1))

    @pytest.mark.parametrize("device", DEVICES)
    @pytest.mark.parametrize("backend", BACKENDS)
    def test_leading_dimensions(self, device, backend, rng):
        """x (..., in) with (k,) coefficients, and (S, ..., in) with (S, k)."""
        skip_unless_runnable(device, backend)
        (_, weight, bias, coeffs), _ = self.problem(rng, 3, 1, True, n_in=9, n_out=5, device=device)
        x = torch.randn(2, 3, 4, 9, generator=rng).to(device)
        y = ops.simplex_linear(x, weight, bias, coeffs[0], backend=backend)
        w = torch.einsum("i,ioj->oj", coeffs[0].double(), weight.double())
        ref = x.double() @ w.T + coeffs[0].double() @ bias.double()
        assert y.shape == (2, 3, 4, 5) and rel_err(y, ref) < RTOL[torch.float32]
        xs = torch.randn(3, 2, 4, 9, generator=rng).to(device)
        y = ops.simplex_linear(xs, weight, None, coeffs[:1].expand(3, 3), backend=backend)  # stride-0 points
        assert y.shape == (3, 2, 4, 5) and rel_err(y, xs.double() @ w.T) < RTOL[torch.float32]

    @pytest.mark.parametrize("device", DEVICES)
    @pytest.mark.parametrize("shared", [True, False])
    def test_triton_materialised_path(self, device, shared, rng, monkeypatch):
        """Above FUSED_MAX_ROWS rows per point the triton backend materialises the weights."""
        skip_unless_runnable(device, "triton")
        from simplexkern.ops import linear_triton

        monkeypatch.setattr(linear_triton, "FUSED_MAX_ROWS", 2)
        args, kwargs = self.problem(rng, 3, 4, shared, n_in=17, n_out=9, device=device)
        self.check_against_formula(rng, args, kwargs, [1], "triton")

    @pytest.mark.parametrize("backend", ["reference", "torch"])
    def test_frozen_weight_trainable_bias_and_strided_weight(self, backend, rng):
        (x, weight, bias, coeffs), _ = self.problem(rng, 3, 2, True, batch=4, n_in=6, n_out=5)
        b = bias.clone().requires_grad_(True)  # weight frozen: the bias still gets its gradient
        ops.simplex_linear(x, weight, b, coeffs, backend=backend).sum().backward()
        torch.testing.assert_close(b.grad, (coeffs.sum(0, keepdim=True).T * 4).expand(3, 5).contiguous())
        base = weight.transpose(1, 2).contiguous().requires_grad_(True)  # a non-contiguous weight view
        y = ops.simplex_linear(x, base.transpose(1, 2), bias, coeffs, backend=backend)
        y.sum().backward()
        ref = fused_harness.expected(einsum_linear, x, weight, bias, coeffs, [0, 1, 2], torch.ones_like(y))
        assert rel_err(y, ref[0]) < RTOL[torch.float32]
        assert rel_err(base.grad.transpose(1, 2), ref[2]) < RTOL[torch.float32]

    def test_a_shared_input_with_fewer_vertices_than_points_combines_the_vertex_products(self, rng):
        (x, weight, _, coeffs), _ = self.problem(rng, 2, 7, True)
        assert linear_torch.combines_products(x, weight, coeffs)  # the (2, 7, shared) case runs this form
        assert not linear_torch.combines_products(x, weight, coeffs[:2])
        assert not linear_torch.combines_products(x.expand(7, *x.shape), weight, coeffs)
