"""Every torchvision classification model as a simplex: accepted or not, how its parameters
are split between fused layers and the generic path, the largest error of the multi-point
forward against the plain models at the same points (evaluation and training), how the points
travel (vmap, or one at a time), and a training step's time against the plain model at batch
S x B. Writes a Markdown table.

    python benchmarks/model_zoo.py [--only NAME,...] [--max-params 300] [--out results/FILE.md]

k = 3 vertices (two added with noise 0.05), S = 3 points inside the simplex, one thread. The
errors: float64 (float32 above 60M parameters), batch 4, inputs of 64 x 64 (ViT and MaxViT at
the size they are built for),
BatchNorm statistics of the points from one batch (update_bn) before evaluating. The step:
float32, batch 2, the smallest input each model takes.
"""

import argparse
import datetime
import gc
import platform
import statistics
import sys
import time
import warnings

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import simplexkern as sk

SIZE = {"alexnet": 64, "inception_v3": 75, "maxvit_t": 224}  # the smallest input each takes, else 32
FLOAT64_PARAMS = 60e6  # larger models are checked in float32 (memory)
K, S, B = 3, 3, 2


def build(name):
    kwargs = {"num_classes": 10}
    if name.startswith("vit_"):
        kwargs["image_size"] = 28 if name == "vit_h_14" else 32
    if name in ("googlenet", "inception_v3"):
        kwargs.update(aux_logits=False, init_weights=True)
    return torchvision.models.get_model(name, **kwargs)


def no_dropout(model):
    for m in model.modules():
        if isinstance(m, nn.modules.dropout._DropoutNd) or type(m).__name__ == "StochasticDepth":
            m.p = 0.0
        for attr in ("dropout", "attention_dropout", "stochastic_depth_prob"):
            if isinstance(getattr(m, attr, None), float):
                setattr(m, attr, 0.0)
    return model


def step_time(fn, repeat=3):
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def errors(plain, size, dtype):
    """The largest relative error of the multi-point forward against the plain models at the
    points, in evaluation and in training, and how the points travel. Float64 where memory
    allows: a randomly initialised network can be too ill-conditioned for float32 to say much."""
    model = sk.simplexify(plain.to(dtype), K, noise=0.05)
    coeffs = torch.distributions.Dirichlet(torch.ones(K, dtype=dtype)).sample((S,))
    x = torch.randn(4, 3, size, size, dtype=dtype)
    if model.bn_points.shape[0]:
        model.update_bn([torch.randn(4, 3, size, size, dtype=dtype)], coeffs)
    out = {}
    for mode in ("eval", "train"):
        model.train(mode == "train")
        with torch.no_grad():
            y = model(x, coeffs)
            err = 0.0
            for s in range(S):
                at = model.at(coeffs[s], bn_stats="tracked" if mode == "eval" else "fresh").train(mode == "train")
                ref = at(x)
                err = max(err, float((y[s] - ref).abs().max() / ref.abs().max()))
        out[mode] = err
    path = "vmap" if model.point_evaluator.loop_reason is None else "one point at a time"
    return out, path + (" (random draws shared)" if model.point_evaluator.randomness == "same" else "")


def check(name, n_params):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        size = 28 if name == "vit_h_14" else SIZE.get(name, 32)
        dtype = torch.float64 if n_params <= FLOAT64_PARAMS else torch.float32
        errs, path = errors(
            no_dropout(build(name)), size if name.startswith(("vit", "maxvit")) else max(size, 64), dtype
        )
        errs = {mode: f"{e:.1e}" + ("" if dtype == torch.float64 else " (float32)") for mode, e in errs.items()}
        gc.collect()
        plain = no_dropout(build(name))
        model = sk.simplexify(plain, K, noise=0.05).train()
        model.fix(0)
        sizes = {s: int(torch.Size(shape).numel()) for s, (_, shape) in model.store.slots.items()}
        generic_share = 1 - sum(sizes[s] for s in model._fused_slots) / sum(sizes.values())
        coeffs = torch.distributions.Dirichlet(torch.ones(K)).sample((S,))
        x, xs, target = torch.randn(B, 3, size, size), None, torch.zeros(S * B, dtype=torch.long)
        xs = x.repeat(S, 1, 1, 1)

        def simplex_step():
            model.zero_grad(set_to_none=True)
            F.cross_entropy(model(x, coeffs).flatten(0, 1), target).backward()

        def plain_step():
            plain.zero_grad(set_to_none=True)
            F.cross_entropy(plain(xs), target).backward()

        ratio = step_time(simplex_step) / step_time(plain_step)
    prefix = "There is a performance drop because we have not yet implemented the batching rule for "
    notes = sorted(
        {
            "no vmap rule: " + str(w.message)[len(prefix) :].split(". ")[0]
            for w in caught
            if str(w.message).startswith(prefix)
        }
    )
    return generic_share, errs, ratio, path, "; ".join(notes)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="")
    parser.add_argument("--max-params", type=float, default=300, help="skip models above this many million parameters")
    parser.add_argument("--out")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    names = args.only.split(",") if args.only else torchvision.models.list_models(module=torchvision.models)
    rows = []
    for name in names:
        n = sum(p.numel() for p in build(name).parameters()) / 1e6
        if n > args.max_params:
            rows.append(
                f"| {name} | {n:.1f} | not run (over {args.max_params:.0f}M parameters on this machine) | | | | | |"
            )
            print(rows[-1], flush=True)
            continue
        try:
            share, errs, ratio, path, notes = check(name, n * 1e6)
            rows.append(
                f"| {name} | {n:.1f} | yes | {100 * share:.1f}% | {errs['eval']} | {errs['train']} "
                f"| {ratio:.2f}x | {path} | {notes} |"
            )
        except Exception as err:  # the table reports it
            rows.append(f"| {name} | {n:.1f} | **{type(err).__name__}**: {str(err).splitlines()[0][:120]} | | | | | |")
        gc.collect()
        print(rows[-1], flush=True)
    header = (
        f"# Every torchvision classification model as a simplex\n\n{datetime.date.today().isoformat()}, "
        f"{platform.machine()} CPU, 1 thread, torch {torch.__version__}, torchvision {torchvision.__version__}"
        f"\n\nCommand: `python benchmarks/model_zoo.py {' '.join(sys.argv[1:])}`\n\n"
        f"k = {K} vertices, S = {S} points inside the simplex. Errors: the largest |multi-point output - "
        "plain model at the point| over the largest |plain output|, float64 (float32 where marked), batch "
        "4, 64 x 64 inputs (ViTs and MaxViT at their size). The step: forward + cross-entropy + backward at "
        "batch B = 2 and the "
        "smallest input each model takes, float32, against the plain model at batch S x B.\n\n"
        "| model | parameters (M) | accepted | generic path | error, eval | error, train | step / plain "
        "| points | notes |\n|---|---|---|---|---|---|---|---|---|\n"
    )
    text = header + "\n".join(rows) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
