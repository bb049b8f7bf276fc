"""simplexkern.geometry against independent references: closed forms, mpmath, float64 numpy."""

import math

import mpmath
import numpy as np
import pytest
import scipy.stats
import torch

from simplexkern import _C
from simplexkern import geometry as g

from conftest import cuda

mpmath.mp.dps = 50


def mp_log_volume(x):
    """log V from vertex coordinates (n x D) in 50-digit arithmetic: 1/2 log det(E E^T) - log k!."""
    x = [[mpmath.mpf(float(c)) for c in row] for row in x.tolist()]
    k = len(x) - 1
    if k == 0:
        return 0.0
    e = mpmath.matrix([[a - b for a, b in zip(row, x[0])] for row in x[1:]])
    return float(mpmath.log(mpmath.det(e * e.T)) / 2 - mpmath.log(mpmath.factorial(k)))


def mp_cayley_menger(d):
    n = d.shape[0]
    b = mpmath.matrix(n + 1, n + 1)
    for i in range(n + 1):
        for j in range(n + 1):
            b[i, j] = 0 if i == j == 0 else 1 if i == 0 or j == 0 else mpmath.mpf(float(d[i - 1, j - 1]))
    return float(mpmath.det(b))


def random_vertices(shape, n, dim, gen, dtype=torch.float64):
    return torch.randn(*shape, n, dim, generator=gen, dtype=dtype)


# ----------------------------------------------------------------------------- log_volume


@pytest.mark.parametrize("k", range(1, 20))
def test_unit_right_simplex(k):
    x = torch.cat([torch.zeros(1, k, dtype=torch.float64), torch.eye(k, dtype=torch.float64)])
    assert g.simplex_log_volume(x).item() == pytest.approx(-math.lgamma(k + 1), rel=1e-13, abs=1e-13)


@pytest.mark.parametrize("k", [1, 2, 5, 10, 19])
def test_regular_simplex(k, rng):
    a = 0.1 + torch.rand((), generator=rng, dtype=torch.float64).item() * 5
    d = a * a * (torch.ones(k + 1, k + 1, dtype=torch.float64) - torch.eye(k + 1, dtype=torch.float64))
    expect = k * math.log(a) - math.lgamma(k + 1) + 0.5 * (math.log(k + 1) - k * math.log(2))
    assert g.log_volume(d).item() == pytest.approx(expect, abs=1e-12)


@pytest.mark.parametrize("n", [1, 2, 3, 6, 11, 20])
def test_random_batches_match_mpmath(n, rng):
    x = random_vertices((4,), n, n + 5, rng)
    d = g.pairwise_sqdist(x)
    got = g.log_volume(d)
    ref = torch.tensor([mp_log_volume(xi) for xi in x], dtype=torch.float64)
    # |log V - ref| <= 1e-10 is a relative error <= 1e-10 on V
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-10)
    det = g.cayley_menger_determinant(d)
    ref_det = torch.tensor([mp_cayley_menger(di) for di in d], dtype=torch.float64)
    torch.testing.assert_close(det, ref_det, rtol=1e-10, atol=0)


@pytest.mark.parametrize("n", [2, 4, 9])
def test_cayley_menger_relation_to_volume(n, rng):
    k = n - 1
    d = g.pairwise_sqdist(random_vertices((3,), n, n + 2, rng))
    v2 = torch.exp(2 * g.log_volume(d))
    expect = (-1) ** (k + 1) * 2**k * math.factorial(k) ** 2 * v2
    torch.testing.assert_close(g.cayley_menger_determinant(d), expect, rtol=1e-10, atol=0)


@pytest.mark.parametrize("shape", [(), (7,), (3, 5)])
def test_batch_shapes(shape, rng):
    x = random_vertices(shape, 5, 8, rng)
    d = g.pairwise_sqdist(x)
    assert d.shape == (*shape, 5, 5)
    got = g.log_volume(d)
    assert got.shape == shape
    flat = x.reshape(-1, 5, 8)
    ref = torch.tensor([mp_log_volume(xi) for xi in flat], dtype=torch.float64).reshape(shape)
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-10)
    assert g.cayley_menger_determinant(d).shape == shape


def test_registered_ops_validate_unless_told_not_to():
    d = torch.tensor([[0.0, 1.0, 9.0], [1.0, 0.0, 1.0], [9.0, 1.0, 0.0]], dtype=torch.float64)
    with pytest.raises(ValueError, match="not a Euclidean distance matrix"):
        torch.ops.simplexkern.log_volume(d)  # the default tolerance: 64 times the dtype's epsilon
    assert math.isnan(torch.ops.simplexkern.log_volume(d, float("nan")).item())  # NaN: no validation
    nan = torch.full((3, 3), float("nan"), dtype=torch.float64)
    for op in (torch.ops.simplexkern.log_volume, torch.ops.simplexkern.cayley_menger_determinant):
        with pytest.raises(ValueError, match="finite"):
            op(nan)


@pytest.mark.parametrize("n", [4, 16, 33])
def test_half_precision_corner_simplex_is_not_degenerate(n):
    x = torch.cat([torch.zeros(1, n - 1), torch.eye(n - 1)]).double()
    d = g.pairwise_sqdist(x)
    for dtype in (torch.bfloat16, torch.float16, torch.float32):
        assert g.log_volume(d.to(dtype)).item() == pytest.approx(-math.lgamma(n), rel=1e-2)


def test_point_has_log_volume_zero():
    assert g.log_volume(torch.zeros(3, 1, 1, dtype=torch.float64)).tolist() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("dtype, atol", [(torch.float32, 2e-4), (torch.bfloat16, 0.1), (torch.float16, 0.05)])
def test_low_precision_inputs(dtype, atol, rng):
    # Well-shaped simplexes (a unit right simplex, perturbed): thin ones are degenerate to the
    # precision of half-precision distances and give -inf there.
    x = torch.cat([torch.zeros(1, 3), torch.eye(3)]).double() + 0.1 * random_vertices((6,), 4, 3, rng)
    d = g.pairwise_sqdist(x)
    got = g.log_volume(d.to(dtype))
    assert got.dtype == dtype
    torch.testing.assert_close(got.double(), g.log_volume(d), rtol=0, atol=atol)


def test_gradient_matches_closed_form(rng):
    # log V = 1/2 logdet(E E^T) - log k!, E_i = x_i - x_0  =>  dlogV/dE = (E E^T)^{-1} E.
    x = random_vertices((), 6, 9, rng).requires_grad_(True)
    g.simplex_log_volume(x).backward()
    e = (x - x[0]).detach()[1:]
    de = torch.linalg.solve(e @ e.T, e)
    ref = torch.cat([-de.sum(0, keepdim=True), de])
    torch.testing.assert_close(x.grad, ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("n", [2, 3, 5])
def test_gradcheck(n, rng):
    x = random_vertices((2,), n, n + 1, rng).requires_grad_(True)
    assert torch.autograd.gradcheck(g.simplex_log_volume, (x,))
    d = g.pairwise_sqdist(x.detach()).requires_grad_(True)
    unchecked = float("nan")  # gradcheck moves single entries: the matrix stops being symmetric
    assert torch.autograd.gradcheck(lambda t: torch.ops.simplexkern.log_volume(t, unchecked), (d,))
    assert torch.autograd.gradcheck(lambda t: torch.ops.simplexkern.cayley_menger_determinant(t, unchecked), (d,))


def test_cayley_menger_gradient_on_singular_matrix():
    # Collinear triangle: det B = 0 but its gradient (the adjugate) is not.
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0]], dtype=torch.float64)
    d = g.pairwise_sqdist(x).requires_grad_(True)
    g.cayley_menger_determinant(d).backward()
    h = 1e-6
    fd = torch.zeros(3, 3, dtype=torch.float64)
    for i in range(3):
        for j in range(3):
            e = torch.zeros(3, 3, dtype=torch.float64)
            e[i, j] = h
            fd[i, j] = (
                torch.ops.simplexkern.cayley_menger_determinant(d.detach() + e, float("nan"))
                - torch.ops.simplexkern.cayley_menger_determinant(d.detach() - e, float("nan"))
            ) / (2 * h)
    assert fd.abs().max() > 1
    torch.testing.assert_close(d.grad, fd, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("case", ["collinear", "coincident", "repeated_vertex", "flat_tetrahedron"])
def test_degenerate_gives_minus_inf_and_zero_gradient(case, rng):
    base = random_vertices((), 3, 5, rng)
    x = {
        "collinear": torch.stack([base[0], base[0] + base[1], base[0] + 2.5 * base[1]]),
        "coincident": base[:1].expand(4, 5).clone(),
        "repeated_vertex": torch.stack([base[0], base[1], base[2], base[1]]),
        "flat_tetrahedron": torch.stack([base[0], base[1], base[2], 0.3 * base[0] + 0.7 * base[1]]),
    }[case].requires_grad_(True)
    lv = g.simplex_log_volume(x)
    assert lv.item() == -math.inf
    lv.backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


@pytest.mark.parametrize("eps", [1e-2, 1e-3, 1e-4])
def test_nearly_degenerate_triangle(eps):
    # Points (0, 0), (1, 0), (1/2, eps): area eps / 2. The distances carry float64 rounding of
    # size 1e-16 on d ~ 1/4, i.e. a relative error ~1e-16 / eps^2 on det G = eps^2.
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.5, eps]], dtype=torch.float64)
    got = g.simplex_log_volume(x).item()
    assert got == pytest.approx(math.log(eps / 2), abs=4e-16 / eps**2)


# ----------------------------------------------------------------------------- distances


def test_pairwise_sqdist_matches_float64_reference(rng):
    x = random_vertices((2, 3), 5, 40, rng, dtype=torch.float32)
    xn = x.double().numpy()
    ref = ((xn[..., :, None, :] - xn[..., None, :, :]) ** 2).sum(-1)
    got = g.pairwise_sqdist(x)
    assert got.dtype == torch.float64 and got.shape == (2, 3, 5, 5)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-13, atol=0)


def test_pairwise_sqdist_close_vertices_far_from_origin(rng):
    # float32 vertices with norms ~1e4 and spread ~1e-3: |a|^2 + |b|^2 - 2<a, b> loses every
    # digit, exact differences keep them all.
    centre = 1e4 * torch.randn(1, 3000, generator=rng)
    x = centre + 1e-3 * torch.randn(4, 3000, generator=rng)
    xs = [[mpmath.mpf(float(c)) for c in row] for row in x.tolist()]
    ref = np.array([[float(mpmath.fsum((a - b) ** 2 for a, b in zip(r, s))) for s in xs] for r in xs])
    np.testing.assert_allclose(g.pairwise_sqdist(x).numpy(), ref, rtol=1e-12, atol=0)
    sq = (x * x).sum(-1)
    naive = (sq[:, None] + sq[None, :] - 2 * x @ x.T).double().numpy()
    assert np.abs(naive - ref).max() > 1e-2 * ref.max()  # what the naive form would give


@cuda
def test_pairwise_sqdist_cuda_matches_cpu(rng):
    centre = 1e3 * torch.randn(1, 100_003, generator=rng)
    x = torch.stack([centre + 1e-2 * torch.randn(6, 100_003, generator=rng), torch.randn(6, 100_003, generator=rng)])
    got = g.pairwise_sqdist(x.cuda()).cpu()
    ref = ((x.double()[:, :, None] - x.double()[:, None]) ** 2).sum(-1)
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=0)


def test_pairwise_sqdist_gradient(rng):
    x = random_vertices((2,), 4, 7, rng).requires_grad_(True)
    assert torch.autograd.gradcheck(g.pairwise_sqdist, (x,))
    w = torch.randn(2, 4, 4, generator=rng, dtype=torch.float64)
    (g.pairwise_sqdist(x) * w).sum().backward()
    xd = x.detach()
    ref = 2 * ((w + w.mT).unsqueeze(-1) * (xd.unsqueeze(-2) - xd.unsqueeze(-3))).sum(-2)
    torch.testing.assert_close(x.grad, ref, rtol=1e-12, atol=1e-12)
    y = x.detach().float().requires_grad_(True)
    (g.pairwise_sqdist(y) * w).sum().backward()
    assert y.grad.dtype == torch.float32


def test_pairwise_sqdist_is_one_registered_op_with_autograd(rng):
    """The op itself (not a Python wrapper) has CPU, CUDA, Meta and autograd kernels:
    differentiating it directly gives the gradient of the difference formula."""
    op = torch.ops.simplexkern._pairwise_sqdist
    for key in ("CPU", "CUDA", "Meta", "Autograd"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(op.default.name(), key), key
    x = random_vertices((3,), 5, 9, rng).requires_grad_(True)
    w = torch.randn(3, 5, 5, generator=rng, dtype=torch.float64)
    (op(x) * w).sum().backward()
    xd = x.detach()
    ref = 2 * ((w + w.mT).unsqueeze(-1) * (xd.unsqueeze(-2) - xd.unsqueeze(-3))).sum(-2)
    torch.testing.assert_close(x.grad, ref, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(op, (x.detach().requires_grad_(True),))
    for args in [(x.detach().requires_grad_(True),), (x.detach().float(),)]:
        torch.library.opcheck(op.default, args)
    torch.library.opcheck(torch.ops.simplexkern._pairwise_sqdist_backward.default, (w, x.detach().float()))


def test_pairwise_sqdist_backward_over_blocks_of_coordinates(rng):
    # 16 x 256 vertices: the backward takes 1024 coordinates at a time, so 2500 are 3 blocks
    x = torch.randn(16, 256, 2500, generator=rng)
    w = torch.randn(16, 256, 256, generator=rng, dtype=torch.float64)
    got = torch.ops.simplexkern._pairwise_sqdist_backward(w, x)
    lap = torch.diag_embed((w + w.mT).sum(-1)) - (w + w.mT)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, (2 * lap @ x.double()).float(), rtol=1e-6, atol=1e-4)


# ----------------------------------------------------------------------------- sampling


def test_sample_simplex_on_simplex_and_uniform():
    gen = torch.Generator().manual_seed(1234)  # fixed: a statistical test must not flake
    a = g.sample_simplex(20000, 4, generator=gen)
    assert a.shape == (20000, 4) and a.dtype == torch.float32
    assert bool((a >= 0).all())
    torch.testing.assert_close(a.sum(-1), torch.ones(20000), rtol=0, atol=1e-6)
    # Dirichlet(1,1,1,1): each coordinate is Beta(1, 3).
    for i in range(4):
        assert scipy.stats.kstest(a[:, i].numpy(), scipy.stats.beta(1, 3).cdf).pvalue > 1e-3


def test_sample_simplex_generator_reproducible(rng):
    seed = rng.initial_seed()
    a = g.sample_simplex(5, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    b = g.sample_simplex(5, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    assert torch.equal(a, b) and a.dtype == torch.float64
    assert torch.equal(g.sample_simplex(3, 1), torch.ones(3, 1))


@pytest.mark.parametrize("n_points", [1, 2, 3, 6])
def test_bezier_coefficients(n_points, rng):
    t = torch.rand(4, 3, generator=rng, dtype=torch.float64)
    got = g.bezier_coefficients(t, n_points)
    n = n_points - 1
    ref = torch.tensor(
        [[[math.comb(n, i) * s**i * (1 - s) ** (n - i) for i in range(n_points)] for s in row] for row in t.tolist()],
        dtype=torch.float64,
    )
    torch.testing.assert_close(got, ref, rtol=1e-14, atol=1e-15)
    torch.testing.assert_close(got.sum(-1), torch.ones(4, 3, dtype=torch.float64))
    ends = g.bezier_coefficients(torch.tensor([0.0, 1.0]), n_points)
    assert ends[0, 0] == 1 and ends[1, -1] == 1 and ends.sum() == 2


@pytest.mark.parametrize("n_points", [1, 2, 3, 5])
def test_polychain_coefficients(n_points, rng):
    t = torch.rand(50, generator=rng, dtype=torch.float64)
    got = g.polychain_coefficients(t, n_points)
    knots = np.linspace(0, 1, n_points)
    ref = np.stack([np.interp(t.numpy(), knots, np.eye(n_points)[i]) for i in range(n_points)], -1)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-12, atol=1e-12)
    assert g.polychain_coefficients(0.25, 3).tolist() == [0.5, 0.5, 0.0]


# ----------------------------------------------------------------------------- bad input

BAD = [
    (lambda: g.log_volume(torch.zeros(3, 4)), ValueError, "sqdist must have shape"),
    (lambda: g.log_volume(torch.zeros(3)), ValueError, "sqdist must have shape"),
    (lambda: g.log_volume(torch.zeros(2, 0, 0)), ValueError, "n >= 1"),
    (lambda: g.log_volume(torch.zeros(3, 3, dtype=torch.int64)), TypeError, "floating-point"),
    (lambda: g.log_volume([[0.0]]), TypeError, "torch.Tensor"),
    (lambda: g.log_volume(torch.tensor([[0.0, 1.0], [2.0, 0.0]])), ValueError, "symmetric"),
    (lambda: g.log_volume(torch.tensor([[0.0, -1.0], [-1.0, 0.0]])), ValueError, ">= 0"),
    (lambda: g.log_volume(torch.tensor([[1.0, 1.0], [1.0, 0.0]])), ValueError, "zero diagonal"),
    (lambda: g.log_volume(torch.tensor([[0.0, math.nan], [math.nan, 0.0]])), ValueError, "NaN or inf"),
    # breaks the triangle inequality (3 > 1 + 1): no such triangle
    (
        lambda: g.log_volume(torch.tensor([[0.0, 1.0, 9.0], [1.0, 0.0, 1.0], [9.0, 1.0, 0.0]])),
        ValueError,
        "not a Euclidean",
    ),
    (lambda: g.cayley_menger_determinant(torch.tensor([[0.0, math.inf], [math.inf, 0.0]])), ValueError, "NaN or inf"),
    (lambda: g.cayley_menger_determinant(torch.zeros(2, 3)), ValueError, "sqdist must have shape"),
    (lambda: g.pairwise_sqdist(torch.zeros(5)), ValueError, "vertices must have shape"),
    (lambda: g.pairwise_sqdist(torch.zeros(3, 2, dtype=torch.int32)), TypeError, "vertices must be a floating"),
    (lambda: g.pairwise_sqdist(torch.tensor([[math.nan, 0.0]])), ValueError, "vertices must be finite"),
    (lambda: g.sample_simplex(4, 0), ValueError, "n_vertices must be >= 1"),
    (lambda: g.sample_simplex(0, 3), ValueError, "n_samples must be >= 1"),
    (lambda: g.sample_simplex(4, 2.0), TypeError, "n_vertices must be an int"),
    (lambda: g.sample_simplex(4, True), TypeError, "n_vertices must be an int"),
    (lambda: g.sample_simplex(4, 3, dtype=torch.int64), TypeError, "dtype"),
    (lambda: g.sample_simplex(4, 3, generator=0), TypeError, "generator"),
    (lambda: g.bezier_coefficients(1.5, 3), ValueError, r"t must lie in \[0, 1\]"),
    (lambda: g.bezier_coefficients(torch.tensor([-0.1, 0.5]), 3), ValueError, r"t must lie in \[0, 1\]"),
    (lambda: g.polychain_coefficients(torch.tensor([math.nan]), 3), ValueError, "t must be finite"),
    (lambda: g.polychain_coefficients(torch.tensor([1]), 3), TypeError, "t must be a floating"),
    (lambda: g.polychain_coefficients(0.5, 0), ValueError, "n_points must be >= 1"),
    (lambda: g.bezier_coefficients(True, 3), TypeError, "got bool"),
]


@pytest.mark.parametrize("call, exc, match", BAD)
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_ops_trace_under_torch_compile(rng):
    d = g.pairwise_sqdist(random_vertices((3,), 4, 6, rng))
    ops = torch.ops.simplexkern
    fn = torch.compile(
        lambda s: ops.log_volume(s) + ops.cayley_menger_determinant(s), backend="aot_eager", fullgraph=True
    )
    torch.testing.assert_close(fn(d), g.log_volume(d) + g.cayley_menger_determinant(d))


# ----------------------------------------------------------------------------- CUDA


@cuda
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("n", [1, 2, 5, 11, 20])
def test_cuda_matches_cpu(n, dtype, rng):
    assert _C.cuda_enabled(), "the extension was built without CUDA kernels"
    x = random_vertices((3, 50), n, n + 4, rng)
    x[0, 0, -1] = x[0, 0, 0]  # one degenerate simplex in the batch
    d = g.pairwise_sqdist(x).to(dtype)
    dc = d.cuda().requires_grad_(True)
    d = d.requires_grad_(True)
    rtol = 1e-12 if dtype == torch.float64 else 1e-6
    torch.testing.assert_close(g.log_volume(dc).cpu(), g.log_volume(d), rtol=rtol, atol=rtol)
    torch.testing.assert_close(
        g.cayley_menger_determinant(dc).cpu(),
        g.cayley_menger_determinant(d),
        rtol=1e-9 if dtype == torch.float64 else 1e-4,
        atol=0,
    )
    w = torch.randn(3, 50, generator=rng, dtype=torch.float64).to(dtype)
    finite = torch.isfinite(g.log_volume(d.detach()))
    (g.log_volume(d)[finite] * w[finite]).sum().backward()
    (g.log_volume(dc)[finite.cuda()] * w.cuda()[finite.cuda()]).sum().backward()
    torch.testing.assert_close(dc.grad.cpu(), d.grad, rtol=rtol * 100, atol=rtol * 100)
