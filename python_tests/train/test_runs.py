"""Runs: checkpoints after every epoch, resume after a kill equal to the uninterrupted run,
a named error on a non-finite loss with the last checkpoint intact, refusal of another run's
folder, and a loop that reads no tensor on the host per step."""

import copy
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import simplexkern as sk
from simplexkern.nn import checkpoint
from simplexkern.train import loop
from simplexkern.train.loop import Phase, run_phase, steps_per_epoch


@pytest.fixture(scope="module")
def digits():
    return sk.data.load("digits")


STEPS = steps_per_epoch(1200, 64)  # digits: 1200 training images, batch 64

SCRIPT = """
import sys, torch
torch.set_num_threads(1)
import simplexkern as sk
out, modes, result = sys.argv[1], sys.argv[2:4], sys.argv[4]
simplexes = sk.train.espro(modes, sk.data.load("digits"), 3, reg=3.0, vertex_epochs=12, seed=7, progress=False,
                           device="cpu", out=out)
torch.save([s.store.vertices().detach() for s in simplexes], result)
"""


def _espro(out, modes, result):
    return subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(out), *map(str, modes), str(result)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def test_resume_after_a_kill_equals_the_uninterrupted_run(tmp_path, digits):
    sk.train.deep_ensemble("mlp", digits, 2, epochs=10, seed=1, progress=False, device="cpu", out=tmp_path / "modes")
    modes = [tmp_path / "modes" / f"mode_{j}.pt" for j in range(2)]  # ESPRO from checkpoints of the modes
    whole = _espro(tmp_path / "whole", modes, tmp_path / "whole.pt")
    assert whole.wait(timeout=300) == 0, whole.stderr.read().decode()

    killed = _espro(tmp_path / "resumed", modes, tmp_path / "resumed.pt")
    progress = tmp_path / "resumed" / "simplex_0.pt"
    deadline = time.time() + 120
    while time.time() < deadline:  # kill once vertex 1 of simplex 0 has a few epochs behind it
        if progress.exists():
            meta, _ = checkpoint.read_training_state(progress)
            if meta.get("vertices_done") == 1 and meta.get("epoch", 0) >= 3:
                break
        time.sleep(0.01)
    os.kill(killed.pid, signal.SIGKILL)
    assert killed.wait(timeout=60) == -signal.SIGKILL
    meta, state = checkpoint.read_training_state(progress)
    assert not meta["done"] and state["optimizer"]["state"]  # an in-progress checkpoint with momentum buffers

    resumed = _espro(tmp_path / "resumed", modes, tmp_path / "resumed.pt")
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read().decode()
    for a, b in zip(torch.load(tmp_path / "whole.pt"), torch.load(tmp_path / "resumed.pt")):
        assert torch.equal(a, b)


def test_checkpoints_every_epoch_and_a_finished_run_returns_at_once(tmp_path, digits):
    torch.manual_seed(0)
    net = sk.models.for_data("mlp", digits)
    model = sk.train.train_mode(net, digits, epochs=3, seed=0, progress=False, device="cpu", out=tmp_path)
    meta, state = checkpoint.read_training_state(tmp_path / "mode.pt")
    assert meta["done"] and meta["epoch"] == 3 and meta["algorithm"] == "train_mode" and state is None
    loaded = checkpoint.load_module(tmp_path / "mode.pt")  # the architecture is recorded: no model needed
    assert all(torch.equal(p, q) for p, q in zip(loaded.parameters(), model.parameters()))
    start = time.perf_counter()
    again = sk.train.train_mode(net, digits, epochs=3, seed=0, progress=False, device="cpu", out=tmp_path)
    assert time.perf_counter() - start < 2.0
    assert all(torch.equal(p, q) for p, q in zip(again.parameters(), model.parameters()))


def test_another_runs_folder_is_refused(tmp_path, digits):
    torch.manual_seed(0)
    net = sk.models.for_data("mlp", digits)
    sk.train.train_mode(net, digits, epochs=1, seed=0, progress=False, device="cpu", out=tmp_path)
    with pytest.raises(ValueError, match="settings that differ: epochs, lr"):
        sk.train.train_mode(net, digits, epochs=2, lr=0.1, seed=0, progress=False, device="cpu", out=tmp_path)
    with pytest.raises(ValueError, match="other starting weights"):
        sk.train.train_mode(
            sk.models.for_data("mlp", digits), digits, epochs=1, seed=0, progress=False, device="cpu", out=tmp_path
        )
    with pytest.raises(TypeError, match="simplexkern.data.Dataset"):
        sk.train.train_mode(net, "digits", epochs=1, progress=False, device="cpu")
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="not a folder"):
        sk.train.train_mode(net, digits, epochs=1, progress=False, device="cpu", out=tmp_path / "file")


class Poison(nn.Module):
    """Turns its input into NaN from its ``after``-th call in training on."""

    def __init__(self, after):
        super().__init__()
        self.after, self.calls = after, 0

    def forward(self, x):
        if self.training:
            self.calls += 1
        return x * float("nan") if self.training and self.calls > self.after else x


def test_a_non_finite_loss_stops_with_a_named_error_and_keeps_the_last_checkpoint(tmp_path, digits):
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10), Poison(after=2 * STEPS + 4))
    message = f"mode: the loss or the weights are not finite .* epoch 3, step 5 of {STEPS}"
    with pytest.raises(FloatingPointError, match=message):
        sk.train.train_mode(net, digits, epochs=5, progress=False, device="cpu", out=tmp_path)
    meta, state = checkpoint.read_training_state(tmp_path / "mode.pt")
    assert meta["epoch"] == 2 and not meta["done"]
    fresh = nn.Sequential(nn.Flatten(), nn.Linear(64, 10), Poison(after=10**9))
    kept = checkpoint.load_module(tmp_path / "mode.pt", model=fresh)
    assert all(torch.isfinite(p).all() for p in kept.parameters())
    assert all(torch.isfinite(b["momentum_buffer"]).all() for b in state["optimizer"]["state"].values())


def test_the_error_names_the_member_and_vertex(digits):
    healthy = nn.Sequential(nn.Flatten(), nn.Linear(64, 10), Poison(after=10**9))
    sick = nn.Sequential(nn.Flatten(), nn.Linear(64, 10), Poison(after=STEPS + 2))
    message = f"simplex 1, vertex 1: the loss or the weights are not finite .* epoch 2, step 3 of {STEPS}"
    with pytest.raises(FloatingPointError, match=message):
        sk.train.espro([healthy, sick], digits, 2, vertex_epochs=3, progress=False, device="cpu")


def _count_host_reads(monkeypatch):
    counts = {"n": 0}
    for owner, name in [
        (torch.Tensor, n) for n in ("item", "tolist", "__bool__", "__int__", "__float__", "__index__", "nonzero")
    ] + [(torch, "nonzero")]:
        original = getattr(owner, name)

        def counted(*args, _original=original, **kwargs):
            counts["n"] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(owner, name, counted)
    return counts


def _convnet_bn():
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 64, 10)
    )


@pytest.mark.parametrize("kind", ["plain", "simplex", "complex", "curve"])
@pytest.mark.parametrize("arch", ["mlp", "convnet", "convnet_bn"])
def test_the_loop_reads_no_tensor_on_the_host_per_step(monkeypatch, digits, kind, arch):
    """Forward at H points, loss, log V, backward and SGD step read nothing on the host: no
    item, tolist, bool, int, float, index or nonzero (one read of the running loss per epoch)."""
    torch.manual_seed(0)
    model = _convnet_bn() if arch == "convnet_bn" else sk.models.for_data(arch, digits)
    phase = Phase(epochs=2, lr=0.01, read_every=10**6)
    if kind != "plain":
        model = sk.simplexify(model, 1)
        model.fix(0)
        model.add_vertex("mean", 0.01)
        model.add_vertex("mean", 0.01)
        simplices = [(0, 2), (1, 2)] if kind == "complex" else None
        model.sampler = {
            "simplex": sk.nn.SimplexSampler(),
            "complex": sk.nn.ComplexSampler([(0, 2), (1, 2)]),
            "curve": sk.nn.CurveSampler("bezier"),
        }[kind]
        phase = Phase(epochs=2, lr=0.01, n_samples=3, reg=1.0, reg_simplices=simplices, read_every=10**6)
    counts = _count_host_reads(monkeypatch)
    run_phase(model, digits, phase, key=(0,), device=torch.device("cpu"))
    assert counts["n"] == 2  # one read of the running loss per epoch, nothing per step


def test_a_compiled_training_step_trains_as_the_eager_one():
    """Phase(compile=True): the step's loss under torch.compile (Inductor) gives the eager
    run's weights and BatchNorm statistics."""
    torch.manual_seed(0)
    x, y = torch.randn(96, 1, 8, 8), torch.randint(0, 4, (96,))
    data = sk.data.Dataset("toy", "classification", x, y, x[:10], y[:10], 4)
    plain = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(256, 4))
    model = sk.simplexify(plain, 1)
    model.fix(0)
    model.add_vertex("mean", 0.05)
    runs = []
    for compiled in (False, True):
        m = copy.deepcopy(model)
        run_phase(
            m,
            data,
            Phase(epochs=2, lr=0.05, n_samples=3, reg=0.5, batch_size=32, compile=compiled),
            key=(0,),
            device=torch.device("cpu"),
        )
        runs.append(m)
    torch.testing.assert_close(runs[1].store.trainable, runs[0].store.trainable, rtol=1e-5, atol=1e-6)
    for a, b in zip(runs[1].buffers(), runs[0].buffers()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_the_whole_step_compiles_with_compiled_autograd():
    """Forward at H points, loss, -λ log V, backward (compiled autograd) and the SGD step under
    torch.compile: the only graph breaks are torch's own (the backward call handed to compiled
    autograd, the optimizer's deliberate breaks), none in simplexkern's forward or in the
    backward of its C++ geometry ops; three steps end at the eager weights."""
    torch.manual_seed(0)
    plain = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8 * 8, 10)
    )
    model = sk.simplexify(plain)
    for _ in range(2):
        model.add_vertex("mean", noise=0.05)
    model.fix(0)
    model.fix(1)
    phase = Phase(epochs=1, lr=0.1, n_samples=3, reg=0.3)
    x, y = torch.randn(4, 3, 8, 8), torch.randint(0, 10, (4,))
    coeffs = model.sampler.sample(3, model, torch.Generator().manual_seed(0))

    def step_of(m):
        optimizer = torch.optim.SGD([m.store.trainable], lr=0.1, momentum=0.9, weight_decay=5e-4)

        def step(x, y, coeffs):
            loss = loop.step_loss(m, F.cross_entropy, phase, x, y, coeffs)
            m.store.trainable.grad = None
            loss.backward()
            optimizer.step()
            return loss

        return step

    eager_model, compiled_model = model, copy.deepcopy(model)
    eager = step_of(eager_model)
    torch._dynamo.reset()
    with torch._dynamo.config.patch(compiled_autograd=True):
        compiled = torch.compile(step_of(compiled_model))
        for _ in range(3):
            torch.testing.assert_close(compiled(x, y, coeffs), eager(x, y, coeffs), rtol=1e-5, atol=1e-6)
        explained = torch._dynamo.explain(step_of(copy.deepcopy(model)))(x, y, coeffs)
    torch.testing.assert_close(compiled_model.store.trainable, eager_model.store.trainable, rtol=1e-5, atol=1e-6)
    reasons = [r.reason.splitlines()[0] for r in explained.break_reasons]
    allowed = ("Unsupported Tensor.backward() call", "Call to `torch._dynamo.graph_break()`")
    assert reasons and all(r.startswith(allowed) for r in reasons), reasons


class NanGradient(nn.Module):
    """Finite outputs, but a NaN gradient from its ``at``-th call in training on."""

    def __init__(self, at):
        super().__init__()
        self.at, self.calls = at, 0

    def forward(self, x):
        if not self.training:
            return x
        self.calls += 1
        if self.calls < self.at:
            return x
        return x + 0 * torch.sqrt(x - x.detach() - 1)  # value x, gradient NaN


def test_non_finite_weights_after_a_finite_loss_are_caught_at_their_step(tmp_path, digits):
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10), NanGradient(at=STEPS))  # the last step of epoch 1
    with pytest.raises(FloatingPointError, match=f"weights are not finite .* epoch 1, step {STEPS} of {STEPS}"):
        sk.train.train_mode(net, digits, epochs=3, progress=False, device="cpu", out=tmp_path)
    assert not (tmp_path / "mode.pt").exists()  # epoch 1 ended with NaN weights: never checkpointed


def test_dropout_follows_the_seed_not_the_global_generator(digits):
    def net():
        torch.manual_seed(0)
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, 10))

    runs = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        runs.append(sk.train.train_mode(net(), digits, epochs=2, seed=5, progress=False, device="cpu"))
    assert all(torch.equal(p, q) for p, q in zip(runs[0].parameters(), runs[1].parameters()))
    other = sk.train.train_mode(net(), digits, epochs=2, seed=6, progress=False, device="cpu")
    assert not torch.equal(other[1].weight, runs[0][1].weight)


def test_checkpoint_after_every_epoch(tmp_path, digits, monkeypatch):
    saved = []
    original = checkpoint.save

    def recording(model, path, metadata=None, training_state=None):
        saved.append((path.name, metadata.get("epoch"), metadata.get("done"), training_state is not None))
        return original(model, path, metadata, training_state)

    monkeypatch.setattr(checkpoint, "save", recording)
    torch.manual_seed(0)
    sk.train.train_mode(sk.models.for_data("mlp", digits), digits, epochs=3, progress=False, device="cpu", out=tmp_path)
    assert saved == [
        ("mode.pt", 1, False, True),
        ("mode.pt", 2, False, True),
        ("mode.pt", 3, False, True),
        ("mode.pt", 3, True, False),
    ]


def _interrupted(monkeypatch, after, fn):
    """Runs ``fn`` with a KeyboardInterrupt after ``after`` training steps, as a Ctrl-C would."""
    import simplexkern.train.loop as loop

    calls = {"n": 0}
    original = loop.Progress.add

    def add(self, loss, params):
        calls["n"] += 1
        if calls["n"] > after:
            raise KeyboardInterrupt
        return original(self, loss, params)

    with monkeypatch.context() as mp:
        mp.setattr(loop.Progress, "add", add)
        with pytest.raises(KeyboardInterrupt):
            fn()


@pytest.fixture(scope="module")
def two_modes(digits):
    return sk.train.deep_ensemble("mlp", digits, 2, epochs=5, seed=3, progress=False, device="cpu")


@pytest.mark.parametrize("algorithm", ["curve", "complex", "fge"])
def test_every_algorithm_resumes_to_the_uninterrupted_result(algorithm, tmp_path, digits, two_modes, monkeypatch):
    kw = dict(seed=1, progress=False, device="cpu")
    run = {
        "curve": lambda out: [sk.train.train_curve(*two_modes, digits, "polychain", 4, epochs=3, out=out, **kw)],
        "complex": lambda out: [sk.train.spro_complex(two_modes, digits, 2, vertex_epochs=2, out=out, **kw)],
        "fge": lambda out: sk.train.fge(two_modes[0], digits, cycles=2, cycle_epochs=2, out=out, **kw),
    }[algorithm]
    whole = run(tmp_path / "whole")
    _interrupted(monkeypatch, 2 * STEPS + 7, lambda: run(tmp_path / "resumed"))  # in the third epoch
    resumed = run(tmp_path / "resumed")
    assert len(resumed) == len(whole)
    for a, b in zip(whole, resumed):
        assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


def test_settings_objects_and_keywords_train_the_same_model(digits):
    """An Optimisation / Execution gives the weights its fields given as keywords give;
    keywords override the objects; vertex_epochs is the SPRO trainers' epoch count."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    by_keywords = sk.train.train_mode(
        net, digits, epochs=2, lr=0.1, batch_size=128, seed=3, progress=False, device="cpu"
    )
    fast = sk.train.Optimisation(epochs=2, lr=0.1, batch_size=128)
    quiet = sk.train.Execution(seed=3, progress=False, device="cpu")
    by_objects = sk.train.train_mode(net, digits, optimisation=fast, execution=quiet)
    overridden = sk.train.train_mode(
        net, digits, optimisation=sk.train.Optimisation(epochs=2, lr=0.5), execution=quiet, lr=0.1, batch_size=128
    )
    for got in (by_objects, overridden):
        assert all(torch.equal(a, b) for a, b in zip(by_keywords.state_dict().values(), got.state_dict().values()))
    simplex = sk.train.grow_simplex(by_keywords, digits, 2, vertex_epochs=1, batch_size=256, execution=quiet)
    assert simplex.metadata["settings"]["epochs"] == 1 and simplex.metadata["settings"]["batch_size"] == 256
    with pytest.raises(TypeError, match="unexpected keyword argument 'epochs'"):
        sk.train.grow_simplex(by_keywords, digits, 2, epochs=1)
    with pytest.raises(TypeError, match="unexpected keyword argument 'lr'"):
        sk.train.fge(by_keywords, digits, lr=0.1)
    with pytest.raises(TypeError, match="optimisation must be an Optimisation"):
        sk.train.train_mode(net, digits, optimisation={"epochs": 1})


def test_a_list_argument_of_another_type_is_a_type_error(digits):
    """A list argument given as something else is a TypeError; an empty list a ValueError."""
    plain = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    calls = {
        "modes must be a list": [lambda: sk.train.espro(plain, digits), lambda: sk.train.spro_complex("m.pt", digits)],
        "regs must be a list": [lambda: sk.train.choose_reg([plain], sk.data.load("digits", val_fraction=0.2), 0.1)],
        "points must be a list": [lambda: sk.eval.loss_plane("abc", digits)],
        "simplices must be a list": [lambda: sk.simplexify(plain, 2).log_volume(5)],
    }
    for message, bad in calls.items():
        for call in bad:
            with pytest.raises(TypeError, match=message):
                call()
    for call in (lambda: sk.train.espro([], digits), lambda: sk.simplexify(plain, 2).log_volume([])):
        with pytest.raises(ValueError, match="non-empty"):
            call()
