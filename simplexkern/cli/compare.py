"""``simplexkern compare``: the ensembles of the library judged at equal training cost.

For each seed (a replicate of the whole protocol: initialisations, data order, points and
the validation split), on the same modes: the deep ensemble, ESPRO (λ chosen on the
validation split as ``espro`` chooses it), FGE from mode 0 and an SPRO complex of modes 0
and 1. Cost is counted in gradient evaluations (``simplexkern.cli.costs``), with wall seconds
beside it. Every method is a line over its ensemble sizes (``simplexkern.cli.cost_lines``).
The deep ensemble is trained up to the largest budget any method used, so each method meets
a deep ensemble of equal compute.
"""

import dataclasses
import math

from simplexkern import train
from simplexkern.cli import cost_lines, costs, parts, plots, scoring, training
from simplexkern.cli.details import CompareDetails
from simplexkern.cli.records import MethodRow, Metrics, VersusDeepEnsemble
from simplexkern.cli.report import ReportPart
from simplexkern.cli.run_data import load_data, ood_inputs
from simplexkern.cli.settings import optimisation


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
        return {
            name[len(self.tag) + 2 :]: phase
            for name, phase in self.folder.phases.items()
            if name.startswith(self.tag + ": ")
        }


@dataclasses.dataclass
class SeedTraining:
    """What one seed trained: what scoring needs."""

    context: object  # the seed's Context: its settings, data and SeedFolder
    n_modes: int  # the modes trained for ESPRO, FGE and the complex (at least 2)
    espro: training.EsproSimplexes
    snapshots: list  # FGE's
    complex: object  # the SPRO complex of modes 0 and 1
    costs: dict  # gradient evaluations: "mode", "espro" (espro_costs), "fge", "complex"


@dataclasses.dataclass
class CompareTraining:
    seeds: list[SeedTraining]
    n_deep_ensemble: int  # the modes of the deep ensemble of each seed, up to the largest budget


def _seed_context(context, seed, data):
    return dataclasses.replace(
        context, settings={**context.settings, "seed": seed}, data=data, folder=SeedFolder(context.folder, seed)
    )


def _train_seed(context):
    """Modes (at least 2), ESPRO, FGE and the complex of one seed."""
    settings, runtime, data = context.settings, context.runtime, context.data
    n_modes = max(2, settings["modes"])
    modes = training.train_modes(context, n_modes)
    espro = training.train_espro(context, modes[: settings["modes"]])
    with context.folder.phase("fge"):
        snapshots = training.fge_snapshots(context, modes[0])
    with context.folder.phase("complex"):
        complex_ = train.spro_complex(
            modes[:2],
            data,
            settings["connectors"],
            reg=settings["complex_reg"],
            n_samples=settings["samples"],
            optimisation=optimisation(settings, "vertex_epochs"),
            execution=runtime.execution(settings["seed"], context.folder.sub("spro")),
        )
    mode_cost = costs.mode_cost(settings, data)
    seed_costs = {
        "mode": mode_cost,
        "espro": costs.espro_costs(settings, data, espro.reg_rows),
        "fge": mode_cost + costs.fge_cost(settings, data),
        "complex": 2 * mode_cost + costs.simplex_cost(settings, data, settings["connectors"]),
    }
    return SeedTraining(context, n_modes, espro, snapshots, complex_, seed_costs)


def train_compare(context):
    """Every seed's methods, then the deep ensemble of each seed up to the largest budget."""
    seeds = context.settings["seeds"]
    contexts = [
        _seed_context(
            context, seed, context.data if seed == seeds[0] else load_data({**context.settings, "seed": seed})
        )
        for seed in seeds
    ]
    trained = [_train_seed(seed_context) for seed_context in contexts]
    mode_cost = trained[0].costs["mode"]
    largest = max(
        max(seed.costs["espro"]["with_search"], seed.costs["fge"], seed.costs["complex"]) for seed in trained
    )  # with the λ search
    n_deep_ensemble = max(max(seed.n_modes for seed in trained), math.ceil(largest / mode_cost))
    for seed in trained:
        if n_deep_ensemble > seed.n_modes:
            with seed.context.folder.phase("more modes"):
                training.train_modes(seed.context, n_deep_ensemble)
    return CompareTraining(trained, n_deep_ensemble)


def score_compare(context, trained):
    """{method: Scores} of each seed: the test split, without validation scores."""
    per_seed = []
    for seed in trained.seeds:
        seed_context, settings = seed.context, seed.context.settings
        ood = ood_inputs(settings, seed_context.data)
        with seed_context.folder.phase("predict"):
            modes = training.train_modes(seed_context, trained.n_deep_ensemble)  # trained: loaded
            members = {
                "deep ensemble": (modes, 1),
                "ESPRO": (seed.espro.simplexes, settings["eval_samples"]),
                "FGE": (seed.snapshots, 1),
                "SPRO complex": ([seed.complex], settings["eval_samples"]),
            }
            per_seed.append(
                {
                    name: scoring.score(seed_context, models, n_points, ood=ood, validation=False)
                    for name, (models, n_points) in members.items()
                }
            )
    return per_seed


def describe_compare(context, trained, per_seed):
    settings, seeds = context.settings, context.settings["seeds"]
    seed_lines = [
        cost_lines.seed_lines(seed, scores, trained.n_deep_ensemble) for seed, scores in zip(trained.seeds, per_seed)
    ]
    lines = cost_lines.aggregate([seed[0] for seed in seed_lines])
    search = [seed[1] for seed in seed_lines]
    espro_search = {
        "gradient_evaluations": cost_lines.mean_and_std([seed["gradient_evaluations"] for seed in search])[0],
        "train_s": cost_lines.mean_and_std([seed["train_s"] for seed in search])[0],
    }
    mode_cost = trained.seeds[0].costs["mode"]
    methods = [
        _method_row(name, line[-1], settings, [scores[name].predict_s for scores in per_seed])
        for name, line in lines.items()
    ]
    title = f"{settings['model']} on {context.data.name}, {len(seeds)} seed{'s' if len(seeds) > 1 else ''}"
    files = [
        plots.cost_curves(lines, espro_search, mode_cost, context.folder.sub("cost.png"), title),
        parts.uncertainty_plot(
            context.folder,
            context.data,
            {name: scores.probs for name, scores in per_seed[0].items()},
            f"{title}: seed {seeds[0]}, every method's whole ensemble",
        ),
    ]
    details = CompareDetails(
        seeds=seeds,
        mode_cost=mode_cost,
        deep_ensemble_modes=trained.n_deep_ensemble,
        method_lines=lines,
        espro_with_search=espro_search,
        best_at_budget=cost_lines.best_at_budgets(lines, mode_cost, espro_search["gradient_evaluations"]),
        per_seed=[
            {
                "seed": seed_number,
                "reg": seed.espro.reg,
                "reg_rows": seed.espro.reg_rows,
                "uncertainty": {name: method.uncertainty.to_json() for name, method in scores.items()},
            }
            for seed_number, seed, scores in zip(seeds, trained.seeds, per_seed)
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


def _method_row(name, point, settings, predict_s):
    """The row of a method's whole ensemble (``point``, the last of its line): means over seeds."""
    size = f"{point['members']} members" if name != "SPRO complex" else f"{settings['eval_samples']} points"
    return MethodRow(
        name=f"{name} ({size})",
        test=Metrics.from_json(point),
        test_std=Metrics(**{key: point[f"{key}_std"] for key in cost_lines.KEYS[:4]}),
        train_s=point["train_s"],
        predict_s=cost_lines.mean_and_std(predict_s)[0],
        gradient_evaluations=point["gradient_evaluations"],
        forward_passes=point["forward_passes"],
        vs_deep_ensemble=VersusDeepEnsemble.from_json(point),
    )
