"""Prints the latest asv results of this machine as speed-ups over ``reference``.

Each benchmark is parametrised by ``implementation``; every other implementation's median
time is divided into the reference's from the same run, with the same other parameters
(on the same device, else on the CPU where the reference runs only there).

    python benchmarks/report.py        (after `make bench`)
"""

import itertools
import json
import math
import pathlib
import sys

from asv import results as asv_results

RESULTS = pathlib.Path(__file__).resolve().parent / ".asv" / "results"


def latest():
    runs = [
        r
        for machine in sorted(p.name for p in RESULTS.iterdir() if p.is_dir())
        for r in asv_results.iter_results_for_machine(str(RESULTS), machine)
    ]
    if not runs:
        sys.exit("no asv results: run `make bench` first")
    return max(runs, key=lambda r: r.date)


def main():
    run = latest()
    declared = json.loads((RESULTS / "benchmarks.json").read_text())
    print(f"asv results of commit {run.commit_hash[:10]} ({run.env_name})\n")
    print("| benchmark | parameters | median | speed-up | over reference on |\n|---|---|---|---|---|")
    for key in sorted(run.get_all_result_keys()):
        params = run.get_result_params(key)
        names = declared[key]["param_names"]
        combos = list(itertools.product(*params))
        timing = dict(zip(combos, run.get_result_value(key, params)))
        for combo, value in timing.items():
            if value is None or math.isnan(value):  # skipped: no such device here
                continue
            p = dict(zip(names, (c.strip("'") for c in combo)))
            ratio = where = ""
            for device in (p.get("device"), "cpu"):
                ref = tuple(f"'{v}'" for v in {**p, "implementation": "reference", "device": device}.values())
                if timing.get(ref) and not math.isnan(timing[ref]):
                    ratio, where = f"{timing[ref] / value:.1f}x", device
                    break
            shown = ", ".join(f"{k}={v}" for k, v in p.items())
            print(f"| {key} | {shown} | {value * 1e3:.3f} ms | {ratio} | {where} |")


if __name__ == "__main__":
    main()
