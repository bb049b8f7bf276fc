"""The PNG figures of the ``simplexkern`` command, drawn with matplotlib's object API (no
pyplot, no display: it works headless) and written atomically."""

import pathlib

import numpy as np
from matplotlib.figure import Figure

from simplexkern._atomic import atomic_write

DPI = 110


def _save(figure, path):
    with atomic_write(path) as file:
        figure.savefig(file, format="png", dpi=DPI, bbox_inches="tight")
    return pathlib.Path(path).name


def ensemble_size(curves, path, title):
    """Test error and NLL against the number of members, one line per method in
    ``curves`` ({label: rows of ``simplexkern.eval.ensemble_size_curve``})."""
    figure = Figure(figsize=(8, 3.2), layout="constrained")
    axes = figure.subplots(1, 2)
    for label, rows in curves.items():
        members = [row["members"] for row in rows]
        axes[0].plot(members, [100 * row["error"] for row in rows], "o-", label=label)
        axes[1].plot(members, [row["nll"] for row in rows], "o-", label=label)
    for panel, name in zip(axes, ("test error (%)", "test NLL")):
        panel.set_xlabel("members in the ensemble")
        panel.set_ylabel(name)
        panel.xaxis.get_major_locator().set_params(integer=True)
        panel.grid(alpha=0.3)
    axes[1].legend()
    figure.suptitle(title)
    return _save(figure, path)


def cost_curves(lines, search, mode_cost, path, title):
    """Test NLL and error against training cost (in one mode's training), one line per
    method over its ensemble sizes (``compare``'s lines, means over seeds), ESPRO with its
    λ search as one more point; and each point's NLL minus that of the deep ensemble of the
    same budget in the same seed (mean and spread over seeds)."""
    figure = Figure(figsize=(12, 3.6), layout="constrained")
    axes = figure.subplots(1, 3)
    for label, line in lines.items():
        modes_worth = [point["gradient_evaluations"] / mode_cost for point in line]
        color = None
        for panel, key, scale in ((axes[0], "nll", 1), (axes[1], "error", 100)):
            drawn = panel.plot(
                modes_worth, [scale * point[key] for point in line], "o-", markersize=3, label=label, color=color
            )
            color = drawn[0].get_color()
            if label == "ESPRO":
                panel.plot(
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
                modes_worth,
                [point["nll_vs_de"] for point in line],
                yerr=[point["nll_vs_de_std"] for point in line],
                fmt="o-",
                markersize=3,
                capsize=2,
                color=color,
                label=label,
            )
    axes[2].axhline(0, color="0.5", linestyle=":")
    for panel, name in zip(axes, ("test NLL", "test error (%)", "NLL minus the deep ensemble's\nof the same cost")):
        panel.set_xscale("log")
        panel.set_xlabel("training cost (gradient evaluations, in modes)")
        panel.set_ylabel(name)
        panel.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=8)
    figure.suptitle(title)
    return _save(figure, path)


def uncertainty(reliability, risk_coverage, path, title):
    """Reliability diagrams (accuracy against confidence per bin, the diagonal is calibrated)
    and risk-coverage curves (error rate of the most confident part of the test split), one
    line per method ({label: ``simplexkern.eval.uncertainty.reliability`` / ``risk_coverage``})."""
    figure = Figure(figsize=(8, 3.2), layout="constrained")
    axes = figure.subplots(1, 2)
    axes[0].plot([0, 1], [0, 1], color="0.6", linestyle=":", label="calibrated")
    for label, bins in reliability.items():
        filled = bins["count"] > 0
        axes[0].plot(bins["confidence"][filled], bins["accuracy"][filled], "o-", markersize=3, label=label)
    axes[0].set_xlabel("confidence (top label)")
    axes[0].set_ylabel("accuracy")
    for label, (coverage, risk) in risk_coverage.items():
        axes[1].plot(coverage, 100 * risk, label=label)
    axes[1].set_xlabel("coverage (most confident share kept)")
    axes[1].set_ylabel("error among those kept (%)")
    for panel in axes:
        panel.grid(alpha=0.3)
    axes[0].legend()
    figure.suptitle(title)
    return _save(figure, path)


def reg_choice(rows, chosen, path):
    """Validation NLL of ESPRO (the ensemble, and simplex 0 alone) against λ, the chosen λ
    marked; λ that stopped early have simplex 0's value only, or none."""
    figure = Figure(figsize=(4.5, 3.2), layout="constrained")
    panel = figure.subplots()
    finished = [row for row in rows if row.get("diverged") is None and row.get("stopped") is None]
    first = [row for row in rows if row.get("simplex0_val_nll") is not None and np.isfinite(row["simplex0_val_nll"])]
    panel.plot([row["reg"] for row in finished], [row["val_nll"] for row in finished], "o-", label="ensemble")
    panel.plot(
        [row["reg"] for row in first],
        [row["simplex0_val_nll"] for row in first],
        "s:",
        color="0.5",
        markersize=4,
        label="simplex 0",
    )
    best = next(row for row in finished if row["reg"] == chosen)
    panel.plot([best["reg"]], [best["val_nll"]], "r*", markersize=14, label=f"chosen λ = {chosen:g}")
    panel.set_xscale("symlog", linthresh=1)
    panel.set_xlabel("λ")
    panel.set_ylabel("validation NLL")
    panel.grid(alpha=0.3)
    panel.legend()
    return _save(figure, path)


def curve_profile(profile, path, title):
    """Train loss and test error along t, on the curve and on the straight segment."""
    figure = Figure(figsize=(8, 3.2), layout="constrained")
    axes = figure.subplots(1, 2)
    positions = profile["t"]
    for name, style in (("curve", "o-"), ("segment", "s--")):
        axes[0].plot(positions, profile[name]["train_loss"], style, label=name, markersize=3)
        axes[1].plot(positions, 100 * np.asarray(profile[name]["test_error"]), style, label=name, markersize=3)
    for panel, name in zip(axes, ("train loss", "test error (%)")):
        panel.set_xlabel("t")
        panel.set_ylabel(name)
        panel.grid(alpha=0.3)
    axes[0].set_yscale("log")
    axes[1].legend()
    figure.suptitle(title)
    return _save(figure, path)


def loss_plane(plane, names, path, title):
    """Train loss (log colour scale) and test error on the plane, the three points marked."""
    figure = Figure(figsize=(9, 3.8), layout="constrained")
    axes = figure.subplots(1, 2)
    grid_x, grid_y, points = plane["x"], plane["y"], np.asarray(plane["points"])
    loss = np.log10(np.maximum(plane["train_loss"], 1e-8))
    for panel, values, label in (
        (axes[0], loss, "log10 train loss"),
        (axes[1], 100 * plane["test_error"], "test error (%)"),
    ):
        filled = panel.contourf(grid_x, grid_y, values, levels=20, cmap="viridis")
        figure.colorbar(filled, ax=panel, label=label)
        panel.plot(points[:, 0], points[:, 1], "wo", markeredgecolor="k")
        for point, name in zip(points, names):
            panel.annotate(name, tuple(point), textcoords="offset points", xytext=(5, 5), color="w", fontsize=8)
        panel.set_xlabel("x (weight space)")
        panel.set_ylabel("y (weight space)")
    figure.suptitle(title)
    return _save(figure, path)


def dimensionality(rows, path, title):
    """Train / test error of points in the sub-complexes and their log-volume against the
    number of connectors."""
    figure = Figure(figsize=(8, 3.2), layout="constrained")
    axes = figure.subplots(1, 2)
    connectors = [row["connectors"] for row in rows]
    for key, label in (
        ("train_error", "train error (mean of the points)"),
        ("train_error_max", "train error (worst point)"),
        ("test_error", "test error (mean of the points)"),
        ("test_error_ensemble", "test error (the points' ensemble)"),
    ):
        axes[0].plot(connectors, [100 * row[key] for row in rows], "o-", label=label)
    axes[0].set_ylabel("error (%)")
    axes[0].legend(fontsize=7)
    axes[1].plot(connectors, [row["log_volume"] for row in rows], "o-")
    axes[1].set_ylabel("log V")
    for panel in axes:
        panel.set_xlabel("connectors")
        panel.xaxis.get_major_locator().set_params(integer=True)
        panel.grid(alpha=0.3)
    figure.suptitle(title)
    return _save(figure, path)
