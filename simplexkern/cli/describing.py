"""The describing step of each command's job, on rank 0 once its models are scored: the
report part, with the rows of the printed table and the details, and the plots."""

import pathlib

import numpy as np

from simplexkern.cli import costs, plots
from simplexkern.cli import details as report_details
from simplexkern.cli.parts import (
    in_table_order,
    members_of,
    method_row,
    method_rows,
    report_part,
    single_mode_row,
    size_curves,
    uncertainty_plot,
)
from simplexkern.cli.records import Member, Metrics
from simplexkern.cli.report import ReportPart
from simplexkern.cli.training import mode_paths

PLANE_GRIDS = ("train_loss", "train_error", "test_loss", "test_error")


def describe_train(context, modes, scores):
    """``train``: the mode's rows, with the temperature-scaled one."""
    folder, data = context.folder, context.data
    methods = method_rows("mode", scores, folder.seconds("modes"), costs.mode_cost(context.settings, data))
    files = [uncertainty_plot(folder, data, {"mode": scores.probs}, f"one mode on {data.name}")]
    return report_part(scores, members_of(folder, ["mode 0"], mode_paths(folder, 1), scores), methods, plot_files=files)


def describe_ensemble(context, modes, scores):
    """``ensemble``: a single mode against the deep ensemble, and the ensemble-size curve."""
    folder, data, n_modes = context.folder, context.data, context.settings["modes"]
    modes_s, mode_cost = folder.seconds("modes"), costs.mode_cost(context.settings, data)
    methods = [
        single_mode_row(scores, n_modes, modes_s, mode_cost),
        *method_rows(f"deep ensemble ({n_modes} modes)", scores, modes_s, n_modes * mode_cost),
    ]
    sizes = size_curves({"deep ensemble": scores.probs}, data)
    files = [
        plots.ensemble_size(sizes, folder.sub("ensemble_size.png"), f"deep ensemble on {data.name}"),
        uncertainty_plot(folder, data, {"deep ensemble": scores.probs}, f"deep ensemble on {data.name}"),
    ]
    names = [f"mode {index}" for index in range(n_modes)]
    return report_part(
        scores,
        members_of(folder, names, mode_paths(folder, n_modes), scores),
        methods,
        report_details.EnsembleDetails(ensemble_size=sizes),
        files,
    )


def describe_espro(context, trained, scores):
    """``espro``, ``demo``: ESPRO against the deep ensemble of its modes (and with
    --equal-compute, of the modes its cost buys), the λ search and the costs."""
    settings, folder, data = context.settings, context.folder, context.data
    n_modes, espro, cost = settings["modes"], trained.espro, trained.cost
    modes_s, mode_cost = folder.seconds("modes"), cost["mode"]
    deep_ensemble_rows = method_rows(
        f"deep ensemble ({n_modes} modes)", scores.deep_ensemble, modes_s, n_modes * mode_cost
    )
    espro_name = f"ESPRO ({n_modes} simplexes of {1 + settings['vertices']} vertices)"
    espro_rows = method_rows(espro_name, scores.espro, modes_s + espro.vertices_s, cost["espro"])
    single = single_mode_row(scores.deep_ensemble, n_modes, modes_s, mode_cost)
    methods = in_table_order([single], deep_ensemble_rows, espro_rows)
    if settings["equal_compute"]:
        methods += _equal_compute_rows(context, trained, scores.equal_compute)
    sizes = size_curves({"deep ensemble": scores.equal_compute.probs, "ESPRO": scores.espro.probs}, data)
    title = f"ESPRO and the deep ensemble of its modes on {data.name}"
    files = [
        plots.ensemble_size(sizes, folder.sub("ensemble_size.png"), title),
        uncertainty_plot(
            folder, data, {"deep ensemble": scores.deep_ensemble.probs, "ESPRO": scores.espro.probs}, title
        ),
    ]
    if espro.reg_rows:
        files.append(plots.reg_choice(espro.reg_rows, espro.reg, folder.sub("reg_choice.png")))
    details = report_details.EsproDetails(
        reg=espro.reg,
        reg_rows=espro.reg_rows,
        ensemble_size=sizes,
        vertices_train_s=espro.vertices_s,
        log_volume=scores.log_volumes,
        cost=report_details.EsproCost(**cost),
        equal_compute_modes=trained.equal_compute_counts,
        deep_ensemble=report_details.DeepEnsembleScores(
            test=scores.deep_ensemble.test, members=scores.deep_ensemble.per_member
        ),
    )
    subfolder = "espro" if not espro.reg_rows else f"espro/reg_{espro.reg:g}"
    paths = [folder.sub(f"{subfolder}/simplex_{index}.pt") for index in range(n_modes)]
    names = [f"simplex {index}" for index in range(n_modes)]
    return report_part(scores.espro, members_of(folder, names, paths, scores.espro), methods, details, files)


def _equal_compute_rows(context, trained, scores):
    """The deep ensembles of as many modes as ESPRO's training (and its λ search) buys."""
    folder, n_modes, counts = context.folder, context.settings["modes"], trained.equal_compute_counts
    n_trained = len(scores.per_member)
    more_s = folder.seconds("equal-compute modes") if n_trained > n_modes else 0
    mode_s = (folder.seconds("modes") + more_s) / n_trained
    buys = [("espro", "ESPRO's training")]
    if counts["with_search"] != counts["espro"]:
        buys.append(("with_search", "ESPRO's training and λ search"))
    rows = []
    for key, what in buys:
        n_bought = max(1, counts[key])  # the first modes: what that many modes' training buys
        rows.append(
            method_row(
                f"deep ensemble of {n_bought} modes: the compute of {what}",
                Metrics.of(scores.probs[:n_bought].mean(0), context.data.y_test),
                mode_s * n_bought,
                scores.predict_s * n_bought / n_trained,
                n_bought * trained.cost["mode"],
            )
        )
    return rows


def describe_spro(context, trained, scores):
    """``spro``: the complex (J = 1: the simplex) against its modes, and the dimensionality sweep."""
    settings, folder, data = context.settings, context.folder, context.data
    n_modes = settings["modes"]
    modes_s, mode_cost = folder.seconds("modes"), costs.mode_cost(settings, data)
    what = (
        f"complex of {n_modes} modes and {settings['vertices']} connectors"
        if n_modes > 1
        else f"simplex of {1 + settings['vertices']} vertices"
    )
    methods = []
    if n_modes > 1:
        methods.append(method_rows(f"deep ensemble ({n_modes} modes)", scores.modes, modes_s, n_modes * mode_cost))
    cost = n_modes * mode_cost + costs.simplex_cost(settings, data, settings["vertices"])
    name = f"{what} (M = {settings['eval_samples']})"
    methods.append(method_rows(name, scores.model, modes_s + folder.seconds("connectors"), cost))
    table = in_table_order([single_mode_row(scores.modes, n_modes, modes_s, mode_cost)], *methods)
    probs = {**({"deep ensemble": scores.modes.probs} if n_modes > 1 else {}), what: scores.model.probs}
    files = [
        plots.dimensionality(trained.sweep, folder.sub("dimensionality.png"), f"SPRO {what} on {data.name}"),
        uncertainty_plot(folder, data, probs, f"SPRO on {data.name}"),
    ]
    path = folder.sub("spro/complex.pt" if n_modes > 1 else "spro/simplex.pt")
    details = report_details.SproDetails(
        sweep=trained.sweep,
        deep_ensemble=report_details.DeepEnsembleScores(test=scores.modes.test, members=scores.modes.per_member),
    )
    return report_part(scores.model, members_of(folder, [what], [path], scores.model), table, details, files)


def describe_curve(context, trained, scores):
    """``curve``: the curve against its endpoints and their ensemble, and its profile."""
    settings, folder, data = context.settings, context.folder, context.data
    modes_s, mode_cost = folder.seconds("modes"), costs.mode_cost(settings, data)
    ends, curve, kind = scores.modes, scores.model, settings["kind"]
    endpoints = [
        method_row(f"endpoint {index}", metrics, modes_s / 2, ends.predict_s / 2, mode_cost)
        for index, metrics in enumerate(ends.per_member)
    ]
    curve_rows = method_rows(
        f"{kind} curve (M = {settings['eval_samples']} points)",
        curve,
        modes_s + folder.seconds("curve"),
        2 * mode_cost + costs.curve_cost(settings, data),
    )
    ends_rows = method_rows("ensemble of the endpoints", ends, modes_s, 2 * mode_cost)
    methods = in_table_order(endpoints, ends_rows, curve_rows)
    files = [
        plots.curve_profile(
            scores.profile, folder.sub("curve_profile.png"), f"{kind} curve between two modes on {data.name}"
        ),
        uncertainty_plot(
            folder,
            data,
            {"ensemble of the endpoints": ends.probs, f"{kind} curve": curve.probs},
            f"{kind} curve on {data.name}",
        ),
    ]
    details = report_details.CurveDetails(profile=scores.profile, midpoint=_midpoints(scores.profile))
    curve_members = members_of(folder, [f"{kind} curve"], [folder.sub("curve/curve.pt")], curve)
    return report_part(curve, curve_members, methods, details, files)


def _midpoints(profile):
    """Metrics at t = 1/2 on the curve and on the segment (the profile's middle grid point)."""
    middle = int(np.argmin(np.abs(profile["t"] - 0.5)))
    return {
        "t": float(profile["t"][middle]),
        **{
            path: {key: float(values[middle]) for key, values in profile[path].items()} for path in ("curve", "segment")
        },
    }


def describe_fge(context, trained, scores):
    """``fge``: FGE's snapshots against the mode they start from."""
    settings, folder, data = context.settings, context.folder, context.data
    mode_s, mode_cost = folder.seconds("modes"), costs.mode_cost(settings, data)
    start, snapshots = scores.modes, scores.model
    methods = [
        method_row("the mode FGE starts from", start.test, mode_s, start.predict_s, mode_cost),
        *method_rows(
            f"FGE ({settings['cycles']} snapshots)",
            snapshots,
            mode_s + folder.seconds("fge"),
            mode_cost + costs.fge_cost(settings, data),
        ),
    ]
    sizes = size_curves({"FGE": snapshots.probs}, data)
    files = [
        plots.ensemble_size(sizes, folder.sub("ensemble_size.png"), f"FGE on {data.name}"),
        uncertainty_plot(folder, data, {"FGE": snapshots.probs}, f"FGE on {data.name}"),
    ]
    cycles = range(settings["cycles"])
    paths = [folder.sub(f"fge/fge_snapshot_{cycle}.pt") for cycle in cycles]
    details = report_details.FgeDetails(
        ensemble_size=sizes,
        start=start.test,
        snapshots=[snapshot.fge_snapshot for snapshot in trained.snapshots],
    )
    names = [f"snapshot {cycle}" for cycle in cycles]
    return report_part(snapshots, members_of(folder, names, paths, snapshots), methods, details, files)


def describe_evaluate(context, trained, scores):
    """``evaluate``: the source's members and their ensemble on the data."""
    folder, data, source = context.folder, context.data, context.source
    name = f"ensemble of {len(source)} members" if len(source) > 1 else source[0].name
    files = [uncertainty_plot(folder, data, {name: scores.probs}, f"{name} on {data.name}")]
    details = report_details.EvaluateDetails(source=context.settings["source"])
    if len(source) > 1:
        details.ensemble_size = size_curves({name: scores.probs}, data)
        files.append(
            plots.ensemble_size(details.ensemble_size, folder.sub("ensemble_size.png"), f"{name} on {data.name}")
        )
    members = [
        Member(name=member.name, checkpoint=str(member.path), test=metrics)
        for member, metrics in zip(source, scores.per_member)
    ]
    return report_part(scores, members, method_rows(name, scores, None), details, files)


def describe_surface(context, trained, plane):
    """``surface``: the three points and the grids' range; the grids in ``plane.npz``."""
    settings, folder, grids = context.settings, context.folder, plane.grids
    np.savez(
        folder.sub("plane.npz"),
        x=grids["x"],
        y=grids["y"],
        points=grids["points"],
        **{grid: grids[grid] for grid in PLANE_GRIDS},
    )
    where = context.source[settings["member"]].name if plane.model is not None else "members"
    title = f"{where} of {pathlib.Path(settings['source']).name} on {context.data.name}"
    files = [plots.loss_plane(grids, plane.names, folder.sub("plane.png"), title)]
    at_points = grids["at_points"]
    details = report_details.SurfaceDetails(
        source=settings["source"],
        file="plane.npz",
        points=[
            {
                "name": name,
                "x": float(x_coordinate),
                "y": float(y_coordinate),
                **{grid: float(values[index]) for grid, values in at_points.items()},
            }
            for index, (name, (x_coordinate, y_coordinate)) in enumerate(zip(plane.names, grids["points"]))
        ],
        range={grid: {"min": float(grids[grid].min()), "max": float(grids[grid].max())} for grid in PLANE_GRIDS},
    )
    return ReportPart(
        test=None, val=None, uncertainty=None, temperature=None, members=[], methods=[], details=details, plots=files
    )
