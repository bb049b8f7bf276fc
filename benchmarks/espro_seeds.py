"""ESPRO against the deep ensemble of the same modes over seeds and recipes: the runs behind
the README's findings. Each run is `simplexkern espro` (λ chosen on the validation split,
the deep ensemble of the same modes beside it); prints one Markdown row per run.

    python benchmarks/espro_seeds.py digits --mode-epochs 20 40 60 --vertex-epochs 10 30 --seeds 0 1 2
    python benchmarks/espro_seeds.py mnist1d --model convnet --mode-epochs 60 --batch-size 128 --regs 0 1 3 10
    python benchmarks/espro_seeds.py digits --full-train --regs 3 10 30 --seeds 0 1
      (all training images, no validation split: every λ is reported on the test split, so
      the best of them is an optimistic choice)
    python benchmarks/espro_seeds.py digits --every-reg --mode-epochs 40 --seeds 1
      (the validation and test NLL of every λ, to see how the choice was made)
"""

import argparse
import tempfile
import time

import torch

import simplexkern as sk
from simplexkern.cli import run_command


def _row(cells):
    return "| " + " | ".join(str(c) for c in cells) + " |"


def with_validation(args):
    print(
        _row(
            [
                "mode epochs",
                "vertex epochs",
                "seed",
                "λ",
                "DE NLL",
                "ESPRO NLL",
                "Δ NLL",
                "DE acc",
                "ESPRO acc",
                "seconds",
            ]
        )
    )
    print(_row(["---"] * 10))
    for mode_epochs in args.mode_epochs:
        for vertex_epochs in args.vertex_epochs:
            for seed in args.seeds:
                start = time.perf_counter()
                with tempfile.TemporaryDirectory() as out:
                    r = run_command(
                        [
                            "espro",
                            "--data",
                            args.data,
                            "--model",
                            args.model,
                            "--reg",
                            ",".join(f"{x:g}" for x in args.regs),
                            "--epochs",
                            str(mode_epochs),
                            "--vertex-epochs",
                            str(vertex_epochs),
                            "--batch-size",
                            str(args.batch_size),
                            "--seed",
                            str(seed),
                            "--device",
                            "cpu",
                            "--quiet",
                            "--out",
                            out,
                        ],
                        echo=False,
                    )
                de, es = r["details"]["deep_ensemble"]["test"], r["test"]
                print(
                    _row(
                        [
                            mode_epochs,
                            vertex_epochs,
                            seed,
                            f"{r['details']['reg']:g}",
                            f"{de['nll']:.4f}",
                            f"{es['nll']:.4f}",
                            f"{es['nll'] - de['nll']:+.4f}",
                            f"{de['accuracy']:.4f}",
                            f"{es['accuracy']:.4f}",
                            f"{time.perf_counter() - start:.0f}",
                        ]
                    ),
                    flush=True,
                )


def _modes(args, data, mode_epochs, seed):
    return sk.train.deep_ensemble(
        args.model, data, 3, epochs=mode_epochs, batch_size=args.batch_size, seed=seed, device="cpu", progress=False
    )


def _espro(args, data, modes, reg, seed):
    return sk.train.espro(
        modes,
        data,
        3,
        reg=reg,
        vertex_epochs=args.vertex_epochs[0],
        batch_size=args.batch_size,
        seed=seed,
        device="cpu",
        progress=False,
    )


def full_train(args):
    data = sk.data.load(args.data)
    print(_row(["mode epochs", "seed", "DE NLL", "DE acc"] + [f"ESPRO λ={r:g} NLL / acc" for r in args.regs]))
    print(_row(["---"] * (4 + len(args.regs))))
    for mode_epochs in args.mode_epochs:
        for seed in args.seeds:
            modes = _modes(args, data, mode_epochs, seed)
            de = sk.eval.metrics(sk.eval.predict(modes, data), data.y_test)
            cells = [mode_epochs, seed, f"{de['nll']:.4f}", f"{de['accuracy']:.4f}"]
            for reg in args.regs:
                m = sk.eval.metrics(sk.eval.predict(_espro(args, data, modes, reg, seed), data, seed=seed), data.y_test)
                cells.append(f"{m['nll']:.4f} / {m['accuracy']:.4f}")
            print(_row(cells), flush=True)


def every_reg(args):
    data = sk.data.load(args.data, val_fraction=0.2)
    print(_row(["mode epochs", "seed", "split", "DE"] + [f"λ={r:g}" for r in args.regs]))
    print(_row(["---"] * (4 + len(args.regs))))
    for mode_epochs in args.mode_epochs:
        for seed in args.seeds:
            modes = _modes(args, data, mode_epochs, seed)
            cells = {split: [_nll(modes, data, split, seed)] for split in ("val", "test")}
            for reg in args.regs:
                simplexes = _espro(args, data, modes, reg, seed)
                for split in cells:
                    cells[split].append(_nll(simplexes, data, split, seed))
            for split, values in cells.items():
                print(_row([mode_epochs, seed, f"{split} NLL"] + [f"{v:.4f}" for v in values]), flush=True)


def _nll(members, data, split, seed):
    return sk.eval.metrics(sk.eval.predict(members, data, split=split, seed=seed), getattr(data, f"y_{split}"))["nll"]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data")
    p.add_argument("--model", default="mlp")
    p.add_argument("--mode-epochs", type=int, nargs="+", default=[40])
    p.add_argument("--vertex-epochs", type=int, nargs="+", default=[30])
    p.add_argument("--regs", type=float, nargs="+", default=[0, 1, 3, 10, 30, 100])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--full-train", action="store_true")
    p.add_argument("--every-reg", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    (full_train if args.full_train else every_reg if args.every_reg else with_validation)(args)


if __name__ == "__main__":
    main()
