"""simplex_conv2d: every backend against an independent float64 im2col formula
(``F.unfold`` + einsum, no convolution routine) on fresh random data."""

import pytest
import torch
import torch.nn.functional as F

import simplexkern.ops as ops
from simplexkern.ops import conv_torch

from .fused_harness import BACKENDS, DEVICES, FusedOpTester, check, run, skip_unless_runnable


@pytest.fixture(autouse=True)
def exact_float32():
    """float32 convolutions in full precision on a GPU (cuDNN and the kernels follow this switch)."""
    before = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32 = before


def im2col_conv(x, weight, bias, coeffs, stride=1, padding=1, dilation=1, groups=1):
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
    patches = F.unfold(xs.flatten(0, 1), (kh, kw), dilation, padding, stride).view(S, B, groups, Cg * kh * kw, oh * ow)
    ws = torch.einsum("si,iok->sok", coeffs, weight.flatten(2)).view(S, groups, O // groups, -1)
    y = torch.einsum("sbgkl,sgok->sbgol", patches, ws).reshape(S, B, O, oh, ow)
    if bias is not None:
        y = y + (coeffs @ bias)[:, None, :, None, None]
    return y


W = torch.randn(3, 4, 2, 3, 3)
X = torch.randn(2, 2, 6, 6)
C = torch.ones(3) / 3

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


class TestConv(FusedOpTester):
    op = staticmethod(ops.simplex_conv2d)
    formula = staticmethod(im2col_conv)
    VERTEX_CASES = [
        (1, 1, True, [0]),
        (2, 3, False, [1]),
        (3, 5, True, [0, 2]),
        (4, 2, False, [0, 1, 2, 3]),
        (8, 8, True, [5]),
        (5, 4, False, [0, 4]),
        (6, 3, True, []),
        (3, 6, False, [2]),
    ]
    OPCHECK_CASES = [(True, 3, 2), (False, 3, 2)]
    HALF = dict(C=16, O=24)
    GRADCHECK = dict(O=4, hw=(5, 4), groups=2, stride=2)
    OPCHECK = dict(hw=(5, 6), groups=2, stride=(2, 1), padding=(1, 0), dilation=(1, 2))
    GPU = dict(batch=8, C=16, O=32, hw=(8, 8))
    GPU_AUTO = "torch"
    BAD = [
        (lambda: ops.simplex_conv2d(X, W[0], None, C), ValueError, r"weight must have shape \(k, out, in / groups"),
        (lambda: ops.simplex_conv2d(X, W, torch.randn(3, 5), C), ValueError, "bias must have shape"),
        (lambda: ops.simplex_conv2d(X, W, None, torch.ones(4)), ValueError, r"coeffs must have shape \(3,\)"),
        (lambda: ops.simplex_conv2d(X[0], W, None, C), ValueError, r"x must have shape \(B, C, H, W\)"),
        (lambda: ops.simplex_conv2d(torch.randn(4, 2, 2, 6, 6), W, None, torch.ones(3, 3)), ValueError, "S=3 points"),
        (lambda: ops.simplex_conv2d(torch.randn(2, 3, 6, 6), W, None, C), ValueError, "x must have 2 channels"),
        (
            lambda: ops.simplex_conv2d(torch.randn(2, 4, 6, 6), W, None, C, groups=3),
            ValueError,
            "divisible by groups=3",
        ),
        (lambda: ops.simplex_conv2d(X, W, None, C, groups=0), ValueError, "groups must be >= 1"),
        (lambda: ops.simplex_conv2d(X, W, None, C, groups=2.0), TypeError, "groups must be an int"),
        (lambda: ops.simplex_conv2d(X, W[..., :0], None, C), ValueError, "weight must have no empty dimension"),
        (lambda: ops.simplex_conv2d(X, W, None, torch.ones(0, 3)), ValueError, "with S >= 1"),
        (lambda: ops.simplex_conv2d(X, W, None, C, stride=0), ValueError, "stride must be >= 1"),
        (lambda: ops.simplex_conv2d(X, W, None, C, stride=(1, 2, 3)), TypeError, "stride must be an int or a pair"),
        (lambda: ops.simplex_conv2d(X, W, None, C, padding=-1), ValueError, "padding must be >= 0"),
        (lambda: ops.simplex_conv2d(X, W, None, C, padding="full"), ValueError, "'same' or 'valid'"),
        (
            lambda: ops.simplex_conv2d(X, W, None, C, stride=2, padding="same"),
            ValueError,
            "padding='same' needs stride 1",
        ),
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

    def shapes(self, batch=2, C=4, O=6, hw=(7, 6), kernel=(3, 3), groups=1, stride=1, padding=1, dilation=1):
        return (
            (batch, C, *hw),
            (O, C // groups, *kernel),
            dict(stride=stride, padding=padding, dilation=dilation, groups=groups),
        )

    def opcheck_args(self, x, weight, bias, coeffs, kwargs, trainable, backend):
        """The hyperparameters as the schema's lists; each point's input channels-last."""
        if x.dim() == 5:
            x = x.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)
        pairs = [list(kwargs[name]) for name in ("stride", "padding", "dilation")]
        return x, weight, bias, coeffs, *pairs, kwargs["groups"], trainable, backend

    def unsupported(self, device, backend, dtype):
        if device == "cpu" and backend == "torch" and dtype == torch.float16:
            return "PyTorch has no float16 convolution backward on the CPU"
        return super().unsupported(device, backend, dtype)

    @pytest.mark.parametrize("device", DEVICES)
    @pytest.mark.parametrize("backend", BACKENDS)
    @pytest.mark.parametrize("shared", [True, False])
    @pytest.mark.parametrize("stride, padding, dilation, groups, kernel, C, O, hw", CONVS)
    def test_conv_hyperparameters(
        self, device, backend, shared, stride, padding, dilation, groups, kernel, C, O, hw, rng
    ):
        skip_unless_runnable(device, backend)
        conv = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
        args, kwargs = self.problem(rng, 3, 3, shared, C=C, O=O, hw=hw, kernel=kernel, device=device, **conv)
        trainable = [1] if shared else [0, 2]  # one trainable vertex (the direct scatter) and several
        self.check_against_formula(rng, args, kwargs, trainable, backend)

    @pytest.mark.parametrize("device", DEVICES)
    @pytest.mark.parametrize("backend", BACKENDS)
    @pytest.mark.parametrize("shared", [True, False])
    def test_channels_last_and_no_bias(self, device, backend, shared, rng):
        skip_unless_runnable(device, backend)
        args, kwargs = self.problem(rng, 3, 4, shared, C=5, O=7, bias=False, device=device)
        x = args[0]
        dy = self.output_grad(rng, args, kwargs)
        ref = self.expected(args, kwargs, [2], dy)
        x_cl = (
            x.contiguous(memory_format=torch.channels_last)
            if shared
            else x.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)
        )
        dy_cl = dy.contiguous(memory_format=torch.channels_last_3d)
        got = run(self.op, x_cl, *args[1:], dy_cl, trainable=[2], backend=backend, **kwargs)
        check(got, ref, torch.float32, [2])

    @pytest.mark.parametrize("device", DEVICES)
    @pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
    @pytest.mark.parametrize("shared", [True, False])
    def test_triton_split_filter_gradient(self, device, dtype, shared, rng, monkeypatch):
        """The filter-gradient reduction split into chunks accumulated atomically."""
        skip_unless_runnable(device, "triton")
        from simplexkern.ops.triton import conv_weight_grad

        monkeypatch.setattr(conv_weight_grad, "MIN_ROWS_PER_SPLIT", 128)
        monkeypatch.setattr(conv_weight_grad, "PROGRAMS_PER_SM", 10**6)
        assert conv_weight_grad._split(600, 1, torch.device(device))[0] > 1
        args, kwargs = self.problem(rng, 3, 3, shared, O=5, hw=(10, 10), dtype=dtype, device=device)
        for trainable in ([1], [0, 2]):
            self.check_against_formula(rng, args, kwargs, trainable, "triton")

    @pytest.mark.parametrize("stride, padding, dilation, groups, kernel, C, O, hw", CONVS)
    def test_shared_input_combines_the_vertices_outputs(self, stride, padding, dilation, groups, kernel, C, O, hw, rng):
        """k < S points of a shared input: k convolutions mixed, coefficients' gradient included."""
        conv = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
        args, kwargs = self.problem(rng, 2, 5, True, C=C, O=O, hw=hw, kernel=kernel, **conv)
        assert conv_torch.combines_products(*args[:2], args[3])
        for trainable in ([1], [0, 1], []):
            self.check_against_formula(rng, args, kwargs, trainable, "torch")

    @pytest.mark.parametrize("grouped", [True, False])
    @pytest.mark.parametrize("shared, k, S", [(True, 4, 3), (True, 4, 4), (False, 3, 4)])
    def test_torch_backend_cpu_strategies(self, grouped, shared, k, S, rng, monkeypatch):
        """Both CPU strategies of the torch backend: one grouped convolution and the per-point loop."""
        monkeypatch.setattr(conv_torch, "grouped_on_cpu", lambda *a: grouped)
        args, kwargs = self.problem(rng, k, S, shared, groups=2, stride=2)
        assert not conv_torch.combines_products(*args[:2], args[3])
        self.check_against_formula(rng, args, kwargs, [0, 2], "torch")
