"""Checkpoints: atomic, code-free to load, complete, and checked on load."""

import os

import pytest
import torch
from torch import nn

import simplexkern as sk
from simplexkern.nn import checkpoint


def _model(rng):
    torch.manual_seed(rng.initial_seed())
    sm = sk.simplexify(sk.models.create("digits_convnet", width=4), 3, noise=0.2)
    sm.fix(0)
    sm.sampler = sk.nn.ComplexSampler([(0, 1), (0, 2)], weighting="uniform")
    return sm


def test_round_trip(tmp_path, rng):
    sm = _model(rng)
    path = tmp_path / "m.pt"
    sk.save_checkpoint(sm, path, metadata={"epochs": 3, "lr": 0.01})
    loaded = sk.load_checkpoint(path)
    assert torch.equal(loaded.store.vertices(), sm.store.vertices())
    assert loaded.fixed_mask() == [True, False, False] and loaded.n_vertices == 3
    assert loaded.sampler.config() == sm.sampler.config()
    assert loaded.metadata == {"epochs": 3, "lr": 0.01}
    assert loaded.architecture == {"name": "digits_convnet", "kwargs": {"width": 4}}
    x = torch.randn(2, 1, 8, 8, generator=rng)
    c = torch.tensor([[0.2, 0.3, 0.5]])
    torch.testing.assert_close(loaded.eval()(x, c), sm.eval()(x, c), rtol=0, atol=0)
    assert sorted(os.listdir(tmp_path)) == ["m.pt"]  # no temporary file left behind


def test_batchnorm_statistics_and_tracked_points_round_trip(tmp_path, rng):
    torch.manual_seed(rng.initial_seed())
    sm = sk.simplexify(sk.models.create("preresnet110", num_classes=3), 2, noise=0.1)
    coeffs = torch.tensor([[0.5, 0.5], [0.1, 0.9], [1.0, 0.0]])
    sm.update_bn([torch.randn(4, 3, 32, 32, generator=rng)], coeffs)
    sk.save_checkpoint(sm, tmp_path / "m.pt")
    loaded = sk.load_checkpoint(tmp_path / "m.pt").eval()
    assert torch.equal(loaded.bn_points, coeffs)
    x = torch.randn(2, 3, 32, 32, generator=rng)
    torch.testing.assert_close(loaded(x, coeffs), sm.eval()(x, coeffs), rtol=0, atol=0)


def test_the_state_keeps_its_keys_and_shapes():
    """Checkpoints of earlier versions load: the tracked points and each BatchNorm's per-point
    statistics keep their names."""
    sm = sk.simplexify(nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2)), 2)
    sm.update_bn([torch.randn(5, 3)], torch.tensor([[0.5, 0.5], [1.0, 0.0]]))
    assert {k: tuple(v.shape) for k, v in sm.state_dict().items()} == {
        "bn_points": (2, 2),
        "module.1.running_mean": (2, 4),
        "module.1.running_var": (2, 4),
        "module.1.num_batches_tracked": (2,),
        "store.trainable": (2, 34),
        "store.fixed": (0, 34),
        "store.order": (2,),
    }


def test_user_module_needs_its_architecture(tmp_path, rng):
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    sm = sk.simplexify(net, 2)
    sk.save_checkpoint(sm, tmp_path / "m.pt")
    with pytest.raises(ValueError, match="records no architecture"):
        sk.load_checkpoint(tmp_path / "m.pt")
    fresh = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    assert torch.equal(sk.load_checkpoint(tmp_path / "m.pt", model=fresh).store.vertices(), sm.store.vertices())
    with pytest.raises(ValueError, match="layers do not match"):
        sk.load_checkpoint(tmp_path / "m.pt", model=nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2)))
    checkpoint.save(sk.simplexify(net.double()), tmp_path / "d.pt")
    with pytest.raises(ValueError, match="float64 vertices"):
        sk.load_checkpoint(tmp_path / "d.pt", model=fresh)


def test_plain_state_dict_loads_as_vertex_0(tmp_path, rng):
    torch.manual_seed(rng.initial_seed())
    plain = sk.models.create("lenet5").eval()
    torch.save(plain.state_dict(), tmp_path / "plain.pt")
    sm = sk.load_checkpoint(tmp_path / "plain.pt", model="lenet5").eval()
    x = torch.randn(2, 1, 28, 28, generator=rng)
    torch.testing.assert_close(sm(x, torch.ones(1)), plain(x), rtol=0, atol=0)
    with pytest.raises(ValueError, match="plain state dict"):
        sk.load_checkpoint(tmp_path / "plain.pt")
    with pytest.raises(ValueError, match="does not match"):
        sk.load_checkpoint(tmp_path / "plain.pt", model="mlp")


def test_mismatches_fail_clearly(tmp_path, rng):
    sm = _model(rng)
    path = tmp_path / "m.pt"
    sk.save_checkpoint(sm, path)
    payload = torch.load(path, weights_only=True)

    def write(**changes):
        torch.save({**payload, **changes}, tmp_path / "bad.pt")
        return tmp_path / "bad.pt"

    with pytest.raises(ValueError, match="format version 2.*newer"):
        sk.load_checkpoint(write(format_version=2))
    with pytest.raises(ValueError, match="inconsistent"):
        sk.load_checkpoint(write(n_vertices=4))
    with pytest.raises(ValueError, match="inconsistent"):
        sk.load_checkpoint(write(fixed=[False, False, False]))
    with pytest.raises(ValueError, match="architecture is"):
        sk.load_checkpoint(path, model=sk.models.create("digits_convnet", width=8))
    with pytest.raises(ValueError, match="unknown sampler"):
        sk.load_checkpoint(write(sampler={"name": "sphere"}))
    with pytest.raises(ValueError, match="complex names vertices"):
        sk.load_checkpoint(write(complex=[[0, 5]]))
    with pytest.raises(ValueError, match="unexpected"):
        sk.load_checkpoint(write(state_dict={**payload["state_dict"], "extra": torch.zeros(1)}))
    with pytest.raises(ValueError, match="no file"):
        sk.load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a simplexkern checkpoint or state dict .its bytes are not a torch file"):
        sk.load_checkpoint(tmp_path / "junk.pt")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="holds a list"):
        sk.load_checkpoint(tmp_path / "list.pt")


class _Unpicklable:
    pass


def test_save_is_atomic_and_checks_arguments(tmp_path, rng):
    sm = _model(rng)
    path = tmp_path / "m.pt"
    sk.save_checkpoint(sm, path)
    before = path.read_bytes()
    with pytest.raises(ValueError, match="JSON"):
        sk.save_checkpoint(sm, path, metadata={"bad": _Unpicklable()})
    sm.metadata = {}
    original = torch.save

    def failing_save(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise OSError("disk full")

    torch.save = failing_save
    try:
        with pytest.raises(OSError, match="disk full"):
            sk.save_checkpoint(sm, path)
    finally:
        torch.save = original
    assert path.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["m.pt"]
    with pytest.raises(TypeError, match="SimplexModel or a torch.nn.Module"):
        sk.save_checkpoint({"weight": torch.zeros(2)}, path)
    with pytest.raises(ValueError, match="does not exist"):
        sk.save_checkpoint(sm, tmp_path / "no" / "m.pt")


def test_plain_module_and_training_state_round_trip(tmp_path, rng):
    torch.manual_seed(rng.initial_seed())
    net = sk.models.create("mlp", in_features=5, out_features=3)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    net(torch.randn(4, 5, generator=rng)).square().sum().backward()
    opt.step()
    checkpoint.save(net, tmp_path / "p.pt", metadata={"epoch": 4}, training_state={"optimizer": opt.state_dict()})
    meta, state = checkpoint.read_training_state(tmp_path / "p.pt")
    assert meta == {"epoch": 4}
    fresh = torch.optim.SGD(sk.models.create("mlp", in_features=5, out_features=3).parameters(), lr=0.1, momentum=0.9)
    fresh.load_state_dict(state["optimizer"])
    for a, b in zip(opt.state.values(), fresh.state.values()):
        assert torch.equal(a["momentum_buffer"], b["momentum_buffer"])
    loaded = checkpoint.load_module(tmp_path / "p.pt")  # the architecture is recorded
    assert all(torch.equal(p, q) for p, q in zip(loaded.parameters(), net.parameters()))
    as_simplex = sk.load_checkpoint(tmp_path / "p.pt")  # a plain module loads as vertex 0
    x = torch.randn(2, 5, generator=rng)
    torch.testing.assert_close(as_simplex(x, torch.ones(1)), net(x), rtol=0, atol=0)
    sk.save_checkpoint(sk.simplexify(net), tmp_path / "s.pt")
    with pytest.raises(ValueError, match="simplex model"):
        checkpoint.load_module(tmp_path / "s.pt")


def test_incomplete_or_corrupt_checkpoints_name_the_problem(tmp_path, rng):
    sm = _model(rng)
    sk.save_checkpoint(sm, tmp_path / "m.pt")
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    for field in ("sampler", "slots", "metadata", "state_dict"):
        torch.save({k: v for k, v in payload.items() if k != field}, tmp_path / "bad.pt")
        with pytest.raises(ValueError, match=f"no '{field}' field"):
            sk.load_checkpoint(tmp_path / "bad.pt")
    torch.save({**payload, "metadata": "{not json"}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="metadata is not JSON"):
        sk.load_checkpoint(tmp_path / "bad.pt")
    torch.save({**payload, "n_vertices": "3"}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="'n_vertices' field is a str"):
        sk.load_checkpoint(tmp_path / "bad.pt")


def test_checkpoints_with_the_stores_earlier_parameter_name_load(tmp_path, rng):
    """The store's trainable vertices were saved as ``store.free`` before they were named
    ``store.trainable``: such a checkpoint loads with the same vertices."""
    sm = sk.simplexify(nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)), 3, noise=0.1)
    sm.fix(0)
    state = sm.state_dict()
    state["store.free"] = state.pop("store.trainable")
    fresh = sk.simplexify(nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)))
    fresh.load_state_dict(state)
    assert fresh.fixed_mask() == [True, False, False]
    assert torch.equal(fresh.store.vertices(), sm.store.vertices())
