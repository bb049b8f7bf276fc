"""The PNG figures of the ``simplexkern`` command, drawn with matplotlib's object API (no
pyplot, no display: it works headless) and written atomically."""

import pathlib

import numpy as np
from matplotlib.figure import Figure

from simplexkern._atomic import atomic_write

DPI = 110


def _save(fig, path):
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=DPI, bbox_inches="tight")
    return pathlib.Path(path).name


def ensemble_size(curves, path, title):
    """Test error and NLL against the number of members, one line per method in
    ``curves`` ({label: rows of ``simplexkern.eval.ensemble_size_curve``})."""
    fig = Figure(figsize=(8, 3.2), layout="constrained")
    axes = fig.subplots(1, 2)
    for label, rows in curves.items():
        n = [r["members"] for r in rows]
        axes[0].plot(n, [100 * r["error"] for r in rows], "o-", label=label)
        axes[1].plot(n, [r["nll"] for r in rows], "o-", label=label)
    for ax, name in zip(axes, ("test error (%)", "test NLL")):
        ax.set_xlabel("members in the ensemble")
        ax.set_ylabel(name)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
    axes[1].legend()
    fig.suptitle(title)
    return _save(fig, path)


def cost_curves(lines, search, mode_cost, path, title):
    """Test NLL and error against training cost (in one mode's training), one line per
    method over its ensemble sizes (``compare``'s lines, means over seeds), ESPRO with its
    λ search as one more point; and each point's NLL minus that of the deep ensemble of the
    same budget in the same seed (mean and spread over seeds)."""
    fig = Figure(figsize=(12, 3.6), layout="constrained")
    axes = fig.subplots(1, 3)
    for label, line in lines.items():
        x = [p["gradient_evaluations"] / mode_cost for p in line]
        color = None
        for ax, key, scale in ((axes[0], "nll", 1), (axes[1], "error", 100)):
            drawn = ax.plot(x, [scale * p[key] for p in line], "o-", markersize=3, label=label, color=color)
            color = drawn[0].get_color()
            if label == "ESPRO":
                ax.plot(
                    [search["gradient_evaluations"] / mode_cost],
                    [scale * line[-1][key]],
                    "o",
                    mfc="none",
                    color=color,
                    markersize=8,
                    label="ESPRO, λ search counted",
                )
        if label != "deep ensemble":
            axes[2].errorbar(
                x,
                [p["nll_vs_de"] for p in line],
                yerr=[p["nll_vs_de_std"] for p in line],
                fmt="o-",
                markersize=3,
                capsize=2,
                color=color,
                label=label,
            )
    axes[2].axhline(0, color="0.5", linestyle=":")
    for ax, name in zip(axes, ("test NLL", "test error (%)", "NLL minus the deep ensemble's\nof the same cost")):
        ax.set_xscale("log")
        ax.set_xlabel("training cost (gradient evaluations, in modes)")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    return _save(fig, path)


def uncertainty(reliability, risk_coverage, path, title):
    """Reliability diagrams (accuracy against confidence per bin, the diagonal is calibrated)
    and risk-coverage curves (error rate of the most confident part of the test split), one
    line per method ({label: ``simplexkern.eval.uncertainty.reliability`` / ``risk_coverage``})."""
    fig = Figure(figsize=(8, 3.2), layout="constrained")
    axes = fig.subplots(1, 2)
    axes[0].plot([0, 1], [0, 1], color="0.6", linestyle=":", label="calibrated")
    for label, r in reliability.items():
        filled = r["count"] > 0
        axes[0].plot(r["confidence"][filled], r["accuracy"][filled], "o-", markersize=3, label=label)
    axes[0].set_xlabel("confidence (top label)")
    axes[0].set_ylabel("accuracy")
    for label, (coverage, risk) in risk_coverage.items():
        axes[1].plot(coverage, 100 * risk, label=label)
    axes[1].set_xlabel("coverage (most confident share kept)")
    axes[1].set_ylabel("error among those kept (%)")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle(title)
    return _save(fig, path)


def reg_choice(rows, chosen, path):
    """Validation NLL of ESPRO (the ensemble, and simplex 0 alone) against λ, the chosen λ
    marked; λ that stopped early have simplex 0's value only, or none."""
    fig = Figure(figsize=(4.5, 3.2), layout="constrained")
    ax = fig.subplots()
    ok = [r for r in rows if r.get("diverged") is None and r.get("stopped") is None]
    first = [r for r in rows if r.get("simplex0_val_nll") is not None and np.isfinite(r["simplex0_val_nll"])]
    ax.plot([r["reg"] for r in ok], [r["val_nll"] for r in ok], "o-", label="ensemble")
    ax.plot(
        [r["reg"] for r in first],
        [r["simplex0_val_nll"] for r in first],
        "s:",
        color="0.5",
        markersize=4,
        label="simplex 0",
    )
    best = next(r for r in ok if r["reg"] == chosen)
    ax.plot([best["reg"]], [best["val_nll"]], "r*", markersize=14, label=f"chosen λ = {chosen:g}")
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xlabel("λ")
    ax.set_ylabel("validation NLL")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def curve_profile(profile, path, title):
    """Train loss and test error along t, on the curve and on the straight segment."""
    fig = Figure(figsize=(8, 3.2), layout="constrained")
    axes = fig.subplots(1, 2)
    t = profile["t"]
    for name, style in (("curve", "o-"), ("segment", "s--")):
        axes[0].plot(t, profile[name]["train_loss"], style, label=name, markersize=3)
        axes[1].plot(t, 100 * np.asarray(profile[name]["test_error"]), style, label=name, markersize=3)
    for ax, name in zip(axes, ("train loss", "test error (%)")):
        ax.set_xlabel("t")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    axes[0].set_yscale("log")
    axes[1].legend()
    fig.suptitle(title)
    return _save(fig, path)


def loss_plane(plane, names, path, title):
    """Train loss (log colour scale) and test error on the plane, the three points marked."""
    fig = Figure(figsize=(9, 3.8), layout="constrained")
    axes = fig.subplots(1, 2)
    x, y, pts = plane["x"], plane["y"], np.asarray(plane["points"])
    loss = np.log10(np.maximum(plane["train_loss"], 1e-8))
    for ax, values, label in (
        (axes[0], loss, "log10 train loss"),
        (axes[1], 100 * plane["test_error"], "test error (%)"),
    ):
        filled = ax.contourf(x, y, values, levels=20, cmap="viridis")
        fig.colorbar(filled, ax=ax, label=label)
        ax.plot(pts[:, 0], pts[:, 1], "wo", markeredgecolor="k")
        for (px, py), name in zip(pts, names):
            ax.annotate(name, (px, py), textcoords="offset points", xytext=(5, 5), color="w", fontsize=8)
        ax.set_xlabel("x (weight space)")
        ax.set_ylabel("y (weight space)")
    fig.suptitle(title)
    return _save(fig, path)


def dimensionality(rows, path, title):
    """Train / test error of points in the sub-complexes and their log-volume against the
    number of connectors."""
    fig = Figure(figsize=(8, 3.2), layout="constrained")
    axes = fig.subplots(1, 2)
    c = [r["connectors"] for r in rows]
    for key, label in (
        ("train_error", "train error (mean of the points)"),
        ("train_error_max", "train error (worst point)"),
        ("test_error", "test error (mean of the points)"),
        ("test_error_ensemble", "test error (the points' ensemble)"),
    ):
        axes[0].plot(c, [100 * r[key] for r in rows], "o-", label=label)
    axes[0].set_ylabel("error (%)")
    axes[0].legend(fontsize=7)
    axes[1].plot(c, [r["log_volume"] for r in rows], "o-")
    axes[1].set_ylabel("log V")
    for ax in axes:
        ax.set_xlabel("connectors")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    return _save(fig, path)
