"""SimplexModel against plain models: ``at(coeffs)`` gives the plain architecture with the
combined weights, and one forward over S points equals S plain forwards."""

import math

import pytest
import torch
import torchvision
from torch import nn

import simplexkern as sk
from simplexkern.ops import dispatch

from .model_zoo import EveryLayer, TransformerBlock, every_layer_input
from .test_any_model import plain_gradients
from conftest import cuda

F32 = dict(rtol=1e-4, atol=1e-5)
F64 = dict(rtol=1e-10, atol=1e-12)


def _points(S, k, generator, dtype=torch.float32):
    """S random points of the simplex (normalised exponentials) from ``generator``."""
    e = torch.empty(S, k, dtype=torch.float64).exponential_(generator=generator)
    return (e / e.sum(1, keepdim=True)).to(dtype)


CASES = {  # name -> (plain model factory, input shape)
    "torchvision.vgg11_bn": (lambda: torchvision.models.vgg11_bn(num_classes=10), (2, 3, 32, 32)),
    "torchvision.resnet18": (lambda: torchvision.models.resnet18(num_classes=10), (2, 3, 32, 32)),
    "vgg16": (lambda: sk.models.create("vgg16"), (2, 3, 32, 32)),
    "preresnet110": (lambda: sk.models.create("preresnet110"), (2, 3, 32, 32)),
    "wrn16_2": (lambda: sk.models.WideResNet(depth=16, widen_factor=2), (2, 3, 32, 32)),
    "lenet5": (lambda: sk.models.create("lenet5"), (2, 1, 28, 28)),
    "mlp": (lambda: sk.models.create("mlp"), (2, 64)),
    "digits_convnet": (lambda: sk.models.create("digits_convnet"), (2, 1, 8, 8)),
    "convnet1d": (lambda: sk.models.create("convnet1d"), (2, 40)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_at_vertex_is_the_plain_model_with_its_weights(name, rng):
    torch.manual_seed(rng.initial_seed())
    factory, shape = CASES[name]
    model = factory().eval()
    k = 2
    sm = sk.simplexify(model, k, noise=0.1).eval()
    x = torch.randn(shape, generator=rng)
    vertices = sm.store.vertices().detach()
    reference = factory().eval()
    for i in range(k):
        state = sm.vertex_state_dict(i)
        reference.load_state_dict(state)
        for key, value in state.items():  # the state holds vertex i's own store row
            if key in sm.store.slots:
                assert torch.equal(value, sm.store.slot(vertices[i], key))
        if i == 0:  # vertex 0 is the original model, BatchNorm statistics included
            torch.testing.assert_close(reference(x), model(x), **F32)
        torch.testing.assert_close(sm.at(torch.eye(k)[i], bn_stats="fresh")(x), reference(x), **F32)
        if i == 0:
            torch.testing.assert_close(sm(x, torch.eye(k)[i]), reference(x), **F32)


@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize("name", ["torchvision.resnet18", "preresnet110", "every_layer", "transformer"])
def test_forward_over_points_equals_separate_plain_forwards(name, mode, rng):
    torch.manual_seed(rng.initial_seed())
    if name == "every_layer":
        model, x = EveryLayer(), every_layer_input(4, rng, torch.float64)
    elif name == "transformer":
        model, x = TransformerBlock(), torch.randn(3, 5, 8, generator=rng, dtype=torch.float64)
    else:
        model, x = CASES[name][0](), torch.randn(4, 3, 32, 32, generator=rng, dtype=torch.float64)
    model = model.double()
    k, S = 3, 4
    sm = sk.simplexify(model, k, noise=0.2)
    coeffs = _points(S, k, rng, torch.float64)
    if mode == "eval":
        batches = (
            [torch.randn(x.shape, generator=rng, dtype=x.dtype) for _ in range(2)]
            if name != "every_layer"
            else [every_layer_input(4, rng, torch.float64) for _ in range(2)]
        )
        if sm.bn_points.shape[0]:
            sm.update_bn(batches, coeffs)
        sm.eval()
    else:
        sm.train()
    y = sm(x, coeffs)
    assert y.shape[:2] == (S, x.shape[0])
    for s in range(S):
        plain = sm.at(coeffs[s]) if mode == "eval" else sm.at(coeffs[s], bn_stats="fresh").train()
        torch.testing.assert_close(y[s], plain(x), **F64)


def test_batchnorm_statistics_are_per_point(rng):
    """update_bn gives each point the statistics a plain model at that point accumulates."""
    torch.manual_seed(rng.initial_seed())
    sm = sk.simplexify(EveryLayer().double(), 2, noise=0.3)
    coeffs = _points(3, 2, rng, torch.float64)
    batches = [every_layer_input(6, rng, torch.float64) for _ in range(3)]
    sm.update_bn(batches, coeffs)
    for s in range(3):
        plain = sm.at(coeffs[s], bn_stats="fresh")
        plain.bn2.momentum = plain.bn1.momentum = None
        plain.train()
        with torch.no_grad():
            for b in batches:
                plain(b)
        torch.testing.assert_close(sm.at(coeffs[s]).bn2.running_var, plain.bn2.running_var, **F64)
        torch.testing.assert_close(sm.at(coeffs[s]).bn1.running_mean, plain.bn1.running_mean, **F64)
    sm.eval()
    with pytest.raises(ValueError, match="update_bn"):
        sm(batches[0], _points(2, 2, rng, torch.float64))  # points without statistics
    with pytest.raises(ValueError, match="update_bn"):
        sm.at(torch.tensor([0.5, 0.5], dtype=torch.float64))


def test_training_batchnorm_updates_each_points_statistics_as_a_plain_model(rng, monkeypatch):
    """In training, per-point BatchNorm (one native batch norm over the S x C channels)
    normalises and moves each tracked point's running statistics as a plain model would."""
    torch.manual_seed(rng.initial_seed())
    sm = sk.simplexify(EveryLayer().double(), 2, noise=0.3)
    coeffs = _points(3, 2, rng, torch.float64)
    sm.update_bn([every_layer_input(6, rng, torch.float64)], coeffs)
    plains = [sm.at(coeffs[s]).train() for s in range(3)]
    batch = every_layer_input(6, rng, torch.float64)
    calls = []
    original = torch.nn.functional.batch_norm
    monkeypatch.setattr(torch.nn.functional, "batch_norm", lambda *a, **k: calls.append(1) or original(*a, **k))
    out = sm.train()(batch, coeffs)
    assert len(calls) == 2  # one call per BatchNorm layer for all three points
    monkeypatch.setattr(torch.nn.functional, "batch_norm", original)
    for s, plain in enumerate(plains):
        torch.testing.assert_close(out[s], plain(batch), **F64)
        mine = sm.at(coeffs[s])
        for name in ("bn1", "bn2"):
            for stat in ("running_mean", "running_var", "num_batches_tracked"):
                torch.testing.assert_close(
                    getattr(getattr(mine, name), stat), getattr(getattr(plain, name), stat), **F64
                )


@pytest.mark.parametrize("fixed", [[1], [0, 2]])
def test_gradients_reach_free_vertices_only(fixed, rng):
    """dV_i = sum_s c_si dW_s, from plain models at each point; fixed vertices get none. Made
    float64 after conversion: the store is re-laid as one block at the first forward."""
    torch.manual_seed(rng.initial_seed())
    sm = sk.simplexify(EveryLayer(), 3, noise=0.3).train()
    for i in fixed:
        sm.fix(i)
    sm.double()
    coeffs = _points(4, 3, rng, torch.float64)
    x = every_layer_input(5, rng, torch.float64)
    sm(x, coeffs).square().sum().backward()
    expected = torch.zeros(3, sm.store.n_columns, dtype=torch.float64)
    for s in range(4):
        plain = sm.at(coeffs[s], bn_stats="fresh").train()
        plain(x).square().sum().backward()
        grads = torch.cat([dict(plain.named_parameters())[name].grad.reshape(-1) for name in sm.store.slots])
        expected += coeffs[s][:, None] * grads
    rows = sm.store.order.tolist()
    free_vertices = rows[sm.store.n_fixed :]
    torch.testing.assert_close(sm.store.trainable.grad, expected[free_vertices], **F64)
    assert sm.fixed_mask() == [i in fixed for i in range(3)]


def test_gradients_of_passes_that_overlap_or_repeat(rng):
    """The ops write a pass's gradients into that pass's own buffer: two passes in one graph, a
    graph dropped before its backward, and one graph differentiated twice all give what
    separate passes give."""
    torch.manual_seed(rng.initial_seed())
    fused_only = nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(64, 5))
    sm = sk.simplexify(fused_only, 3, noise=0.3).double().train()
    sm.fix(1)
    x = torch.randn(4, 2, 6, 6, generator=rng, dtype=torch.float64)
    c1, c2 = _points(2, 3, rng, torch.float64), _points(3, 3, rng, torch.float64)

    def grad(loss, **kwargs):
        return torch.autograd.grad(loss, sm.store.trainable, **kwargs)[0]

    g1, g2 = grad(sm(x, c1).square().sum()), grad(sm(x, c2).sin().sum())
    torch.testing.assert_close(grad(sm(x, c1).square().sum() + sm(x, c2).sin().sum()), g1 + g2, **F64)
    sm(x, c2).sum()  # its graph is dropped at once
    torch.testing.assert_close(grad(sm(x, c1).square().sum()), g1, **F64)
    y = sm(x, c1)
    first = grad(y.square().sum(), retain_graph=True)
    torch.testing.assert_close(first, g1, **F64)
    torch.testing.assert_close(grad(y.square().sum() * 3), 3 * g1, **F64)
    torch.testing.assert_close(first, g1, **F64)  # the second backward left the first's result alone


@pytest.mark.parametrize("case", ["a layer applied twice", "points one at a time", "one vertex"])
def test_gradients_of_weights_that_several_op_calls_use(case, rng):
    """A weight that reaches the fused ops more than once in a pass (a layer applied twice, or
    one call per point) gets the sum of those calls' gradients; a one-vertex model too."""
    torch.manual_seed(rng.initial_seed())
    twice = nn.Linear(4, 4)
    plain = (
        nn.Sequential(twice, nn.Tanh(), twice)
        if case == "a layer applied twice"
        else nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2))
    )
    k = 1 if case == "one vertex" else 3
    sm = sk.simplexify(plain, k, noise=0.3).double().train()
    if k > 1:
        sm.fix(0)
    sm.point_evaluation = "loop" if case == "points one at a time" else "auto"
    x, coeffs = torch.randn(5, 4, generator=rng, dtype=torch.float64), _points(2, k, rng, torch.float64)
    sm(x, coeffs).square().sum().backward()
    _, expected = plain_gradients(sm, coeffs, x, lambda s, out: out.square().sum())
    torch.testing.assert_close(sm.store.trainable.grad, expected, **F64)


def test_the_store_trains_after_a_first_use_under_inference_mode(rng):
    """A store re-laid at its first use after ``to`` stays a normal tensor when that use is
    under torch.inference_mode, and changing it in place between a forward and its backward
    is refused, as for any weight."""
    sm = sk.simplexify(nn.Linear(4, 3), 3, noise=0.3)
    sm.fix(0)
    sm = sm.double()
    x, coeffs = torch.randn(5, 4, generator=rng, dtype=torch.float64), _points(2, 3, rng, torch.float64)
    with torch.inference_mode():
        sm(x, coeffs)
    assert not sm.store.trainable.is_inference()
    sm(x, coeffs).sum().backward()
    assert sm.store.trainable.grad.shape == (2, sm.store.n_columns)
    loss = sm(x, coeffs).square().sum()
    with torch.no_grad():
        sm.store.trainable.mul_(2)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_the_store_is_one_block_that_every_layer_views(rng):
    """Fixed and trainable rows are views of one block and each layer's weights views of it (a
    forward copies no part of the store), after fix, add_vertex, a dtype change and a load."""
    torch.manual_seed(rng.initial_seed())
    sm = sk.simplexify(EveryLayer(), 3, noise=0.1)

    def check_views():
        block, n_fixed = sm.store._packed(), sm.store.n_fixed
        assert n_fixed == 0 or sm.store.fixed.data_ptr() == block.data_ptr()
        assert n_fixed == sm.n_vertices or sm.store.trainable.data_ptr() == block[n_fixed].data_ptr()
        for w in sm.store.layer_weights().values():
            assert w.untyped_storage().data_ptr() == block.untyped_storage().data_ptr()
        return block

    block = check_views()
    assert sm.store._packed() is block  # the same block while nothing separates the rows
    sm.fix(1)
    check_views()
    sm.add_vertex(generator=rng)
    sm.fix(3)
    block = check_views()
    assert sm.store._packed() is block  # the same block while nothing separates the rows
    sm.double()
    block = check_views()
    vertices = sm.store.vertices().detach().clone()
    other = sk.simplexify(EveryLayer(), 2).double()
    other.load_state_dict(sm.state_dict())
    other.store._packed()
    assert other.fixed_mask() == sm.fixed_mask() and torch.equal(other.store.vertices(), vertices)
    for i in (0, 2):  # every vertex fixed: no trainable row at all
        sm.fix(i)
    check_views()
    x, coeffs = every_layer_input(3, rng, torch.float64), _points(2, 4, rng, torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(sm(x, coeffs)[1], sm.at(coeffs[1], bn_stats="fresh").train()(x), **F64)


def test_fixed_vertex_is_bit_identical_after_sgd(rng):
    torch.manual_seed(rng.initial_seed())
    sm = sk.simplexify(sk.models.create("digits_convnet"), 3).train()
    sm.fix(0)
    before = sm.store.vertices().detach().clone()
    opt = torch.optim.SGD(sm.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    for _ in range(10):
        opt.zero_grad()
        x = torch.randn(8, 1, 8, 8, generator=rng)
        sm(x, n_samples=3).logsumexp(-1).mean().backward()
        opt.step()
    after = sm.store.vertices().detach()
    assert torch.equal(after[0], before[0])
    assert (after[1:] - before[1:]).abs().amax(1).min() > 1e-4  # both free vertices moved
    sm.unfix(0)
    assert sm.fixed_mask() == [False, False, False] and torch.equal(sm.store.vertices(), after)


def test_shared_and_per_point_inputs_agree(rng):
    torch.manual_seed(rng.initial_seed())
    sm = sk.simplexify(sk.models.create("mlp").double(), 2, noise=0.5)
    coeffs = _points(3, 2, rng, torch.float64)
    x = torch.randn(4, 64, generator=rng, dtype=torch.float64)
    torch.testing.assert_close(sm(x, coeffs), sm(x.expand(3, 4, 64), coeffs, per_point_input=True), **F64)
    xs = torch.randn(3, 4, 64, generator=rng, dtype=torch.float64)
    y = sm(xs, coeffs, per_point_input=True)
    for s in range(3):
        torch.testing.assert_close(y[s], sm.at(coeffs[s])(xs[s]), **F64)


def test_add_vertex_initialisations(rng):
    torch.manual_seed(rng.initial_seed())
    sm = sk.simplexify(sk.models.create("mlp"), 2, noise=0.5)
    v = sm.store.vertices().detach()
    sm.add_vertex("mean", noise=0)
    torch.testing.assert_close(sm.store.vertices()[2], v.mean(0))
    sm.add_vertex("copy", noise=0, source=1)
    assert torch.equal(sm.store.vertices()[3], v[1])
    g = torch.Generator().manual_seed(1)
    i = sm.add_vertex("copy", noise=0.1, source=0, generator=g)
    for name in sm.store.slots:  # relative noise: about 10% of each tensor's RMS
        d = sm.store.slot(sm.store.vertices()[i] - v[0], name)
        rms = sm.store.slot(sm.store.vertices().detach()[:4], name).pow(2).mean().sqrt()
        assert 0.05 < float(d.detach().pow(2).mean().sqrt() / rms) < 0.2
    i = sm.add_vertex("random", noise=0)
    w = sm.store.slot(sm.store.vertices().detach()[i], "net.1.weight")  # nn.Linear's init: U(-1/sqrt(in), 1/sqrt(in))
    assert float(w.abs().max()) <= 1 / 64**0.5 and float(w.std()) > 0.5 / 64**0.5 / 3**0.5
    assert sm.n_vertices == 6 and sm.fixed_mask() == [False] * 6
    sm.fix(1)
    before = sm.store.vertices().detach().clone()
    new = sm.add_vertex("copy", noise=0, source=3, fixed=True)  # a fixed vertex joins the fixed rows
    new2 = sm.add_vertex("copy", noise=0, source=0)
    assert (new, new2) == (6, 7) and sm.fixed_mask() == [False, True] + [False] * 4 + [True, False]
    vertices = sm.store.vertices()
    assert torch.equal(vertices, torch.cat([before, before[[3, 0]]]))
    assert sm.store.trainable.shape[0] == 6 and sm.store.fixed.shape[0] == 2


def test_vertex_points_fresh_vertices_and_whether_batchnorm_is_tracked(rng):
    class Scale(nn.Module):  # a parameter no reset_parameters() touches
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.full((4,), 3.0))

        def forward(self, x):
            return x * self.scale

    sm = sk.simplexify(nn.Sequential(nn.Linear(3, 4), Scale()), 3, noise=0.1)
    assert torch.equal(sm.vertex_point(1), torch.tensor([0.0, 1.0, 0.0]))
    with pytest.raises(ValueError, match="vertex index below 3"):
        sm.vertex_point(3)
    like = sm.store.vertex(2)
    torch.manual_seed(rng.initial_seed())
    fresh = sm.random_vertex(like)
    torch.manual_seed(rng.initial_seed())
    plain = nn.Linear(3, 4)  # the same draws as reset_parameters() of the model's Linear
    assert torch.equal(sm.store.slot(fresh, "0.weight"), plain.weight.detach())
    assert torch.equal(sm.store.slot(fresh, "1.scale"), sm.store.slot(like, "1.scale"))
    assert not sm.tracks_batchnorm
    assert sk.simplexify(nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))).tracks_batchnorm
    assert not sk.simplexify(
        nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4, track_running_stats=False))
    ).tracks_batchnorm


def test_log_volume_matches_float64_gram_determinant(rng):
    torch.manual_seed(rng.initial_seed())
    sm = sk.simplexify(sk.models.create("lenet5"), 4, noise=0.3)
    sm.fix(2)
    v = sm.store.vertices().detach().double()
    d = v[1:] - v[0]
    expected = 0.5 * torch.logdet(d @ d.T) - torch.lgamma(torch.tensor(4.0, dtype=torch.float64))
    torch.testing.assert_close(sm.log_volume().detach(), expected, rtol=1e-9, atol=1e-9)
    sub = sm.log_volume([(0, 1, 3), (1, 2)]).detach()
    e = v[[1, 3]] - v[0]
    torch.testing.assert_close(
        sub[0], 0.5 * torch.logdet(e @ e.T) - torch.log(torch.tensor(2.0, dtype=torch.float64)), rtol=1e-9, atol=1e-9
    )
    torch.testing.assert_close(sub[1], (v[1] - v[2]).norm().log(), rtol=1e-9, atol=1e-9)  # a 1-simplex: its length
    sm.log_volume().backward()
    assert sm.store.trainable.grad is not None and sm.store.trainable.grad.abs().sum() > 0


def test_set_vertex_from_a_trained_plain_model(rng):
    torch.manual_seed(rng.initial_seed())
    a, b = sk.models.create("vgg16_bn", num_classes=3).eval(), sk.models.create("vgg16_bn", num_classes=3).eval()
    with torch.no_grad():  # give b BatchNorm statistics of its own
        for m in b.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(generator=rng)
                m.running_var.uniform_(0.5, 2, generator=rng)
    sm = sk.simplexify(a, 2, noise=0.1)
    sm.set_vertex(1, b.state_dict())
    x = torch.randn(2, 3, 32, 32, generator=rng)
    sm.eval()
    torch.testing.assert_close(sm(x, torch.eye(2)), torch.stack([a(x), b(x)]), **F32)
    with pytest.raises(ValueError, match="has no 'features.0.weight'"):
        sm.set_vertex(0, {})
    bad = dict(b.state_dict(), **{"features.0.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="shape"):
        sm.set_vertex(0, bad)


def test_simplexify_errors_and_what_is_no_longer_one(rng):
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.ones(3))

        def forward(self, x):
            return x * self.scale

    model = nn.Sequential(nn.Linear(3, 3), nn.Sequential(nn.ReLU(), Odd()))
    sm = sk.simplexify(model, 2)  # a module with parameters of its own: its parameters are vertex parameters
    assert list(sm.store.slots) == ["0.weight", "0.bias", "1.1.scale"]
    sm = sk.simplexify(model, 2, shared=["1.1"])
    assert [n for n, _ in sm.named_parameters()] == ["module.1.1.scale", "store.trainable"]
    x = torch.randn(4, 3, generator=rng)
    torch.testing.assert_close(sm(x, torch.tensor([1.0, 0.0])), model(x), **F32)
    with pytest.raises(ValueError, match="not a submodule"):
        sk.simplexify(model, shared=["nope"])
    with pytest.raises(ValueError, match="whole model cannot be shared"):
        sk.simplexify(model, shared=[""])
    reflect = sk.simplexify(nn.Conv2d(1, 1, 3, padding=1, padding_mode="reflect"))  # the generic path
    assert not isinstance(reflect.module, sk.nn.SimplexLayer)
    with pytest.raises(TypeError, match="torch.nn.Module"):
        sk.simplexify("vgg")
    with pytest.raises(ValueError, match="n_vertices"):
        sk.simplexify(nn.Linear(2, 2), 0)
    with pytest.raises(ValueError, match="init"):
        sk.simplexify(nn.Linear(2, 2), 1, init="bogus")  # checked even when no vertex is added
    for noise, error in ((True, TypeError), ("0.1", TypeError), (-0.1, ValueError), (math.inf, ValueError)):
        with pytest.raises(error, match="noise"):
            sk.simplexify(nn.Linear(2, 2), 1, noise=noise)
        with pytest.raises(error, match="noise"):
            sk.simplexify(nn.Linear(2, 2), 1).add_vertex("mean", noise)
    sm = sk.simplexify(nn.Linear(2, 2), 2)
    with pytest.raises(ValueError, match=r"shape \(2,\) or \(S, 2\)"):
        sm(torch.randn(1, 2), torch.ones(3))
    with pytest.raises(TypeError, match="dtype"):
        sm(torch.randn(1, 2), torch.ones(2, dtype=torch.float64))
    with pytest.raises(ValueError, match="finite"):
        sm(torch.randn(1, 2), torch.tensor([float("nan"), 1.0]))
    with pytest.raises(ValueError, match="not both"):
        sm(torch.randn(1, 2), torch.ones(2), n_samples=2)
    with pytest.raises(ValueError, match="vertex index below 2"):
        sm.fix(2)
    with pytest.raises(ValueError, match="init"):
        sm.add_vertex("zeros")
    with pytest.raises(ValueError, match="point_evaluation"):
        sm.point_evaluation = "fast"
        sm(torch.randn(1, 2), torch.ones(2) / 2)
    sm.point_evaluation = "auto"
    with pytest.raises(RuntimeError, match="inside a SimplexModel"):
        sm.module(torch.randn(1, 2))
    with pytest.raises(AttributeError, match="exists only at a point"):
        sm.module.weight  # a combination of the vertices: model.at(coeffs).weight


@pytest.mark.parametrize("backend", ["torch", "reference", "triton"])
def test_inputs_the_layers_cannot_take_are_refused_by_name(backend):
    """The layers call the ops' unchecked inner functions: they check the input themselves."""
    if backend == "triton" and not dispatch.INTERPRET:
        pytest.skip("the triton backend runs on CPU tensors only under TRITON_INTERPRET=1")
    conv2 = sk.simplexify(nn.Sequential(nn.Conv2d(4, 6, 3), nn.Flatten(), nn.Linear(6 * 25, 3)), 2)
    conv1 = sk.simplexify(nn.Sequential(nn.Conv1d(4, 6, 3)), 2)
    conv2.backend = conv1.backend = backend
    cases = [
        (conv2, torch.randn(2, 4, 7, 7).double(), TypeError, r"Conv2d at '0': x must have the dtype of the weights"),
        (conv2, torch.ones(2, 4, 7, 7, dtype=torch.long), TypeError, "dtype of the weights"),
        (conv2, torch.randn(4, 7), ValueError, r"Conv2d at '0' expects \(C, H, W\) or \(B, C, H, W\) inputs"),
        (conv2, torch.randn(2, 5, 7, 7), ValueError, r"4 channels, got shape \(2, 5, 7, 7\)"),
        (conv2, torch.randn(2, 4, 8, 8), ValueError, r"Linear at '2': expected inputs of 150 features"),
        # unbatched, as the plain Conv2d takes it: the model's own Flatten then fails at the Linear
        (conv2, torch.randn(4, 7, 7), ValueError, r"Linear at '2': expected inputs of 150 features, got shape \(6, "),
        (conv1, torch.randn(4, 7, 7, 7), ValueError, r"Conv1d at '0' expects \(C, L\) or \(B, C, L\) inputs"),
        (conv1, torch.randn(2, 5, 7), ValueError, r"4 channels, got shape \(2, 5, 7\)"),
        (conv1, torch.randn(2, 4, 7).double(), TypeError, "dtype of the weights"),
    ]
    for model, x, error, message in cases:
        with pytest.raises(error, match=message):
            model(x, n_samples=2)
    x = torch.randn(4, 7)  # unbatched, as the plain Conv1d takes it
    c = torch.tensor([0.25, 0.75])
    torch.testing.assert_close(conv1(x, c), conv1.at(c)(x), **F32)


def test_a_plain_linear_as_the_whole_model(rng):
    lin = nn.Linear(3, 2)
    sm = sk.simplexify(lin, 2, noise=0.5)
    x = torch.randn(5, 3, generator=rng)
    c = _points(1, 2, rng)[0]
    plain = sm.at(c)
    assert type(plain) is nn.Linear
    torch.testing.assert_close(sm(x, c), plain(x), **F32)


def test_torch_compile_of_a_simplex_resnet18_matches_eager(rng):
    torch.manual_seed(rng.initial_seed())
    # float64: compiled graphs may reorder float32 sums, which an 18-layer network amplifies.
    sm = sk.simplexify(torchvision.models.resnet18(num_classes=10), 3, noise=0.1).double()
    coeffs = _points(2, 3, rng, torch.float64)
    sm.update_bn([torch.randn(4, 3, 32, 32, generator=rng, dtype=torch.float64)], coeffs)
    sm.eval()
    x = torch.randn(2, 3, 32, 32, generator=rng, dtype=torch.float64)
    compiled = torch.compile(sm, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(x, coeffs), sm(x, coeffs), **F64)


@pytest.fixture
def no_tf32():
    """float32 convolutions and matmuls in full precision (cuDNN allows TF32 by default)."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@cuda
@pytest.mark.parametrize("backend", ["torch", "triton", "auto"])
def test_gpu_backends_match_the_plain_model(backend, rng, no_tf32):
    torch.manual_seed(rng.initial_seed())
    sm = sk.simplexify(EveryLayer(), 3, noise=0.3).cuda().train()
    sm.fix(0)
    sm.backend = backend
    coeffs = _points(4, 3, rng).cuda()
    x = every_layer_input(5, rng).cuda()
    y = sm(x, coeffs)
    y.square().sum().backward()
    outputs, expected = plain_gradients(sm, coeffs, x, lambda s, out: out.square().sum())
    torch.testing.assert_close(y.double(), torch.stack(outputs), rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(sm.store.trainable.grad.double().cpu(), expected, rtol=1e-3, atol=1e-3)


def _state(sm):
    return {k: v.clone() for k, v in sm.state_dict().items()}


def test_a_refused_forward_leaves_the_model_as_it_was(rng):
    torch.manual_seed(rng.initial_seed())
    sm = sk.simplexify(torchvision.models.mobilenet_v3_small(num_classes=4), 2, noise=0.1).eval()
    x = torch.randn(2, 3, 32, 32, generator=rng)
    vertex = torch.tensor([1.0, 0.0])
    before, state = sm(x, vertex), _state(sm)
    with pytest.raises(ValueError, match="no running BatchNorm statistics"):
        sm(x, torch.tensor([0.5, 0.5]))  # evaluating a point without statistics is refused ...
    with pytest.raises(ValueError, match="channels"):
        sm(torch.randn(2, 5, 32, 32, generator=rng), vertex)  # ... as is an input the model cannot take
    torch.testing.assert_close(sm(x, vertex), before, rtol=0, atol=0)  # ... and the model works as before
    assert all(torch.equal(v, state[k]) for k, v in sm.state_dict().items())
    sm.update_bn([x], torch.tensor([[0.5, 0.5]]))
    assert sm(x, torch.tensor([0.5, 0.5])).shape == (2, 4)


def test_a_failed_update_bn_keeps_the_statistics(rng):
    torch.manual_seed(rng.initial_seed())
    sm = sk.simplexify(sk.models.create("preresnet110", num_classes=3), 2, noise=0.1).eval()
    x = torch.randn(2, 3, 32, 32, generator=rng)
    before, state = sm(x, torch.tensor([1.0, 0.0])), _state(sm)
    with pytest.raises(ValueError, match="empty"):
        sm.update_bn([], torch.tensor([0.5, 0.5]))
    with pytest.raises(ValueError, match="channels"):  # the second batch fails half-way through the pass
        sm.update_bn([x, torch.randn(2, 4, 32, 32, generator=rng)], torch.tensor([0.5, 0.5]))
    assert all(torch.equal(v, state[k]) for k, v in sm.state_dict().items())
    torch.testing.assert_close(sm(x, torch.tensor([1.0, 0.0])), before, rtol=0, atol=0)


def test_an_empty_training_batch_leaves_the_running_statistics(rng):
    sm = sk.simplexify(nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)), 1).train()
    state = _state(sm)
    assert sm(torch.empty(0, 3), torch.ones(1)).shape == (0, 4)
    assert all(torch.equal(v, state[k]) for k, v in sm.state_dict().items())
