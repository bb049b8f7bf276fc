"""One simplex against its own mode, and ESPRO against the deep ensemble of its modes:
the runs behind the README's "One simplex against its mode".

For each seed: trains 3 modes (deep ensemble), grows one simplex from mode 0 for each
setting (one factor at a time around "default": λ = 1, 30 vertex epochs at lr 0.05, H = 5,
the library's defaults before λ became 0.1) and reports, on the validation and test splits,
the NLL of the mode, of 25 sampled points (mean and worst) and of their ensemble, the
paired difference ensemble - mode (± its standard error over examples), errors, the train
NLL of the points and the vertices' distance from the mode. Then ESPRO (3 simplexes)
against the deep ensemble of the same 3 modes for λ = 0.1 and 1.

    python benchmarks/one_simplex.py --data digits --seeds 0 1 2 3 --out runs/one_simplex/digits
    python benchmarks/one_simplex.py --data mnist1d --seeds 0 1 --out runs/one_simplex/mnist1d

(one thread: 272 s and 1137 s; their tables are in benchmarks/results/2026-12-06-cpu-one-simplex/)
"""

import argparse
import json
import pathlib
import time

import torch

from simplexkern import data as sk_data
from simplexkern import eval as ev
from simplexkern import train
from simplexkern.eval.predict import member_points

torch.set_num_threads(1)

DEFAULTS = dict(
    n_vertices=3, reg=1.0, vertex_epochs=30, lr=0.05, n_samples=5, weight_decay=5e-4, noise=0.01, reg_scale="none"
)
SETTINGS = (
    [("default", {})]
    + [(f"reg={r:g}", {"reg": r}) for r in (0.0, 0.1, 0.3, 3.0, 10.0, 30.0)]
    + [(f"vertex_epochs={e}", {"vertex_epochs": e}) for e in (1, 3, 10)]
    + [
        ("lr=0.005", {"lr": 0.005}),
        ("n_samples=1", {"n_samples": 1}),
        ("weight_decay=0", {"weight_decay": 0.0}),
        ("noise=0.001", {"noise": 0.001}),
        ("reg_scale=random", {"reg_scale": "random"}),
    ]
)
ESPRO_REGS = (0.1, 1.0)
N_POINTS = 25
MODE_EPOCHS, MODE_LR = 40, 0.05


def nll_per_example(probs, y):
    y = y.expand(*probs.shape[:-1])
    return -probs.gather(-1, y[..., None]).squeeze(-1).clamp_min(1e-12).log()


def point_probs(model, coeffs, x):
    with torch.no_grad():
        model.eval()
        return torch.cat([model(x[i : i + 512], coeffs) for i in range(0, len(x), 512)], 1).double().softmax(-1)


def paired(probs, ref, y):
    """mean and standard error over examples of NLL(probs) - NLL(ref)."""
    diff = nll_per_example(probs, y) - nll_per_example(ref, y)
    return diff.mean().item(), (diff.std() / len(diff) ** 0.5).item()


def split_xy(d, split):
    return getattr(d, f"x_{split}"), getattr(d, f"y_{split}")


def one_simplex(sm, d, mode_probs):
    coeffs = member_points(sm, N_POINTS, 0, 0)  # the points ev.predict uses for this member
    verts = sm.store.vertices().detach()
    out = {
        "distance": max((verts[i] - verts[0]).norm().item() for i in range(1, len(verts))) / verts[0].norm().item(),
        "reg_v": [h["reg"] for h in sm.metadata["history"]],
    }
    for split in ("train", "val", "test"):
        x, y = split_xy(d, split)
        p = point_probs(sm, coeffs, x)
        nll, err = nll_per_example(p, y).mean(1), (p.argmax(-1) != y).double().mean(1)
        ens = ev.predict([sm], d, split=split, n_points=N_POINTS, seed=0).double()
        m = ev.metrics(ens, y)
        out[split] = {
            "pt_nll": nll.mean().item(),
            "pt_nll_worst": nll.max().item(),
            "pt_err": err.mean().item(),
            "pt_err_worst": err.max().item(),
            "ens_nll": m["nll"],
            "ens_err": 1 - m["accuracy"],
        }
        if split != "train":
            out[split]["ens_minus_mode"], out[split]["se"] = paired(ens, mode_probs[split], y)
    return out


def run_seed(d, model, seed, log):
    t0 = time.time()
    modes = train.deep_ensemble(
        model, d, 3, epochs=MODE_EPOCHS, lr=MODE_LR, batch_size=64, seed=seed, device="cpu", progress=False
    )
    mode_probs, res = {}, {"seed": seed, "mode": {}, "simplex": {}, "espro": {}}
    for split in ("train", "val", "test"):
        x, y = split_xy(d, split)
        p = ev.predict([modes[0]], d, split=split).double()
        mode_probs[split] = p
        res["mode"][split] = {"nll": ev.metrics(p, y)["nll"], "err": 1 - ev.metrics(p, y)["accuracy"]}
    log(f"seed {seed}: 3 modes trained in {time.time() - t0:.0f}s")
    for name, change in SETTINGS:
        t0 = time.time()
        sm = train.grow_simplex(modes[0], d, **{**DEFAULTS, **change}, seed=seed, device="cpu", progress=False)
        res["simplex"][name] = {**one_simplex(sm, d, mode_probs), "train_s": time.time() - t0}
        r = res["simplex"][name]
        log(
            f"  {name:18s} {r['train_s']:5.1f}s dist {r['distance']:.2f} val Δ {r['val']['ens_minus_mode']:+.4f} "
            f"test Δ {r['test']['ens_minus_mode']:+.4f}"
        )
    de = {s: ev.predict(modes, d, split=s).double() for s in ("val", "test")}
    res["espro"]["deep_ensemble"] = {
        s: {
            "nll": ev.metrics(de[s], split_xy(d, s)[1])["nll"],
            "err": 1 - ev.metrics(de[s], split_xy(d, s)[1])["accuracy"],
        }
        for s in ("val", "test")
    }
    for reg in ESPRO_REGS:
        t0 = time.time()
        simplexes = train.espro(modes, d, **{**DEFAULTS, "reg": reg}, seed=seed, device="cpu", progress=False)
        row = {"train_s": time.time() - t0}
        for s in ("val", "test"):
            y = split_xy(d, s)[1]
            p = ev.predict(simplexes, d, split=s, n_points=N_POINTS, seed=0).double()
            m = ev.metrics(p, y)
            one = ev.predict(simplexes[:1], d, split=s, n_points=N_POINTS, seed=0).double()
            row[s] = {"nll": m["nll"], "err": 1 - m["accuracy"]}
            row[s]["minus_de"], row[s]["se"] = paired(p, de[s], y)
            row[s]["simplex0_minus_mode0"], _ = paired(one, mode_probs[s], y)
        res["espro"][f"reg={reg:g}"] = row
        log(
            f"  ESPRO reg={reg:g} {row['train_s']:.0f}s val Δ {row['val']['minus_de']:+.4f} "
            f"test Δ {row['test']['minus_de']:+.4f}"
        )
    return res


def mean(values):
    return sum(values) / len(values)


def per_seed(rows, split, key):
    """'Δ±se ; Δ±se ... → mean (≈se)': the seeds' paired differences and their mean, whose
    standard error treats the seeds as independent (they share the evaluation examples)."""
    values = [x[split][key] for x in rows]
    se = sum(x[split]["se"] ** 2 for x in rows) ** 0.5 / len(rows)
    return " ; ".join(f"{v:+.4f}±{x[split]['se']:.4f}" for v, x in zip(values, rows)) + (
        f" → **{mean(values):+.4f}** (≈{se:.4f})" if len(rows) > 1 else ""
    )


def tables(results, title):
    seeds = [r["seed"] for r in results]
    lines = [
        f"## {title}: one simplex (3 vertices) grown from mode 0, seeds {seeds}",
        "",
        "Values are means over seeds; Δ = NLL(ensemble of 25 points) − NLL(mode), per seed, "
        "± standard error of the paired per-example difference. dist = max ‖vertex − mode‖ / ‖mode‖.",
        "",
        "| setting | dist | train NLL pts | val NLL pts (worst) | val NLL ens | val Δ ens−mode | "
        "test NLL pts (worst) | test NLL ens | test Δ ens−mode | test err pts / ens |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    m = lambda split, key: mean([r["mode"][split][key] for r in results])  # noqa: E731
    lines.append(
        f"| mode | 0 | {m('train', 'nll'):.4f} | {m('val', 'nll'):.4f} | {m('val', 'nll'):.4f} | 0 | "
        f"{m('test', 'nll'):.4f} | {m('test', 'nll'):.4f} | 0 | {m('test', 'err'):.4f} / "
        f"{m('test', 'err'):.4f} |"
    )
    for name, _ in SETTINGS:
        rows = [r["simplex"][name] for r in results]
        g = lambda split, key: mean([x[split][key] for x in rows])  # noqa: E731
        delta = lambda split: per_seed(rows, split, "ens_minus_mode")  # noqa: E731
        lines.append(
            f"| {name} | {mean([x['distance'] for x in rows]):.2f} | {g('train', 'pt_nll'):.4f} | "
            f"{g('val', 'pt_nll'):.4f} ({g('val', 'pt_nll_worst'):.4f}) | {g('val', 'ens_nll'):.4f} | "
            f"{delta('val')} | {g('test', 'pt_nll'):.4f} ({g('test', 'pt_nll_worst'):.4f}) | "
            f"{g('test', 'ens_nll'):.4f} | {delta('test')} | {g('test', 'pt_err'):.4f} / "
            f"{g('test', 'ens_err'):.4f} |"
        )
    lines += [
        "",
        f"## {title}: ESPRO (3 simplexes, 3 vertices each) vs deep ensemble of the same 3 modes",
        "",
        "Δ = NLL(ESPRO) − NLL(deep ensemble) per seed ± paired standard error; "
        "'1 simplex − mode' = the same difference for simplex 0 against mode 0.",
        "",
        "| ensemble | val NLL | val err | val Δ vs DE | val 1 simplex − mode | test NLL | test err | "
        "test Δ vs DE | test 1 simplex − mode | train s (per seed) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    de = [r["espro"]["deep_ensemble"] for r in results]
    lines.append(
        f"| deep ensemble (3 modes) | {mean([x['val']['nll'] for x in de]):.4f} | "
        f"{mean([x['val']['err'] for x in de]):.4f} | 0 | | {mean([x['test']['nll'] for x in de]):.4f} | "
        f"{mean([x['test']['err'] for x in de]):.4f} | 0 | | |"
    )
    for reg in ESPRO_REGS:
        rows = [r["espro"][f"reg={reg:g}"] for r in results]
        f = lambda s, k: mean([x[s][k] for x in rows])  # noqa: E731
        delta = lambda s: per_seed(rows, s, "minus_de")  # noqa: E731
        one = lambda s: " ; ".join(f"{x[s]['simplex0_minus_mode0']:+.4f}" for x in rows)  # noqa: E731
        lines.append(
            f"| ESPRO reg={reg:g} | {f('val', 'nll'):.4f} | {f('val', 'err'):.4f} | {delta('val')} | "
            f"{one('val')} | {f('test', 'nll'):.4f} | {f('test', 'err'):.4f} | {delta('test')} | "
            f"{one('test')} | {mean([x['train_s'] for x in rows]):.0f} |"
        )
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="digits")
    parser.add_argument("--model", default=None, help="default: mlp for digits, convnet otherwise")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument(
        "--out", default=None, help="path prefix of the .json and .md written (default runs/one_simplex/DATA)"
    )
    parser.add_argument("--render", action="store_true", help="only rewrite the .md tables from the .json")
    args = parser.parse_args()
    model = args.model or ("mlp" if args.data == "digits" else "convnet")
    out = pathlib.Path(args.out or pathlib.Path("runs/one_simplex") / args.data)
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.render:
        return render(json.loads(out.with_suffix(".json").read_text()), out)
    d = sk_data.load(args.data, val_fraction=0.2, split_seed=0)
    start = time.time()
    results = []
    for seed in args.seeds:
        results.append(run_seed(d, model, seed, lambda s: print(s, flush=True)))
        saved = {
            "data": args.data,
            "model": model,
            "defaults": DEFAULTS,
            "wall_s": time.time() - start,
            "results": results,
        }
        out.with_suffix(".json").write_text(json.dumps(saved, indent=1))
    render(saved, out)


def render(saved, out):
    text = tables(saved["results"], f"{saved['data']} ({saved['model']})")
    if "wall_s" in saved:
        text += f"\n\nTotal wall time (1 CPU thread): {saved['wall_s']:.0f}s"
    out.with_suffix(".md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
