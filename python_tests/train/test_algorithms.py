"""The algorithms by their outcome on real data (scikit-learn's digits, an MLP): trained modes
learn, grown simplexes keep low loss and gain volume, ESPRO ensembles beat single modes in
NLL, curves bend around the barrier between modes, FGE snapshots sit at the cycle minima."""

import numpy as np
import pytest
import torch

import simplexkern as sk
from simplexkern.eval.predict import member_points, point_metrics
from simplexkern.train import reg_search, spro, volume_reg

EPOCHS = 30


@pytest.fixture(scope="module")
def digits():
    return sk.data.load("digits", val_fraction=0.2)  # 960 train, 240 validation (for choosing λ), 597 test


@pytest.fixture(scope="module")
def modes(digits):
    return sk.train.deep_ensemble("mlp", digits, 3, epochs=EPOCHS, seed=11, progress=False, device="cpu")


def _nll(members, data, **kw):
    return sk.eval.metrics(sk.eval.predict(members, data, **kw), data.y_test)["nll"]


def _train_error(model, data, coeffs=None):
    return point_metrics(model, coeffs, data.x_train, data.y_train)["error"]


def test_modes_learn_and_training_is_deterministic(digits, modes):
    for m in modes:
        assert sk.eval.metrics(sk.eval.predict(m, digits), digits.y_test)["accuracy"] > 0.93
        assert float(_train_error(m, digits)) < 0.01
    # members differ (own initialisation and data order) ...
    assert not torch.equal(modes[0].net[1].weight, modes[1].net[1].weight)
    # ... and a member depends only on (seed, its index), not on how many were trained
    kw = dict(epochs=2, seed=11, progress=False, device="cpu")
    two, three = sk.train.deep_ensemble("mlp", digits, 2, **kw), sk.train.deep_ensemble("mlp", digits, 3, **kw)
    for a, b in zip(two, three):
        for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.equal(p, q), name


def test_train_mode_leaves_the_model_given_and_repeats_exactly(digits):
    torch.manual_seed(0)
    net = sk.models.for_data("mlp", digits)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    a = sk.train.train_mode(net, digits, epochs=3, seed=5, progress=False, device="cpu")
    b = sk.train.train_mode(net, digits, epochs=3, seed=5, progress=False, device="cpu")
    c = sk.train.train_mode(net, digits, epochs=3, seed=6, progress=False, device="cpu")
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    assert not torch.equal(a.net[1].weight, c.net[1].weight)  # another seed: another data order


@pytest.fixture(scope="module")
def simplex(digits, modes, tmp_path_factory):
    """A 3-vertex simplex grown from mode 0, in two calls: to 2 vertices, then on to 3."""
    out = tmp_path_factory.mktemp("grow")
    two = sk.train.grow_simplex(
        modes[0], digits, 2, reg=10.0, vertex_epochs=30, seed=3, progress=False, device="cpu", out=out / "two"
    )
    three = sk.train.grow_simplex(two, digits, 3, reg=10.0, vertex_epochs=30, seed=3, progress=False, device="cpu")
    return two, three


def test_only_the_trainable_vertex_moves(modes, simplex):
    two, three = simplex
    mode = sk.simplexify(modes[0]).store.vertices()[0]
    assert torch.equal(two.store.vertices()[0], mode)  # the mode, bit for bit
    assert torch.equal(three.store.vertices()[:2], two.store.vertices())  # vertex 1 untouched while 2 trained
    assert three.fixed_mask() == [True, True, True] and three.n_vertices == 3


def test_grown_simplex_keeps_low_loss_and_gains_volume(digits, modes, simplex):
    _, three = simplex
    mode_error = float(_train_error(modes[0], digits))
    points = member_points(three, 25, seed=0, member=0)
    errors = _train_error(three, digits, points)
    assert float(errors.mean()) <= mode_error + 0.02 and float(errors.max()) <= mode_error + 0.05
    history = three.metadata["history"]
    log_v = [h["log_volume"] for h in history]
    assert [h["vertex"] for h in history] == [1, 2] and np.isfinite(log_v).all()
    assert log_v[1] > log_v[0]  # log V against the vertex count, as the paper plots it (Fig. 5)
    assert float(three.log_volume().detach()) == pytest.approx(log_v[1], rel=1e-6)
    # each vertex stands well clear of the face of the ones before it: its height h = k V_k / V_(k-1)
    # is far above the initial perturbation (noise 0.01 of the weights' RMS)
    rms = float(sk.simplexify(modes[0]).store.vertices().detach().pow(2).mean().sqrt())
    edge = float(np.exp(log_v[0]))
    height = 2 * float(np.exp(log_v[1])) / edge
    noise = 0.01 * rms * np.sqrt(three.store.n_columns)
    assert edge > 10 * noise and height > 10 * noise


def test_volume_regulariser_rewards_volume(digits, modes):
    kw = dict(vertex_epochs=8, seed=1, progress=False, device="cpu")
    flat = sk.train.grow_simplex(modes[1], digits, 2, reg=0.0, **kw)
    wide = sk.train.grow_simplex(modes[1], digits, 2, reg=10.0, **kw)
    assert float(wide.log_volume().detach()) > float(flat.log_volume().detach()) + 2


def test_espro_ensemble_has_lower_nll_than_its_modes(digits, modes):
    simplexes = sk.train.espro(modes, digits, 3, reg=30.0, vertex_epochs=30, seed=2, progress=False, device="cpu")
    assert len(simplexes) == 3 and all(s.n_vertices == 3 for s in simplexes)
    single = np.mean([_nll(m, digits) for m in modes])
    espro = _nll(simplexes, digits)
    assert espro < single and espro < _nll(modes, digits)  # below a single mode's, and the deep ensemble's
    # each simplex grew from its own mode
    for s, m in zip(simplexes, modes):
        assert torch.equal(s.store.vertices()[0], sk.simplexify(m).store.vertices()[0])


def test_choose_reg_scores_on_validation_and_survives_divergence(digits, modes):
    reg, simplexes, rows = sk.train.choose_reg(
        modes[:1], digits, (0.0, 1e30), n_vertices=2, vertex_epochs=2, seed=0, progress=False, device="cpu"
    )
    assert reg == 0.0 and len(simplexes) == 1 and [r["reg"] for r in rows] == [0.0, 1e30]
    assert rows[1]["diverged"] is not None and rows[1]["val_nll"] == float("inf")
    expected = sk.eval.metrics(sk.eval.predict(simplexes, digits, split="val"), digits.y_val)
    assert rows[0]["val_nll"] == pytest.approx(expected["nll"], rel=1e-9)
    with pytest.raises(ValueError, match="val_fraction"):
        sk.train.choose_reg(modes[:1], sk.data.load("digits"), (0.0,), progress=False)


def test_choose_reg_stops_wrecking_and_worse_half_lambdas_without_changing_the_others(digits, modes, tmp_path):
    """λ = 1000 wrecks the model in its first vertex epoch; of the other three the one whose
    simplex 0 has the highest validation NLL stops after simplex 0. The λ that finish are
    trained exactly as without stopping, and each row counts its own work."""
    settings = dict(n_vertices=2, vertex_epochs=2, seed=0, progress=False, device="cpu")
    regs = (0.0, 1.0, 3.0, 1000.0)
    reg, simplexes, rows = sk.train.choose_reg(modes[:2], digits, regs, out=tmp_path / "r", **settings)
    full_reg, _, full = sk.train.choose_reg(modes[:2], digits, regs, stop_early=False, **settings)
    epoch = 960 * 5  # 960 training examples x H = 5 points
    assert "first vertex epoch" in rows[3]["stopped"] and rows[3]["gradient_evaluations"] == epoch
    alive = sorted(rows[:3], key=lambda r: r["simplex0_val_nll"])
    assert [r["stopped"] is None for r in alive] == [True, True, False] and "worse half" in alive[2]["stopped"]
    assert [r["gradient_evaluations"] for r in alive] == [2 * 2 * epoch, 2 * 2 * epoch, 2 * epoch]
    assert all(r["gradient_evaluations"] == 2 * 2 * epoch for r in full)
    for r in alive[:2]:
        twin = full[regs.index(r["reg"])]
        assert r["val_nll"] == twin["val_nll"] and r["simplex0_val_nll"] == twin["simplex0_val_nll"]
    assert reg == min(alive[:2], key=lambda r: r["val_nll"])["reg"] and len(simplexes) == 2
    assert full[3]["val_nll"] > 2 * max(r["val_nll"] for r in full[:3])  # the stopped λ was a wreck
    if full_reg != reg:  # the λ stopped after simplex 0 would have won: it must have been the worse-half one
        assert full_reg == alive[2]["reg"]
    again = sk.train.choose_reg(modes[:2], digits, regs, out=tmp_path / "r", **settings)[2]  # resumed: same rows
    assert [{k: v for k, v in r.items() if k != "train_s"} for r in again] == [
        {k: v for k, v in r.items() if k != "train_s"} for r in rows
    ]


def test_choose_reg_grows_each_simplex_once_and_falls_back_when_the_kept_diverge(digits, modes, monkeypatch):
    """Without out, round 2 reuses round 1's simplex 0; a process group that trains nothing
    together is charged one simplex per dropped λ; when every kept λ diverges in round 2 the
    next in line grows the rest; a single λ is never stopped."""
    from simplexkern import distributed as dist

    settings = dict(n_vertices=2, vertex_epochs=1, n_samples=1, seed=0, progress=False, device="cpu", n_points=2)
    grown, real_grow = [], spro._grow
    monkeypatch.setattr(spro, "_grow", lambda *a, **kw: grown.append(kw["name"]) or real_grow(*a, **kw))
    monkeypatch.setattr(dist, "world", lambda: dist.World(0, 2))  # as under torchrun, distributed=None
    _, _, rows = sk.train.choose_reg(modes[:2], digits, (0.1, 0.3, 3.0), **settings)
    kept = sum(r["stopped"] is None for r in rows)
    assert kept == 2 and sorted(grown) == ["simplex_0"] * 3 + ["simplex_1"] * 2
    assert sorted(r["gradient_evaluations"] for r in rows) == [960, 2 * 960, 2 * 960]
    monkeypatch.undo()

    real_espro, tried = reg_search.espro, []

    def espro(members, data, reg, **kw):  # the better half by simplex 0 diverges on simplex 1
        tried.append((reg, len(members)))
        if len(members) > 1 and reg != worst:
            err = FloatingPointError("made to diverge")
            err.member, err.vertex, err.epoch = 1, 1, 0
            raise err
        return real_espro(members, data, reg=reg, **kw)

    regs = (0.1, 0.3, 3.0)
    first = sk.train.choose_reg(modes[:2], digits, regs, stop_early=False, **{**settings, "n_vertices": 2})[2]
    worst = max(first, key=lambda r: reg_search._nan_last(r["simplex0_val_nll"]))["reg"]
    monkeypatch.setattr(reg_search, "espro", espro)
    reg, simplexes, rows = sk.train.choose_reg(modes[:2], digits, regs, **settings)
    assert reg == worst and len(simplexes) == 2 and [r["reg"] for r in rows if r["diverged"]] != []
    assert sum(n == 2 for _, n in tried) == 3  # two kept, both diverged: the third grew its simplex 1
    monkeypatch.undo()
    (row,) = sk.train.choose_reg(modes[:2], digits, (1e4,), **settings)[2]
    assert row["stopped"] is None


def test_random_complex_normalisation_has_the_papers_scale(digits, modes, rng):
    model = sk.simplexify(modes[0])
    seed = rng.initial_seed() % 2**31
    vertices = volume_reg.random_vertices(model, 3, seed).double().numpy()
    # independent: log V from the Gram determinant of the edge vectors, in float64
    e = vertices[1:] - vertices[0]
    log_v = 0.5 * np.linalg.slogdet(e @ e.T)[1] - np.log(2.0)
    assert volume_reg.reg_for_vertex(model, 6.0, "random", 3, None, seed) == pytest.approx(6.0 / log_v, rel=1e-9)
    assert volume_reg.reg_for_vertex(model, 6.0, "none", 3, None, seed) == 6.0
    # the random vertices are fresh initialisations: nn.Linear's uniform(-1/sqrt(fan_in), 1/sqrt(fan_in))
    w = model.store.slot(torch.from_numpy(vertices), "net.3.weight")  # 128 -> 128
    assert float(w.std()) == pytest.approx(1 / np.sqrt(3 * 128), rel=0.05)
    assert not torch.equal(w[0], w[1])
    flat = sk.simplexify(torch.nn.Sequential(torch.nn.LayerNorm(4)))  # every random vertex the same: log V = -inf
    with pytest.raises(ValueError, match="log V"):
        volume_reg.reg_for_vertex(flat, 1.0, "random", 2, None, seed)


@pytest.mark.parametrize("weighting", ["volume", "uniform"])
def test_complex_joins_modes_through_low_loss_connectors(digits, modes, weighting):
    cx = sk.train.spro_complex(
        modes[:2], digits, 1, reg=3.0, weighting=weighting, vertex_epochs=15, seed=4, progress=False, device="cpu"
    )
    assert cx.n_vertices == 3 and cx.sampler.simplices == [(0, 2), (1, 2)] and cx.sampler.weighting == weighting
    for j in (0, 1):
        assert torch.equal(cx.store.vertices()[j], sk.simplexify(modes[j]).store.vertices()[0])
    worst_mode = max(float(_train_error(m, digits)) for m in modes[:2])
    points = member_points(cx, 20, seed=0, member=0)
    assert float(_train_error(cx, digits, points).max()) <= worst_mode + 0.03
    # the straight segment between the two modes is worse than the path through the connector
    mid_segment = torch.tensor([[0.5, 0.5, 0.0]])
    mid_path = torch.tensor([[0.0, 0.0, 1.0]])
    loss = {
        name: float(point_metrics(cx, c, digits.x_train, digits.y_train)["loss"])
        for name, c in (("segment", mid_segment), ("path", mid_path))
    }
    assert loss["path"] < loss["segment"]


def test_dimensionality_sweep_table(digits, modes):
    model, rows = sk.train.dimensionality_sweep(
        modes[:2], digits, 2, n_points=10, reg=3.0, vertex_epochs=6, seed=4, progress=False, device="cpu"
    )
    assert [r["connectors"] for r in rows] == [1, 2] and [r["vertices"] for r in rows] == [3, 4]
    for r in rows:
        assert np.isfinite(r["log_volume"]) and r["train_error_max"] < 0.1 and r["test_error_ensemble"] < 0.1
    # the first row's complex is the sub-complex of connector 0 alone
    expected = torch.logsumexp(model.log_volume([(0, 2), (1, 2)]).detach(), 0)
    assert rows[0]["log_volume"] == pytest.approx(float(expected), rel=1e-9)


@pytest.mark.parametrize("kind", ["bezier", "polychain"])
def test_curve_midpoint_is_far_below_the_segment(digits, modes, kind):
    curve = sk.train.train_curve(
        modes[0], modes[1], digits, kind, n_bends=3, epochs=40, seed=0, progress=False, device="cpu"
    )
    profile = sk.eval.curve_profile(curve, digits, n_t=5)
    mid_curve, mid_segment = profile["curve"]["train_loss"][2], profile["segment"]["train_loss"][2]
    assert mid_curve < 0.2 * mid_segment
    assert profile["summary"]["curve"]["train_loss"]["max"] < profile["summary"]["segment"]["train_loss"]["max"]
    # the ends are the modes themselves
    for t, m in ((0, modes[0]), (-1, modes[1])):
        assert profile["curve"]["train_loss"][t] == pytest.approx(profile["segment"]["train_loss"][t], rel=1e-6)
        ref = float(point_metrics(m, None, digits.x_train, digits.y_train)["loss"])
        assert profile["curve"]["train_loss"][t] == pytest.approx(ref, rel=1e-5)


def test_fge_snapshots_one_per_cycle_at_the_minimum(digits, modes):
    snaps = sk.train.fge(
        modes[0], digits, cycles=3, cycle_epochs=2, lr1=0.05, lr2=0.001, seed=0, progress=False, device="cpu"
    )
    steps = sk.data.batches.steps_per_epoch(len(digits.x_train), 64)
    assert len(snaps) == 3
    for c, s in enumerate(snaps):
        assert s.fge_snapshot["cycle"] == c and s.fge_snapshot["lr"] == pytest.approx(0.001, rel=1e-12)
        assert s.fge_snapshot["step"] == c * 2 * steps + steps  # the middle of the cycle
    assert not torch.equal(snaps[0].net[1].weight, snaps[1].net[1].weight)
    assert _nll(snaps, digits) < np.mean([_nll(s, digits) for s in snaps])  # diverse enough to ensemble
    with pytest.raises(ValueError, match="no middle step"):  # a one-step cycle has no triangle
        sk.train.fge(modes[0], digits, cycles=1, cycle_epochs=1, batch_size=5000, progress=False, device="cpu")


def test_regression_toy_trains_and_predicts_a_gaussian_mixture():
    data = sk.data.load("regression")
    torch.manual_seed(0)
    members = sk.train.deep_ensemble(
        "mlp", data, 2, epochs=150, batch_size=32, lr=0.001, seed=0, progress=False, device="cpu"
    )
    mean, var = sk.eval.predict(members, data)
    assert mean.shape == var.shape == (400, 1) and bool((var >= 0.1**2 - 1e-7).all())
    inside = (data.x_test.abs() < 0.2).flatten()  # near the middle cluster of training inputs (standardised)
    m = sk.eval.regression_metrics(mean[inside], var[inside], data.y_test[inside])
    assert m["rmse"] < 0.3
