"""Any model a user brings: for every model simplexify accepts, the forward at S points equals
the S plain models with each point's weights (``at``), in training and evaluation, whatever
the model's forward does with its tensors; gradients reach the trainable vertices as the
plain models' gradients say; every parameter varies per vertex. Float64 throughout."""

import warnings

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models import convnext, efficientnet, maxvit, resnet, swin_transformer, vgg, vision_transformer

import simplexkern as sk

from .model_zoo import (
    GPT,
    Decoder,
    EveryLayer,
    MadeInForward,
    OwnParameters,
    Pools,
    Recurrent,
    SequenceFirst,
    TokenFlatten,
    every_layer_input,
)

RTOL = 1e-8  # of the largest output entry: float64 outputs through at most a few dozen layers


def _no_dropout(model):
    """Random layers off, so that a training forward is a function of the weights."""
    for m in model.modules():
        if isinstance(m, nn.modules.dropout._DropoutNd) or type(m).__name__ == "StochasticDepth":
            m.p = 0.0
        for name in ("dropout", "attention_dropout", "stochastic_depth_prob"):
            if isinstance(getattr(m, name, None), float):
                setattr(m, name, 0.0)
    return model


@torch.no_grad()
def _no_zero_parameters(model, generator):
    """Parameters initialised to zeros (ViT's head, its class token) made random: a parameter
    that is zero at every vertex would pass any test."""
    for p in model.parameters():
        if not p.any():
            p.copy_(0.1 * torch.randn(p.shape, generator=generator, dtype=p.dtype))
    return model


def _shrink_classifier(model, features):
    """AlexNet's and VGG's 4096-wide classifier at width 32 (the layers and their order kept)."""
    head = model.classifier
    linears = [i for i, m in enumerate(head) if isinstance(m, nn.Linear)]
    for n, i in enumerate(linears):
        head[i] = nn.Linear(features if n == 0 else 32, 32 if n < len(linears) - 1 else 10)
    return model


def _vgg():
    layers = vgg.make_layers([8, "M", 16, "M", 16, 16, "M"], batch_norm=True)
    return _shrink_classifier(torchvision.models.VGG(layers, num_classes=10), 16 * 7 * 7)


# name -> (a small instance of the family, input shape): every torchvision classification family
TORCHVISION = {
    "alexnet": (lambda: _shrink_classifier(torchvision.models.alexnet(num_classes=10), 256 * 6 * 6), (2, 3, 64, 64)),
    "convnext": (
        lambda: convnext.ConvNeXt(
            [convnext.CNBlockConfig(8, 16, 1), convnext.CNBlockConfig(16, None, 1)], num_classes=10
        ),
        (2, 3, 32, 32),
    ),
    "densenet121": (lambda: torchvision.models.densenet121(num_classes=10), (4, 3, 32, 32)),
    "efficientnet_b0": (lambda: torchvision.models.efficientnet_b0(num_classes=10), (4, 3, 32, 32)),
    "efficientnet_v2": (
        lambda: efficientnet.EfficientNet(
            [
                efficientnet.FusedMBConvConfig(1, 3, 1, 8, 8, 1),
                efficientnet.FusedMBConvConfig(4, 3, 2, 8, 16, 1),
                efficientnet.MBConvConfig(4, 3, 2, 16, 24, 1),
            ],
            dropout=0.0,
            last_channel=64,
            num_classes=10,
        ),
        (4, 3, 32, 32),
    ),
    "googlenet": (
        lambda: torchvision.models.googlenet(num_classes=10, aux_logits=False, init_weights=False),
        (4, 3, 32, 32),
    ),
    "inception_v3": (
        lambda: torchvision.models.inception_v3(num_classes=10, aux_logits=False, init_weights=False),
        (2, 3, 75, 75),
    ),
    "maxvit": (
        lambda: maxvit.MaxVit(
            input_size=(32, 32),
            stem_channels=8,
            partition_size=4,
            block_channels=[8, 16],
            block_layers=[1, 1],
            head_dim=4,
            stochastic_depth_prob=0.0,
            num_classes=10,
        ),
        (2, 3, 32, 32),
    ),
    "mnasnet0_5": (lambda: torchvision.models.mnasnet0_5(num_classes=10), (4, 3, 32, 32)),
    "mobilenet_v2": (lambda: torchvision.models.mobilenet_v2(num_classes=10), (4, 3, 32, 32)),
    "mobilenet_v3_small": (lambda: torchvision.models.mobilenet_v3_small(num_classes=10), (4, 3, 32, 32)),
    "regnet_x_400mf": (lambda: torchvision.models.regnet_x_400mf(num_classes=10), (4, 3, 64, 64)),
    "regnet_y_400mf": (lambda: torchvision.models.regnet_y_400mf(num_classes=10), (4, 3, 64, 64)),
    "resnet18": (lambda: torchvision.models.resnet18(num_classes=10), (4, 3, 32, 32)),
    "resnext": (
        lambda: resnet.ResNet(resnet.Bottleneck, [1, 1, 1, 1], num_classes=10, groups=4, width_per_group=8),
        (4, 3, 32, 32),
    ),
    "shufflenet_v2_x0_5": (lambda: torchvision.models.shufflenet_v2_x0_5(num_classes=10), (4, 3, 32, 32)),
    "squeezenet1_0": (lambda: torchvision.models.squeezenet1_0(num_classes=10), (2, 3, 32, 32)),
    "swin": (
        lambda: swin_transformer.SwinTransformer([2, 2], 8, [1, 1], [2, 2], [4, 4], num_classes=10),
        (2, 3, 32, 32),
    ),
    "swin_v2": (
        lambda: swin_transformer.SwinTransformer(
            [2, 2],
            8,
            [1, 1],
            [2, 2],
            [4, 4],
            num_classes=10,
            block=swin_transformer.SwinTransformerBlockV2,
            downsample_layer=swin_transformer.PatchMergingV2,
        ),
        (2, 3, 32, 32),
    ),
    "vgg_bn": (_vgg, (2, 3, 32, 32)),
    "vit": (lambda: vision_transformer.VisionTransformer(32, 8, 2, 2, 16, 32, num_classes=10), (2, 3, 32, 32)),
}


def _tokens(shape, vocab):
    return lambda g: torch.randint(0, vocab, shape, generator=g)


def _floats(shape):
    return lambda g: torch.randn(shape, generator=g, dtype=torch.float64)


# name -> (plain model factory, input maker): the idioms a multi-point forward must follow
IDIOMS = {
    "tokens flattened into the batch": (TokenFlatten, _floats((3, 5, 4))),
    "tensors made in forward": (MadeInForward, _floats((3, 7, 5))),
    "sequence-first layout, per-example indexing": (SequenceFirst, _floats((3, 5, 8))),
    "MultiheadAttention, mask made in forward, tie in forward": (GPT, _tokens((3, 6), 11)),
    "nanoGPT (Linear attention, arange positions, tied head)": (
        lambda: sk.models.Transformer(length=6, vocab_size=13, dim=8, heads=2),
        _tokens((3, 6), 13),
    ),
    "transformer on signals": (
        lambda: sk.models.Transformer(4, length=12, in_channels=2, patch=3, dim=8, heads=2),
        _floats((3, 2, 12)),
    ),
    "LSTM and GRU": (Recurrent, _tokens((3, 5), 9)),
    "ConvTranspose decoder": (Decoder, _floats((4, 3))),
    "parameters held by modules": (OwnParameters, _floats((3, 2, 4, 4))),
    "pooling layers of every kind": (Pools, _floats((3, 2, 8, 8))),
    "every fused layer": (EveryLayer, lambda g: every_layer_input(4, g, torch.float64)),
}


def _points(S, k, generator):
    e = torch.empty(S, k, dtype=torch.float64).exponential_(generator=generator)
    return e / e.sum(1, keepdim=True)


def _close(y, reference, what):
    y, reference = y.detach(), reference.detach()
    scale = reference.abs().max()
    err = float((y - reference).abs().max() / scale)
    assert err <= RTOL, f"{what}: relative error {err:.1e}"
    return scale


def check_points(plain, make_input, rng, k=3, S=3):
    """The multi-point forward and its gradients against the plain models at S points."""
    torch.manual_seed(rng.initial_seed())
    model = sk.simplexify(_no_zero_parameters(_no_dropout(plain).double(), rng), k, noise=0.1)
    model.fix(0)
    coeffs = _points(S, k, rng)
    x = make_input(rng)
    if model.bn_points.shape[0]:
        model.update_bn([make_input(rng) for _ in range(2)], coeffs)
    for mode in ("eval", "train"):
        model.train(mode == "train")
        y = model(x, coeffs)
        outputs = []
        for s in range(S):
            at = model.at(coeffs[s], bn_stats="tracked" if mode == "eval" else "fresh").train(mode == "train")
            outputs.append(at(x))
            scale = _close(y[s], outputs[-1], f"{mode}, point {s}")
        assert (outputs[0] - outputs[1]).abs().max() > 1e4 * RTOL * scale  # the points differ: the test has teeth
    weights = torch.randn(y.shape, generator=rng, dtype=torch.float64)
    model.zero_grad()
    (model(x, coeffs) * weights).sum().backward()
    _, expected = plain_gradients(model, coeffs, x, lambda s, out: (out * weights[s]).sum())
    torch.testing.assert_close(model.store.trainable.grad, expected, rtol=1e-7, atol=1e-7 * float(expected.abs().max()))
    return model, x


def plain_gradients(model, coeffs, x, loss):
    """The plain models' outputs at the points (training mode, fresh statistics, float64) and
    what the trainable vertices' gradient must be: dV_i = sum_s c_si dW_s of ``loss(s, output)``."""
    outputs, expected = [], 0
    for s in range(coeffs.shape[0]):
        at = model.at(coeffs[s], bn_stats="fresh").double().train()
        outputs.append(at(x.double() if x.is_floating_point() else x))
        loss(s, outputs[-1]).backward()
        grads = [at.get_parameter(name).grad for name in model.store.slots]
        assert all(g is not None for g in grads), "a vertex parameter the plain model does not use"
        expected = expected + coeffs[s].double().cpu()[:, None] * torch.cat([g.reshape(-1).cpu() for g in grads])
    return outputs, expected[model.store.order.tolist()[model.store.n_fixed :]]


@pytest.mark.parametrize("name", list(TORCHVISION))
def test_torchvision_models_at_every_point_equal_their_plain_models(name, rng):
    factory, shape = TORCHVISION[name]
    check_points(factory(), _floats(shape), rng)


@pytest.mark.parametrize("name", list(IDIOMS))
def test_forward_code_idioms_never_mix_the_points(name, rng):
    factory, make_input = IDIOMS[name]
    model, x = check_points(factory(), make_input, rng)
    # every parameter is a vertex parameter: changing it in one vertex changes that vertex's output only
    vertices = torch.eye(model.n_vertices, dtype=torch.float64)
    if model.bn_points.shape[0]:  # fixed statistics: a bias before a BatchNorm then changes its output
        model.update_bn([x], vertices)
    model.eval()
    with torch.no_grad():
        before = model(x, vertices)
        for name_, (offset, shape) in model.store.slots.items():
            row = model.store.n_fixed  # the first trainable vertex
            vertex = int(model.store.order[row])
            part = model.store.slot(model.store.trainable[0], name_)
            saved = part.clone()
            part.add_(torch.randn(part.shape, generator=rng, dtype=torch.float64))
            after = model(x, vertices)
            part.copy_(saved)
            changed = (after - before).flatten(1).abs().amax(1) > 1e-12
            assert changed.tolist() == [i == vertex for i in range(model.n_vertices)], name_


def test_every_parameter_is_a_vertex_parameter_and_ties_stay_tied():
    gpt = sk.models.Transformer(length=6, vocab_size=13, dim=8, heads=2)
    model = sk.simplexify(gpt, 2)
    n_params = sum(p.numel() for p in gpt.parameters())  # parameters() counts the tied tensor once
    assert model.store.n_columns == n_params and list(model.parameters()) == [model.store.trainable]
    assert "head.weight" not in model.store.slots  # one vertex entry for the tied pair ...
    plain = model.at(torch.tensor([0.3, 0.7]))
    assert plain.head.weight is plain.embed.weight  # ... tied again at every point
    state = model.vertex_state_dict(1)
    assert torch.equal(state["head.weight"], state["embed.weight"])
    bad = dict(state, **{"head.weight": state["head.weight"] + 1})
    with pytest.raises(ValueError, match="head.weight.*ties"):
        model.set_vertex(1, bad)
    with pytest.raises(ValueError, match="head.weight is tied to embed.weight.*both modules in shared= or neither"):
        sk.simplexify(gpt, shared=["head"])  # it would be untied: one shared copy, one vertex parameter
    frozen = sk.simplexify(gpt, 2, shared=["head", "embed"])
    assert "embed.weight" not in frozen.store.slots and frozen.module.head.weight is frozen.module.embed.weight


def test_a_module_at_two_places_is_one_set_of_vertex_weights(rng):
    layer = nn.Linear(4, 4)
    plain = nn.Sequential(layer, nn.Tanh(), layer).double()
    model = sk.simplexify(plain, 2, noise=0.5)
    assert list(model.store.slots) == ["0.weight", "0.bias"]
    x = torch.randn(3, 4, generator=rng, dtype=torch.float64)
    c = _points(2, 2, rng)
    y = model(x, c)
    for s in range(2):
        at = model.at(c[s])
        assert at[0] is at[2]
        torch.testing.assert_close(y[s], at(x), rtol=1e-12, atol=1e-12)


def test_a_model_vmap_cannot_follow_is_evaluated_point_by_point(rng):
    class DataDependent(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(3, 3), nn.Linear(3, 2)

        def forward(self, x):
            h = self.a(x)
            return self.b(h if h.sum() > 0 else -h)  # a branch on a value: vmap cannot batch it

    plain = DataDependent().double()
    model = sk.simplexify(plain, 3, noise=0.5)
    x = torch.randn(4, 3, generator=rng, dtype=torch.float64)
    c = _points(3, 3, rng)
    model.point_evaluation = "vmap"
    with pytest.raises(RuntimeError, match=r"cannot evaluate the points .*in module 'the model' \(DataDependent\)"):
        model(x, c)
    model.point_evaluation = "auto"
    with pytest.warns(UserWarning, match="one at a time"):
        y = model(x, c)
    for s in range(3):
        torch.testing.assert_close(y[s], model.at(c[s])(x), rtol=1e-12, atol=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # decided once: no second trial, no second warning
        torch.testing.assert_close(model(x, c), y, rtol=0, atol=0)


def test_state_that_all_points_would_share_is_refused(rng):
    class Smoother(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 3)
            self.register_buffer("average", torch.zeros(3))

        def forward(self, x):
            y = self.fc(x)
            self.average.mul_(0.9).add_(0.1 * y.detach().mean(0))  # a running average of one point's outputs
            return y

    model = sk.simplexify(Smoother(), 2)
    model.module.average.fill_(1.0)  # the failed vmap pass scales it before it fails
    with pytest.raises(TypeError, match="buffer 'average', which all points would share"):
        model(torch.randn(4, 3, generator=rng), n_samples=2)
    assert model.module.average.eq(1).all()  # put back
    with pytest.raises(TypeError, match=r"running statistics.*track_running_stats=False"):
        sk.simplexify(nn.Sequential(nn.Conv2d(1, 2, 3), nn.InstanceNorm2d(2, affine=True, track_running_stats=True)))
    with pytest.raises(ValueError, match="max_norm"):
        sk.simplexify(nn.Embedding(5, 3, max_norm=1.0))


def test_random_layers_vmap_cannot_draw_per_point_draw_once_for_all_points(rng):
    class Noisy(nn.Module):
        """Stochastic depth as torchvision writes it: a mask drawn in place on a new tensor."""

        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 3)

        def forward(self, x):
            keep = torch.empty(x.shape[0], 1, dtype=x.dtype).bernoulli_(0.5)
            return self.fc(x) * keep

    model = sk.simplexify(Noisy(), 2, noise=0.5).train()
    x = torch.randn(64, 3, generator=rng)
    with pytest.warns(UserWarning, match="the same at all"):
        y = model(x, torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    dropped = y.abs().sum(-1) == 0
    assert torch.equal(dropped[0], dropped[1]) and 0 < int(dropped[0].sum()) < 64


def test_checkpoints_of_generic_and_tied_models_round_trip(tmp_path, rng):
    torch.manual_seed(rng.initial_seed())
    plain = sk.models.create("transformer", num_classes=None, length=6, vocab_size=13, dim=8, heads=2)
    model = sk.simplexify(plain, 3, noise=0.2)
    model.fix(0)
    sk.save_checkpoint(model, tmp_path / "gpt.pt")
    loaded = sk.load_checkpoint(tmp_path / "gpt.pt")  # rebuilt from the recorded architecture
    x, c = torch.randint(0, 13, (2, 6), generator=rng), _points(3, 3, rng).float()
    torch.testing.assert_close(loaded(x, c), model(x, c), rtol=0, atol=0)
    assert loaded.fixed_mask() == [True, False, False] and list(loaded.store.slots) == list(model.store.slots)
    # a model built outside simplexkern.models: its fresh instance is given
    other = sk.simplexify(OwnParameters(), 2, noise=0.2)
    sk.save_checkpoint(other, tmp_path / "own.pt")
    again = sk.load_checkpoint(tmp_path / "own.pt", model=OwnParameters())
    y = torch.randn(2, 2, 4, 4, generator=rng)
    torch.testing.assert_close(again(y, torch.tensor([0.4, 0.6])), other(y, torch.tensor([0.4, 0.6])), rtol=0, atol=0)
    # vertex i as a plain state dict, and back
    state = other.vertex_state_dict(1)
    fresh = OwnParameters()
    fresh.load_state_dict(state)
    torch.testing.assert_close(fresh(y), other(y, torch.tensor([0.0, 1.0])), rtol=1e-6, atol=1e-6)
    again.set_vertex(0, state)
    torch.testing.assert_close(again(y, torch.tensor([1.0, 0.0])), fresh(y), rtol=1e-6, atol=1e-6)


def _eager_and_compiled(model, x, coeffs, loss):
    """[(outputs, trainable gradient of ``loss``)] of the model run eagerly, then compiled."""
    results = []
    for forward in (model, torch.compile(model, backend="aot_eager", fullgraph=True)):
        model.zero_grad()
        out = forward(x, coeffs)
        loss(out).backward()
        results.append((out.detach(), model.store.trainable.grad.clone()))
    return results


def test_compiled_forward_and_backward_of_the_generic_path_match_eager(rng):
    torch.manual_seed(rng.initial_seed())
    for plain, x in (
        (TokenFlatten(), torch.randn(3, 5, 4, generator=rng)),
        (sk.models.Transformer(length=6, vocab_size=13, dim=8, heads=2), torch.randint(0, 13, (3, 6))),
    ):
        model = sk.simplexify(plain, 3, noise=0.2).train()
        model.fix(0)
        grads = _eager_and_compiled(model, x, _points(4, 3, rng).float(), lambda out: out.square().mean())
        torch.testing.assert_close(grads[1][0], grads[0][0], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(grads[1][1], grads[0][1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", ["torch", "reference", "triton"])
def test_every_backend_of_the_fused_layers_eager_and_compiled(backend, rng):
    """The fused ops under the points' vmap on every backend (the triton one on the CPU under
    TRITON_INTERPRET=1, the path a GPU takes): eagerly (their vmap rule applied on the
    unwrapped tensors) against the plain models, and under torch.compile (the custom ops'
    registered rule) against eager, forward and trainable gradients."""
    if backend == "triton" and not sk.ops.dispatch.INTERPRET:
        pytest.skip("the triton backend runs on CPU tensors only under TRITON_INTERPRET=1")
    torch.manual_seed(rng.initial_seed())
    model = sk.simplexify(EveryLayer(), 3, noise=0.2).train()
    model.fix(0)
    model.backend = backend
    coeffs, x = _points(3, 3, rng).float(), every_layer_input(4, rng)
    results = _eager_and_compiled(model, x, coeffs, lambda out: out.square().sum())
    outputs, expected = plain_gradients(model, coeffs, x, lambda s, out: out.square().sum())
    torch.testing.assert_close(results[0][0].double(), torch.stack(outputs), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(results[0][1].double(), expected, rtol=1e-3, atol=1e-3 * float(expected.abs().max()))
    torch.testing.assert_close(results[1][0], results[0][0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(results[1][1], results[0][1], rtol=1e-4, atol=1e-4 * float(results[0][1].abs().max()))
