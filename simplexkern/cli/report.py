"""``report.json``, the one result file of every ``simplexkern`` command, and the table
printed at the end of a run.

Schema ``simplexkern.report/1`` (metrics are dicts {"accuracy", "nll", "ece", "brier"} on
the test split; times in wall seconds; JSON null where a value does not apply or is not
finite):

- ``schema``, ``command``, ``created`` (UTC, ISO 8601), ``resumed`` (true when an earlier
  invocation did part of the work);
- ``settings``: every setting that decides the result (the flags, without --out, --device,
  --backend, --quiet);
- ``data``: name, description, n_train / n_val / n_test, n_classes, input_shape;
- ``test``: the command's result (the ESPRO ensemble, the deep ensemble, the complex, the
  curve, the FGE ensemble, the evaluated models; null for ``surface`` and ``compare``);
  ``val``: the same on the validation split (null without one);
- ``uncertainty``: the result's "adaptive_ece" and "aurc" on the test split, over its
  members "disagreement" and "mutual_information" (null for one member),
  "point_disagreement" (the disagreement of a simplex's, complex's or curve's M points,
  averaged over such members; null without them), and "ood" (null
  without --ood-data / --ood-gaussian-noise): {"max_prob", "entropy"}, each {"auroc",
  "aupr", "fpr95"} of telling those inputs from the test split by that score; null for
  ``surface`` and ``compare`` (``simplexkern.eval.uncertainty``);
- ``temperature``: {"value", "test", "note"}: a temperature fitted on the validation split
  and the test metrics after it (null without a validation split); when the fit is
  degenerate (no validation error, or the minimum at a bound of the search) "value" is 1
  and "note" says why, else "note" is null;
- ``members``: [{"name", "checkpoint" (relative to the folder), "test"}], the models the
  result averages;
- ``methods``: [{"name", "test", "train_s", "predict_s", "gradient_evaluations"}], the
  printed table: the result and its baselines (single modes, the deep ensemble of the same
  modes, curve endpoints), each with its training time (modes included), its training
  cost in gradient evaluations (training examples x points over the steps, the same on
  any machine; null for ``evaluate``) and its prediction time on the test split;
  ``compare`` adds "test_std" (over seeds), "forward_passes" (per test example) and
  "vs_deep_ensemble" (the NLL and error minus those of the deep ensemble of the same cost
  in the same seed, mean and std over seeds, and in how many seeds the NLL was lower);
- ``details``: per command: espro "reg" (the λ used), "reg_rows" (choose_reg's rows),
  "ensemble_size", "log_volume", "deep_ensemble", "cost" ({"mode", "espro",
  "with_search"}: gradient evaluations of one mode, of ESPRO with the chosen λ, and with
  its λ search) and "equal_compute_modes" (the modes each buys); spro "sweep"; curve
  "profile" and "midpoint"; fge "ensemble_size", "snapshots"; surface "points", "range",
  "file"; compare "seeds", "mode_cost", "deep_ensemble_modes", "lines" (per method, per
  ensemble size: metrics, "nll_vs_de" / "error_vs_de", each with its "_std" over seeds,
  "seeds_below_de", "gradient_evaluations", "forward_passes", "train_s"),
  "espro_with_search", "best_at_budget" (per budget the best by NLL, "best_error" and the
  deep ensemble of that budget) and "per_seed" (λ, λ rows and uncertainty of each method);
- ``times``: seconds per phase ("modes", "vertices", "connectors", "curve", "fge",
  "predict", "plane", ...) and "total";
- ``plots``: the PNG files written beside the report;
- ``environment``: simplexkern, torch, python and numpy versions, the device, whether the
  CUDA kernels were built, the fused-op backend asked for, the number of processes and
  whether they trained data-parallel.
"""

import datetime
import platform
import sys

import numpy as np
import torch

import simplexkern

SCHEMA = "simplexkern.report/1"


def environment(device, backend, processes=1, data_parallel=False):
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)"
    )
    return {
        "simplexkern": simplexkern.__version__,
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "device": name,
        "cuda_kernels": bool(simplexkern._C.cuda_enabled()),
        "backend": backend,
        "processes": processes,
        "data_parallel": data_parallel,
    }


def data_summary(d):
    return {
        "name": d.name,
        "description": d.describe(),
        "n_train": len(d.x_train),
        "n_val": 0 if d.x_val is None else len(d.x_val),
        "n_test": len(d.x_test),
        "n_classes": d.n_classes,
        "input_shape": list(d.input_shape),
    }


def build(command, settings, d, part, folder, device, backend, processes=1, data_parallel=False):
    times = {name: p["seconds"] for name, p in folder.phases.items()}
    times["total"] = sum(times.values())
    return {
        "schema": SCHEMA,
        "command": command,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "resumed": folder.resumed,
        "settings": folder.settings,
        "data": data_summary(d),
        **part,
        "times": times,
        "environment": environment(device, backend, processes, data_parallel),
    }


def _num(v, fmt):
    return "-" if v is None else format(v, fmt)


def _details(report):
    d, cmd = report["details"], report["command"]
    lines = []
    if cmd in ("espro", "demo") and d.get("reg_rows"):
        lines.append("λ chosen on the validation split (ESPRO's validation NLL):")
        lines.extend(reg_lines(d["reg_rows"], d["reg"], d.get("cost", {}).get("mode")))
    elif cmd in ("espro", "demo"):
        lines.append(f"λ = {d['reg']:g}")
    if cmd in ("espro", "demo") and "cost" in d:  # reports before costs were counted have none
        c = d["cost"]
        lines.append(
            f"training cost in gradient evaluations (examples x points): one mode {c['mode']:,}; ESPRO "
            f"{c['espro'] / c['mode']:.2f} modes' worth, the λ search included "
            f"{c['with_search'] / c['mode']:.2f}"
        )
    if cmd == "spro":
        lines.append(
            f"{'connectors':>10s} {'log V':>8s} {'train err':>10s} {'worst':>7s} {'test err':>9s} "
            f"{'ensemble':>9s}   (means over the points of each sub-complex)"
        )
        for r in d["sweep"]:
            lines.append(
                f"{r['connectors']:10d} {_num(r['log_volume'], '8.2f')} {r['train_error']:10.4f} "
                f"{r['train_error_max']:7.4f} {r['test_error']:9.4f} {r['test_error_ensemble']:9.4f}"
            )
    if cmd == "curve":
        m, s = d["midpoint"], d["profile"]["summary"]
        lines.append(f"{'at t = 1/2':14s} {'train loss':>11s} {'test error':>11s}   max train loss along the path")
        for path in ("curve", "segment"):
            lines.append(
                f"{path:14s} {m[path]['train_loss']:11.4f} {m[path]['test_error']:11.4f}   "
                f"{s[path]['train_loss']['max']:.4f}"
            )
    if cmd == "compare":
        lines.extend(_compare_lines(report))
    if cmd == "surface":
        lines.append(f"{'point':10s} {'x':>9s} {'y':>9s} {'train loss':>11s} {'train err':>10s} {'test err':>9s}")
        for p in d["points"]:
            lines.append(
                f"{p['name']:10s} {p['x']:9.3f} {p['y']:9.3f} {p['train_loss']:11.4f} "
                f"{p['train_error']:10.4f} {p['test_error']:9.4f}"
            )
        r = d["range"]
        lines.append(
            f"on the grid: train loss {r['train_loss']['min']:.4f}..{r['train_loss']['max']:.4f}, test "
            f"error {r['test_error']['min']:.4f}..{r['test_error']['max']:.4f}; grids in {d['file']}"
        )
    return lines


def _count(n):
    return "-" if n is None else f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}k"


def _compare_lines(report):
    d = report["details"]
    m = d["mode_cost"]
    lines = [
        f"seeds {', '.join(map(str, d['seeds']))}; λ chosen per seed: "
        + ", ".join(f"{p['reg']:g}" for p in d["per_seed"])
        + f"; training cost unit: one mode = {m:,} gradient evaluations (examples x points)",
        "",
        "test split, mean ± std over seeds",
    ]
    w = max(len(r["name"]) for r in report["methods"])
    lines.append(
        f"{'':{w}s} {'accuracy':>15s} {'NLL':>15s} {'ECE':>7s} {'Brier':>7s} {'cost':>7s} {'train':>8s} "
        f"{'predict':>10s}   NLL - deep ensemble of that cost"
    )
    n = len(d["seeds"])
    for r in report["methods"]:
        t, sd, vs = r["test"], r["test_std"], r["vs_deep_ensemble"]
        lines.append(
            f"{r['name']:{w}s} {t['accuracy']:7.4f} ± {sd['accuracy']:.4f} {t['nll']:7.4f} ± "
            f"{sd['nll']:.4f} {t['ece']:7.4f} {t['brier']:7.4f} {r['gradient_evaluations'] / m:6.2f}m "
            f"{r['train_s']:7.1f}s {1e3 * r['predict_s']:7.1f} ms   "
            + (
                ""
                if r["name"].startswith("deep ensemble")
                else f"{vs['nll_vs_de']:+.4f} ± {vs['nll_vs_de_std']:.4f}, lower in {vs['seeds_below_de']} of {n}"
            )
        )
    search = d["espro_with_search"]
    lines += [
        f"ESPRO with its λ search: {search['gradient_evaluations'] / m:.2f}m, {search['train_s']:.1f} s",
        "cost: training in modes' worth of gradient evaluations (m); train: wall seconds; predict: the test split",
        "",
        "the best at each training budget (lowest mean test NLL, and error, among what costs no "
        "more; members in brackets):",
        f"{'budget':>8s}  {'best by NLL':24s} {'NLL':>7s} {'error':>7s}   {'best by error':24s} {'error':>7s}"
        "   deep ensemble of that budget",
    ]
    for b in d["best_at_budget"]:
        de, e = b["deep_ensemble"], b["best_error"]
        lines.append(
            f"{b['modes_worth']:7.2f}m  {b['best'] + ' (' + str(b['members']) + ')':24s} {b['nll']:7.4f} "
            f"{100 * b['error']:6.2f}%   {e['method'] + ' (' + str(e['members']) + ')':24s} "
            f"{100 * e['error']:6.2f}%   {de['members']:2d} modes: NLL {de['nll']:.4f}, error "
            f"{100 * de['error']:.2f}%"
        )
    return lines


def reg_lines(rows, chosen, mode_cost):
    """The λ table of choose_reg's ``rows``, costs in modes' worth of training."""
    lines = []
    for r in rows:
        cost = f"{r['gradient_evaluations'] / mode_cost:6.2f} modes" if "gradient_evaluations" in r else ""
        if r.get("diverged"):
            lines.append(f"  λ = {r['reg']:<6g} diverged (the loss became NaN or inf){'':27s}{cost}")
            continue
        if r.get("stopped"):
            lines.append(f"  λ = {r['reg']:<6g} {r['stopped']}; {cost}")
            continue
        flags = [
            ("saturated: hard 0/1 probabilities", r.get("saturated")),
            ("near-hard probabilities", r.get("near_hard") and not r.get("saturated")),
            ("no validation error: NLL alone ranks it", r.get("zero_val_error")),
        ]
        lines.append(
            f"  λ = {r['reg']:<6g} NLL {r['val_nll']:.4f}  accuracy {r['val_accuracy']:.4f}  log V "
            f"{_num(r['log_volume'], '6.2f')}  {r['train_s']:6.1f} s {cost}"
            + "".join(f"   {text}" for text, on in flags if on)
            + ("   <- chosen" if r["reg"] == chosen else "")
        )
    return lines


def format_table(report, path):
    """The summary printed at the end of a run."""
    env = report["environment"]
    lines = [f"data: {report['data']['description']}; device {env['device']}", *_details(report)]
    if report["methods"] and report["command"] != "compare":
        w = max(len(r["name"]) for r in report["methods"])
        lines += [
            "",
            f"{'test split':{w}s} {'accuracy':>8s} {'NLL':>7s} {'ECE':>7s} {'Brier':>7s} {'train':>8s} "
            f"{'grad evals':>10s} {'predict':>10s}",
        ]
        for r in report["methods"]:
            t = r["test"]
            train = "-" if r["train_s"] is None else format(r["train_s"], "7.1f") + "s"
            lines.append(
                f"{r['name']:{w}s} {t['accuracy']:8.4f} {t['nll']:7.4f} {t['ece']:7.4f} {t['brier']:7.4f} "
                f"{train:>8s} {_count(r.get('gradient_evaluations')):>10s} "
                f"{_num(1e3 * r['predict_s'], '7.1f')} ms"
            )
        lines.append(
            "train: wall seconds, the modes included; grad evals: training examples x points over the "
            "steps; predict: the test split; temperatures fitted on the validation split"
        )
        u = report.get("uncertainty")
        if u:
            members = (
                ""
                if u["disagreement"] is None
                else (
                    f", members' disagreement {u['disagreement']:.4f}, mutual information {u['mutual_information']:.4f}"
                )
            )
            if u.get("point_disagreement") is not None:
                members += f", points' disagreement within a member {u['point_disagreement']:.4f}"
            lines.append(
                f"the result on the test split: adaptive ECE {u['adaptive_ece']:.4f}, AURC {u['aurc']:.4f}" + members
            )
            if u.get("ood"):
                lines.append(
                    "out-of-distribution inputs told from the test inputs: "
                    + "; ".join(
                        f"by {name.replace('_', ' ')}: AUROC {o['auroc']:.4f}, AUPR {o['aupr']:.4f}, "
                        f"FPR at 95% TPR {o['fpr95']:.4f}"
                        for name, o in u["ood"].items()
                    )
                )
        note = (report.get("temperature") or {}).get("note")
        if note:
            lines.append(f"temperature not fitted (T = 1 kept): {note}")
    folder = path.parent
    lines += [
        "",
        f"report: {path}"
        + (f"; plots: {', '.join(str(folder / p) for p in report['plots'])}" if report["plots"] else ""),
    ]
    if report["resumed"]:
        lines.append("(resumed: times add up the invocations that did the work)")
    return "\n".join(lines)
