"""The demo experiment: ESPRO against the deep ensemble of the same modes, with what each
costs. J modes are trained; λ is chosen on a validation split held out of the training
data; each mode is grown into a simplex; both ensembles are scored on the test split."""
import time

import torch

from simplexkern import data as datasets
from simplexkern import eval as evaluation
from simplexkern import train


def _timed(fn, device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return out, time.perf_counter() - start


REGS = (0.0, 1.0, 3.0, 10.0, 30.0, 100.0)


def espro_vs_deep_ensemble(data="digits", *, model="mlp", n_modes=3, n_vertices=3, regs=REGS, mode_epochs=40,
                           vertex_epochs=30, lr=0.05, batch_size=64, n_points=25, val_fraction=0.2, seed=0,
                           device=None, out=None, progress=True):
    """Runs the comparison and returns a dict: "data", "settings", "reg" (the chosen λ),
    "reg_rows" (validation NLL per λ), "rows" (one per method: name, accuracy, nll, ece,
    brier, train_s, predict_s) and "times" (seconds per phase)."""
    from simplexkern.train.runs import device_of

    device = device_of(device)
    ds = data if isinstance(data, datasets.Dataset) else datasets.load(data, val_fraction=val_fraction)
    common = dict(batch_size=batch_size, seed=seed, device=device, progress=progress)
    sub = (lambda name: None) if out is None else (lambda name: f"{out}/{name}")
    modes, t_modes = _timed(lambda: train.deep_ensemble(model, ds, n_modes, epochs=mode_epochs, lr=lr,
                                                        out=sub("modes"), **common), device)
    (reg, simplexes, reg_rows), t_choose = _timed(lambda: train.choose_reg(
        modes, ds, regs, n_vertices=n_vertices, vertex_epochs=vertex_epochs, lr=lr, n_points=n_points,
        out=sub("espro"), **common), device)
    t_espro = next(r["train_s"] for r in reg_rows if r["reg"] == reg)  # the chosen λ's own training time
    per_member, t_de = _timed(lambda: evaluation.predict(modes, ds, per_member=True), device)
    espro_probs, t_es = _timed(lambda: evaluation.predict(simplexes, ds, n_points=n_points, seed=seed), device)
    y = ds.y_test
    single = [evaluation.metrics(p, y) for p in per_member]
    rows = [
        {"name": "single mode (mean of the J)", "train_s": t_modes / n_modes, "predict_s": t_de / n_modes,
         **{k: sum(m[k] for m in single) / n_modes for k in single[0]}},
        {"name": f"deep ensemble ({n_modes} modes)", "train_s": t_modes, "predict_s": t_de,
         **evaluation.metrics(per_member.mean(0), y)},
        {"name": f"ESPRO ({n_modes} simplexes of {n_vertices} vertices)", "train_s": t_modes + t_espro,
         "predict_s": t_es, **evaluation.metrics(espro_probs, y)},
    ]
    # temperature scaling fitted on the validation split, for both ensembles
    for name, members, probs, train_s, predict_s in (("deep ensemble", modes, per_member.mean(0), t_modes, t_de),
                                                     ("ESPRO", simplexes, espro_probs, t_modes + t_espro, t_es)):
        val = evaluation.predict(members, ds, split="val", n_points=n_points, seed=seed)
        t = evaluation.fit_temperature(val, ds.y_val)
        rows.append({"name": f"{name}, temperature {t:.2f}", "train_s": train_s, "predict_s": predict_s,
                     **evaluation.metrics(evaluation.apply_temperature(probs, t), y)})
    return {"data": ds.describe(), "device": str(device), "reg": reg, "reg_rows": reg_rows, "rows": rows,
            "settings": {"model": model, "n_modes": n_modes, "n_vertices": n_vertices, "mode_epochs": mode_epochs,
                         "vertex_epochs": vertex_epochs, "lr": lr, "batch_size": batch_size, "n_points": n_points,
                         "seed": seed},
            "times": {"modes": t_modes, "choose_reg": t_choose, "espro_chosen": t_espro, "predict_de": t_de,
                      "predict_espro": t_es}}


def format_result(result):
    s = result["settings"]
    lines = [f"data: {result['data']}; device {result['device']}",
             f"model {s['model']}: J = {s['n_modes']} modes x {s['mode_epochs']} epochs; simplexes of "
             f"{s['n_vertices']} vertices, {s['vertex_epochs']} epochs per vertex; M = {s['n_points']} points per "
             "simplex", "",
             "λ chosen on the validation split (ESPRO's validation NLL):"]
    for r in result["reg_rows"]:
        if "diverged" in r:
            lines.append(f"  λ = {r['reg']:<6g} diverged (the loss became NaN or inf)")
            continue
        lines.append(f"  λ = {r['reg']:<6g} NLL {r['val_nll']:.4f}  accuracy {r['val_accuracy']:.4f}  log V "
                     f"{r['log_volume']:6.2f}  {r['train_s']:5.1f} s" + ("   <- chosen" if r["reg"] == result["reg"]
                                                                          else ""))
    lines += ["", f"{'test split':38s} {'accuracy':>8s} {'NLL':>7s} {'ECE':>7s} {'Brier':>7s} {'train':>8s} "
                  f"{'predict':>9s}"]
    for r in result["rows"]:
        lines.append(f"{r['name']:38s} {r['accuracy']:8.4f} {r['nll']:7.4f} {r['ece']:7.4f} {r['brier']:7.4f} "
                     f"{r['train_s']:7.1f}s {1e3 * r['predict_s']:6.1f} ms")
    t = result["times"]
    lines += ["", f"train: wall seconds (ESPRO's: the modes plus the chosen λ's vertices; choosing λ among "
                  f"{len(result['reg_rows'])} values took {t['choose_reg']:.1f} s); predict: the test split, "
                  f"M = {s['n_points']} points per simplex; temperatures fitted on the validation split"]
    return "\n".join(lines)
