"""The loop's parts against formulas: learning-rate schedules, batches, the CIFAR crop-and-flip
augmentation, Phase's argument checks and its cost in gradient evaluations."""

import math

import pytest
import torch

import simplexkern as sk
from simplexkern.data.batches import batch_bounds, batches, epoch_batches, steps_per_epoch
from simplexkern.train.loop import Phase, augment, run_phase


def test_derived_seeds_differ_for_keys_of_different_lengths():
    from simplexkern._seeds import derive_seed

    seeds = [derive_seed(*key) for key in [(5,), (5, 0), (5, 0, 0), (5, 0, 0, 0, 0), (0, 5), (5, 1)]]
    assert len(set(seeds)) == len(seeds) and all(0 <= s < 2**63 for s in seeds)


def test_cosine_schedule():
    p = Phase(epochs=4, lr=0.2, lr_min=0.01)
    n = 10
    assert p.lr_at(0, n) == pytest.approx(0.2)
    for step in (7, 13, 39):
        assert p.lr_at(step, n) == pytest.approx(0.01 + 0.5 * 0.19 * (1 + math.cos(math.pi * step / 40)))
    assert Phase(epochs=1, lr=0.3, schedule="constant").lr_at(5, 10) == 0.3


@pytest.mark.parametrize("cycle_epochs, n", [(2, 10), (3, 7), (1, 5)])
def test_cyclic_schedule_is_a_triangle_with_its_minimum_in_the_middle(cycle_epochs, n):
    p = Phase(epochs=2 * cycle_epochs, lr=0.05, lr_min=0.001, schedule="cyclic", cycle_epochs=cycle_epochs)
    length, mid = cycle_epochs * n, p.cycle_minimum(n)
    assert mid == length // 2
    for cycle in range(2):
        lrs = [p.lr_at(cycle * length + i, n) for i in range(length)]
        assert lrs[0] == pytest.approx(0.05) and lrs[mid] == pytest.approx(0.001, rel=1e-12)
        assert min(lrs) == lrs[mid]
        assert all(a > b for a, b in zip(lrs[:mid], lrs[1 : mid + 1]))  # down to the minimum ...
        assert all(a < b for a, b in zip(lrs[mid:], lrs[mid + 1 :]))  # ... and back up
        assert lrs[-1] == pytest.approx(0.001 + (0.05 - 0.001) * (length - 1 - mid) / (length - mid))


def test_batches_cover_the_data_once_in_the_generators_order(rng):
    x, y = torch.arange(129.0)[:, None], torch.arange(129)
    got = list(batches(x, y, 32, torch.device("cpu"), torch.Generator().manual_seed(rng.initial_seed())))
    # a lone last row is dropped
    assert [len(b[0]) for b in got] == [32, 32, 32, 32] and len(got) == steps_per_epoch(129, 32)
    rows = torch.cat([b[1] for b in got])
    assert len(set(rows.tolist())) == 128 and torch.equal(torch.cat([b[0] for b in got])[:, 0].long(), rows)
    again = list(batches(x, y, 32, torch.device("cpu"), torch.Generator().manual_seed(rng.initial_seed())))
    assert torch.equal(torch.cat([b[1] for b in again]), rows)
    assert steps_per_epoch(130, 32) == 5 and steps_per_epoch(1, 32) == 1


def test_epoch_batches_count_what_batches_yields(rng):
    for n in [1, 2, 3, 31, 32, 33, 64, 65, 97, *torch.randint(1, 300, (20,), generator=rng).tolist()]:
        for b in [1, 2, 5, 32, 64]:
            got = [len(xb) for xb, _ in batches(torch.zeros(n, 1), torch.zeros(n), b, torch.device("cpu"))]
            assert epoch_batches(n, b) == (len(got), sum(got)), (n, b)
            assert all(size > 1 for size in got) or len(got) == 1 or b == 1, (n, b, got)


def test_a_statistics_pass_joins_a_lone_last_row_to_the_batch_before(rng):
    for n in [1, 2, 3, 33, 64, 65, *torch.randint(1, 300, (10,), generator=rng).tolist()]:
        for b in [1, 2, 5, 32]:
            merged = batch_bounds(n, b, lone_row="merge")
            assert [start for start, _ in merged] == [0, *[end for _, end in merged[:-1]]] and merged[-1][1] == n
            expected = [b] * (n // b) + ([n % b] if n % b else [])
            if len(expected) > 1 and expected[-1] == 1:  # a lone last row, whatever the batch size
                expected[-2:] = [expected[-2] + 1]
            assert [end - start for start, end in merged] == expected, (n, b)
    with pytest.raises(ValueError, match="lone_row"):
        batch_bounds(10, 3, lone_row="keep")


def _data(n, rng):
    x = torch.randn(n, 4, generator=rng)
    return sk.data.Dataset("toy", "classification", x, (x[:, 0] > 0).long(), x[:8], (x[:8, 0] > 0).long(), 2)


@pytest.mark.parametrize("points", [None, 3])
def test_gradient_evaluations_count_the_examples_and_points_of_every_step(rng, points):
    """The formula against a count of the rows and points the model is called with."""
    n = int(torch.randint(70, 200, (), generator=rng))
    n += (1 - n % 32) % 32 if points else 0  # a remainder of one example: dropped
    data, seen = _data(n, rng), []
    model = torch.nn.Linear(4, 2)
    if points:
        model = sk.nn.simplexify(model)
        model.add_vertex("mean", 0.1)
        model.fix(0)
    model.register_forward_hook(lambda m, args, out: seen.append(len(args[0]) * (len(args[1]) if points else 1)))
    phase = Phase(epochs=3, lr=0.01, batch_size=32, n_samples=points)
    run_phase(model, data, phase, key=(0,), device=torch.device("cpu"))
    assert sum(seen) == phase.gradient_evaluations(n) == 3 * (n - (n % 32 == 1)) * (points or 1)
    assert phase.gradient_evaluations(n, epochs=1) == sum(seen) // 3


def test_crop_flip_takes_shifted_crops_of_the_padded_images(rng):
    x = torch.randn(16, 3, 8, 8, generator=rng)
    seed = rng.initial_seed()
    out = augment(x, "crop_flip", torch.Generator().manual_seed(seed))
    g = torch.Generator().manual_seed(seed)  # the same draws, in the same order
    dy, dx = torch.randint(0, 9, (16,), generator=g), torch.randint(0, 9, (16,), generator=g)
    flip = torch.rand(16, generator=g) < 0.5
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    for i in range(16):
        crop = padded[i, :, dy[i] : dy[i] + 8, dx[i] : dx[i] + 8]
        assert torch.equal(out[i], crop.flip(2) if flip[i] else crop)
    assert augment(x, None, g) is x


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(epochs=0, lr=0.1),
        dict(epochs=1, lr=0.0),
        dict(epochs=1, lr=float("nan")),
        dict(epochs=1, lr=0.1, reg=-1.0),
        dict(epochs=1, lr=0.1, schedule="step"),
        dict(epochs=3, lr=0.1, schedule="cyclic", cycle_epochs=2),
        dict(epochs=1, lr=0.1, n_samples=0),
    ],
)
def test_phase_refuses_bad_values(kwargs):
    with pytest.raises(ValueError):
        Phase(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(epochs=1, lr=0.1, batch_size=True),
        dict(epochs=2.0, lr=0.1),
        dict(epochs=1, lr="0.1"),
        dict(epochs=1, lr=0.1, compile=1),
        dict(epochs=2, lr=0.1, schedule="cyclic"),
    ],
)
def test_phase_refuses_values_of_the_wrong_type(kwargs):
    with pytest.raises(TypeError):
        Phase(**kwargs)


def test_the_simplex_loss_with_batchnorm_and_volume_compiles_whole_and_matches_eager():
    """Forward at S points of a simplex model with BatchNorm, cross-entropy and the log-volume
    regulariser trace as one graph (fullgraph: no break in simplexkern code); the loss, the
    trainable vertex's gradient and the BatchNorm statistics match eager."""
    import copy

    import torch.nn.functional as F
    from torch import nn

    import simplexkern as sk
    from simplexkern.train.loop import regulariser

    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    plain = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 10)
    )
    model = sk.simplexify(plain, 1)
    model.fix(0)
    for _ in range(2):
        model.add_vertex("mean", 0.05)
    model.fix(1)
    model.train()
    other = copy.deepcopy(model)
    x, y = torch.randn(6, 1, 8, 8, generator=gen), torch.randint(0, 10, (6,), generator=gen)
    coeffs = sk.geometry.sample_simplex(4, 3, gen)
    phase = Phase(epochs=1, lr=0.1, n_samples=4, reg=0.5)

    def loss_of(m, x, y, c):
        out = m(x, c)
        return F.cross_entropy(out.flatten(0, 1), y.repeat(4)) - phase.reg * regulariser(m, phase)

    compiled = torch.compile(loss_of, backend="aot_eager", fullgraph=True)
    got = compiled(model, x, y, coeffs)
    got.backward()
    want = loss_of(other, x, y, coeffs)
    want.backward()
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(model.store.trainable.grad, other.store.trainable.grad)
    for a, b in zip(model.buffers(), other.buffers()):
        torch.testing.assert_close(a, b)


def test_phase_keeps_numpy_scalars_as_python_numbers():
    import json

    import numpy as np

    phase = Phase(epochs=np.int64(2), lr=np.float32(0.5), batch_size=np.int32(16), n_samples=np.int64(3))
    settings = phase.settings()
    assert json.loads(json.dumps(settings)) == settings
    assert (type(phase.epochs), type(phase.lr), phase.epochs, phase.lr, phase.n_samples) == (int, float, 2, 0.5, 3)
