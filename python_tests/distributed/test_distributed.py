"""Training across processes launched by torchrun (2 gloo processes on the CPU): spread
members give the one-process result bit for bit, a killed job resumes without retraining
finished members, data-parallel SPRO matches one process, and a failing process ends the
job with a clear error instead of a hang."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest
import torch

import simplexkern as sk
from simplexkern.nn import checkpoint

WORKER = pathlib.Path(__file__).with_name("worker.py")
TINY = ["--quiet", "--device", "cpu", "--batch-size", "128", "--timeout", "2"]
# one thread per process, as torchrun sets it: the one-process run uses the same arithmetic
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def torchrun(*args, nproc=2):
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *args]


def run(cmd, timeout=300):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=ENV)


def simplexkern(*args, nproc=None):
    cmd = torchrun("-m", "simplexkern", *args, nproc=nproc) if nproc else [sys.executable, "-m", "simplexkern", *args]
    result = run(cmd)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def report(out):
    """report.json without what depends on the run's timing and processes."""
    r = json.loads((pathlib.Path(out) / "report.json").read_text())
    for key in ("created", "times", "environment", "resumed"):
        r.pop(key)
    for row in r["methods"] + r["details"].get("reg_rows", []):
        row.pop("train_s", None)
        row.pop("predict_s", None)
    r["details"].pop("vertices_train_s", None)
    return r


def strip_costs(r):
    """A report without the λ search's costs (processes grow simplexes at once)."""
    for row in r["details"]["reg_rows"]:
        row.pop("gradient_evaluations")
    r["details"]["cost"].pop("with_search")
    r["details"].pop("equal_compute_modes")
    return r


def checkpoints(out):
    return {p.relative_to(out).as_posix(): p for p in sorted(pathlib.Path(out).rglob("*.pt"))}


def same_weights(a, b):
    sa, sb = (torch.load(p, weights_only=True)["state_dict"] for p in (a, b))
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_members_spread_over_processes_give_the_one_process_result(tmp_path):
    # J = 3 over 2 processes (rank 0 holds two members, rank 1 one), λ chosen on validation
    args = [
        "espro",
        *TINY,
        "--modes",
        "3",
        "--epochs",
        "3",
        "--vertices",
        "2",
        "--vertex-epochs",
        "2",
        "--samples",
        "3",
        "--eval-samples",
        "4",
        "--reg",
        "0,10",
    ]
    simplexkern(*args, "--out", str(tmp_path / "one"))
    simplexkern(*args, "--out", str(tmp_path / "two"), nproc=2)
    env = json.loads((tmp_path / "two" / "report.json").read_text())["environment"]
    assert env["processes"] == 2 and not env["data_parallel"]
    # the λ search's first round grows simplex 0 in one process, a simplex per process in two
    costs = {}
    for name in ("one", "two"):
        r = json.loads((tmp_path / name / "report.json").read_text())["details"]
        costs[name] = [row["gradient_evaluations"] for row in r["reg_rows"]], r["cost"]["with_search"]
    full, dropped = sorted(costs["one"][0], reverse=True)
    assert sorted(costs["two"][0]) == [2 * dropped, full] and full == 3 * dropped
    assert costs["two"][1] - costs["one"][1] == dropped
    assert strip_costs(report(tmp_path / "two")) == strip_costs(report(tmp_path / "one"))
    one, two = checkpoints(tmp_path / "one"), checkpoints(tmp_path / "two")
    extra = set(two) - set(one)  # the dropped λ's simplex 1, grown by process 1 in the first round
    assert len(one) == 3 + 3 + 1 and len(extra) == 1 and next(iter(extra)).endswith("simplex_1.pt")
    assert all(same_weights(one[name], two[name]) for name in one)
    # evaluate runs on rank 0 alone under torchrun, with the one-process result
    evaluate = ["evaluate", str(tmp_path / "two"), "--quiet", "--eval-samples", "4", "--timeout", "2"]
    simplexkern(*evaluate, "--out", str(tmp_path / "eval_two"), nproc=2)
    simplexkern(*evaluate, "--out", str(tmp_path / "eval_one"))
    tests = [report(tmp_path / name)["test"] for name in ("eval_two", "eval_one", "one")]
    assert tests[0] == tests[1] == tests[2]


def _progress(path):
    """A member checkpoint's progress metadata (epoch, done), or None before it exists."""
    return checkpoint.read_training_state(path)[0] if path.exists() else None


def test_a_killed_job_resumes_without_retraining_finished_members(tmp_path):
    args = ["ensemble", *TINY, "--modes", "3", "--epochs", "60", "--batch-size", "32"]
    out = tmp_path / "killed"
    job = subprocess.Popen(
        torchrun("-m", "simplexkern", *args, "--out", str(out)),
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    modes, deadline = out / "modes", time.time() + 240
    try:  # kill the whole job once member 0 is finished and rank 0 is in member 2's epochs
        while time.time() < deadline and job.poll() is None:
            first, third = _progress(modes / "mode_0.pt"), _progress(modes / "mode_2.pt")
            if first and first["done"] and third and third["epoch"] >= 1 and not third["done"]:
                break
            time.sleep(0.02)
        assert job.poll() is None, "the job ended before it could be killed: give it more epochs"
    finally:
        os.killpg(job.pid, signal.SIGKILL)
        job.wait()
    assert not (out / "report.json").exists()
    finished = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in modes.glob("*.pt") if _progress(p)["done"]}
    assert modes / "mode_0.pt" in finished and modes / "mode_2.pt" not in finished

    simplexkern(*args, "--out", str(out), nproc=2)  # the same command again
    for p, (content, mtime) in finished.items():
        assert p.read_bytes() == content and p.stat().st_mtime_ns == mtime, f"{p.name} was trained again"
    simplexkern(*args, "--out", str(tmp_path / "whole"))
    assert report(out)["test"] == report(tmp_path / "whole")["test"]
    assert report(out)["members"] == report(tmp_path / "whole")["members"]
    whole = checkpoints(tmp_path / "whole")
    assert all(same_weights(p, whole[name]) for name, p in checkpoints(out).items())


def test_data_parallel_spro_matches_one_process():
    """The worker asserts, on each process: one step's gradient of the trainable vertex over
    2 processes (a batch of 63 split 32 / 31) equals the whole batch's; only that vertex is
    a DistributedDataParallel parameter; grow_simplex data-parallel gives the vertices of
    grow_simplex in one process; dropout masks differ between processes; BatchNorm needs two
    rows per process; processes that see different checkpoints refuse to resume; choose_reg
    alone on one process does not wait for the others, and data-parallel gives every process
    rank 0's rows with the one-process error of a diverged λ."""
    result = run(torchrun(str(WORKER)))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rank 0: ok" in result.stdout and "rank 1: ok" in result.stdout


LAUNCH = """
import os, sys
import torch
import simplexkern.data as data
from simplexkern.cli import main

load = data.load
def load_on_rank(*args, **kwargs):
    d = load(*args, **kwargs)
    if os.environ["RANK"] == "1":
        {fault}
    return d
data.load = load_on_rank
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize(
    "fault, message",
    [
        ("d.x_test[0] += 1", "data sets differ between processes: rank(s) 1 have other data sets than rank 0"),
        ("raise ValueError('--data: cannot read /shared/digits.npz')", "cannot read /shared/digits.npz"),
    ],
)
def test_a_failing_process_ends_the_job_with_its_error(tmp_path, fault, message):
    script = tmp_path / "launch.py"
    script.write_text(LAUNCH.replace("{fault}", fault))
    started = time.time()
    result = run(
        torchrun(str(script), "ensemble", *TINY, "--modes", "2", "--epochs", "1", "--out", str(tmp_path / "out")),
        timeout=120,
    )
    assert result.returncode != 0
    assert message in result.stderr
    assert time.time() - started < 60  # no process waited for the --timeout
    assert not (tmp_path / "out" / "report.json").exists()


def test_distributed_arguments_are_checked():
    with pytest.raises(ValueError, match="distributed must be one of"):
        sk.train.deep_ensemble("mlp", sk.data.load("digits"), 2, epochs=1, distributed="nodes", progress=False)
    with pytest.raises(ValueError, match="distributed must be one of \\(None, 'data'\\)"):
        sk.train.train_mode(torch.nn.Linear(64, 10), sk.data.load("digits"), distributed="members")
    with pytest.raises(ValueError, match="needs an initialised process group"):
        sk.train.grow_simplex(
            torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)),
            sk.data.load("digits"),
            2,
            vertex_epochs=1,
            distributed="data",
            progress=False,
        )
