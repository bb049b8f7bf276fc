"""Uncertainty metrics of ensembles beyond accuracy and NLL: adaptive calibration error,
selective classification (risk-coverage, AURC), out-of-distribution detection (AUROC, AUPR,
FPR at 95% TPR) and ensemble diversity (disagreement, mutual information). Probabilities,
never logits; everything in float64 on the CPU."""

import itertools

import numpy as np
import scipy.stats
import torch

from simplexkern import _checks
from simplexkern.eval.metrics import PROB_FLOOR, _check

SCORES = ("max_prob", "entropy")


def _probabilities(probs, name, dims=2):
    _checks.floating(probs, name)
    if probs.dim() != dims or probs.shape[-1] < 2 or probs.numel() == 0:
        shape = "(J, N, C)" if dims == 3 else "(N, C)"
        raise ValueError(f"{name} must have shape {shape} with C >= 2 classes, got {tuple(probs.shape)}")
    p = probs.detach().cpu().double()
    if not bool(torch.isfinite(p).all()) or bool((p < 0).any()) or bool(((p.sum(-1) - 1).abs() > 1e-3).any()):
        raise ValueError(f"{name} must be probabilities: finite, >= 0, each row summing to 1")
    return p


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """Per-example entropy -sum_c p_c log p_c (nats) of ``probs`` (..., C)."""
    p = probs.double()
    return -(p * p.clamp_min(PROB_FLOOR).log()).sum(-1)


def adaptive_ece(probs: torch.Tensor, targets: torch.Tensor, n_bins: int = 15) -> float:
    """Calibration error over ``n_bins`` bins of equal counts: the examples sorted by the top
    label's confidence (ties by index) and cut into contiguous parts whose sizes differ by at
    most one; sum over bins of |correct - confidence| summed in the bin, over N."""
    p, y = _check(probs, targets)
    _checks.count(n_bins, "n_bins")
    conf, pred = p.max(1)
    gap = (pred == y).double() - conf
    order = torch.argsort(conf, stable=True)
    return float(sum(gap[b].sum().abs() for b in torch.tensor_split(order, n_bins)) / len(y))


def reliability(probs: torch.Tensor, targets: torch.Tensor, n_bins: int = 15) -> dict[str, np.ndarray]:
    """The reliability diagram of ``metrics``' ECE bins (``n_bins`` equal-width bins (lo, hi]
    of the top label's confidence): per bin "confidence" and "accuracy" (NaN where empty) and
    "count"."""
    p, y = _check(probs, targets)
    _checks.count(n_bins, "n_bins")
    conf, pred = p.max(1)
    bins = (torch.ceil(conf * n_bins).long() - 1).clamp(0, n_bins - 1)
    count = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, bins, torch.ones_like(conf))
    sums = [torch.zeros(n_bins, dtype=torch.float64).index_add_(0, bins, v) for v in (conf, (pred == y).double())]
    with np.errstate(invalid="ignore", divide="ignore"):
        return {"confidence": (sums[0] / count).numpy(), "accuracy": (sums[1] / count).numpy(), "count": count.numpy()}


def summary(member_probs: torch.Tensor, targets: torch.Tensor) -> dict[str, float | None]:
    """The ensemble's (probabilities averaged over the members of ``member_probs`` (J, N, C))
    adaptive ECE and AURC, and with J >= 2 the members' disagreement and mutual information
    (None for one member)."""
    p = _probabilities(member_probs, "member_probs", dims=3)
    mean = p.mean(0)
    several = p.shape[0] > 1
    return {
        "adaptive_ece": adaptive_ece(mean, targets),
        "aurc": aurc(mean, targets),
        "disagreement": disagreement(p) if several else None,
        "mutual_information": mutual_information(p) if several else None,
    }


def risk_coverage(probs: torch.Tensor, targets: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(coverage, risk) of selective classification: keeping the k most confident examples
    (top-label probability, ties by index), coverage k / N and risk = their error rate, for
    k = 1..N."""
    p, y = _check(probs, targets)
    conf, pred = p.max(1)
    order = torch.argsort(-conf, stable=True)
    errors = (pred[order] != y[order]).double().cumsum(0).numpy()
    k = np.arange(1, len(y) + 1)
    return k / len(y), errors / k


def aurc(probs: torch.Tensor, targets: torch.Tensor) -> float:
    """Area under the risk-coverage curve (Geifman et al., 2019): the mean of the risk over
    the coverages k / N, k = 1..N. Lower is better; 0 when every kept prediction is right
    before the first wrong one."""
    return float(risk_coverage(probs, targets)[1].mean())


def uncertainty_score(probs: torch.Tensor, score: str = "entropy") -> torch.Tensor:
    """Per-example uncertainty of ``probs`` (N, C): 1 - max_c p_c ("max_prob") or the
    predictive entropy ("entropy")."""
    if score not in SCORES:
        raise ValueError(f"score must be one of {SCORES}, got {score!r}")
    p = _probabilities(probs, "probs")
    return 1 - p.max(1).values if score == "max_prob" else entropy(p)


def ood_detection(probs_in: torch.Tensor, probs_out: torch.Tensor, score: str = "entropy") -> dict[str, float]:
    """How well an uncertainty ``score`` (``uncertainty_score``) separates out-of-distribution
    inputs (``probs_out``, the positives) from in-distribution ones (``probs_in``): AUROC (ties
    count one half), AUPR (average precision over the distinct thresholds) and FPR95 (the
    false-positive rate at the highest threshold whose true-positive rate is >= 95%)."""
    s_in = uncertainty_score(probs_in, score).numpy()
    s_out = uncertainty_score(_probabilities(probs_out, "probs_out"), score).numpy()
    if probs_out.shape[1] != probs_in.shape[1]:
        raise ValueError(
            f"probs_in and probs_out must have as many classes, got {probs_in.shape[1]} and {probs_out.shape[1]}"
        )
    n_in, n_out = len(s_in), len(s_out)
    scores = np.concatenate([s_out, s_in])
    positive = np.r_[np.ones(n_out), np.zeros(n_in)]
    ranks = scipy.stats.rankdata(scores)  # ties get their mean rank: the Mann-Whitney statistic counts them 1/2
    auroc = (ranks[:n_out].sum() - n_out * (n_out + 1) / 2) / (n_out * n_in)
    order = np.argsort(-scores, kind="stable")
    tp, fp = np.cumsum(positive[order]), np.cumsum(1 - positive[order])
    last = np.r_[np.diff(scores[order]) != 0, True]  # the last example of each distinct threshold
    tp, fp = tp[last], fp[last]
    recall, precision = tp / n_out, tp / (tp + fp)
    aupr = float(np.sum(np.diff(np.r_[0.0, recall]) * precision))
    fpr95 = float(fp[np.argmax(recall >= 0.95)] / n_in)
    return {"auroc": float(auroc), "aupr": aupr, "fpr95": fpr95}


def disagreement(member_probs: torch.Tensor) -> float:
    """Mean over pairs of members of the fraction of examples whose top labels differ, for
    ``member_probs`` (J, N, C), J >= 2 (members, or the points of one simplex)."""
    p = _probabilities(member_probs, "member_probs", dims=3)
    if p.shape[0] < 2:
        raise ValueError(f"member_probs must hold at least 2 members, got {p.shape[0]}")
    labels = p.argmax(-1)
    pairs = list(itertools.combinations(range(len(labels)), 2))
    return float(sum((labels[i] != labels[j]).double().mean() for i, j in pairs) / len(pairs))


def mutual_information(member_probs: torch.Tensor) -> float:
    """The ensemble's epistemic part of the predictive entropy, averaged over examples:
    H(mean_j p_j) - mean_j H(p_j), for ``member_probs`` (J, N, C)."""
    p = _probabilities(member_probs, "member_probs", dims=3)
    return float((entropy(p.mean(0)) - entropy(p).mean(0)).mean())
