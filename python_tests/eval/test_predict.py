"""Ensemble predictions against plain models evaluated one point at a time, BatchNorm
statistics recomputed per point (and the model's own put back), and the loss plane against
weights built explicitly with Gram-Schmidt in float64."""

import numpy as np
import pytest
import torch
from torch import nn

import simplexkern as sk
from simplexkern.eval.predict import member_points, with_fresh_batchnorm


def _data(rng, n=40, classes=3):
    x = torch.randn(n, 1, 6, 6, generator=rng)
    y = torch.arange(n) % classes
    return sk.data.Dataset("toy", "classification", x, y, x[:17] + 0.1, y[:17], classes)


def _net(classes=3, bn=False):
    layers = (
        [nn.Conv2d(1, 4, 3, padding=1)]
        + ([nn.BatchNorm2d(4)] if bn else [])
        + [nn.ReLU(), nn.Flatten(), nn.Linear(144, classes)]
    )
    return nn.Sequential(*layers).double()


def _double(data):
    return sk.data.Dataset(
        data.name, data.task, data.x_train.double(), data.y_train, data.x_test.double(), data.y_test, data.n_classes
    )


def test_plain_members_average_probabilities(rng):
    torch.manual_seed(rng.initial_seed())
    data = _double(_data(rng))
    members = [_net().eval(), _net().eval()]
    probs = sk.eval.predict(members, data, batch_size=5)
    expected = torch.stack([torch.softmax(m(data.x_test), -1) for m in members]).mean(0)
    torch.testing.assert_close(probs, expected.float(), rtol=1e-6, atol=1e-7)
    per = sk.eval.predict(members, data, per_member=True)
    assert per.shape == (2, 17, 3)
    torch.testing.assert_close(per.mean(0), probs, rtol=0, atol=1e-7)


@pytest.mark.parametrize("bn", [False, True])
def test_simplex_member_is_the_mean_over_its_points(rng, bn):
    torch.manual_seed(rng.initial_seed())
    data = _double(_data(rng))
    model = sk.simplexify(_net(bn=bn), 3, noise=0.3)
    points = member_points(model, 7, seed=5, member=1)
    with_bn_before = (model.bn_points.clone(), [b.clone() for b in model.buffers()])
    probs = sk.eval.predict([_net().eval(), model], data, n_points=7, seed=5, per_member=True)[1]
    expected = []
    for c in points:
        plain = model.at(c, bn_stats="fresh")
        if bn:  # the point's own statistics from the training inputs, as the papers recompute them
            plain = with_fresh_batchnorm(plain, data.x_train)
        expected.append(torch.softmax(plain.eval()(data.x_test), -1))
    torch.testing.assert_close(probs, torch.stack(expected).mean(0).float(), rtol=1e-6, atol=1e-7)
    # the model's own tracked points and statistics are back as they were
    assert torch.equal(model.bn_points, with_bn_before[0])
    assert all(torch.equal(a, b) for a, b in zip(model.buffers(), with_bn_before[1]))


def test_batchnorm_needs_training_inputs(rng):
    model = sk.simplexify(_net(bn=True), 2, noise=0.3)
    x = torch.randn(4, 1, 6, 6, generator=rng, dtype=torch.float64)
    with pytest.raises(ValueError, match="BatchNorm"):
        sk.eval.predict(model, x)
    probs = sk.eval.predict(model, x, bn_data=x)
    assert probs.shape == (4, 3) and torch.allclose(probs.sum(1), torch.ones(4))
    with pytest.raises(ValueError, match="no val split"):
        sk.eval.predict(model, _data(rng), split="val")
    with pytest.raises(TypeError, match="members\\[0\\]"):
        sk.eval.predict(["not a model"], x)


def test_loss_plane_against_explicit_gram_schmidt(rng):
    torch.manual_seed(rng.initial_seed())
    data = _double(_data(rng))
    points = [_net() for _ in range(3)]
    grid = 5
    plane = sk.eval.loss_plane(points, data, grid=grid, margin=0.25)
    w = np.stack([torch.cat([p.detach().flatten() for p in m.parameters()]).numpy() for m in points])
    centre = w.mean(0)
    u = (w[1] - w[0]) / np.linalg.norm(w[1] - w[0])
    v = (w[2] - w[0]) - ((w[2] - w[0]) @ u) * u
    v /= np.linalg.norm(v)
    coords = np.stack([[(p - centre) @ u, (p - centre) @ v] for p in w])
    np.testing.assert_allclose(plane["points"], coords, rtol=1e-9, atol=1e-9)
    span = coords.max(0) - coords.min(0)
    np.testing.assert_allclose(
        plane["x"][[0, -1]], [coords[:, 0].min() - 0.25 * span[0], coords[:, 0].max() + 0.25 * span[0]], rtol=1e-9
    )
    for iy, ix in ((0, 0), (3, 1), (4, 4)):  # a plain model with the weights c + x u + y v
        weights = torch.from_numpy(centre + plane["x"][ix] * u + plane["y"][iy] * v)
        net = _net()
        torch.nn.utils.vector_to_parameters(weights, net.parameters())
        logits = net(data.x_test)
        loss = nn.functional.cross_entropy(logits, data.y_test).item()
        error = (logits.argmax(1) != data.y_test).double().mean().item()
        assert plane["test_loss"][iy, ix] == pytest.approx(loss, rel=1e-9)
        assert plane["test_error"][iy, ix] == pytest.approx(error, abs=1e-12)
    assert plane["train_loss"].shape == (grid, grid)
    for i, net in enumerate(points):  # the three points themselves
        loss = nn.functional.cross_entropy(net(data.x_train), data.y_train).item()
        assert plane["at_points"]["train_loss"][i] == pytest.approx(loss, rel=1e-9)
    with pytest.raises(ValueError, match="one line"):
        sk.eval.loss_plane([points[0], points[0], points[1]], data)


def test_curve_profile_and_plane_recompute_batchnorm_per_point(rng):
    torch.manual_seed(rng.initial_seed())
    data = _double(_data(rng))
    a, b = _net(bn=True), _net(bn=True)
    curve = sk.train.curve_model(a, b, "bezier", 3)
    profile = sk.eval.curve_profile(curve, data, n_t=3)
    seg_mid = torch.tensor([0.5, 0.0, 0.5], dtype=torch.float64)
    for name, point in (
        ("curve", curve.sampler.coefficients(torch.tensor(0.5, dtype=torch.float64), curve)),
        ("segment", seg_mid),
    ):
        plain = with_fresh_batchnorm(curve.at(point, bn_stats="fresh"), data.x_train)
        loss = nn.functional.cross_entropy(plain(data.x_test), data.y_test).item()
        assert profile[name]["test_loss"][1] == pytest.approx(loss, rel=1e-9)
    # the segment's length is the distance between the ends; the bend starts on the segment
    ends = curve.store.vertices().detach()[[0, 2]]
    assert profile["length"]["segment"] == pytest.approx(float((ends[0] - ends[1]).norm()), rel=1e-9)
    assert profile["length"]["curve"] == pytest.approx(profile["length"]["segment"], rel=1e-9)
    for metric, s in profile["summary"]["segment"].items():  # uniform speed: the weighted mean is the trapezoid mean
        v = profile["segment"][metric]
        assert s["length_weighted"] == pytest.approx((v[0] / 2 + v[1] + v[2] / 2) / 2, rel=1e-9)

    plane = sk.eval.loss_plane([a, b, _net(bn=True)], data, grid=3)
    assert np.isfinite(plane["train_loss"]).all() and plane["train_loss"].shape == (3, 3)


def test_loss_plane_of_float32_models(rng):
    data = _data(rng)  # float32, as models and data usually are
    points = [_net().float() for _ in range(3)]
    plane = sk.eval.loss_plane(points, data, grid=3, margin=0.0)
    for i, net in enumerate(points):
        loss = nn.functional.cross_entropy(net(data.x_test), data.y_test).item()
        assert plane["at_points"]["test_loss"][i] == pytest.approx(loss, rel=1e-5)
    assert plane["test_loss"][0, 0] >= 0 and plane["test_loss"].shape == (3, 3)


def test_regression_without_a_stated_noise_predicts_with_the_training_noise(tmp_path, rng):
    x = torch.randn(40, 3, generator=rng).numpy()
    y = x.sum(1)
    np.savez(tmp_path / "r.npz", x_train=x[:30], y_train=y[:30], x_test=x[30:], y_test=y[30:])
    data = sk.data.load(tmp_path / "r.npz", task="regression")
    assert data.noise_std is None and data.observation_noise == 1.0
    model = sk.models.for_data("mlp", data)
    mean, var = sk.eval.predict(model, data)
    torch.testing.assert_close(var, torch.ones_like(var))  # one plain member: only the observation noise
    m = sk.eval.regression_metrics(mean, var, data.y_test)
    assert np.isfinite(m["nll"])
