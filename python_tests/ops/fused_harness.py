"""What the fused-op tests share: devices, tolerances, relative error, the two sides of every
comparison — an op run on fresh leaves, and the float64 gradients of an independent formula
with the fixed vertices' rows zeroed — and ``FusedOpTester``, the cases every fused op passes."""

from abc import ABC, abstractmethod

import pytest
import torch

import simplexkern.ops as ops
from simplexkern.ops import dispatch

from conftest import cuda

DEVICES = ["cpu", pytest.param("cuda", marks=cuda)]
BACKENDS = ["reference", "torch", "triton"]
NAMES = ["y", "dx", "dweight", "dbias", "dcoeffs"]
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


def check(got, ref, dtype, trainable, typical=0.0):
    """Each of ``got`` of ``dtype`` within RTOL of ``ref`` (dcoeffs relative to at least
    ``typical``), None where ``ref`` is; the fixed vertices' rows exactly zero."""
    for name, g, r in zip(NAMES, got, ref):
        if r is None:
            assert g is None, name
        elif r.norm() == 0:  # every vertex fixed: no gradient at all, or an all-zero one
            assert g is None or torch.equal(g, torch.zeros_like(g)), name
        else:
            err = rel_err(g, r, typical if name == "dcoeffs" else 0.0)
            assert g.dtype == dtype and err < RTOL[dtype], (name, err)
    fixed = [i for i in range(ref[2].shape[0]) if i not in trainable]
    for g in got[2:4]:
        if g is not None:
            assert torch.equal(g[fixed], torch.zeros_like(g[fixed]))  # fixed rows stay exactly zero


def compiled(f, **kwargs):
    """``torch.compile(f, fullgraph=True)`` from a clean slate: a shared test's function is one code
    object for every op, and a recompile for another op's shapes would trace dynamic shapes."""
    torch.compiler.reset()
    return torch.compile(f, fullgraph=True, **kwargs)


def per_op(argnames, table):
    """Parametrizes a shared test by ``argnames`` from the subclass's own ``table`` attribute."""

    def mark(test):
        test.per_op = argnames, table
        return test

    return mark


class FusedOpTester(ABC):
    """The cases every fused op passes, after torchvision's ``RoIOpTester``: a subclass names
    its op, an independent float64 formula and its operands' shapes; its own cases sit beside."""

    VERTEX_CASES: list  # (k, S, shared, trainable) for the forward and gradients test
    OPCHECK_CASES: list  # (shared, k, S) for opcheck
    BAD: list  # (call, exception, match): invalid arguments refused by name
    HALF: dict  # sizes for half precision
    GRADCHECK: dict  # sizes and op keywords for gradcheck
    OPCHECK: dict  # sizes and op keywords for opcheck
    GPU: dict  # sizes for the inductor test
    GPU_AUTO: str  # the op's "auto" backend on a GPU

    @staticmethod
    @abstractmethod
    def op(x, weight, bias, coeffs, **kwargs):
        """The public op: (S, batch, ...) from x (batch, ...) shared or (S, batch, ...)."""

    @staticmethod
    @abstractmethod
    def formula(x, weight, bias, coeffs, **kwargs):
        """The op written without its building blocks (run in float64)."""

    @abstractmethod
    def shapes(self, **sizes):
        """(x's shape at one point, weight's shape without k, the op's keywords)."""

    def opcheck_args(self, x, weight, bias, coeffs, kwargs, trainable, backend):
        """The custom op's arguments."""
        return x, weight, bias, coeffs, trainable, backend

    def typical_dcoeffs(self, args, dy):
        """The usual size of dcoeffs in the forward and gradients test (0: plain relative error)."""
        return 0.0

    def unsupported(self, device, backend, dtype):
        """Why ``backend`` cannot run ``dtype`` on ``device`` here, or None."""
        if device == "cpu" and backend == "triton" and dtype == torch.bfloat16:
            return "Triton's CPU interpreter has no bfloat16 arithmetic; covered on the GPU"
        return None

    def pytest_generate_tests(self, metafunc):
        """Fills in the ``per_op`` tables (pytest calls this hook of a test class)."""
        if hasattr(metafunc.function, "per_op"):
            argnames, table = metafunc.function.per_op
            metafunc.parametrize(argnames, getattr(self, table))

    def problem(self, rng, k, S, shared, dtype=torch.float32, device="cpu", bias=True, **sizes):
        """((x, weight, bias, coeffs), the op's keywords): fresh random operands, coeffs on the simplex."""
        x_shape, w_shape, kwargs = self.shapes(**sizes)

        def randn(*shape):
            return torch.randn(*shape, generator=rng, dtype=torch.float64).to(device=device, dtype=dtype)

        weight = randn(k, *w_shape)
        b = randn(k, w_shape[0]) if bias else None
        coeffs = torch.rand(S, k, generator=rng, dtype=torch.float64)
        coeffs = (coeffs / coeffs.sum(-1, keepdim=True)).to(device=device, dtype=dtype)
        x = randn(*x_shape) if shared else randn(S, *x_shape)
        return (x, weight, b, coeffs), kwargs

    def output_grad(self, rng, args, kwargs):
        with torch.no_grad():
            shape = self.formula(*[t.double() if t is not None else None for t in args], **kwargs).shape
        return torch.randn(shape, generator=rng, dtype=torch.float64).to(args[0])

    def expected(self, args, kwargs, trainable, dy):
        return expected(lambda *t: self.formula(*t, **kwargs), *args, trainable, dy)

    def check_against_formula(self, rng, args, kwargs, trainable, backend, coeffs_grad=True, typical=False):
        """The op's output and gradients on fresh leaves against the formula's, for a random dy."""
        dy = self.output_grad(rng, args, kwargs)
        got = run(self.op, *args, dy, coeffs_grad, trainable=trainable, backend=backend, **kwargs)
        ref = self.expected(args, kwargs, trainable, dy)
        ref = ref if coeffs_grad else (*ref[:4], None)
        check(got, ref, args[0].dtype, trainable, self.typical_dcoeffs(args, dy) if typical else 0.0)

    @per_op("k, S, shared, trainable", "VERTEX_CASES")
    @pytest.mark.parametrize("device", DEVICES)
    @pytest.mark.parametrize("backend", BACKENDS)
    def test_forward_and_gradients_match_the_float64_formula(self, device, backend, k, S, shared, trainable, rng):
        skip_unless_runnable(device, backend)
        args, kwargs = self.problem(rng, k, S, shared, device=device)
        self.check_against_formula(rng, args, kwargs, trainable, backend, typical=True)

    @pytest.mark.parametrize("device", DEVICES)
    @pytest.mark.parametrize("backend", BACKENDS)
    @pytest.mark.parametrize("shared, layout", [(True, None), (False, "point-major"), (False, "example-major")])
    def test_one_trainable_vertex_without_coefficient_gradient(self, device, backend, shared, layout, rng):
        """A training step's case: one trainable vertex and sampled coefficients that need no
        gradient, where the vertex's weight gradient is taken over all points' examples at once."""
        skip_unless_runnable(device, backend)
        (x, *rest), kwargs = self.problem(rng, 3, 2, shared, device=device)
        x = example_major(x) if layout == "example-major" else x
        self.check_against_formula(rng, (x, *rest), kwargs, [1], backend, coeffs_grad=False)

    @pytest.mark.parametrize("device", DEVICES)
    @pytest.mark.parametrize("backend", ["torch", "triton"])
    @pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
    def test_half_precision(self, device, backend, dtype, rng):
        skip_unless_runnable(device, backend)
        if reason := self.unsupported(device, backend, dtype):
            pytest.skip(reason)
        args, kwargs = self.problem(rng, 4, 3, False, dtype=dtype, device=device, **self.HALF)
        for trainable in ([1], [0, 3]):
            self.check_against_formula(rng, args, kwargs, trainable, backend)

    @pytest.mark.parametrize("device", DEVICES)
    @pytest.mark.parametrize("backend", BACKENDS)
    def test_single_point(self, device, backend, rng):
        """(k,) coefficients: the output without the points' dimension."""
        skip_unless_runnable(device, backend)
        (x, weight, bias, coeffs), kwargs = self.problem(rng, 3, 1, True, device=device)
        y = self.op(x, weight, bias, coeffs[0], backend=backend, **kwargs)
        ref = self.formula(x.double(), weight.double(), bias.double(), coeffs.double(), **kwargs)[0]
        assert y.shape == ref.shape and rel_err(y, ref) < RTOL[torch.float32]

    @pytest.mark.parametrize("device", DEVICES)
    @pytest.mark.parametrize("backend", BACKENDS)
    @pytest.mark.parametrize("shared, S", [(True, 1), (True, 3), (False, 3)])
    def test_output_takes_inplace_ops(self, device, backend, shared, S, rng):
        """ReLU(inplace=True) after the op, as in VGG and ResNet."""
        skip_unless_runnable(device, backend)
        (x, weight, bias, coeffs), kwargs = self.problem(rng, 3, S, shared, device=device)
        w = weight.clone().requires_grad_(True)
        torch.relu_(self.op(x, w, bias, coeffs, backend=backend, **kwargs)).square().sum().backward()
        w64 = weight.double().requires_grad_(True)
        y64 = self.formula(x.double(), w64, bias.double(), coeffs.double(), **kwargs)
        torch.relu(y64).square().sum().backward()
        assert rel_err(w.grad, w64.grad) < RTOL[torch.float32]

    @pytest.mark.parametrize("device", DEVICES)
    @pytest.mark.parametrize("backend", BACKENDS)
    def test_empty_batch(self, device, backend, rng):
        """No examples: an empty output, and no or zero gradients for the vertices and coefficients."""
        skip_unless_runnable(device, backend)
        args, kwargs = self.problem(rng, 3, 2, False, batch=0, device=device)
        leaves = [t.clone().requires_grad_(True) for t in args]
        y = self.op(*leaves, trainable=[1], backend=backend, **kwargs)
        assert y.shape == self.formula(*args, **kwargs).shape and y.shape[1] == 0
        y.sum().backward()
        assert leaves[0].grad is None or leaves[0].grad.shape == args[0].shape
        for t in leaves[1:]:
            assert t.grad is None or torch.equal(t.grad, torch.zeros_like(t))

    @pytest.mark.parametrize("backend", ["reference", "torch"])
    @pytest.mark.parametrize("shared", [True, False])
    def test_gradcheck_float64(self, backend, shared, rng):
        args, kwargs = self.problem(rng, 3, 2, shared, dtype=torch.float64, **self.GRADCHECK)
        fn = lambda *a: self.op(*a, backend=backend, **kwargs)
        assert torch.autograd.gradcheck(fn, [t.requires_grad_(True) for t in args])

    @pytest.mark.parametrize("shared", [True, False])
    def test_torch_compile_traces_without_graph_break(self, shared, rng):
        (x, weight, bias, coeffs), kwargs = self.problem(rng, 3, 2, shared)
        weight.requires_grad_(True)

        def f(x, w, b, c):
            return torch.relu(self.op(x, w, b, c, backend="torch", **kwargs)).sum()

        out = compiled(f, backend="aot_eager")(x, weight, bias, coeffs)
        out.backward()
        grad = weight.grad.clone()
        weight.grad = None
        f(x, weight, bias, coeffs).backward()
        torch.testing.assert_close(out, f(x, weight, bias, coeffs))
        torch.testing.assert_close(grad, weight.grad)

    @pytest.mark.parametrize("shared, S", [(True, 2), (True, 5), (False, 3)])
    def test_under_compile_the_torch_backend_is_plain_ops_with_fixed_rows_masked(self, shared, S, rng):
        """Under torch.compile the torch backend traces as aten ops (no custom op in the graph);
        its gradients, derived by autograd, match eager and leave the fixed rows at zero."""
        # float64: no float32 rounding between the two orders of summation
        (x, *params), kwargs = self.problem(rng, 3, S, shared, dtype=torch.float64)
        leaves = [t.clone().requires_grad_(True) for t in params]

        def f(x, w, b, c):
            return torch.relu(self.op(x, w, b, c, trainable=[1], backend="torch", **kwargs)).square().sum()

        graphs = []

        def backend(gm, inputs):
            graphs.append(gm)
            return gm.forward

        got = compiled(f, backend=backend)(x, *leaves)
        assert graphs and not any("simplexkern" in str(n.target) for gm in graphs for n in gm.graph.nodes)
        got.backward()
        eager = [t.clone().requires_grad_(True) for t in params]
        f(x, *eager).backward()
        torch.testing.assert_close(got, f(x, *params))
        for t, e in zip(leaves, eager):
            torch.testing.assert_close(t.grad, e.grad)
        for t in leaves[:2]:  # weight and bias
            assert torch.equal(t.grad[[0, 2]], torch.zeros_like(t.grad[[0, 2]]))

    @per_op("shared, k, S", "OPCHECK_CASES")
    @pytest.mark.parametrize("device", DEVICES)
    @pytest.mark.parametrize("backend", ["torch", "triton"])
    def test_custom_ops_pass_opcheck(self, device, backend, shared, k, S, rng):
        """torch.library.opcheck: schema, fake kernels, autograd registration, as torch.compile uses them."""
        skip_unless_runnable(device, backend)
        (x, weight, bias, coeffs), kwargs = self.problem(rng, k, S, shared, device=device, **self.OPCHECK)
        args = self.opcheck_args(x, weight, bias, coeffs, kwargs, [0, k - 1], backend)
        for t in args[:4]:
            t.requires_grad_(True)
        op = getattr(torch.ops.simplexkern, self.op.__name__)  # the custom op is named after the public one
        torch.library.opcheck(op.default, args)
        dy = torch.randn(op(*args).shape, generator=rng).to(x)
        backward = getattr(torch.ops.simplexkern, f"{self.op.__name__}_backward")
        torch.library.opcheck(backward.default, (dy, *[t.detach() for t in args[:4]], *args[4:], [True] * 4))

    @cuda
    @pytest.mark.parametrize("backend", ["torch", "triton"])
    def test_torch_compile_inductor_on_gpu(self, backend, rng):
        args, kwargs = self.problem(rng, 4, 5, True, device="cuda", **self.GPU)
        f = lambda *a: self.op(*a, backend=backend, **kwargs).square().mean()
        torch.testing.assert_close(compiled(f)(*args), f(*args))

    def test_backend_selection(self, monkeypatch, rng):
        cpu, gpu = torch.device("cpu"), torch.device("cuda")
        assert dispatch.resolve(cpu, gpu_auto=self.GPU_AUTO) == "torch"
        assert dispatch.resolve(gpu, gpu_auto=self.GPU_AUTO) == (self.GPU_AUTO if dispatch.AVAILABLE else "torch")
        with ops.use_backend("reference"):
            assert dispatch.resolve(cpu, gpu_auto=self.GPU_AUTO) == "reference"
            assert dispatch.resolve(cpu, backend="torch", gpu_auto=self.GPU_AUTO) == "torch"
        monkeypatch.setenv(dispatch.ENV_VAR, "reference")
        assert dispatch.resolve(cpu, gpu_auto=self.GPU_AUTO) == "reference"
        monkeypatch.setenv(dispatch.ENV_VAR, "fast")
        args, kwargs = self.problem(rng, 3, 2, True)
        with pytest.raises(ValueError, match="SIMPLEXKERN_BACKEND must be one of"):
            self.op(*args, **kwargs)
        with pytest.raises(ValueError, match="backend must be one of"):
            ops.use_backend("cudnn").__enter__()

    def test_float64_runs_on_the_torch_backend(self, rng):
        """The Triton kernels accumulate in float32: "auto" sends float64 to the torch backend on a
        GPU too, and asking for triton with float64 is refused by name."""
        gpu = torch.device("cuda")
        assert dispatch.resolve(gpu, "auto", self.GPU_AUTO, dtype=torch.float64) == "torch"
        if dispatch.AVAILABLE:
            assert dispatch.resolve(gpu, "auto", self.GPU_AUTO, dtype=torch.float32) == self.GPU_AUTO
            args, kwargs = self.problem(rng, 3, 2, True, dtype=torch.float64)
            with pytest.raises(ValueError, match="backend 'triton' runs float32, float16 and bfloat16"):
                self.op(*args, backend="triton", **kwargs)

    @per_op("call, exc, match", "BAD")
    def test_bad_input(self, call, exc, match):
        with pytest.raises(exc, match=match):
            call()

    @cuda
    def test_an_operand_on_another_device_is_refused_by_name(self, rng):
        args, kwargs = self.problem(rng, 3, 2, True, device="cuda")
        for i, name in [(0, "x"), (2, "bias"), (3, "coeffs")]:
            moved = [t.cpu() if j == i else t for j, t in enumerate(args)]
            with pytest.raises(ValueError, match=f"{name} is on cpu but weight is on cuda"):
                self.op(*moved, **kwargs)
