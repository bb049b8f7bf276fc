"""The ``details`` of a report: what each command finds beyond its table of methods, one
class per command, each printing the lines shown above that table (``lines``)."""

import dataclasses

from simplexkern.cli.records import OMITTED_IF_NONE, MethodRow, Metrics, Record


def number(value, spec):
    """``value`` formatted by ``spec``, or "-" for a missing value."""
    return "-" if value is None else format(value, spec)


@dataclasses.dataclass
class Details(Record):
    """A command without details (``train``)."""

    prints_methods = False  # whether ``lines`` print the methods, in place of the table of them

    def lines(self, methods: list[MethodRow]) -> list[str]:
        """The lines printed above the table of ``methods``."""
        return []


@dataclasses.dataclass
class DeepEnsembleScores(Record):
    """The deep ensemble of a command's modes, a baseline beside its result."""

    test: Metrics
    members: list[Metrics]  # of each mode


@dataclasses.dataclass
class EnsembleDetails(Details):
    # {method: [{"members": k, the metrics and "error" of ensembles of k members}, k = 1..J]}
    ensemble_size: dict[str, list[dict]]


@dataclasses.dataclass
class EsproCost(Record):
    """ESPRO's training cost in gradient evaluations."""

    mode: int  # of one mode
    espro: int  # of the modes and simplexes of the chosen λ
    with_search: int  # the λ search included


@dataclasses.dataclass
class EsproDetails(Details):
    """``espro`` and ``demo``."""

    reg: float  # the λ used
    # choose_reg's rows, one per λ ([] for one λ): "reg", "val_nll", "val_accuracy",
    # "log_volume", "train_s", "gradient_evaluations", and why a λ "stopped" or "diverged"
    reg_rows: list[dict]
    ensemble_size: dict[str, list[dict]]  # as in EnsembleDetails: the deep ensemble and ESPRO
    vertices_train_s: float | None  # the chosen λ's share of the vertices' training time
    log_volume: list[float | None] | None  # of each simplex at the end of its training
    cost: EsproCost | None
    equal_compute_modes: dict[str, int] | None  # {"espro", "with_search"}: the modes each cost buys
    deep_ensemble: DeepEnsembleScores | None

    def lines(self, methods):
        lines = []
        if self.reg_rows:
            lines.append("λ chosen on the validation split (ESPRO's validation NLL):")
            lines.extend(reg_lines(self.reg_rows, self.reg, self.cost.mode if self.cost else None))
        else:
            lines.append(f"λ = {self.reg:g}")
        if self.cost is not None:
            cost = self.cost
            lines.append(
                f"training cost in gradient evaluations (examples x points): one mode {cost.mode:,}; ESPRO "
                f"{cost.espro / cost.mode:.2f} modes' worth, the λ search included "
                f"{cost.with_search / cost.mode:.2f}"
            )
        return lines


def reg_lines(rows, chosen, mode_cost):
    """The λ table of choose_reg's ``rows``, costs in modes' worth of training."""
    lines = []
    for row in rows:
        cost = f"{row['gradient_evaluations'] / mode_cost:6.2f} modes" if "gradient_evaluations" in row else ""
        if row.get("diverged"):
            lines.append(f"  λ = {row['reg']:<6g} diverged (the loss became NaN or inf){'':27s}{cost}")
            continue
        if row.get("stopped"):
            lines.append(f"  λ = {row['reg']:<6g} {row['stopped']}; {cost}")
            continue
        flags = [
            ("saturated: hard 0/1 probabilities", row.get("saturated")),
            ("near-hard probabilities", row.get("near_hard") and not row.get("saturated")),
            ("no validation error: NLL alone ranks it", row.get("zero_val_error")),
        ]
        lines.append(
            f"  λ = {row['reg']:<6g} NLL {row['val_nll']:.4f}  accuracy {row['val_accuracy']:.4f}  log V "
            f"{number(row['log_volume'], '6.2f')}  {row['train_s']:6.1f} s {cost}"
            + "".join(f"   {text}" for text, on in flags if on)
            + ("   <- chosen" if row["reg"] == chosen else "")
        )
    return lines


@dataclasses.dataclass
class SproDetails(Details):
    # the dimensionality sweep, one row per number of connectors: "connectors", "vertices",
    # "log_volume", and "train_loss", "train_error", "train_error_max", "test_error",
    # "test_error_ensemble" over the points of that sub-complex
    sweep: list[dict]
    deep_ensemble: DeepEnsembleScores | None

    def lines(self, methods):
        lines = [
            f"{'connectors':>10s} {'log V':>8s} {'train err':>10s} {'worst':>7s} {'test err':>9s} "
            f"{'ensemble':>9s}   (means over the points of each sub-complex)"
        ]
        for row in self.sweep:
            lines.append(
                f"{row['connectors']:10d} {number(row['log_volume'], '8.2f')} {row['train_error']:10.4f} "
                f"{row['train_error_max']:7.4f} {row['test_error']:9.4f} {row['test_error_ensemble']:9.4f}"
            )
        return lines


@dataclasses.dataclass
class CurveDetails(Details):
    # simplexkern.eval.curve_profile along the curve and the straight segment: "t", "curve"
    # and "segment" ({metric: per t}), "length" and "summary" ({path: {metric: {"min", "max",
    # "mean", "length_weighted"}}})
    profile: dict
    midpoint: dict  # "t" (1/2), and the "curve"'s and the "segment"'s metrics there

    def lines(self, methods):
        summary = self.profile["summary"]
        lines = [f"{'at t = 1/2':14s} {'train loss':>11s} {'test error':>11s}   max train loss along the path"]
        for path in ("curve", "segment"):
            lines.append(
                f"{path:14s} {self.midpoint[path]['train_loss']:11.4f} {self.midpoint[path]['test_error']:11.4f}   "
                f"{summary[path]['train_loss']['max']:.4f}"
            )
        return lines


@dataclasses.dataclass
class FgeDetails(Details):
    ensemble_size: dict[str, list[dict]]  # as in EnsembleDetails
    start: Metrics | None  # of the mode FGE starts from
    snapshots: list[dict] | None  # the "cycle", "step" and "lr" of each snapshot


@dataclasses.dataclass
class EvaluateDetails(Details):
    source: str  # the folder or checkpoint evaluated
    # as in EnsembleDetails, for a source of several members
    ensemble_size: dict[str, list[dict]] | None = dataclasses.field(default=None, metadata=OMITTED_IF_NONE)


@dataclasses.dataclass
class SurfaceDetails(Details):
    source: str
    file: str  # the grids, beside the report
    # the three points: "name", "x", "y" on the plane, and their "train_loss", "train_error",
    # "test_loss", "test_error"
    points: list[dict]
    range: dict[str, dict[str, float]]  # {grid: {"min", "max"}} of the four grids

    def lines(self, methods):
        lines = [f"{'point':10s} {'x':>9s} {'y':>9s} {'train loss':>11s} {'train err':>10s} {'test err':>9s}"]
        for point in self.points:
            lines.append(
                f"{point['name']:10s} {point['x']:9.3f} {point['y']:9.3f} {point['train_loss']:11.4f} "
                f"{point['train_error']:10.4f} {point['test_error']:9.4f}"
            )
        grid = self.range
        lines.append(
            f"on the grid: train loss {grid['train_loss']['min']:.4f}..{grid['train_loss']['max']:.4f}, test "
            f"error {grid['test_error']['min']:.4f}..{grid['test_error']['max']:.4f}; grids in {self.file}"
        )
        return lines


@dataclasses.dataclass
class CompareDetails(Details):
    prints_methods = True

    seeds: list[int]
    mode_cost: int  # gradient evaluations of one mode, the unit of cost
    deep_ensemble_modes: int  # the modes of the largest deep ensemble
    # per method, per ensemble size: "members", the metrics and "error", "nll_vs_de" and
    # "error_vs_de" (minus the deep ensemble of that cost in the same seed), each with its
    # "_std" over seeds, "seeds_below_de", "gradient_evaluations", "forward_passes", "train_s"
    method_lines: dict[str, list[dict]] = dataclasses.field(metadata={"json": "lines"})
    espro_with_search: dict  # "gradient_evaluations" and "train_s" of ESPRO with its λ search
    # per budget: the "best" method by NLL with its "members", "nll" and "error", the
    # "best_error" by error, and the "deep_ensemble" of that budget
    best_at_budget: list[dict]
    per_seed: list[dict]  # "seed", "reg" and "reg_rows" of the λ search, each method's "uncertainty"

    def lines(self, methods):
        unit = self.mode_cost
        lines = [
            f"seeds {', '.join(map(str, self.seeds))}; λ chosen per seed: "
            + ", ".join(f"{seed['reg']:g}" for seed in self.per_seed)
            + f"; training cost unit: one mode = {unit:,} gradient evaluations (examples x points)",
            "",
            "test split, mean ± std over seeds",
        ]
        width = max(len(row.name) for row in methods)
        lines.append(
            f"{'':{width}s} {'accuracy':>15s} {'NLL':>15s} {'ECE':>7s} {'Brier':>7s} {'cost':>7s} {'train':>8s} "
            f"{'predict':>10s}   NLL - deep ensemble of that cost"
        )
        for row in methods:
            lines.append(self._method_line(row, width))
        search = self.espro_with_search
        lines += [
            f"ESPRO with its λ search: {search['gradient_evaluations'] / unit:.2f}m, {search['train_s']:.1f} s",
            "cost: training in modes' worth of gradient evaluations (m); train: wall seconds; predict: the test split",
            "",
            "the best at each training budget (lowest mean test NLL, and error, among what costs no "
            "more; members in brackets):",
            f"{'budget':>8s}  {'best by NLL':24s} {'NLL':>7s} {'error':>7s}   {'best by error':24s} {'error':>7s}"
            "   deep ensemble of that budget",
        ]
        for budget in self.best_at_budget:
            deep_ensemble, by_error = budget["deep_ensemble"], budget["best_error"]
            lines.append(
                f"{budget['modes_worth']:7.2f}m  {budget['best'] + ' (' + str(budget['members']) + ')':24s} "
                f"{budget['nll']:7.4f} {100 * budget['error']:6.2f}%   "
                f"{by_error['method'] + ' (' + str(by_error['members']) + ')':24s} "
                f"{100 * by_error['error']:6.2f}%   {deep_ensemble['members']:2d} modes: "
                f"NLL {deep_ensemble['nll']:.4f}, error {100 * deep_ensemble['error']:.2f}%"
            )
        return lines

    def _method_line(self, row, width):
        test, std, versus = row.test, row.test_std, row.vs_deep_ensemble
        return (
            f"{row.name:{width}s} {test.accuracy:7.4f} ± {std.accuracy:.4f} {test.nll:7.4f} ± "
            f"{std.nll:.4f} {test.ece:7.4f} {test.brier:7.4f} {row.gradient_evaluations / self.mode_cost:6.2f}m "
            f"{row.train_s:7.1f}s {1e3 * row.predict_s:7.1f} ms   "
            + (
                ""
                if row.name.startswith("deep ensemble")
                else f"{versus.nll_vs_de:+.4f} ± {versus.nll_vs_de_std:.4f}, lower in {versus.seeds_below_de} of "
                f"{len(self.seeds)}"
            )
        )


DETAILS = {  # command -> the class of its details
    "train": Details,
    "ensemble": EnsembleDetails,
    "espro": EsproDetails,
    "demo": EsproDetails,
    "spro": SproDetails,
    "curve": CurveDetails,
    "fge": FgeDetails,
    "compare": CompareDetails,
    "evaluate": EvaluateDetails,
    "surface": SurfaceDetails,
}
