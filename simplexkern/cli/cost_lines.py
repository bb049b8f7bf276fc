"""``compare``'s lines: each method's test metrics against its training cost over its
ensemble sizes (the deep ensemble over k of its modes, ESPRO over k simplexes, each with its
own mode, FGE over its first k snapshots, k cycles after the mode, the complex one point),
each point paired, within its seed (the same training data), with the deep ensemble of as
many modes as its cost buys; then means over seeds, and the best at each budget."""

import numpy as np

from simplexkern import eval as evaluation
from simplexkern.cli import costs

KEYS = ("accuracy", "nll", "ece", "brier", "error")


def _metrics(probs, labels):
    metrics = evaluation.metrics(probs, labels)
    return {**metrics, "error": 1 - metrics["accuracy"]}


def _prefix_curve(probs, labels):
    """Metrics of the average of the first k members, k = 1..J (snapshots taken in order)."""
    return [{"members": size, **_metrics(probs[:size].mean(0), labels)} for size in range(1, len(probs) + 1)]


def seed_lines(seed, scores, n_deep_ensemble):
    """({method: its line over ensemble sizes: metrics, cost, forward passes and train
    seconds at each size}, ESPRO's cost and train seconds with its λ search) of one seed
    (its ``SeedTraining`` and ``{method: Scores}``)."""
    settings, data, folder = seed.context.settings, seed.context.data, seed.context.folder
    n_modes, mode_cost, seed_costs, labels = settings["modes"], seed.costs["mode"], seed.costs, data.y_test
    more_s = folder.seconds("more modes") if "more modes" in folder.phases else 0
    mode_s = (folder.seconds("modes") + more_s) / n_deep_ensemble
    simplex_s = seed.espro.vertices_s / n_modes
    simplex_cost = costs.simplex_cost(settings, data, settings["vertices"])
    cycle_cost = costs.fge_cost(settings, data, 1)
    eval_samples, cycles = settings["eval_samples"], settings["cycles"]
    lines = {
        "deep ensemble": [
            dict(row, gradient_evaluations=size * mode_cost, forward_passes=size, train_s=size * mode_s)
            for size, row in enumerate(evaluation.ensemble_size_curve(scores["deep ensemble"].probs, labels), 1)
        ],
        "ESPRO": [
            dict(
                row,
                gradient_evaluations=size * (mode_cost + simplex_cost),
                forward_passes=size * eval_samples,
                train_s=size * (mode_s + simplex_s),
            )
            for size, row in enumerate(evaluation.ensemble_size_curve(scores["ESPRO"].probs, labels), 1)
        ],
        "FGE": [
            dict(
                row,
                gradient_evaluations=mode_cost + size * cycle_cost,
                forward_passes=size,
                train_s=mode_s + folder.seconds("fge") * size / cycles,
            )
            for size, row in enumerate(_prefix_curve(scores["FGE"].probs, labels), 1)
        ],
        "SPRO complex": [
            {
                "members": 1,
                **_metrics(scores["SPRO complex"].probs.mean(0), labels),
                "gradient_evaluations": seed_costs["complex"],
                "forward_passes": eval_samples,
                "train_s": 2 * mode_s + folder.seconds("complex"),
            }
        ],
    }
    deep_ensemble = lines["deep ensemble"]
    for line in lines.values():  # paired with this seed's deep ensemble of the same budget
        for point in line:
            same = deep_ensemble[min(len(deep_ensemble), max(1, point["gradient_evaluations"] // mode_cost)) - 1]
            point.update(nll_vs_de=point["nll"] - same["nll"], error_vs_de=point["error"] - same["error"])
    with_search = {
        "gradient_evaluations": seed_costs["espro"]["with_search"],
        "train_s": n_modes * mode_s + folder.seconds("vertices"),
    }
    return lines, with_search


def mean_and_std(values):
    """(mean, standard deviation) of ``values`` over seeds (0 for one seed)."""
    values = np.asarray(values, dtype=float)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def aggregate(per_seed):
    """{method: [point per ensemble size: means and stds over seeds]} of the seeds' lines."""
    lines = {}
    for name, first in per_seed[0].items():
        points = []
        for size in range(len(first)):
            rows = [lines_of_seed[name][size] for lines_of_seed in per_seed]
            point = {"members": rows[0]["members"]}
            for key in (*KEYS, "nll_vs_de", "error_vs_de", "gradient_evaluations", "forward_passes", "train_s"):
                point[key], point[f"{key}_std"] = mean_and_std([row[key] for row in rows])
            point["seeds_below_de"] = sum(row["nll_vs_de"] < 0 for row in rows)
            points.append(point)
        lines[name] = points
    return lines


def best_at_budgets(lines, mode_cost, search_cost):
    """For each budget (1, 2, 4, ... modes' training up to the deep ensemble's size, each
    method's whole cost, and ESPRO's with its λ search): the point of lowest mean test NLL
    among those that cost no more, the point of lowest mean test error, and the deep
    ensemble of as many modes as it buys."""
    points = [(name, point) for name, line in lines.items() for point in line]
    deep_ensemble = lines["deep ensemble"]
    n_deep_ensemble = len(deep_ensemble)
    budgets = sorted(
        {line[-1]["gradient_evaluations"] for line in lines.values()}
        | {search_cost}
        | {2**power * mode_cost for power in range(n_deep_ensemble.bit_length()) if 2**power <= n_deep_ensemble}
    )
    rows = []
    for budget in budgets:
        affordable = [(name, point) for name, point in points if point["gradient_evaluations"] <= budget]
        name, best = min(affordable, key=lambda named: named[1]["nll"])
        by_error = min(affordable, key=lambda named: named[1]["error"])
        same = deep_ensemble[min(n_deep_ensemble, int(budget // mode_cost)) - 1]
        rows.append(
            {
                "budget": budget,
                "modes_worth": budget / mode_cost,
                "best": name,
                "members": best["members"],
                "nll": best["nll"],
                "error": best["error"],
                "best_error": {"method": by_error[0], "members": by_error[1]["members"], "error": by_error[1]["error"]},
                "deep_ensemble": {"members": same["members"], "nll": same["nll"], "error": same["error"]},
            }
        )
    return rows
