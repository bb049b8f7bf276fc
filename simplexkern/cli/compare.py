"""``simplexkern compare``: the ensembles of the library judged at equal training cost.

For each seed (a replicate of the whole protocol: initialisations, data order, points and
the validation split), on the same modes: the deep ensemble, ESPRO (λ chosen on the
validation split as ``espro`` chooses it), FGE from mode 0 and an SPRO complex of modes 0
and 1. Cost is counted in gradient evaluations (training examples x points over the steps,
the same on any machine; ``Phase.gradient_evaluations``), with wall seconds beside it.
Every method is a line over its ensemble sizes: the deep ensemble over k of its modes,
ESPRO over k simplexes (each with its own mode), FGE over its first k snapshots (k cycles
after the mode), the complex one point. The deep ensemble is trained up to the largest
budget any method used, so each method meets a deep ensemble of equal compute: each point
is also compared, within its seed (the same training data), with the deep ensemble of as
many modes as its cost buys.
"""

import math

import numpy as np

from simplexkern import eval as evaluation
from simplexkern import train
from simplexkern.cli import jobs, plots
from simplexkern.cli.details import CompareDetails
from simplexkern.cli.records import MethodRow, Metrics, VersusDeepEnsemble
from simplexkern.cli.report import ReportPart

KEYS = ("accuracy", "nll", "ece", "brier", "error")


class SeedFolder:
    """The part of a run folder that holds one seed's runs (``seed_{seed}/``), with phases of its own."""

    def __init__(self, folder, seed):
        self.folder, self.tag = folder, f"seed {seed}"
        self.path = folder.path / f"seed_{seed}"

    def sub(self, name):
        return str(self.path / name)

    def phase(self, name):
        return self.folder.phase(f"{self.tag}: {name}")

    def seconds(self, name):
        return self.folder.seconds(f"{self.tag}: {name}")

    @property
    def phases(self):
        return {k[len(self.tag) + 2 :]: v for k, v in self.folder.phases.items() if k.startswith(self.tag + ": ")}


def _metrics(probs, y):
    m = evaluation.metrics(probs, y)
    return {**m, "error": 1 - m["accuracy"]}


def _prefix_curve(probs, y):
    """Metrics of the average of the first k members, k = 1..J (snapshots taken in order)."""
    return [{"members": k, **_metrics(probs[:k].mean(0), y)} for k in range(1, len(probs) + 1)]


def _train_seed(s, d, folder, how):
    """Modes (at least 2), ESPRO, FGE and the complex of one seed: what scoring needs."""
    n_modes = max(2, s["modes"])
    modes = jobs._modes(s, d, folder, how, n_modes)
    reg, simplexes, rows, vertices_s = jobs.train_espro(s, d, folder, how, modes[: s["modes"]])
    with folder.phase("fge"):
        snapshots = train.fge(
            modes[0],
            d,
            s["cycles"],
            s["cycle_epochs"],
            s["lr_max"],
            s["lr_min"],
            batch_size=s["batch_size"],
            seed=s["seed"],
            device=how.device,
            out=folder.sub("fge"),
            progress=how.progress,
            compile=how.compile,
        )
    with folder.phase("complex"):
        complex_ = train.spro_complex(
            modes[:2],
            d,
            s["connectors"],
            reg=s["complex_reg"],
            vertex_epochs=s["vertex_epochs"],
            lr=s["lr"],
            n_samples=s["samples"],
            batch_size=s["batch_size"],
            seed=s["seed"],
            device=how.device,
            out=folder.sub("spro"),
            progress=how.progress,
            compile=how.compile,
        )
    m = jobs.mode_cost(s, d)
    costs = {
        "mode": m,
        "espro": jobs.espro_costs(s, d, rows),
        "fge": m + jobs.fge_cost(s, d),
        "complex": 2 * m + jobs.simplex_cost(s, d, s["connectors"]),
    }
    return {
        "reg": reg,
        "reg_rows": rows,
        "simplexes": simplexes,
        "snapshots": snapshots,
        "complex": complex_,
        "vertices_s": vertices_s,
        "n_modes": n_modes,
        "costs": costs,
    }


def _budget(trained):
    """The largest training cost of any method and seed, with the λ search."""
    return max(max(t["costs"]["espro"]["with_search"], t["costs"]["fge"], t["costs"]["complex"]) for t in trained)


def _score_seed(s, d, folder, how, t, n_de):
    """Per method of one seed: its line over ensemble sizes (cost, forward passes and
    metrics at each size), the whole ensemble's test metrics, uncertainty and times."""
    j, m, c = s["modes"], t["costs"]["mode"], t["costs"]
    ood = jobs.ood_inputs(s, d)
    with folder.phase("predict"):
        modes = jobs._modes(s, d, folder, how, n_de)  # trained: loaded
        de, es, fge, cx = (
            jobs.score(members, d, points, s["seed"], how.device, ood=ood, validation=False)
            for members, points in (
                (modes, 1),
                (t["simplexes"], s["eval_samples"]),
                (t["snapshots"], 1),
                ([t["complex"]], s["eval_samples"]),
            )
        )
    y = d.y_test
    per_mode_s = (
        folder.seconds("modes") + (folder.seconds("more modes") if "more modes" in folder.phases else 0)
    ) / n_de
    simplex_s = t["vertices_s"] / j
    cycle = jobs.fge_cost(s, d, 1)
    lines = {
        "deep ensemble": [
            dict(row, gradient_evaluations=k * m, forward_passes=k, train_s=k * per_mode_s)
            for k, row in enumerate(evaluation.ensemble_size_curve(de.probs, y), 1)
        ],
        "ESPRO": [
            dict(
                row,
                gradient_evaluations=k * (m + jobs.simplex_cost(s, d, s["vertices"])),
                forward_passes=k * s["eval_samples"],
                train_s=k * (per_mode_s + simplex_s),
            )
            for k, row in enumerate(evaluation.ensemble_size_curve(es.probs, y), 1)
        ],
        "FGE": [
            dict(
                row,
                gradient_evaluations=m + k * cycle,
                forward_passes=k,
                train_s=per_mode_s + folder.seconds("fge") * k / s["cycles"],
            )
            for k, row in enumerate(_prefix_curve(fge.probs, y), 1)
        ],
        "SPRO complex": [
            {
                "members": 1,
                **_metrics(cx.probs.mean(0), y),
                "gradient_evaluations": c["complex"],
                "forward_passes": s["eval_samples"],
                "train_s": 2 * per_mode_s + folder.seconds("complex"),
            }
        ],
    }
    de_line = lines["deep ensemble"]
    for line in lines.values():  # paired with this seed's deep ensemble of the same budget
        for p in line:
            same = de_line[min(len(de_line), max(1, p["gradient_evaluations"] // m)) - 1]
            p.update(nll_vs_de=p["nll"] - same["nll"], error_vs_de=p["error"] - same["error"])
    scores = {"deep ensemble": de, "ESPRO": es, "FGE": fge, "SPRO complex": cx}
    out = {
        name: {
            "line": line,
            "uncertainty": scores[name].uncertainty,
            "predict_s": scores[name].predict_s,
            "probs": scores[name].probs,
        }
        for name, line in lines.items()
    }
    out["ESPRO"]["with_search"] = {
        "gradient_evaluations": c["espro"]["with_search"],
        "train_s": j * per_mode_s + folder.seconds("vertices"),
    }
    return out


def _spread(values):
    values = np.asarray(values, dtype=float)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def _aggregate(per_seed):
    """{method: [point per ensemble size: means and stds over seeds]}."""
    lines = {}
    for name in per_seed[0]:
        points = []
        for k in range(len(per_seed[0][name]["line"])):
            rows = [p[name]["line"][k] for p in per_seed]
            point = {"members": rows[0]["members"]}
            for key in (*KEYS, "nll_vs_de", "error_vs_de", "gradient_evaluations", "forward_passes", "train_s"):
                point[key], point[f"{key}_std"] = _spread([r[key] for r in rows])
            point["seeds_below_de"] = sum(r["nll_vs_de"] < 0 for r in rows)
            points.append(point)
        lines[name] = points
    return lines


def best_at_budgets(lines, mode_cost, search_cost):
    """For each budget (1, 2, 4, ... modes' training up to the deep ensemble's size, each
    method's whole cost, and ESPRO's with its λ search): the point of lowest mean test NLL
    among those that cost no more, the point of lowest mean test error, and the deep
    ensemble of as many modes as it buys."""
    points = [(name, p) for name, line in lines.items() for p in line]
    n_de = len(lines["deep ensemble"])
    budgets = sorted(
        {line[-1]["gradient_evaluations"] for line in lines.values()}
        | {search_cost}
        | {2**i * mode_cost for i in range(n_de.bit_length()) if 2**i <= n_de}
    )
    rows = []
    for b in budgets:
        affordable = [(n, p) for n, p in points if p["gradient_evaluations"] <= b]
        name, best = min(affordable, key=lambda point: point[1]["nll"])
        by_error = min(affordable, key=lambda point: point[1]["error"])
        de = lines["deep ensemble"][min(len(lines["deep ensemble"]), int(b // mode_cost)) - 1]
        rows.append(
            {
                "budget": b,
                "modes_worth": b / mode_cost,
                "best": name,
                "members": best["members"],
                "nll": best["nll"],
                "error": best["error"],
                "best_error": {"method": by_error[0], "members": by_error[1]["members"], "error": by_error[1]["error"]},
                "deep_ensemble": {"members": de["members"], "nll": de["nll"], "error": de["error"]},
            }
        )
    return rows


def run_compare(s, d, folder, how):
    seeds = s["seeds"]
    data = {seed: d if seed == seeds[0] else jobs.load_data({**s, "seed": seed}) for seed in seeds}
    parts = {seed: SeedFolder(folder, seed) for seed in seeds}
    trained = {seed: _train_seed({**s, "seed": seed}, data[seed], parts[seed], how) for seed in seeds}
    m = trained[seeds[0]]["costs"]["mode"]
    n_de = max(max(t["n_modes"] for t in trained.values()), math.ceil(_budget(trained.values()) / m))
    for seed in seeds:  # the deep ensemble up to the largest budget
        if n_de > trained[seed]["n_modes"]:
            with parts[seed].phase("more modes"):
                jobs._modes({**s, "seed": seed}, data[seed], parts[seed], how, n_de)
    per_seed = [_score_seed({**s, "seed": seed}, data[seed], parts[seed], how, trained[seed], n_de) for seed in seeds]
    lines = _aggregate(per_seed)
    search = [p["ESPRO"]["with_search"] for p in per_seed]
    espro_search = {
        "gradient_evaluations": _spread([x["gradient_evaluations"] for x in search])[0],
        "train_s": _spread([x["train_s"] for x in search])[0],
    }
    budgets = best_at_budgets(lines, m, espro_search["gradient_evaluations"])
    methods = []
    for name, line in lines.items():
        p = line[-1]
        size = f"{p['members']} members" if name != "SPRO complex" else f"{s['eval_samples']} points"
        predict_s = _spread([ps[name]["predict_s"] for ps in per_seed])[0]
        methods.append(
            MethodRow(
                name=f"{name} ({size})",
                test=Metrics.from_json(p),
                test_std=Metrics(**{k: p[f"{k}_std"] for k in KEYS[:4]}),
                train_s=p["train_s"],
                predict_s=predict_s,
                gradient_evaluations=p["gradient_evaluations"],
                forward_passes=p["forward_passes"],
                vs_deep_ensemble=VersusDeepEnsemble.from_json(p),
            )
        )
    title = f"{s['model']} on {d.name}, {len(seeds)} seed{'s' if len(seeds) > 1 else ''}"
    files = [
        plots.cost_curves(lines, espro_search, m, folder.sub("cost.png"), title),
        jobs.uncertainty_plot(
            folder,
            d,
            {name: part["probs"] for name, part in per_seed[0].items()},
            f"{title}: seed {seeds[0]}, every method's whole ensemble",
        ),
    ]
    details = CompareDetails(
        seeds=seeds,
        mode_cost=m,
        deep_ensemble_modes=n_de,
        method_lines=lines,
        espro_with_search=espro_search,
        best_at_budget=budgets,
        per_seed=[
            {
                "seed": seed,
                "reg": trained[seed]["reg"],
                "reg_rows": trained[seed]["reg_rows"],
                "uncertainty": {name: ps[name]["uncertainty"].to_json() for name in ps},
            }
            for seed, ps in zip(seeds, per_seed)
        ],
    )
    return ReportPart(
        test=None,
        val=None,
        uncertainty=None,
        temperature=None,
        members=[],
        methods=methods,
        details=details,
        plots=files,
    )
