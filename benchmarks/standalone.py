"""Runs the asv benchmark classes of benchmarks/benchmarks/ without asv (for machines where
asv is not installed, such as GPU hosts), and writes a Markdown table with each
implementation's median time and its speed-up over ``reference`` measured in the same run.

    python benchmarks/standalone.py [--filter NAME] [--repeat 20] [--out results/FILE.md]
"""

import argparse
import datetime
import gc
import importlib
import inspect
import itertools
import pathlib
import platform
import statistics
import sys
import time

import torch

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def median_time(fn, repeat, budget_s):
    fn()  # warm-up: compilation, caches, autotuning
    times = []
    deadline = time.perf_counter() + budget_s
    while len(times) < repeat and (len(times) < 3 or time.perf_counter() < deadline):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), len(times)


def run(filter_text, repeat, budget_s, where=None):
    """Every benchmark whose label contains ``filter_text`` and whose parameters take values
    allowed by ``where`` (parameter -> collection of values), as (label, parameters, value,
    repeats) rows."""
    rows = []
    for path in sorted((HERE / "benchmarks").glob("bench_*.py")):
        module = importlib.import_module(f"benchmarks.{path.stem}")
        for cls_name, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ != module.__name__:
                continue
            methods = [m for m in dir(cls) if m.startswith(("time_", "track_"))]
            params = getattr(cls, "params", ([],))
            names = getattr(cls, "param_names", [])
            for method, combo in itertools.product(methods, itertools.product(*params)):
                label = f"{path.stem}.{cls_name}.{method}"
                if filter_text and filter_text not in label:
                    continue
                if any(
                    name in (where or {}) and str(value) not in {str(v) for v in where[name]}
                    for name, value in zip(names, combo)
                ):
                    continue
                gc.collect()  # free the previous benchmark's tensors now, not inside this one's measurement
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                bench = cls()
                try:
                    bench.setup(*combo)
                except NotImplementedError:
                    continue
                try:
                    if method.startswith("track_"):
                        value, n = getattr(bench, method)(*combo), 1
                    else:
                        value, n = median_time(lambda: getattr(bench, method)(*combo), repeat, budget_s)
                except NotImplementedError:
                    continue
                rows.append((label, dict(zip(names, combo)), value, n))
                print(f"{label} {dict(zip(names, combo))}: {value:.6g} (median of {n})", flush=True)
    return rows


BASELINES = ("reference", "torch", "plain_linear", "plain", "loop")


def table(rows):
    """Markdown table. Times get their speed-up over each baseline implementation with the
    same other parameters, on the same device (the reference: else on the CPU, where it
    may run only there); tracked values are shown as they are."""

    def key(label, params, impl, device):
        rest = tuple(sorted((k, v) for k, v in params.items() if k not in ("implementation", "device")))
        return label, impl, device, rest

    values = {key(label, p, p.get("implementation"), p.get("device")): v for label, p, v, _ in rows}
    head = " | ".join(f"over {b}" for b in BASELINES)
    lines = [f"| benchmark | parameters | value | {head} |", "|---|---|---|" + "---|" * len(BASELINES)]
    for label, params, value, n in rows:
        shown = ", ".join(f"{k}={v}" for k, v in params.items())
        if ".track_" in label:
            lines.append(f"| {label} | {shown} | {value:.1f} |" + " |" * len(BASELINES))
            continue
        cells = []
        for base in BASELINES:
            devices = (params.get("device"), "cpu") if base == "reference" else (params.get("device"),)
            found = [(d, values[key(label, params, base, d)]) for d in devices if key(label, params, base, d) in values]
            if not found:
                cells.append("")
                continue
            d, ref = found[0]
            cells.append(f"{ref / value:.2f}x" + ("" if d == params.get("device") else f" (on {d})"))
        lines.append(f"| {label} | {shown} | {value * 1e3:.3f} ms | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--filter", default="")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--budget", type=float, default=20.0, help="seconds per benchmark at most")
    parser.add_argument("--out", type=pathlib.Path)
    parser.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="PARAM=V1,V2",
        help="only benchmarks whose parameter PARAM takes one of these values",
    )
    args = parser.parse_args()
    where = {}
    for item in args.where:
        name, _, values = item.partition("=")
        where[name] = set(values.split(","))
    rows = run(args.filter, args.repeat, args.budget, where)
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    header = (
        f"# simplexkern benchmarks\n\n{datetime.date.today().isoformat()}, {gpu}, "
        f"{platform.processor() or platform.machine()} ({torch.get_num_threads()} threads), "
        f"torch {torch.__version__}\n\nCommand: `python benchmarks/standalone.py "
        f"{' '.join(sys.argv[1:])}`\n\nThe reference is the implementation in the style of the "
        "published code (simplexkern.geometry_reference, simplexkern.ops.reference), timed in the same run.\n"
    )
    text = header + "\n" + table(rows) + "\n"
    print("\n" + text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
