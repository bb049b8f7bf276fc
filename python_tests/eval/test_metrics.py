"""Metrics against hand-computed values and an independent loop, temperature scaling
against the temperature that generated the labels, and the ensemble-size curve."""

import itertools
import math

import numpy as np
import pytest
import torch

from simplexkern import eval as E


def test_known_values():
    probs = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.7, 0.3]])
    y = torch.tensor([0, 1, 1, 0])
    m = E.metrics(probs, y)
    assert m["accuracy"] == pytest.approx(0.75, abs=1e-12)
    assert m["nll"] == pytest.approx(-(math.log(0.9) + math.log(0.4) + math.log(0.8) + math.log(0.7)) / 4, abs=1e-7)
    # each example alone in its bin: |1 - .9|, |0 - .6|, |1 - .8|, |1 - .7|
    assert m["ece"] == pytest.approx((0.1 + 0.6 + 0.2 + 0.3) / 4, abs=1e-7)
    assert m["brier"] == pytest.approx((0.02 + 0.72 + 0.08 + 0.18) / 4, abs=1e-7)


def test_ece_takes_the_gap_per_bin_not_per_example():
    # confidences 0.82 (right) and 0.85 (wrong) share the bin (0.8, 0.8667]: |(1 - .82) + (0 - .85)| / 2
    probs = torch.tensor([[0.82, 0.18], [0.85, 0.15]], dtype=torch.float64)
    y = torch.tensor([0, 1])
    assert E.metrics(probs, y)["ece"] == pytest.approx(abs((1 - 0.82) + (0 - 0.85)) / 2, abs=1e-12)


def _reference(p, y, n_bins=15):
    """Loops over examples and bins in plain Python."""
    n, c = p.shape
    acc = sum(int(np.argmax(p[i]) == y[i]) for i in range(n)) / n
    nll = -sum(math.log(max(p[i, y[i]], 1e-12)) for i in range(n)) / n
    brier = sum(sum((p[i, k] - (k == y[i])) ** 2 for k in range(c)) for i in range(n)) / n
    ece = 0.0
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        members = [i for i in range(n) if lo < p[i].max() <= hi]
        if members:
            conf = sum(p[i].max() for i in members)
            right = sum(int(np.argmax(p[i]) == y[i]) for i in members)
            ece += abs(right - conf) / n
    return {"accuracy": acc, "nll": nll, "ece": ece, "brier": brier}


def test_against_an_independent_loop(rng):
    n, c = 400, 7
    logits = torch.randn(n, c, generator=rng, dtype=torch.float64) * 3
    probs = torch.softmax(logits, 1)
    y = torch.randint(0, c, (n,), generator=rng)
    got = E.metrics(probs, y)
    ref = _reference(probs.numpy(), y.numpy())
    for k in ref:
        assert got[k] == pytest.approx(ref[k], rel=1e-9, abs=1e-12), k


def test_bad_input():
    p = torch.full((3, 2), 0.5)
    with pytest.raises(ValueError, match="targets"):
        E.metrics(p, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="0..1"):
        E.metrics(p, torch.tensor([0, 1, 2]))
    with pytest.raises(TypeError, match="integer"):
        E.metrics(p, torch.tensor([0.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="\\(N, C\\)"):
        E.metrics(torch.ones(3), torch.tensor([0, 0, 0]))
    with pytest.raises(ValueError, match="temperature"):
        E.apply_temperature(p, 0.0)
    for bad in (torch.tensor([[2.0, -1.0], [0.3, 0.2]]), torch.tensor([[float("nan"), 0.5], [0.5, 0.5]])):
        with pytest.raises(ValueError, match="probabilities"):  # logits, or rows that are no distribution
            E.metrics(bad, torch.tensor([0, 1]))
        with pytest.raises(ValueError, match="probabilities"):
            E.fit_temperature(bad, torch.tensor([0, 1]))


def test_temperature_recovers_the_generating_temperature(rng):
    n, c, t_true = 40_000, 5, 2.5
    logits = torch.randn(n, c, generator=rng, dtype=torch.float64) * 3
    y = torch.multinomial(torch.softmax(logits / t_true, 1), 1, generator=rng).flatten()
    probs = torch.softmax(logits, 1)  # overconfident by a factor t_true
    t = E.fit_temperature(probs, y)
    assert t == pytest.approx(t_true, rel=0.05)
    before, after = E.metrics(probs, y)["nll"], E.metrics(E.apply_temperature(probs, t), y)["nll"]
    assert after < before
    for other in (t * 0.9, t * 1.1):  # a minimum
        assert E.metrics(E.apply_temperature(probs, other), y)["nll"] > after


def test_ensemble_size_curve_averages_over_subsets(rng):
    j, n, c = 4, 50, 3
    member = torch.softmax(torch.randn(j, n, c, generator=rng, dtype=torch.float64), -1)
    y = torch.randint(0, c, (n,), generator=rng)
    rows = E.ensemble_size_curve(member, y)
    assert [r["members"] for r in rows] == [1, 2, 3, 4]
    for size, row in zip(range(1, j + 1), rows):
        subsets = list(itertools.combinations(range(j), size))
        nll = np.mean([E.metrics(member[list(s)].mean(0), y)["nll"] for s in subsets])
        assert row["nll"] == pytest.approx(nll, rel=1e-12)
        assert row["error"] == pytest.approx(1 - row["accuracy"], abs=1e-12)
    assert rows[-1]["nll"] == pytest.approx(E.metrics(member.mean(0), y)["nll"], rel=1e-12)


def test_regression_metrics():
    mean, var, y = torch.tensor([0.0, 1.0]), torch.tensor([1.0, 4.0]), torch.tensor([1.0, 1.0])
    m = E.regression_metrics(mean, var, y)
    assert m["rmse"] == pytest.approx(math.sqrt(0.5), rel=1e-7)
    per_example = [0.5 * (1 / 1 + math.log(1) + math.log(2 * math.pi)), 0.5 * (0 + math.log(4) + math.log(2 * math.pi))]
    expected = sum(per_example) / 2
    assert m["nll"] == pytest.approx(expected, rel=1e-7)


@pytest.mark.parametrize("tensor_var", [True, False])
def test_gaussian_nll_is_the_normal_log_density(tensor_var, rng):
    from scipy.stats import norm

    from simplexkern.eval.metrics import gaussian_nll

    y, mean = torch.randn(2, 50, generator=rng, dtype=torch.float64)
    std = torch.rand(50, generator=rng, dtype=torch.float64) + 0.1 if tensor_var else 0.37
    scale = std.numpy() if tensor_var else std
    expected = -norm.logpdf(y.numpy(), mean.numpy(), scale)
    assert np.allclose(gaussian_nll(y, mean, std).numpy(), expected, rtol=1e-12)
    if not tensor_var:
        assert gaussian_nll(y, mean, std, reduce=True).item() == pytest.approx(expected.mean(), rel=1e-12)
