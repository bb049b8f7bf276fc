"""A refused call leaves everything as it was, and bad input gets a clear error: one test per
defect found by trying the public API as a new user would, and a property test over the
stateful methods with failures injected half-way."""

import subprocess
import sys

import pytest
import torch
from torch import nn

import simplexkern as sk
from simplexkern.nn import checkpoint


def _net():
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 36, 8),
        nn.BatchNorm1d(8),
        nn.ReLU(),
        nn.Linear(8, 3),
    )


def _model(rng):
    torch.manual_seed(rng.initial_seed())
    sm = sk.simplexify(_net(), 3, noise=0.2)
    sm.fix(0)
    sm.update_bn([torch.randn(6, 1, 6, 6, generator=rng)], torch.tensor([[1.0, 0, 0], [0.2, 0.3, 0.5]]))
    sm.metadata = {"note": "x"}
    return sm.eval()


def snapshot(sm):
    """Everything a call could change: state (vertices, statistics, tracked points, order),
    fixed mask, sampler, metadata, training mode."""
    return (
        {k: v.clone() for k, v in sm.state_dict().items()},
        sm.fixed_mask(),
        sm.sampler.config(),
        dict(sm.metadata),
        sm.training,
        sm.n_vertices,
    )


def assert_unchanged(sm, before, x):
    state, fixed, sampler, meta, training, n = before
    now = sm.state_dict()
    assert set(now) == set(state) and all(torch.equal(now[k], state[k]) for k in state)
    assert (sm.fixed_mask(), sm.sampler.config(), sm.metadata, sm.training, sm.n_vertices) == (
        fixed,
        sampler,
        meta,
        training,
        n,
    )
    was = sm.training
    sm.eval()
    out = sm(x, torch.tensor([[1.0, 0, 0], [0.2, 0.3, 0.5]]))  # the model still works
    sm.train(was)
    assert out.shape == (2, len(x), 3) and bool(torch.isfinite(out).all())


class Boom(Exception):
    pass


def _raising(after):
    """An iterable of batches that raises after ``after`` of them."""

    def gen(rng):
        for i in range(10):
            if i == after:
                raise Boom("the data source failed")
            yield torch.randn(4, 1, 6, 6, generator=rng)

    return gen


FAILURES = {  # name -> call that fails (on a model, with the test's generator and monkeypatch)
    "forward at an untracked point": lambda sm, rng, mp: sm(torch.randn(2, 1, 6, 6), torch.tensor([0.5, 0.5, 0.0])),
    "forward with a bad input": lambda sm, rng, mp: sm(torch.randn(2, 2, 6, 6), torch.tensor([1.0, 0, 0])),
    "forward failing inside a layer": lambda sm, rng, mp: (
        mp.setattr(sm.module[2], "forward", lambda x: (_ for _ in ()).throw(Boom("inside"))),
        sm(torch.randn(2, 1, 6, 6), torch.tensor([1.0, 0, 0])),
    ),
    "training forward at batch size 1": lambda sm, rng, mp: sm.train()(torch.randn(1, 1, 6, 6), n_samples=2),
    "update_bn with no batches": lambda sm, rng, mp: sm.update_bn([], torch.tensor([0.3, 0.3, 0.4])),
    "update_bn failing on the second batch": lambda sm, rng, mp: sm.update_bn(
        _raising(1)(rng), torch.tensor([0.3, 0.3, 0.4])
    ),
    "add_vertex with a bad init": lambda sm, rng, mp: sm.add_vertex("median"),
    "add_vertex with infinite noise": lambda sm, rng, mp: sm.add_vertex("mean", float("inf")),
    "add_vertex failing half-way": lambda sm, rng, mp: (
        mp.setattr(torch, "randn", lambda *a, **k: (_ for _ in ()).throw(Boom("randn"))),
        sm.add_vertex("mean", 0.1),
    ),
    "set_vertex with a wrong statistic": lambda sm, rng, mp: sm.set_vertex(
        1, {**_net().state_dict(), "1.running_mean": torch.zeros(5)}
    ),
    "set_vertex with a missing weight": lambda sm, rng, mp: sm.set_vertex(
        2, {k: v for k, v in _net().state_dict().items() if k != "7.bias"}
    ),
    "set_vertex with a non-tensor": lambda sm, rng, mp: sm.set_vertex(1, {**_net().state_dict(), "7.bias": [0, 0, 0]}),
    "fix of a missing vertex": lambda sm, rng, mp: sm.fix(3),
    "free failing half-way": lambda sm, rng, mp: (
        mp.setattr(torch, "tensor", lambda *a, **k: (_ for _ in ()).throw(Boom("tensor"))),
        sm.unfix(0),
    ),
    "log_volume of no simplexes": lambda sm, rng, mp: sm.log_volume([]),
}


@pytest.mark.parametrize("name", list(FAILURES))
def test_a_failing_call_leaves_the_model_as_it_was(name, rng, monkeypatch):
    sm = _model(rng)
    before = snapshot(sm)
    with pytest.raises((ValueError, TypeError, RuntimeError, Boom)):
        with monkeypatch.context() as mp:
            FAILURES[name](sm, rng, mp)
    if name == "training forward at batch size 1":
        sm.eval()
    assert_unchanged(sm, before, torch.randn(5, 1, 6, 6, generator=rng))


def test_checkpoint_save_and_load_failures_change_nothing(rng, tmp_path, monkeypatch):
    sm = _model(rng)
    sk.save_checkpoint(sm, tmp_path / "m.pt")
    on_disk = (tmp_path / "m.pt").read_bytes()
    before = snapshot(sm)
    monkeypatch.setattr(torch, "save", lambda *a, **k: (_ for _ in ()).throw(Boom("disk full")))
    with pytest.raises(Boom):
        sk.save_checkpoint(sm, tmp_path / "m.pt")
    monkeypatch.undo()
    assert (tmp_path / "m.pt").read_bytes() == on_disk and sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]
    assert_unchanged(sm, before, torch.randn(5, 1, 6, 6, generator=rng))
    template = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    state = {k: v.clone() for k, v in template.state_dict().items()}
    checkpoint.save(nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(5)), tmp_path / "p.pt")
    with pytest.raises(ValueError, match="other shapes"):
        checkpoint.load_module(tmp_path / "p.pt", model=template)  # nothing loaded half-way into the template
    assert all(torch.equal(v, state[k]) for k, v in template.state_dict().items())


def test_batch_size_one_in_training_is_refused_like_torch(rng):
    sm = sk.simplexify(nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)), 2, noise=0.1).train()
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        sm(torch.randn(1, 3, generator=rng), n_samples=3)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        nn.BatchNorm1d(4).train()(torch.randn(1, 4))  # the same rule as torch's own layer
    assert sm(torch.randn(2, 3, generator=rng), n_samples=3).shape == (3, 2, 4)


def test_one_module_at_two_places_is_one_layer_and_a_module_without_parameters_may_be_reused():
    shared = nn.Linear(4, 4)
    model = sk.simplexify(nn.ModuleDict({"a": nn.Sequential(shared), "b": nn.Sequential(shared)}))
    assert list(model.store.slots) == ["a.0.weight", "a.0.bias"] and model.module.a[0] is model.module.b[0]
    relu = nn.ReLU()
    assert sk.simplexify(nn.Sequential(nn.Linear(2, 2), relu, nn.Linear(2, 2), relu)).n_vertices == 1


def test_frozen_parameters_are_not_vertices():
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    net[0].weight.requires_grad_(False)
    with pytest.raises(ValueError, match="0.weight has requires_grad=False.*shared="):
        sk.simplexify(net)
    sm = sk.simplexify(net, 2, shared=["0"])  # kept as one frozen copy
    assert list(sm.store.slots) == ["2.weight", "2.bias"] and not sm.module[0].weight.requires_grad


def test_combine_checks_its_input_and_takes_any_layout(rng, monkeypatch):
    k, p = 4, 37
    store = torch.randn(p, k, generator=rng).T  # not contiguous along P
    coeffs = torch.rand(5, k, generator=rng)
    expected = coeffs.double() @ store.double()
    torch.testing.assert_close(sk.ops.combine(coeffs, store).double(), expected, rtol=1e-5, atol=1e-5)
    monkeypatch.setattr(sk.ops.vertices, "INTERPRET", False)  # the CPU path without Triton's interpreter
    torch.testing.assert_close(sk.ops.combine(coeffs, store).double(), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="coeffs must have shape \\(S, 4\\)"):
        sk.ops.combine(torch.rand(5, k + 1), store)
    with pytest.raises(ValueError, match="coeffs must have shape"):
        sk.ops.combine(torch.rand(k), store)
    with pytest.raises(ValueError, match="store must have shape"):
        sk.ops.combine(coeffs, torch.rand(p))
    with pytest.raises(ValueError, match="finite"):
        sk.ops.combine(torch.full((1, k), float("nan")), store)


def test_bad_arguments_name_themselves(rng):
    sm = sk.simplexify(nn.Sequential(nn.Linear(4, 3)), 2, noise=0.1)
    with pytest.raises(ValueError, match="simplices must be a non-empty list"):
        sm.log_volume([])
    x, c = torch.randn(4, generator=rng), torch.tensor([0.5, 0.5])  # unbatched, as nn.Linear takes it
    torch.testing.assert_close(sm(x, c), sm.at(c)(x))
    w, x = torch.randn(2, 3, 4, requires_grad=True), torch.randn(5, 4)
    for bad in (3, torch.tensor(1)):
        with pytest.raises(TypeError, match="trainable"):
            sk.ops.simplex_linear(x, w, None, torch.tensor([0.5, 0.5]), trainable=bad)
    with pytest.raises(TypeError, match="shared must be"):
        sk.simplexify(nn.Linear(2, 2), shared=3)
    empty = torch.zeros(3, 0, dtype=torch.float64)
    assert torch.equal(sk.geometry.pairwise_sqdist(empty), torch.zeros(3, 3, dtype=torch.float64))


@pytest.mark.parametrize("device", ["cuda:99", "tpu9"])
def test_command_refuses_a_bad_device_without_a_traceback(device):
    out = subprocess.run(
        [sys.executable, "-m", "simplexkern", "kernels", "--device", device],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2 and "--device" in out.stderr and "Traceback" not in out.stderr
