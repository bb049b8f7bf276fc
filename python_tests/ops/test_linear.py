"""simplex_linear: every backend against an independent float64 formula on fresh random data."""

import pytest
import torch

import simplexkern.ops as ops
from simplexkern.ops import dispatch

from . import fused_harness
from .fused_harness import DEVICES, RTOL, rel_err, skip_unless_runnable
from conftest import cuda


def problem(rng, k, S, batch, n_in, n_out, shared, bias=True, dtype=torch.float32, device="cpu"):
    def randn(*shape):
        return torch.randn(*shape, generator=rng, dtype=torch.float64).to(device=device, dtype=dtype)

    weight = randn(k, n_out, n_in)
    b = randn(k, n_out) if bias else None
    coeffs = torch.rand(S, k, generator=rng, dtype=torch.float64).to(device=device, dtype=dtype)
    coeffs = coeffs / coeffs.sum(-1, keepdim=True)
    x = randn(batch, n_in) if shared else randn(S, batch, n_in)
    return x, weight, b, coeffs


def einsum_linear(x, weight, bias, coeffs):
    """W_s = sum_i c_si V_i, y_s = x_s W_s^T + b_s."""
    ws = torch.einsum("si,ioj->soj", coeffs, weight)
    y = torch.einsum("mj,soj->smo" if x.dim() == 2 else "smj,soj->smo", x, ws)
    return y + (coeffs @ bias)[:, None, :] if bias is not None else y


def expected(x, weight, bias, coeffs, trainable, dy):
    return fused_harness.expected(einsum_linear, x, weight, bias, coeffs, trainable, dy)


def run(backend, x, weight, bias, coeffs, trainable, dy):
    return fused_harness.run(ops.simplex_linear, x, weight, bias, coeffs, dy, trainable=trainable, backend=backend)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", ["reference", "torch", "triton"])
@pytest.mark.parametrize(
    "k, S, shared, trainable",
    [
        (1, 1, True, [0]),
        (2, 3, False, [1]),
        (3, 5, True, [0, 2]),
        (4, 2, False, [0, 1, 2, 3]),
        (8, 8, True, [5]),
        (5, 9, False, [0, 4]),
        (6, 4, True, []),
        (2, 7, True, [1]),
        (3, 9, True, []),
    ],
)
def test_forward_and_gradients_float32(device, backend, k, S, shared, trainable, rng):
    skip_unless_runnable(device, backend)
    x, weight, bias, coeffs = problem(rng, k, S, batch=5, n_in=19, n_out=23, shared=shared, device=device)
    dy = torch.randn(S, 5, 23, generator=rng, dtype=torch.float64).float().to(device)
    got = run(backend, x, weight, bias, coeffs, trainable, dy)
    ref = expected(x, weight, bias, coeffs, trainable, dy)
    # dcoeffs[s, i] sums 5 * 23 * (19 + 1) terms: with one vertex and one point it is one such sum
    typical = {"dcoeffs": fused_harness.typical_sum(einsum_linear, x, weight, bias, coeffs, dy, 5 * 23 * 20)}
    for name, g, r in zip(["y", "dx", "dweight", "dbias", "dcoeffs"], got, ref):
        if r.norm() == 0:  # every vertex fixed: no gradient at all, or an all-zero one
            assert g is None or torch.equal(g, torch.zeros_like(g)), name
        else:
            err = rel_err(g, r, typical.get(name, 0.0))
            assert err < RTOL[torch.float32], (name, err)
    fixed = [i for i in range(k) if i not in trainable]
    if got[2] is not None:
        assert torch.equal(got[2][fixed], torch.zeros_like(got[2][fixed]))  # fixed rows stay exactly zero


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", ["reference", "torch", "triton"])
@pytest.mark.parametrize("shared, layout", [(True, None), (False, "point-major"), (False, "example-major")])
def test_one_trainable_vertex_without_coefficient_gradient(device, backend, shared, layout, rng):
    """A training step's case: one trainable vertex and sampled coefficients that need no
    gradient, where the vertex's weight gradient is one product over all points' rows."""
    skip_unless_runnable(device, backend)
    x, weight, bias, coeffs = problem(rng, 3, 2, 5, 4, 6, shared, device=device)
    x = fused_harness.example_major(x) if layout == "example-major" else x
    dy = torch.randn(2, x.shape[-2], weight.shape[1], generator=rng, dtype=torch.float64).to(x)
    got = fused_harness.run(
        ops.simplex_linear, x, weight, bias, coeffs, dy, coeffs_grad=False, trainable=[1], backend=backend
    )
    ref = expected(x, weight, bias, coeffs, [1], dy)
    for name, g, r in zip(["y", "dx", "dweight", "dbias"], got, ref):
        assert rel_err(g, r) < RTOL[torch.float32], (name, rel_err(g, r))
    assert got[4] is None
    assert torch.equal(got[2][[0, 2]], torch.zeros_like(got[2][[0, 2]]))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision(device, backend, dtype, rng):
    skip_unless_runnable(device, backend)
    if device == "cpu" and backend == "triton" and dtype == torch.bfloat16:
        pytest.skip("Triton's CPU interpreter has no bfloat16 arithmetic; covered on the GPU")
    x, weight, bias, coeffs = problem(rng, 4, 3, batch=6, n_in=40, n_out=33, shared=False, dtype=dtype, device=device)
    dy = torch.randn(3, 6, 33, generator=rng, dtype=torch.float64).to(device=device, dtype=dtype)
    got = run(backend, x, weight, bias, coeffs, [0, 1], dy)
    ref = expected(x, weight, bias, coeffs, [0, 1], dy)
    for name, g, r in zip(["y", "dx", "dweight", "dbias", "dcoeffs"], got, ref):
        assert g.dtype == dtype and rel_err(g, r) < RTOL[dtype], (name, rel_err(g, r))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", ["reference", "torch", "triton"])
def test_single_point_and_leading_dims(device, backend, rng):
    skip_unless_runnable(device, backend)
    x, weight, bias, coeffs = problem(rng, 3, 1, batch=4, n_in=9, n_out=5, shared=True, device=device)
    x = torch.randn(2, 3, 4, 9, generator=rng).to(device)  # (..., in) with a (k,) coefficient vector
    y = ops.simplex_linear(x, weight, bias, coeffs[0], backend=backend)
    w = torch.einsum("i,ioj->oj", coeffs[0].double(), weight.double())
    ref = x.double() @ w.T + coeffs[0].double() @ bias.double()
    assert y.shape == (2, 3, 4, 5) and rel_err(y, ref) < RTOL[torch.float32]
    xs = torch.randn(3, 2, 4, 9, generator=rng).to(device)  # (S, ..., in) per point
    y = ops.simplex_linear(xs, weight, None, coeffs.expand(3, 3), backend=backend)
    assert y.shape == (3, 2, 4, 5)
    assert rel_err(y, xs.double() @ w.T) < RTOL[torch.float32]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", ["reference", "torch", "triton"])
@pytest.mark.parametrize("S", [1, 3])
def test_output_takes_inplace_ops(device, backend, S, rng):
    skip_unless_runnable(device, backend)
    x, weight, bias, coeffs = problem(rng, 3, S, batch=4, n_in=6, n_out=5, shared=True, device=device)
    w = weight.clone().requires_grad_(True)
    torch.relu_(ops.simplex_linear(x, w, bias, coeffs, backend=backend)).square().sum().backward()
    w64 = weight.double().requires_grad_(True)
    torch.relu(einsum_linear(x.double(), w64, bias.double(), coeffs.double())).square().sum().backward()
    assert rel_err(w.grad, w64.grad) < RTOL[torch.float32]


@pytest.mark.parametrize("backend", ["reference", "torch"])
@pytest.mark.parametrize("shared", [True, False])
def test_gradcheck_float64(backend, shared, rng):
    x, weight, bias, coeffs = problem(rng, 3, 2, batch=3, n_in=4, n_out=5, shared=shared, dtype=torch.float64)
    args = [t.requires_grad_(True) for t in (x, weight, bias, coeffs)]
    fn = lambda *a: ops.simplex_linear(*a, backend=backend)
    assert torch.autograd.gradcheck(fn, args)


def test_torch_compile_traces_without_graph_break(rng):
    x, weight, bias, coeffs = problem(rng, 3, 2, batch=4, n_in=8, n_out=6, shared=True)
    weight.requires_grad_(True)

    def f(x, w, b, c):
        return torch.relu(ops.simplex_linear(x, w, b, c, backend="torch")).sum()

    compiled = torch.compile(f, backend="aot_eager", fullgraph=True)
    out = compiled(x, weight, bias, coeffs)
    out.backward()
    grad = weight.grad.clone()
    weight.grad = None
    f(x, weight, bias, coeffs).backward()
    torch.testing.assert_close(out, f(x, weight, bias, coeffs))
    torch.testing.assert_close(grad, weight.grad)


@cuda
def test_torch_compile_inductor_triton_backend_on_gpu(rng):
    x, weight, bias, coeffs = problem(rng, 4, 5, batch=16, n_in=64, n_out=48, shared=True, device="cuda")
    f = lambda x, w, b, c: ops.simplex_linear(x, w, b, c, backend="triton").square().mean()
    compiled = torch.compile(f, fullgraph=True)
    torch.testing.assert_close(compiled(x, weight, bias, coeffs), f(x, weight, bias, coeffs))


def test_backend_selection(monkeypatch):
    w = torch.randn(2, 3, 4)
    assert dispatch.resolve(w.device) == "torch"
    with ops.use_backend("reference"):
        assert dispatch.resolve(w.device) == "reference"
        assert dispatch.resolve(w.device, backend="torch") == "torch"
    monkeypatch.setenv(dispatch.ENV_VAR, "reference")
    assert dispatch.resolve(w.device) == "reference"
    monkeypatch.setenv(dispatch.ENV_VAR, "fast")
    with pytest.raises(ValueError, match="SIMPLEXKERN_BACKEND must be one of"):
        dispatch.resolve(w.device)
    with pytest.raises(ValueError, match="backend must be one of"):
        ops.use_backend("cudnn").__enter__()


W, X = torch.randn(3, 4, 5), torch.randn(2, 5)
BAD = [
    (lambda: ops.simplex_linear(X, W, None, torch.ones(4) / 4), ValueError, r"coeffs must have shape \(3,\)"),
    (lambda: ops.simplex_linear(X, W, torch.randn(2, 4), torch.ones(3)), ValueError, "bias must have shape"),
    (lambda: ops.simplex_linear(torch.randn(2, 6), W, None, torch.ones(3)), ValueError, "x must have shape"),
    (lambda: ops.simplex_linear(torch.randn(2, 5), W[0], None, torch.ones(3)), ValueError, "weight must have shape"),
    (lambda: ops.simplex_linear(torch.randn(2, 5), W[:0], None, torch.ones(0)), ValueError, "k >= 1"),
    (lambda: ops.simplex_linear(torch.randn(2, 0), W[..., :0], None, torch.ones(3)), ValueError, "no empty dimension"),
    (lambda: ops.simplex_linear(torch.randn(2, 5), W, None, torch.ones(0, 3)), ValueError, "with S >= 1"),
    (lambda: ops.simplex_linear(torch.randn(4, 2, 5), W, None, torch.ones(3, 3)), ValueError, "S=3"),
    (lambda: ops.simplex_linear(X.double(), W, None, torch.ones(3)), TypeError, "x must have the dtype"),
    (
        lambda: ops.simplex_linear(X, W, None, torch.tensor([0.5, float("nan"), 0.5])),
        ValueError,
        "coeffs must be finite",
    ),
    (lambda: ops.simplex_linear(X, W, None, torch.ones(3, dtype=torch.int64)), TypeError, "coeffs must be a floating"),
    (lambda: ops.simplex_linear(torch.randn(2, 5), W, None, torch.ones(3), trainable=[3]), ValueError, "out of range"),
    (lambda: ops.simplex_linear(torch.randn(2, 5), W, None, torch.ones(3), trainable=[True]), ValueError, "3 entries"),
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


@pytest.mark.parametrize("call, exc, match", BAD)
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


@cuda
def test_device_mismatch():
    with pytest.raises(ValueError, match="coeffs is on cpu but weight is on cuda"):
        ops.simplex_linear(torch.randn(2, 5, device="cuda"), W.cuda(), None, torch.ones(3))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shared", [True, False])
def test_triton_materialised_path(device, shared, rng, monkeypatch):
    """Above FUSED_MAX_ROWS rows per point the triton backend materialises the weights."""
    skip_unless_runnable(device, "triton")
    from simplexkern.ops import linear_triton

    monkeypatch.setattr(linear_triton, "FUSED_MAX_ROWS", 2)
    x, weight, bias, coeffs = problem(rng, 3, 4, batch=5, n_in=17, n_out=9, shared=shared, device=device)
    dy = torch.randn(4, 5, 9, generator=rng, dtype=torch.float64).float().to(device)
    got = run("triton", x, weight, bias, coeffs, [1], dy)
    ref = expected(x, weight, bias, coeffs, [1], dy)
    for name, g, r in zip(["y", "dx", "dweight", "dbias", "dcoeffs"], got, ref):
        assert rel_err(g, r) < RTOL[torch.float32], (name, rel_err(g, r))


@pytest.mark.parametrize("backend", ["reference", "torch"])
def test_frozen_weight_trainable_bias_and_strided_weight(backend, rng):
    x, weight, bias, coeffs = problem(rng, 3, 2, batch=4, n_in=6, n_out=5, shared=True)
    b = bias.clone().requires_grad_(True)  # weight frozen: the bias still gets its gradient
    ops.simplex_linear(x, weight, b, coeffs, backend=backend).sum().backward()
    torch.testing.assert_close(b.grad, (coeffs.sum(0, keepdim=True).T * 4).expand(3, 5).contiguous())
    base = weight.transpose(1, 2).contiguous().requires_grad_(True)  # a non-contiguous weight view
    y = ops.simplex_linear(x, base.transpose(1, 2), bias, coeffs, backend=backend)
    y.sum().backward()
    ref = expected(x, weight, bias, coeffs, [0, 1, 2], torch.ones_like(y))
    assert rel_err(y, ref[0]) < RTOL[torch.float32]
    assert rel_err(base.grad.transpose(1, 2), ref[2]) < RTOL[torch.float32]


def test_a_shared_input_with_fewer_vertices_than_points_combines_the_vertex_products(rng):
    from simplexkern.ops import linear_torch

    x, weight, bias, coeffs = problem(rng, 2, 7, batch=5, n_in=19, n_out=23, shared=True)
    assert linear_torch.combines_products(x, weight, coeffs)  # the (2, 7, shared) case above runs this form
    assert not linear_torch.combines_products(x, weight, coeffs[:2]) and not linear_torch.combines_products(
        x.expand(7, *x.shape), weight, coeffs
    )


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("shared, k, S", [(True, 3, 2), (False, 3, 2), (True, 2, 4)])
def test_custom_ops_pass_opcheck(device, backend, shared, k, S, rng):
    """torch.library.opcheck: schema, fake kernels, autograd registration, as torch.compile uses them."""
    skip_unless_runnable(device, backend)
    x, weight, bias, coeffs = problem(rng, k, S, batch=4, n_in=7, n_out=5, shared=shared, device=device)
    trainable = [0, k - 1]
    args = (
        x.requires_grad_(True),
        weight.requires_grad_(True),
        bias.requires_grad_(True),
        coeffs.requires_grad_(True),
        trainable,
        backend,
    )
    torch.library.opcheck(torch.ops.simplexkern.simplex_linear.default, args)
    dy = torch.randn_like(torch.ops.simplexkern.simplex_linear(*args))
    detached = [t.detach() for t in args[:4]]
    torch.library.opcheck(
        torch.ops.simplexkern.simplex_linear_backward.default,
        (dy, *detached, trainable, backend, [True, True, True, True]),
    )


def test_float64_runs_on_the_torch_backend():
    """The Triton kernels accumulate in float32: "auto" sends float64 to the torch backend on a
    GPU too, and asking for triton with float64 is refused by name."""
    cuda_device = torch.device("cuda")
    assert dispatch.resolve(cuda_device, "auto", dtype=torch.float64) == "torch"
    if dispatch.AVAILABLE:
        assert dispatch.resolve(cuda_device, "auto", dtype=torch.float32) == "triton"
        with pytest.raises(ValueError, match="backend 'triton' runs float32, float16 and bfloat16"):
            ops.simplex_linear(
                torch.randn(2, 5, dtype=torch.float64),
                W.double(),
                None,
                torch.ones(3, dtype=torch.float64),
                backend="triton",
            )
