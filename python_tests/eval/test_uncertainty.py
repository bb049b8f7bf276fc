"""Uncertainty metrics against scikit-learn, SciPy and hand-worked examples, on fresh random
probabilities (rounded, so that ties occur)."""

import numpy as np
import pytest
import scipy.stats
import sklearn.metrics
import torch

import simplexkern as sk
from simplexkern.eval import uncertainty as u


def _probs(n, c, rng, sharp=3.0, decimals=2):
    """Random probabilities, rounded to ``decimals`` (ties) and renormalised."""
    p = torch.softmax(sharp * torch.randn(n, c, generator=rng, dtype=torch.float64), -1)
    p = p.mul(10**decimals).round().clamp_min(1).div(10**decimals)
    return p / p.sum(1, keepdim=True)


def test_adaptive_ece_by_hand_and_against_a_direct_loop(rng):
    p = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8]], dtype=torch.float64)
    y = torch.tensor([0, 1, 1, 1])  # confidences 0.9 0.6 0.7 0.8; right, wrong, right, right
    # 2 bins by confidence: {0.6, 0.7}: |1 - 1.3| = 0.3; {0.8, 0.9}: |2 - 1.7| = 0.3
    assert u.adaptive_ece(p, y, n_bins=2) == pytest.approx(0.6 / 4, abs=1e-15)
    p, y = _probs(301, 5, rng), torch.randint(0, 5, (301,), generator=rng)
    conf, right = p.max(1).values.numpy(), (p.argmax(1) == y).numpy()
    order = np.argsort(conf, kind="stable")
    expected = sum(abs(right[b].sum() - conf[b].sum()) for b in np.array_split(order, 15)) / 301
    assert u.adaptive_ece(p, y) == pytest.approx(expected, rel=1e-12)


def test_aurc_by_hand_and_against_brute_force(rng):
    p = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.4, 0.6]], dtype=torch.float64)
    y = torch.tensor([0, 0, 0, 0])  # by confidence: 0.9 right, 0.8 wrong, 0.7 right, 0.6 wrong
    assert u.aurc(p, y) == pytest.approx((0 + 1 / 2 + 1 / 3 + 2 / 4) / 4, abs=1e-15)
    p, y = _probs(200, 4, rng), torch.randint(0, 4, (200,), generator=rng)
    conf, wrong = p.max(1).values.numpy(), (p.argmax(1) != y).numpy()
    order = sorted(range(200), key=lambda i: (-conf[i], i))
    risks = [wrong[order[:k]].mean() for k in range(1, 201)]
    coverage, risk = u.risk_coverage(p, y)
    np.testing.assert_allclose(risk, risks, rtol=1e-12)
    np.testing.assert_allclose(coverage, np.arange(1, 201) / 200)
    assert u.aurc(p, y) == pytest.approx(np.mean(risks), rel=1e-12)


@pytest.mark.parametrize("score", u.SCORES)
def test_ood_detection_matches_scikit_learn(score, rng):
    p_in, p_out = _probs(400, 10, rng, sharp=4.0), _probs(150, 10, rng, sharp=1.5)
    got = u.ood_detection(p_in, p_out, score)
    s = np.r_[u.uncertainty_score(p_out, score).numpy(), u.uncertainty_score(p_in, score).numpy()]
    labels = np.r_[np.ones(150), np.zeros(400)]
    assert len(np.unique(s)) < len(s)  # ties are part of the test
    assert got["auroc"] == pytest.approx(sklearn.metrics.roc_auc_score(labels, s), rel=1e-12)
    assert got["aupr"] == pytest.approx(sklearn.metrics.average_precision_score(labels, s), rel=1e-12)
    fpr, tpr, _ = sklearn.metrics.roc_curve(labels, s, drop_intermediate=False)
    assert got["fpr95"] == pytest.approx(fpr[np.argmax(tpr >= 0.95)], abs=1e-15)
    assert 0.5 < got["auroc"] <= 1  # sharper in-distribution predictions: the score separates them


def test_uncertainty_scores_by_formula(rng):
    p = _probs(50, 6, rng)
    np.testing.assert_allclose(u.uncertainty_score(p, "max_prob").numpy(), 1 - p.max(1).values.numpy())
    np.testing.assert_allclose(
        u.uncertainty_score(p, "entropy").numpy(), scipy.stats.entropy(p.numpy(), axis=1), rtol=1e-12
    )


def test_disagreement_and_mutual_information(rng):
    a = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]], dtype=torch.float64)
    b = torch.tensor([[0.8, 0.2], [0.7, 0.3], [0.3, 0.7]], dtype=torch.float64)
    c = a.clone()
    assert u.disagreement(torch.stack([a, b, c])) == pytest.approx((2 / 3 + 0 + 2 / 3) / 3, abs=1e-15)
    assert u.mutual_information(torch.stack([a, a])) == pytest.approx(0, abs=1e-15)  # agreeing members
    members = torch.stack([_probs(80, 5, rng) for _ in range(4)])
    m = members.numpy()
    expected = np.mean(scipy.stats.entropy(m.mean(0), axis=1) - np.mean(scipy.stats.entropy(m, axis=2), axis=0))
    assert u.mutual_information(members) == pytest.approx(expected, rel=1e-12) and expected > 0


def test_reliability_bins_give_the_ece_of_metrics(rng):
    p, y = _probs(500, 4, rng), torch.randint(0, 4, (500,), generator=rng)
    r = u.reliability(p, y)
    filled = r["count"] > 0
    ece = np.sum(r["count"][filled] / 500 * np.abs(r["accuracy"][filled] - r["confidence"][filled]))
    assert ece == pytest.approx(sk.eval.metrics(p, y)["ece"], rel=1e-12) and r["count"].sum() == 500
    assert np.isnan(r["accuracy"][~filled]).all()
    members = torch.stack([p, _probs(500, 4, rng)])
    s = u.summary(members, y)
    assert s == pytest.approx(
        {
            "adaptive_ece": u.adaptive_ece(members.mean(0), y),
            "aurc": u.aurc(members.mean(0), y),
            "disagreement": u.disagreement(members),
            "mutual_information": u.mutual_information(members),
        },
        rel=1e-12,
    )
    one = u.summary(p[None], y)
    assert one["disagreement"] is None and one["aurc"] == pytest.approx(u.aurc(p, y), rel=1e-12)


def test_bad_arguments_are_named(rng):
    p, y = _probs(10, 3, rng), torch.randint(0, 3, (10,), generator=rng)
    with pytest.raises(ValueError, match="score must be one of"):
        u.ood_detection(p, p, "margin")
    with pytest.raises(ValueError, match="probs_out must be probabilities"):
        u.ood_detection(p, p * 2)
    with pytest.raises(ValueError, match="at least 2 members"):
        u.disagreement(p[None])
    with pytest.raises(ValueError, match=r"member_probs must have shape \(J, N, C\)"):
        u.mutual_information(p)
    with pytest.raises(ValueError, match="n_bins"):
        u.adaptive_ece(p, y, n_bins=0)
