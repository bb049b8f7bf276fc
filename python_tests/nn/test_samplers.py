"""Samplers against the distributions they promise: Dirichlet(1) on the simplex, volume- or
uniformly weighted simplices of a complex, Bezier / polychain curves at t ~ U(0, 1), fixed
points; checked with many samples, tolerances a few standard errors wide."""

import dataclasses
import json
import math

import pytest
import torch
from torch import nn

import simplexkern as sk
from simplexkern.nn import samplers

from conftest import cuda

N = 200_000  # samples for the distribution checks
Z = 5.0  # tolerance in standard errors

# 2-D vertices: triangle (0,1,2) has area 1, (1,2,3) area 3, (0,1,4) is degenerate (collinear);
# edge (0,1) has length 1, (0,2) length 2, (2,3) length 3.
VERTS = [(0.0, 0.0), (1.0, 0.0), (0.0, 2.0), (3.0, 2.0), (2.0, 0.0)]


def plane_model(points=VERTS, dtype=torch.float64):
    """A SimplexModel whose vertex i is the 2-D point points[i] (a bias-free Linear(2, 1))."""
    sm = sk.simplexify(nn.Linear(2, 1, bias=False).to(dtype), 1)
    for _ in points[1:]:
        sm.add_vertex()
    for i, (x, y) in enumerate(points):
        sm.set_vertex(i, {"weight": torch.tensor([[x, y]], dtype=dtype)})
    return sm


@dataclasses.dataclass
class Vertices:
    """What a sampler reads of a model (``samplers.SampledModel``), without any weights."""

    n_vertices: int
    dtype: torch.dtype
    device: torch.device = torch.device("cpu")

    def log_volume(self, simplices=None, *, check=True):
        raise AssertionError("only a volume-weighted complex reads log volumes")


def model_with(k, dtype=torch.float64):
    return Vertices(k, dtype)


def measure(simplex, points=VERTS):
    """Length of an edge or area of a triangle (shoelace), in float64 Python arithmetic."""
    p = [points[i] for i in simplex]
    if len(p) == 1:
        return 1.0
    if len(p) == 2:
        return math.hypot(p[1][0] - p[0][0], p[1][1] - p[0][1])
    (x1, y1), (x2, y2), (x3, y3) = p
    return abs(x1 * (y2 - y3) + x2 * (y3 - y1) + x3 * (y1 - y2)) / 2


def assert_mean(values, expected, what):
    """Each column's sample mean of ``values`` ((n,) or (n, m)) lies within Z standard errors
    of ``expected`` (a number or one per column)."""
    v = values.double().reshape(len(values), -1)
    expected = torch.as_tensor(expected, dtype=torch.float64).expand(v.shape[1])
    se = v.std(0) / math.sqrt(len(v))
    got = v.mean(0)
    assert ((got - expected).abs() <= Z * se + 1e-12).all(), f"{what}: {got} vs {expected} (se {se})"


def assert_frequency(hits, p, what):
    """Each column's frequency of ``hits`` ((n,) or (n, m)) lies within Z standard errors of ``p``."""
    h = hits.double().reshape(len(hits), -1)
    p = torch.as_tensor(p, dtype=torch.float64).expand(h.shape[1])
    se = (p * (1 - p)).clamp_min(1 / len(h)).div(len(h)).sqrt()
    got = h.mean(0)
    assert ((got - p).abs() <= Z * se).all(), f"{what}: frequency {got} vs {p} (se {se})"


def assert_simplex_points(c):
    assert (c >= 0).all()
    tol = 1e-12 if c.dtype == torch.float64 else 1e-5
    assert (c.sum(-1) - 1).abs().max().item() <= tol


# --------------------------------------------------------------------------- SimplexSampler


@pytest.mark.parametrize("k", [2, 4, 7])
def test_simplex_sampler_is_dirichlet_one(k, rng):
    c = samplers.SimplexSampler().sample(N, model_with(k), rng)
    assert c.shape == (N, k) and c.dtype == torch.float64
    assert_simplex_points(c)
    var = (k - 1) / (k * k * (k + 1))
    assert_mean(c, 1 / k, "means")
    assert_mean((c - 1 / k) ** 2, var, "variances")
    for s in (0.1, 0.5, 0.9):  # Beta(1, k-1) marginal: P(a_i > s) = (1 - s)^(k-1)
        assert_frequency(c > s, (1 - s) ** (k - 1), f"P(a_i > {s})")
    # Cov(a_0, a_1) = -1 / (k^2 (k + 1))
    assert_mean((c[:, 0] - 1 / k) * (c[:, 1] - 1 / k), -1 / (k * k * (k + 1)), "covariance")


def test_simplex_sampler_n_samples_dtype_and_seed(rng):
    seed = rng.initial_seed()
    sm = model_with(3, torch.float32)
    s = samplers.SimplexSampler()
    one = s.sample(None, sm, torch.Generator().manual_seed(seed))
    assert one.shape == (1, 3) and one.dtype == torch.float32
    a = s.sample(5, sm, torch.Generator().manual_seed(seed))
    b = s.sample(5, sm, torch.Generator().manual_seed(seed))
    assert torch.equal(a, b)
    assert torch.equal(one, s.sample(None, sm, torch.Generator().manual_seed(seed)))
    assert not torch.equal(s.sample(5, sm, rng), s.sample(5, sm, rng))  # the generator advances
    with pytest.raises(ValueError):
        s.sample(0, sm, rng)
    with pytest.raises(TypeError):
        s.sample(2.0, sm, rng)


# --------------------------------------------------------------------------- ComplexSampler


@pytest.mark.parametrize(
    "simplices",
    [
        [(0, 1, 2), (1, 2, 3)],  # areas 1 and 3
        [(3, 2, 1), (0, 1, 2)],  # vertex order inside a simplex does not matter
        [(0, 1), (0, 2), (2, 3)],  # lengths 1, 2, 3
        [(0, 1, 2), (0, 1, 4)],  # a degenerate simplex is never picked
        [(0, 1, 4), (4, 1, 0)],  # all degenerate: uniform
        [(2, 3)],
    ],
)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_complex_probabilities_are_relative_volumes(simplices, dtype):
    sm = plane_model(dtype=dtype)
    measures = [measure(s) for s in simplices]
    total = sum(measures)
    expected = [m / total for m in measures] if total > 0 else [1 / len(simplices)] * len(simplices)
    p = samplers.ComplexSampler(simplices).probabilities(sm)
    assert p.dtype == torch.float64
    torch.testing.assert_close(p, torch.tensor(expected, dtype=torch.float64), rtol=1e-12, atol=1e-15)
    uniform = samplers.ComplexSampler(simplices, weighting="uniform").probabilities(sm)
    torch.testing.assert_close(
        uniform, torch.full((len(simplices),), 1 / len(simplices), dtype=torch.float64), rtol=0, atol=0
    )


def test_complex_probabilities_use_vertex_order_with_fixed_vertices():
    sm = plane_model()
    sm.fix(3)  # the store now keeps vertex 3 in its first row
    sm.fix(1)
    p = samplers.ComplexSampler([(0, 1, 2), (1, 2, 3)]).probabilities(sm)
    torch.testing.assert_close(p, torch.tensor([0.25, 0.75], dtype=torch.float64), rtol=1e-12, atol=0)


def _picks(c, simplices):
    """Index of the simplex whose vertex set is exactly each row's support."""
    bits = 2 ** torch.arange(c.shape[1])
    support = ((c != 0).long() * bits).sum(1)  # the support as a bit set
    codes = torch.tensor([int(bits[list(s)].sum()) for s in simplices])
    match = support[:, None] == codes
    assert (match.sum(1) == 1).all(), "a sample has coefficients outside every simplex of the complex"
    return match.int().argmax(1)


@pytest.mark.parametrize(
    "simplices, weighting",
    [
        ([(0, 1, 2), (1, 2, 3)], "volume"),
        ([(0, 1), (0, 2), (2, 3)], "volume"),
        ([(0, 1, 2), (1, 2, 3)], "uniform"),
        ([(0, 1, 2), (3, 4)], "uniform"),
    ],
)
def test_complex_sampler_picks_by_weight_then_uniform_inside(simplices, weighting, rng):
    sm = plane_model()
    c = samplers.ComplexSampler(simplices, weighting).sample(N, sm, rng)
    assert c.shape == (N, len(VERTS)) and c.dtype == torch.float64
    assert_simplex_points(c)
    pick = _picks(c, simplices)
    measures = [measure(s) for s in simplices]
    p = [m / sum(measures) if weighting == "volume" else 1 / len(simplices) for m in measures]
    assert_frequency(pick[:, None] == torch.arange(len(simplices)), p, "picks")
    for j, s in enumerate(simplices):
        inner = c[pick == j][:, list(s)]  # Dirichlet(1) over the simplex's own vertices
        assert_mean(inner, 1 / len(s), f"simplex {s}, means")
        assert_frequency(inner > 0.5, 0.5 ** (len(s) - 1), f"simplex {s}, P(a_i > 0.5)")


def test_complex_sampler_is_uniform_over_the_complex_in_weight_space(rng):
    """Triangles of areas 1 and 3: the weights' mean is the area-weighted mean of centroids."""
    sm = plane_model()
    c = samplers.ComplexSampler([(0, 1, 2), (1, 2, 3)]).sample(N, sm, rng)
    w = c @ torch.tensor(VERTS, dtype=torch.float64)
    cen0 = [sum(VERTS[i][d] for i in (0, 1, 2)) / 3 for d in (0, 1)]
    cen1 = [sum(VERTS[i][d] for i in (1, 2, 3)) / 3 for d in (0, 1)]
    assert_mean(w, [0.25 * cen0[d] + 0.75 * cen1[d] for d in (0, 1)], "mean weight")
    # the same points through the model: x = e_d gives weight d
    y = sm(torch.eye(2, dtype=torch.float64), c[:1000])
    torch.testing.assert_close(y[..., 0], w[:1000], rtol=1e-12, atol=1e-12)


def test_complex_sampler_seed_and_n_samples(rng):
    seed = rng.initial_seed()
    sm = plane_model()
    s = samplers.ComplexSampler([(0, 1, 2), (1, 2, 3)])
    a = s.sample(64, sm, torch.Generator().manual_seed(seed))
    assert torch.equal(a, s.sample(64, sm, torch.Generator().manual_seed(seed)))
    assert s.sample(None, sm, rng).shape == (1, len(VERTS))
    assert s.sample(3, plane_model(dtype=torch.float32), rng).dtype == torch.float32


@pytest.mark.parametrize(
    "args, error",
    [
        (([(0, 1, 2), (3, 4)],), ValueError),  # mixed dimensions cannot be weighed by volume
        (([],), ValueError),
        (([()],), ValueError),
        (([(0, 1, 1)],), ValueError),
        (([(0, 1, 2)], "area"), ValueError),
        (([(0, -1)],), ValueError),
        ((5,), TypeError),
        (("012",), TypeError),
        ((["01"],), TypeError),
        (([(0, 1.0)],), TypeError),
        (([(0, True)],), TypeError),
    ],
)
def test_complex_sampler_rejects_bad_arguments(args, error):
    with pytest.raises(error):
        samplers.ComplexSampler(*args)


@pytest.mark.parametrize("simplices", [[(0, 1, 5)], [(0, 1, 2), (2, 3, 7)]])
@pytest.mark.parametrize("weighting", ["volume", "uniform"])
def test_complex_naming_a_missing_vertex_raises_on_sample(simplices, weighting, rng):
    s = samplers.ComplexSampler(simplices, weighting)  # the model is not known yet
    with pytest.raises(ValueError):
        s.sample(4, plane_model(), rng)


# --------------------------------------------------------------------------- CurveSampler


def bernstein(t, k):
    n = k - 1
    return torch.tensor(
        [[math.comb(n, i) * tt**i * (1 - tt) ** (n - i) for i in range(k)] for tt in t.tolist()], dtype=torch.float64
    )


def hats(t, k):
    n = k - 1
    return torch.tensor([[max(0.0, 1 - abs(tt * n - i)) for i in range(k)] for tt in t.tolist()], dtype=torch.float64)


@pytest.mark.parametrize("k", [1, 2, 3, 5, 8])
@pytest.mark.parametrize("kind, reference", [("bezier", bernstein), ("polychain", hats)])
def test_curve_coefficients_match_the_formulas(k, kind, reference, rng):
    sm = model_with(k)
    knots = [i / (k - 1) for i in range(k)] if k > 1 else [0.0, 1.0]
    t = torch.cat([torch.rand(200, generator=rng, dtype=torch.float64), torch.tensor(knots, dtype=torch.float64)])
    c = samplers.CurveSampler(kind).coefficients(t, sm)
    assert c.shape == (len(t), k) and c.dtype == torch.float64
    torch.testing.assert_close(c, reference(t, k), rtol=1e-12, atol=1e-14)
    # the ends of the curve are the first and last vertices
    ends = samplers.CurveSampler(kind).coefficients(torch.tensor([0.0, 1.0], dtype=torch.float64), sm)
    torch.testing.assert_close(ends, torch.eye(k, dtype=torch.float64)[[0, -1]], rtol=0, atol=1e-15)


def test_curve_coefficients_reject_t_outside_the_unit_interval():
    with pytest.raises(ValueError):
        samplers.CurveSampler("bezier").coefficients(torch.tensor([0.5, 1.5], dtype=torch.float64), model_with(3))


@pytest.mark.parametrize("k", [2, 4, 6])
@pytest.mark.parametrize("kind", ["bezier", "polychain"])
def test_curve_sampler_draws_t_uniformly(kind, k, rng):
    sm = model_with(k)
    c = samplers.CurveSampler(kind).sample(N, sm, rng)
    assert c.shape == (N, k) and c.dtype == torch.float64
    assert_simplex_points(c)
    if kind == "polychain":
        nonzero = c != 0
        assert (nonzero.sum(1) <= 2).all()
        first = nonzero.int().argmax(1)
        last = k - 1 - nonzero.flip(1).int().argmax(1)
        assert (last - first <= 1).all()  # the (at most two) nonzero entries are adjacent
    # both curves reproduce linear functions: sum_i (i / n) c_i(t) = t
    t = c @ torch.arange(k, dtype=torch.float64) / (k - 1)
    assert ((t >= 0) & (t <= 1)).all()
    torch.testing.assert_close(
        samplers.CurveSampler(kind).coefficients(t[:2000].clamp(0, 1), sm), c[:2000], rtol=1e-9, atol=1e-9
    )
    assert_mean(t, 0.5, "mean of t")
    assert_mean((t - 0.5) ** 2, 1 / 12, "variance of t")
    s = torch.tensor([0.1, 0.3, 0.75], dtype=torch.float64)
    assert_frequency(t[:, None] < s, s, "P(t < s)")


def test_curve_sampler_seed_dtype_and_kind(rng):
    seed = rng.initial_seed()
    sm = model_with(4, torch.float32)
    s = samplers.CurveSampler("polychain")
    a = s.sample(16, sm, torch.Generator().manual_seed(seed))
    assert a.dtype == torch.float32 and a.shape == (16, 4)
    assert torch.equal(a, s.sample(16, sm, torch.Generator().manual_seed(seed)))
    assert s.sample(None, sm, rng).shape == (1, 4)
    assert samplers.CurveSampler().kind == "bezier"
    with pytest.raises(ValueError):
        samplers.CurveSampler("spline")


# --------------------------------------------------------------------------- FixedSampler


def test_fixed_sampler_single_point():
    sm = model_with(3, torch.float32)
    point = [0.2, 0.3, 0.5]
    s = samplers.FixedSampler(point)
    expected = torch.tensor([point], dtype=torch.float32)
    for n, rows in ((None, 1), (1, 1), (4, 4)):
        c = s.sample(n, sm)
        assert c.dtype == torch.float32 and c.shape == (rows, 3)
        assert torch.equal(c, expected.expand(rows, 3))
    with pytest.raises(ValueError):
        s.sample(0, sm)


def test_fixed_sampler_several_points():
    sm = model_with(3)
    points = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.5, 0.5]], dtype=torch.float64)
    s = samplers.FixedSampler(points)
    assert torch.equal(s.sample(None, sm), points)
    assert torch.equal(s.sample(2, sm), points)
    for n in (1, 3):
        with pytest.raises(ValueError):
            s.sample(n, sm)


def test_fixed_sampler_checks_its_points():
    with pytest.raises(ValueError):  # 3 coefficients, 4 vertices
        samplers.FixedSampler([0.2, 0.3, 0.5]).sample(1, model_with(4))
    with pytest.raises(ValueError):
        samplers.FixedSampler([[0.5, 0.5]]).sample(None, model_with(3))
    with pytest.raises(TypeError):
        samplers.FixedSampler(torch.tensor([1, 0, 0]))
    for bad in ([0.5, float("nan")], [[[0.5, 0.5]]], []):
        with pytest.raises(ValueError):
            samplers.FixedSampler(bad)


# --------------------------------------------------------------------------- configs


SAMPLERS = {
    "simplex": lambda: samplers.SimplexSampler(),
    "complex-volume": lambda: samplers.ComplexSampler([(0, 1, 2), (1, 2, 3)]),
    "complex-uniform": lambda: samplers.ComplexSampler([(0, 1, 2), (3, 4)], weighting="uniform"),
    "bezier": lambda: samplers.CurveSampler("bezier"),
    "polychain": lambda: samplers.CurveSampler("polychain"),
    "fixed": lambda: samplers.FixedSampler([0.1, 0.2, 0.3, 0.4, 0.0]),
    "fixed-several": lambda: samplers.FixedSampler([[0.1, 0.2, 0.3, 0.4, 0.0], [0.0, 0.0, 0.0, 0.0, 1.0]]),
}


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_from_config_round_trips(name, rng):
    seed = rng.initial_seed()
    sm = plane_model()
    s = SAMPLERS[name]()
    config = json.loads(json.dumps(s.config()))  # checkpoints store it as plain data
    t = samplers.from_config(config)
    assert type(t) is type(s) and t.config() == s.config()
    n = 2 if name == "fixed-several" else 32
    a = s.sample(n, sm, torch.Generator().manual_seed(seed))
    b = t.sample(n, sm, torch.Generator().manual_seed(seed))
    assert torch.equal(a, b)


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_checkpoint_keeps_the_sampler(name, rng, tmp_path):
    seed = rng.initial_seed()
    sm = plane_model()
    sm.sampler = SAMPLERS[name]()
    sk.save_checkpoint(sm, tmp_path / "model.pt")
    loaded = sk.load_checkpoint(tmp_path / "model.pt", model=nn.Linear(2, 1, bias=False).double())
    assert type(loaded.sampler) is type(sm.sampler) and loaded.sampler.config() == sm.sampler.config()
    x = torch.randn(3, 2, generator=rng, dtype=torch.float64)
    n = 2 if name == "fixed-several" else 8
    a = sm(x, n_samples=n, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(loaded(x, n_samples=n, generator=torch.Generator().manual_seed(seed)), a)


@pytest.mark.parametrize("config", [{"name": "sphere"}, {"name": None}, {}, "simplex", None, [("name", "simplex")]])
def test_from_config_rejects_unknown_configs(config):
    with pytest.raises(ValueError):
        samplers.from_config(config)


# --------------------------------------------------------------------------- SimplexModel


def linear_model(k=3):
    torch.manual_seed(0)
    return sk.simplexify(nn.Linear(3, 2).double(), k, noise=0.5)


def reference_forward(sm, x, coeffs):
    """x (B, 3), coeffs (S, k) -> (S, B, 2) from the combined Linear weights in float64."""
    v = sm.store.vertices().detach()
    flat = coeffs @ v  # (S, P)
    w = sm.store.slot(flat, "weight")
    b = sm.store.slot(flat, "bias")
    return torch.einsum("bi,soi->sbo", x, w) + b[:, None]


@pytest.mark.parametrize("name", ["simplex", "complex", "bezier", "polychain", "fixed"])
def test_model_forward_draws_from_its_sampler(name, rng):
    seed = rng.initial_seed()
    sm = linear_model(4)
    sm.sampler = {
        "simplex": samplers.SimplexSampler(),
        "complex": samplers.ComplexSampler([(0, 1, 2), (1, 2, 3)]),
        "bezier": samplers.CurveSampler("bezier"),
        "polychain": samplers.CurveSampler("polychain"),
        "fixed": samplers.FixedSampler([0.1, 0.2, 0.3, 0.4]),
    }[name]
    x = torch.randn(5, 3, generator=rng, dtype=torch.float64)
    S = 6
    y = sm(x, n_samples=S, generator=torch.Generator().manual_seed(seed))
    assert y.shape == (S, 5, 2)
    coeffs = sm.sampler.sample(S, sm, torch.Generator().manual_seed(seed))
    assert torch.equal(y, sm(x, coeffs))
    torch.testing.assert_close(y, reference_forward(sm, x, coeffs), rtol=1e-12, atol=1e-12)
    assert sm(x).shape == (1, 5, 2)  # n_samples defaults to one point


def test_model_forward_with_fixed_sampler_equals_forward_at_its_points(rng):
    sm = linear_model(3)
    x = torch.randn(4, 3, generator=rng, dtype=torch.float64)
    point = torch.tensor([0.6, 0.1, 0.3], dtype=torch.float64)
    sm.sampler = samplers.FixedSampler(point)
    assert torch.equal(sm(x), sm(x, point)[None])
    y = sm(x, n_samples=3)
    assert y.shape == (3, 4, 2)
    assert torch.equal(y, sm(x, point.expand(3, 3)))
    torch.testing.assert_close(y[2], sm(x, point), rtol=1e-14, atol=1e-15)  # one point vs three: other kernels
    points = torch.tensor([[1.0, 0.0, 0.0], [0.25, 0.25, 0.5]], dtype=torch.float64)
    sm.sampler = samplers.FixedSampler(points)
    assert torch.equal(sm(x), sm(x, points))
    assert torch.equal(sm(x, n_samples=2), sm(x, points))
    with pytest.raises(ValueError):
        sm(x, n_samples=3)


def test_model_forward_with_fixed_vertices_samples_in_vertex_order(rng):
    """Fixing vertices reorders the store; the sampled coefficients still name vertices."""
    sm = linear_model(4)
    before = sm.store.vertices().detach().clone()
    sm.fix(2)
    sm.sampler = samplers.ComplexSampler([(0, 1, 2), (2, 3)], weighting="uniform")
    x = torch.randn(3, 3, generator=rng, dtype=torch.float64)
    coeffs = sm.sampler.sample(8, sm, rng)
    expected = (
        torch.einsum("bi,soi->sbo", x, sm.store.slot(coeffs @ before, "weight"))
        + sm.store.slot(coeffs @ before, "bias")[:, None]
    )
    torch.testing.assert_close(sm(x, coeffs), expected, rtol=1e-12, atol=1e-12)
    for j in range(4):
        sm.sampler = samplers.FixedSampler(torch.eye(4, dtype=torch.float64)[j])
        plain = nn.functional.linear(x, sm.store.slot(before[j], "weight"), sm.store.slot(before[j], "bias"))
        torch.testing.assert_close(sm(x, n_samples=1)[0], plain, rtol=1e-12, atol=1e-12)


@cuda
@pytest.mark.parametrize("name", ["simplex", "complex-uniform", "bezier", "fixed"])
def test_samplers_on_the_gpu_follow_the_generator(name, rng):
    """On a CUDA model with a CUDA generator, the same seed gives the same points, on the GPU."""
    seed = rng.initial_seed()
    sm = plane_model().cuda()
    s = SAMPLERS[name]()
    a = s.sample(256, sm, torch.Generator("cuda").manual_seed(seed))
    assert a.device.type == "cuda" and a.dtype == torch.float64 and a.shape == (256, len(VERTS))
    assert_simplex_points(a.cpu())
    torch.rand(7)  # other draws in between must not matter
    b = s.sample(256, sm, torch.Generator("cuda").manual_seed(seed))
    assert torch.equal(a, b)
