"""simplex_conv2d: every backend against an independent float64 im2col formula
(``F.unfold`` + einsum, no convolution routine) on fresh random data."""

import pytest
import torch
import torch.nn.functional as F

import simplexkern.ops as ops
from simplexkern.ops import conv_torch, dispatch

from . import fused_harness
from .fused_harness import DEVICES, RTOL, rel_err, skip_unless_runnable
from conftest import cuda

BACKENDS = ["reference", "torch", "triton"]
NAMES = ["y", "dx", "dweight", "dbias", "dcoeffs"]


@pytest.fixture(autouse=True)
def exact_float32():
    """float32 convolutions in full precision on a GPU (cuDNN and the kernels follow this switch)."""
    before = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32 = before


def problem(
    rng, k, S, shared, B=2, C=4, O=6, hw=(7, 6), kernel=(3, 3), groups=1, bias=True, dtype=torch.float32, device="cpu"
):
    def randn(*shape):
        return torch.randn(*shape, generator=rng, dtype=torch.float64).to(device=device, dtype=dtype)

    weight = randn(k, O, C // groups, *kernel)
    b = randn(k, O) if bias else None
    coeffs = torch.rand(S, k, generator=rng, dtype=torch.float64)
    coeffs = (coeffs / coeffs.sum(-1, keepdim=True)).to(device=device, dtype=dtype)
    x = randn(B, C, *hw) if shared else randn(S, B, C, *hw)
    return x, weight, b, coeffs


def im2col_conv(x, weight, bias, coeffs, stride, padding, dilation, groups):
    """(S, B, O, H', W') from patches: y[s, b, o, l] = sum_k patch[s, b, g(o), k, l] W_s[o, k] + b_s[o]."""
    S, (_, O, Cg, kh, kw) = coeffs.shape[0], weight.shape
    xs = x.expand(S, *x.shape) if x.dim() == 4 else x
    B, C, H, W = xs.shape[1:]
    stride, dilation = [(v, v) if isinstance(v, int) else v for v in (stride, dilation)]
    if padding == "same":
        total = [d * (n - 1) for d, n in zip(dilation, (kh, kw))]
        xs = F.pad(xs, (total[1] // 2, total[1] - total[1] // 2, total[0] // 2, total[0] - total[0] // 2))
        padding = 0
    elif padding == "valid":
        padding = 0
    padding = (padding, padding) if isinstance(padding, int) else padding
    oh, ow = [
        (n + 2 * p - d * (kk - 1) - 1) // s + 1
        for n, kk, s, p, d in zip(xs.shape[-2:], (kh, kw), stride, padding, dilation)
    ]
    patches = F.unfold(xs.flatten(0, 1), (kh, kw), dilation, padding, stride).view(S, B, groups, Cg * kh * kw, -1)
    ws = torch.einsum("si,iok->sok", coeffs, weight.flatten(2)).view(S, groups, O // groups, -1)
    y = torch.einsum("sbgkl,sgok->sbgol", patches, ws).reshape(S, B, O, oh, ow)
    if bias is not None:
        y = y + (coeffs @ bias)[:, None, :, None, None]
    return y


def expected(x, weight, bias, coeffs, trainable, dy, conv):
    formula = lambda x, w, b, c: im2col_conv(x, w, b, c, *conv)
    return fused_harness.expected(formula, x, weight, bias, coeffs, trainable, dy)


def run(backend, x, weight, bias, coeffs, trainable, dy, conv):
    return fused_harness.run(
        ops.simplex_conv2d,
        x,
        weight,
        bias,
        coeffs,
        dy,
        stride=conv[0],
        padding=conv[1],
        dilation=conv[2],
        groups=conv[3],
        trainable=trainable,
        backend=backend,
    )


def check(got, ref, dtype, trainable, k):
    for name, g, r in zip(NAMES, got, ref):
        if r is None:
            assert g is None, name
        elif r.norm() == 0:  # every vertex fixed: no gradient at all, or an all-zero one
            assert g is None or torch.equal(g, torch.zeros_like(g)), name
        else:
            assert g.dtype == dtype and rel_err(g, r) < RTOL[dtype], (name, rel_err(g, r))
    fixed = [i for i in range(k) if i not in trainable]
    for g in got[2:4]:
        if g is not None:
            assert torch.equal(g[fixed], torch.zeros_like(g[fixed]))  # fixed rows stay exactly zero


def output_grad(rng, x, weight, bias, coeffs, conv, dtype=torch.float32):
    shape = im2col_conv(x.double(), weight.double(), None, coeffs.double(), *conv).shape
    return torch.randn(*shape, generator=rng, dtype=torch.float64).to(device=x.device, dtype=dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shared, layout", [(True, None), (False, "point-major"), (False, "example-major")])
def test_one_trainable_vertex_without_coefficient_gradient(device, backend, shared, layout, rng):
    """A training step's case: one trainable vertex and sampled coefficients that need no
    gradient, where the vertex's filter gradient is taken over all points' examples at once."""
    skip_unless_runnable(device, backend)
    conv = (1, 1, 1, 1)
    x, weight, bias, coeffs = problem(rng, 3, 2, shared, device=device)
    x = fused_harness.example_major(x) if layout == "example-major" else x
    dy = output_grad(rng, x, weight, bias, coeffs, conv)
    got = fused_harness.run(
        ops.simplex_conv2d, x, weight, bias, coeffs, dy, coeffs_grad=False, padding=1, trainable=[1], backend=backend
    )
    check(got, (*expected(x, weight, bias, coeffs, [1], dy, conv)[:4], None), torch.float32, [1], 3)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "k, S, shared, trainable",
    [
        (1, 1, True, [0]),
        (2, 3, False, [1]),
        (3, 5, True, [0, 2]),
        (4, 2, False, [0, 1, 2, 3]),
        (8, 8, True, [5]),
        (5, 4, False, [0, 4]),
        (6, 3, True, []),
        (3, 6, False, [2]),
    ],
)
def test_vertices_and_points(device, backend, k, S, shared, trainable, rng):
    skip_unless_runnable(device, backend)
    conv = (1, 1, 1, 1)
    x, weight, bias, coeffs = problem(rng, k, S, shared, device=device)
    dy = output_grad(rng, x, weight, bias, coeffs, conv)
    check(
        run(backend, x, weight, bias, coeffs, trainable, dy, conv),
        expected(x, weight, bias, coeffs, trainable, dy, conv),
        torch.float32,
        trainable,
        k,
    )


CONVS = [  # (stride, padding, dilation, groups, kernel, C, O, hw)
    (1, 0, 1, 1, (3, 3), 3, 5, (8, 7)),
    (2, 1, 1, 1, (3, 3), 4, 6, (9, 8)),
    ((2, 1), (1, 2), (2, 1), 1, (3, 2), 5, 4, (10, 7)),
    (1, "same", 1, 1, (4, 3), 4, 6, (6, 7)),
    (1, "same", 2, 2, (3, 3), 6, 4, (9, 9)),
    (1, "valid", 1, 1, (1, 1), 7, 9, (5, 4)),
    (2, 1, 1, 6, (3, 3), 6, 6, (7, 7)),  # depthwise
    (1, 1, 1, 3, (3, 3), 6, 9, (5, 6)),
    (3, (0, 1), 1, 1, (5, 5), 3, 17, (12, 11)),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("stride, padding, dilation, groups, kernel, C, O, hw", CONVS)
def test_conv_hyperparameters(device, backend, shared, stride, padding, dilation, groups, kernel, C, O, hw, rng):
    skip_unless_runnable(device, backend)
    conv = (stride, padding, dilation, groups)
    x, weight, bias, coeffs = problem(
        rng, 3, 3, shared, B=2, C=C, O=O, hw=hw, kernel=kernel, groups=groups, device=device
    )
    dy = output_grad(rng, x, weight, bias, coeffs, conv)
    trainable = [1] if shared else [0, 2]  # one trainable vertex (the direct scatter) and several
    check(
        run(backend, x, weight, bias, coeffs, trainable, dy, conv),
        expected(x, weight, bias, coeffs, trainable, dy, conv),
        torch.float32,
        trainable,
        3,
    )


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shared", [True, False])
def test_channels_last_and_no_bias(device, backend, shared, rng):
    skip_unless_runnable(device, backend)
    conv = (1, 1, 1, 1)
    x, weight, _, coeffs = problem(rng, 3, 4, shared, C=5, O=7, bias=False, device=device)
    dy = output_grad(rng, x, weight, None, coeffs, conv)
    ref = expected(x, weight, None, coeffs, [2], dy, conv)
    x_cl = (
        x.contiguous(memory_format=torch.channels_last)
        if shared
        else x.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)
    )
    got = run(backend, x_cl, weight, None, coeffs, [2], dy.contiguous(memory_format=torch.channels_last_3d), conv)
    check(got, ref, torch.float32, [2], 3)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision(device, backend, dtype, rng):
    skip_unless_runnable(device, backend)
    if device == "cpu" and backend == "triton" and dtype == torch.bfloat16:
        pytest.skip("Triton's CPU interpreter has no bfloat16 arithmetic; covered on the GPU")
    if device == "cpu" and backend == "torch" and dtype == torch.float16:
        pytest.skip("PyTorch has no float16 convolution backward on the CPU")
    conv = (1, 1, 1, 1)
    x, weight, bias, coeffs = problem(rng, 4, 3, False, C=16, O=24, dtype=dtype, device=device)
    dy = output_grad(rng, x, weight, bias, coeffs, conv, dtype)
    for trainable in ([1], [0, 3]):
        got = run(backend, x, weight, bias, coeffs, trainable, dy, conv)
        check(got, expected(x, weight, bias, coeffs, trainable, dy, conv), dtype, trainable, 4)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("shared", [True, False])
def test_triton_split_filter_gradient(device, dtype, shared, rng, monkeypatch):
    """The filter-gradient reduction split into chunks accumulated atomically."""
    skip_unless_runnable(device, "triton")
    from simplexkern.ops.triton import conv_weight_grad

    monkeypatch.setattr(conv_weight_grad, "MIN_ROWS_PER_SPLIT", 128)
    monkeypatch.setattr(conv_weight_grad, "PROGRAMS_PER_SM", 10**6)
    assert conv_weight_grad._split(600, 1, torch.device(device))[0] > 1
    conv = (1, 1, 1, 1)
    x, weight, bias, coeffs = problem(rng, 3, 3, shared, B=2, C=4, O=5, hw=(10, 10), dtype=dtype, device=device)
    dy = output_grad(rng, x, weight, bias, coeffs, conv, dtype)
    for trainable in ([1], [0, 2]):
        got = run("triton", x, weight, bias, coeffs, trainable, dy, conv)
        check(got, expected(x, weight, bias, coeffs, trainable, dy, conv), dtype, trainable, 3)


@pytest.mark.parametrize("stride, padding, dilation, groups, kernel, C, O, hw", CONVS)
def test_shared_input_combines_the_vertices_outputs(stride, padding, dilation, groups, kernel, C, O, hw, rng):
    """k < S points of a shared input: k convolutions mixed, coefficients' gradient included."""
    conv = (stride, padding, dilation, groups)
    x, weight, bias, coeffs = problem(rng, 2, 5, True, B=2, C=C, O=O, hw=hw, kernel=kernel, groups=groups)
    assert conv_torch.combines_products(x, weight, coeffs)
    dy = output_grad(rng, x, weight, bias, coeffs, conv)
    for trainable in ([1], [0, 1], []):
        check(
            run("torch", x, weight, bias, coeffs, trainable, dy, conv),
            expected(x, weight, bias, coeffs, trainable, dy, conv),
            torch.float32,
            trainable,
            2,
        )


@pytest.mark.parametrize("grouped", [True, False])
@pytest.mark.parametrize("shared, k, S", [(True, 4, 3), (True, 4, 4), (False, 3, 4)])
def test_torch_backend_cpu_strategies(grouped, shared, k, S, rng, monkeypatch):
    """Both CPU strategies of the torch backend: one grouped convolution and the per-point loop."""
    monkeypatch.setattr(conv_torch, "grouped_on_cpu", lambda *a: grouped)
    conv = (2, 1, 1, 2)
    x, weight, bias, coeffs = problem(rng, k, S, shared, C=4, O=6, groups=2)
    assert not conv_torch.combines_products(x, weight, coeffs)
    dy = output_grad(rng, x, weight, bias, coeffs, conv)
    check(
        run("torch", x, weight, bias, coeffs, [0, 2], dy, conv),
        expected(x, weight, bias, coeffs, [0, 2], dy, conv),
        torch.float32,
        [0, 2],
        k,
    )


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_single_point(device, backend, rng):
    skip_unless_runnable(device, backend)
    x, weight, bias, coeffs = problem(rng, 3, 1, True, device=device)
    y = ops.simplex_conv2d(x, weight, bias, coeffs[0], padding=1, backend=backend)
    ref = im2col_conv(x.double(), weight.double(), bias.double(), coeffs.double(), 1, 1, 1, 1)[0]
    assert y.shape == ref.shape == (2, 6, 7, 6) and rel_err(y, ref) < RTOL[torch.float32]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shared", [True, False])
def test_output_takes_inplace_ops(device, backend, shared, rng):
    """ReLU(inplace=True) after the convolution, as in VGG and ResNet."""
    skip_unless_runnable(device, backend)
    conv = (1, 1, 1, 1)
    x, weight, bias, coeffs = problem(rng, 3, 3, shared, C=8, O=8, device=device)
    w = weight.clone().requires_grad_(True)
    torch.relu_(ops.simplex_conv2d(x, w, bias, coeffs, *conv, backend=backend)).square().sum().backward()
    w64 = weight.double().requires_grad_(True)
    torch.relu(im2col_conv(x.double(), w64, bias.double(), coeffs.double(), *conv)).square().sum().backward()
    assert rel_err(w.grad, w64.grad) < RTOL[torch.float32]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_batch(device, backend, rng):
    skip_unless_runnable(device, backend)
    x, weight, bias, coeffs = problem(rng, 3, 2, False, B=0, device=device)
    leaves = [t.clone().requires_grad_(True) for t in (x, weight, bias, coeffs)]
    y = ops.simplex_conv2d(*leaves, padding=1, trainable=[1], backend=backend)
    assert y.shape == (2, 0, 6, 7, 6)
    y.sum().backward()
    for t in leaves[1:]:
        assert t.grad is None or torch.equal(t.grad, torch.zeros_like(t))


@pytest.mark.parametrize("backend", ["reference", "torch"])
@pytest.mark.parametrize("shared", [True, False])
def test_gradcheck_float64(backend, shared, rng):
    x, weight, bias, coeffs = problem(rng, 3, 2, shared, B=2, C=4, O=4, hw=(5, 4), groups=2, dtype=torch.float64)
    args = [t.requires_grad_(True) for t in (x, weight, bias, coeffs)]
    fn = lambda *a: ops.simplex_conv2d(*a, stride=2, padding=1, groups=2, backend=backend)
    assert torch.autograd.gradcheck(fn, args)


def test_torch_compile_traces_without_graph_break(rng):
    x, weight, bias, coeffs = problem(rng, 3, 2, False)
    weight.requires_grad_(True)

    def f(x, w, b, c):
        return torch.relu(ops.simplex_conv2d(x, w, b, c, padding=1, backend="torch")).sum()

    compiled = torch.compile(f, backend="aot_eager", fullgraph=True)
    out = compiled(x, weight, bias, coeffs)
    out.backward()
    grad = weight.grad.clone()
    weight.grad = None
    f(x, weight, bias, coeffs).backward()
    torch.testing.assert_close(out, f(x, weight, bias, coeffs))
    torch.testing.assert_close(grad, weight.grad)


@pytest.mark.parametrize("shared, S", [(True, 2), (True, 5), (False, 3)])
def test_under_compile_the_torch_backend_is_plain_ops_with_fixed_rows_masked(shared, S, rng):
    """Under torch.compile the torch backend traces as aten ops (no custom op in the graph);
    its gradients, derived by autograd, match eager and leave the fixed rows at zero."""
    x, weight, bias, coeffs = problem(rng, 3, S, shared, dtype=torch.float64)  # no float32 rounding between orders
    leaves = [t.clone().requires_grad_(True) for t in (weight, bias, coeffs)]

    def f(x, w, b, c):
        return torch.relu(ops.simplex_conv2d(x, w, b, c, padding=1, trainable=[1], backend="torch")).square().sum()

    graphs = []

    def backend(gm, inputs):
        graphs.append(gm)
        return gm.forward

    got = torch.compile(f, backend=backend, fullgraph=True)(x, *leaves)
    assert not any("simplexkern" in str(n.target) for gm in graphs for n in gm.graph.nodes)
    got.backward()
    grads = [t.grad for t in leaves]
    eager = [t.clone().requires_grad_(True) for t in (weight, bias, coeffs)]
    f(x, *eager).backward()
    torch.testing.assert_close(got, f(x, weight, bias, coeffs))
    for g, e in zip(grads, eager):
        torch.testing.assert_close(g, e.grad)
    assert torch.equal(grads[0][[0, 2]], torch.zeros_like(grads[0][[0, 2]]))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("shared", [True, False])
def test_custom_ops_pass_opcheck(device, backend, shared, rng):
    """torch.library.opcheck: schema, fake kernels, autograd registration, as torch.compile uses them."""
    skip_unless_runnable(device, backend)
    x, weight, bias, coeffs = problem(rng, 3, 2, shared, C=4, O=6, hw=(5, 6), groups=2, device=device)
    if not shared:  # each point's input channels-last
        x = x.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)
    conv = ([2, 1], [1, 0], [1, 2], 2)
    args = (
        x.requires_grad_(True),
        weight.requires_grad_(True),
        bias.requires_grad_(True),
        coeffs.requires_grad_(True),
        *conv,
        [0, 2],
        backend,
    )
    torch.library.opcheck(torch.ops.simplexkern.simplex_conv2d.default, args)
    dy = torch.randn_like(torch.ops.simplexkern.simplex_conv2d(*args))
    detached = [t.detach() for t in args[:4]]
    torch.library.opcheck(
        torch.ops.simplexkern.simplex_conv2d_backward.default,
        (dy, *detached, *conv, [0, 2], backend, [True, True, True, True]),
    )


@cuda
@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_torch_compile_inductor_on_gpu(backend, rng):
    x, weight, bias, coeffs = problem(rng, 4, 5, True, B=8, C=16, O=32, hw=(8, 8), device="cuda")
    f = lambda x, w, b, c: ops.simplex_conv2d(x, w, b, c, padding=1, backend=backend).square().mean()
    compiled = torch.compile(f, fullgraph=True)
    torch.testing.assert_close(compiled(x, weight, bias, coeffs), f(x, weight, bias, coeffs))


def test_backend_selection():
    w = torch.randn(2, 3, 4, 1, 1)
    assert dispatch.resolve(w.device, gpu_auto="torch") == "torch"
    assert dispatch.resolve(torch.device("cuda"), gpu_auto="torch") == "torch"


W = torch.randn(3, 4, 2, 3, 3)
X = torch.randn(2, 2, 6, 6)
C = torch.ones(3) / 3
BAD = [
    (lambda: ops.simplex_conv2d(X, W[0], None, C), ValueError, r"weight must have shape \(k, out, in / groups"),
    (lambda: ops.simplex_conv2d(X, W, torch.randn(3, 5), C), ValueError, "bias must have shape"),
    (lambda: ops.simplex_conv2d(X, W, None, torch.ones(4)), ValueError, r"coeffs must have shape \(3,\)"),
    (lambda: ops.simplex_conv2d(X[0], W, None, C), ValueError, r"x must have shape \(B, C, H, W\)"),
    (lambda: ops.simplex_conv2d(torch.randn(4, 2, 2, 6, 6), W, None, torch.ones(3, 3)), ValueError, "S=3 points"),
    (lambda: ops.simplex_conv2d(torch.randn(2, 3, 6, 6), W, None, C), ValueError, "x must have 2 channels"),
    (lambda: ops.simplex_conv2d(torch.randn(2, 4, 6, 6), W, None, C, groups=3), ValueError, "divisible by groups=3"),
    (lambda: ops.simplex_conv2d(X, W, None, C, groups=0), ValueError, "groups must be >= 1"),
    (lambda: ops.simplex_conv2d(X, W, None, C, groups=2.0), TypeError, "groups must be an int"),
    (lambda: ops.simplex_conv2d(X, W[..., :0], None, C), ValueError, "weight must have no empty dimension"),
    (lambda: ops.simplex_conv2d(X, W, None, torch.ones(0, 3)), ValueError, "with S >= 1"),
    (lambda: ops.simplex_conv2d(X, W, None, C, stride=0), ValueError, "stride must be >= 1"),
    (lambda: ops.simplex_conv2d(X, W, None, C, stride=(1, 2, 3)), TypeError, "stride must be an int or a pair"),
    (lambda: ops.simplex_conv2d(X, W, None, C, padding=-1), ValueError, "padding must be >= 0"),
    (lambda: ops.simplex_conv2d(X, W, None, C, padding="full"), ValueError, "'same' or 'valid'"),
    (lambda: ops.simplex_conv2d(X, W, None, C, stride=2, padding="same"), ValueError, "padding='same' needs stride 1"),
    (lambda: ops.simplex_conv2d(X, W, None, C, dilation=1.5), TypeError, "dilation must be an int"),
    (lambda: ops.simplex_conv2d(X[..., :2, :2], W, None, C), ValueError, "smaller than the kernel"),
    (lambda: ops.simplex_conv2d(X.double(), W, None, C), TypeError, "x must have the dtype"),
    (
        lambda: ops.simplex_conv2d(X, W, None, torch.tensor([0.5, float("inf"), 0.5])),
        ValueError,
        "coeffs must be finite",
    ),
    (lambda: ops.simplex_conv2d(X.long(), W, None, C), TypeError, "x must be a floating"),
    (lambda: ops.simplex_conv2d(X, W, None, C, trainable=[5]), ValueError, "out of range"),
    (lambda: ops.simplex_conv2d(X, W, None, C, backend="cudnn"), ValueError, "backend must be one of"),
]


@pytest.mark.parametrize("call, exc, match", BAD)
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


@cuda
def test_device_mismatch():
    with pytest.raises(ValueError, match="x is on cpu but weight is on cuda"):
        ops.simplex_conv2d(X, W.cuda(), None, C.cuda())
