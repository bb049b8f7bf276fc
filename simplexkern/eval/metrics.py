"""Metrics of a predictive distribution (SPEC §8): accuracy, NLL, ECE, Brier score;
temperature scaling fitted on held-out data; metrics against the number of ensemble members."""

import itertools
import math
import warnings

import numpy as np
import scipy.optimize
import torch

from simplexkern import _checks

PROB_FLOOR = 1e-12  # log(p) of a probability that rounded to 0 counts as log(1e-12)


def _check(probs, targets):
    _checks.floating(probs, "probs")
    _checks.tensor(targets, "targets")
    if probs.dim() != 2 or probs.shape[1] < 2:
        raise ValueError(f"probs must have shape (N, C) with C >= 2 classes, got {tuple(probs.shape)}")
    if targets.shape != probs.shape[:1]:
        raise ValueError(f"targets must have shape ({probs.shape[0]},) to match probs, got {tuple(targets.shape)}")
    if targets.dtype.is_floating_point or targets.dtype == torch.bool:
        raise TypeError(f"targets must hold integer class labels, got {targets.dtype}")
    if len(targets) == 0:
        raise ValueError("probs and targets are empty")
    targets = targets.cpu().long()
    if int(targets.min()) < 0 or int(targets.max()) >= probs.shape[1]:
        raise ValueError(f"targets must lie in 0..{probs.shape[1] - 1}, got {int(targets.min())}..{int(targets.max())}")
    p = probs.detach().cpu().double()
    if not bool(torch.isfinite(p).all()) or bool((p < 0).any()) or bool(((p.sum(1) - 1).abs() > 1e-3).any()):
        raise ValueError("probs must be probabilities: finite, >= 0, each row summing to 1 (softmax logits first)")
    return p, targets


def metrics(probs: torch.Tensor, targets: torch.Tensor, n_bins: int = 15) -> dict[str, float]:
    """Accuracy, NLL (mean of -log p(y)), ECE (``n_bins`` equal-width bins of the top label's
    confidence, each bin (lo, hi]; sum over bins of |accuracy - confidence| weighted by the
    bin's share) and Brier score (mean over examples of sum over classes of (p_c - [y = c])^2)
    of probabilities ``probs`` (N, C) for labels ``targets`` (N,). Returns a dict of floats."""
    p, y = _check(probs, targets)
    _checks.count(n_bins, "n_bins")
    rows = torch.arange(len(y))
    conf, pred = p.max(1)
    correct = (pred == y).double()
    bins = (torch.ceil(conf * n_bins).long() - 1).clamp(0, n_bins - 1)
    gap = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, bins, correct - conf)
    onehot = torch.zeros_like(p)
    onehot[rows, y] = 1
    return {
        "accuracy": correct.mean().item(),
        "nll": -p[rows, y].clamp_min(PROB_FLOOR).log().mean().item(),
        "ece": (gap.abs().sum() / len(y)).item(),
        "brier": (p - onehot).pow(2).sum(1).mean().item(),
    }


def gaussian_nll(y, mean, std, reduce=False):
    """Negative log density of ``y`` under N(``mean``, ``std``²) per element; ``std`` a tensor
    or a number. With ``reduce`` and a number ``std``: the mean over the elements (the
    training loss, its constants added after the mean)."""
    z2 = ((y - mean) / std).pow(2)
    log_std = std.log() if isinstance(std, torch.Tensor) else math.log(std)
    return 0.5 * (z2.mean() if reduce else z2) + log_std + 0.5 * math.log(2 * math.pi)


def regression_metrics(mean: torch.Tensor, var: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """RMSE of the predictive mean and the Gaussian NLL of ``targets`` under N(mean, var)."""
    mean, var, y = (
        _checks.floating(t, n).detach().cpu().double().reshape(-1)
        for t, n in ((mean, "mean"), (var, "var"), (targets, "targets"))
    )
    if not (len(mean) == len(var) == len(y)) or len(y) == 0:
        raise ValueError(
            f"mean, var and targets must have the same non-zero length, got {len(mean)}, {len(var)}, {len(y)}"
        )
    if bool((var <= 0).any()):
        raise ValueError("var must be positive")
    return {"rmse": (y - mean).pow(2).mean().sqrt().item(), "nll": gaussian_nll(y, mean, var.sqrt()).mean().item()}


def apply_temperature(probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """``softmax(log(probs) / T)``: temperature scaling of a predictive distribution (for an
    ensemble, of its averaged probabilities)."""
    _checks.floating(probs, "probs")
    _checks.number(temperature, "temperature", above=0)
    return torch.softmax(probs.double().clamp_min(PROB_FLOOR).log() / temperature, -1).to(probs.dtype)


TEMPERATURE_BOUNDS = (0.05, 20.0)  # the search range of fit_temperature


def temperature_fit(probs: torch.Tensor, targets: torch.Tensor) -> tuple[float, str | None]:
    """(T, None), T in ``TEMPERATURE_BOUNDS`` minimising the NLL of ``apply_temperature(probs,
    T)`` on held-out ``targets`` (the NLL is convex in 1/T), or (T, why the fit is degenerate)
    when no example is misclassified (the NLL falls without bound as T -> 0) or the minimum
    lies at a bound of the search."""
    p, y = _check(probs, targets)
    logp = p.clamp_min(PROB_FLOOR).log()

    def nll(log_t):
        z = logp / math.exp(log_t)
        return (torch.logsumexp(z, 1) - z[torch.arange(len(y)), y]).mean().item()

    lo, hi = (math.log(b) for b in TEMPERATURE_BOUNDS)
    res = scipy.optimize.minimize_scalar(nll, bounds=(lo, hi), method="bounded", options={"xatol": 1e-6})
    t = math.exp(res.x)
    if bool((p.argmax(1) == y).all()):
        return t, (
            f"every validation example ({len(y)}) is classified correctly, so the NLL falls without bound "
            "as T -> 0 and no temperature can be fitted"
        )
    if min(res.x - lo, hi - res.x) < 1e-3:
        return t, f"the validation NLL is still falling at the bound T = {t:.3g} of the search"
    return t, None


def fit_temperature(probs: torch.Tensor, targets: torch.Tensor) -> float:
    """The temperature T minimising the NLL of ``apply_temperature(probs, T)`` on held-out
    ``targets``, searched in ``TEMPERATURE_BOUNDS``; a UserWarning says when the fit is
    degenerate (no misclassified example, or the minimum at a bound), where T should not be
    used (``temperature_fit`` returns the reason instead)."""
    t, problem = temperature_fit(probs, targets)
    if problem:
        warnings.warn(f"fit_temperature: {problem}", UserWarning, stacklevel=2)
    return t


def ensemble_size_curve(
    member_probs: torch.Tensor, targets: torch.Tensor, max_subsets: int = 50, seed: int = 0
) -> list[dict[str, float]]:
    """Metrics against the number of members (paper Fig. 8): for each size j = 1..J, the
    metrics of the averaged probabilities of size-j subsets of the members (all subsets when
    there are at most ``max_subsets``, else that many drawn at random), averaged over the
    subsets. ``member_probs``: (J, N, C). Returns a list of dicts with "members" and the
    ``metrics`` keys, plus "error" = 1 - accuracy."""
    _checks.floating(member_probs, "member_probs")
    if member_probs.dim() != 3:
        raise ValueError(f"member_probs must have shape (J, N, C), got {tuple(member_probs.shape)}")
    _checks.count(max_subsets, "max_subsets")
    n = member_probs.shape[0]
    rng = np.random.RandomState(seed)
    rows = []
    for size in range(1, n + 1):
        if math.comb(n, size) <= max_subsets:
            subsets = list(itertools.combinations(range(n), size))
        else:
            subsets = [tuple(rng.choice(n, size, replace=False)) for _ in range(max_subsets)]
        values = [metrics(member_probs[list(s)].mean(0), targets) for s in subsets]
        row = {"members": size, **{k: float(np.mean([v[k] for v in values])) for k in values[0]}}
        row["error"] = 1 - row["accuracy"]
        rows.append(row)
    return rows
