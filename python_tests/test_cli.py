"""The `simplexkern` command: every subcommand end to end on tiny settings (reports checked
against numbers recomputed here from the saved checkpoints), resuming, refusing another
run's folder, and one-line errors with exit status 2."""

import json
import re
import shutil
import subprocess
import sys

import matplotlib.image
import numpy as np
import pytest
import torch

import simplexkern as sk
from simplexkern import cli
from simplexkern.cli.details import DETAILS
from simplexkern.cli.report import Report

TINY = ["--quiet", "--device", "cpu", "--epochs", "2", "--batch-size", "128"]
SIMPLEX = ["--vertex-epochs", "2", "--eval-samples", "4", "--samples", "3"]


def command(*args):
    return subprocess.run([sys.executable, "-m", "simplexkern", *args], capture_output=True, text=True, timeout=300)


def run_ok(*args):
    """Runs the command in this process; returns its report."""
    assert cli.main(list(args)) == 0
    return json.loads(open(f"{args[args.index('--out') + 1]}/report.json").read())


def check_metrics(m):
    assert 0 <= m["accuracy"] <= 1 and 0 < m["nll"] < 5 and 0 <= m["ece"] <= 1 and 0 <= m["brier"] <= 2, m


def check_png(path):
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100 and image.std() > 0.01


def check_typed_report(obj):
    """The typed report reads report.json ``obj`` field for field and writes it back unchanged."""
    report = Report.from_json(obj)
    assert Report.from_json(report.to_json()) == report and report.to_json() == obj
    part = report.part
    assert type(part.details) is DETAILS[obj["command"]] and report.settings == obj["settings"]
    assert report.data.n_test == obj["data"]["n_test"] and report.times == obj["times"]
    assert report.environment.torch == obj["environment"]["torch"] and part.plots == obj["plots"]
    assert [(m.name, m.checkpoint, m.test.nll) for m in part.members] == [
        (m["name"], m["checkpoint"], m["test"]["nll"]) for m in obj["members"]
    ]
    assert [(r.name, r.test.accuracy, r.gradient_evaluations) for r in part.methods] == [
        (r["name"], r["test"]["accuracy"], r["gradient_evaluations"]) for r in obj["methods"]
    ]
    if obj["test"] is not None:
        assert (part.test.nll, part.val.ece) == (obj["test"]["nll"], obj["val"]["ece"])
        assert part.uncertainty.aurc == obj["uncertainty"]["aurc"]
        assert part.temperature.value == obj["temperature"]["value"]
        assert part.temperature.test.brier == obj["temperature"]["test"]["brier"]
    return report


def check_report(report, folder, command_):
    check_typed_report(report)
    assert report["schema"] == "simplexkern.report/1" and report["command"] == command_
    for key in ("settings", "data", "members", "methods", "details", "times", "environment", "plots", "created"):
        assert key in report
    assert report["environment"]["torch"] == torch.__version__ and report["times"]["total"] > 0
    if command_ != "surface":
        check_metrics(report["test"])
        check_metrics(report["val"])
        u = report["uncertainty"]
        assert 0 <= u["adaptive_ece"] <= 1 and 0 <= u["aurc"] <= 1 and "uncertainty.png" in report["plots"]
        several = len(report["members"]) > 1
        assert (u["disagreement"] is not None) == several and (u["mutual_information"] is not None) == several
        for m in report["members"]:
            check_metrics(m["test"])
            assert (folder / m["checkpoint"]).is_file() or (folder / m["checkpoint"]).is_absolute()
    for name in report["plots"]:
        check_png(folder / name)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One run of every training subcommand on digits, tiny settings."""
    root = tmp_path_factory.mktemp("runs")
    reports = {
        "ensemble": run_ok("ensemble", *TINY, "--out", str(root / "ensemble")),
        "espro": run_ok("espro", *TINY, *SIMPLEX, "--reg", "0,3", "--out", str(root / "espro")),
        "spro": run_ok("spro", *TINY, *SIMPLEX, "--vertices", "2", "--out", str(root / "spro")),
        "curve": run_ok("curve", *TINY, "--curve-epochs", "3", "--eval-samples", "4", "--out", str(root / "curve")),
        "fge": run_ok("fge", *TINY, "--cycles", "2", "--out", str(root / "fge")),
        "train": run_ok("train", *TINY, "--out", str(root / "train")),
    }
    return root, reports


def _digits():
    return sk.data.load("digits", val_fraction=0.2)


def test_every_training_subcommand_writes_a_checked_report(runs):
    root, reports = runs
    for name, report in reports.items():
        check_report(report, root / name, name)
    assert {p for r in reports.values() for p in r["plots"]} >= {
        "ensemble_size.png",
        "reg_choice.png",
        "dimensionality.png",
        "curve_profile.png",
    }
    assert [m["name"] for m in reports["espro"]["members"]] == ["simplex 0", "simplex 1", "simplex 2"]
    assert reports["espro"]["details"]["reg"] in (0, 3) and len(reports["espro"]["details"]["reg_rows"]) == 2
    assert [r["connectors"] for r in reports["spro"]["details"]["sweep"]] == [1, 2]
    assert len(reports["fge"]["members"]) == 2


def test_the_typed_reports_hold_each_commands_details(runs):
    _, reports = runs
    typed = {name: Report.from_json(obj) for name, obj in reports.items()}
    espro, obj = typed["espro"].part.details, reports["espro"]["details"]
    assert (espro.reg, espro.reg_rows, espro.log_volume) == (obj["reg"], obj["reg_rows"], obj["log_volume"])
    assert espro.cost.with_search == obj["cost"]["with_search"] > espro.cost.espro == obj["cost"]["espro"]
    assert espro.deep_ensemble.members[2].nll == obj["deep_ensemble"]["members"][2]["nll"]
    assert typed["ensemble"].part.details.ensemble_size["deep ensemble"][-1]["members"] == 3
    assert [row["connectors"] for row in typed["spro"].part.details.sweep] == [1, 2]
    assert typed["curve"].part.details.midpoint == reports["curve"]["details"]["midpoint"]
    fge = typed["fge"].part.details
    assert fge.start.accuracy == reports["fge"]["details"]["start"]["accuracy"] and len(fge.snapshots) == 2
    assert typed["train"].part.details.to_json() == {} and typed["train"].part.members[0].name == "mode 0"
    assert typed["espro"].part.methods[-1].test_std is None and "test_std" not in reports["espro"]["methods"][-1]


def test_a_report_of_an_earlier_version_still_prints_and_evaluates(runs, tmp_path, capsys):
    """report.json as written before costs, the points' disagreement, OOD detection and the
    processes were recorded."""
    root, reports = runs
    shutil.copytree(root / "espro", tmp_path / "old")
    old = json.loads(json.dumps(reports["espro"]))
    for key in ("cost", "equal_compute_modes", "vertices_train_s", "log_volume"):
        del old["details"][key]
    for key in ("point_disagreement", "ood"):
        del old["uncertainty"][key]
    for row in old["methods"] + old["details"]["reg_rows"]:
        del row["gradient_evaluations"]
    del old["environment"]["processes"], old["environment"]["data_parallel"]
    (tmp_path / "old" / "report.json").write_text(json.dumps(old))
    assert cli.main(["espro", *TINY, *SIMPLEX, "--reg", "0,3", "--out", str(tmp_path / "old")]) == 0
    out = capsys.readouterr().out
    assert "λ chosen on the validation split" in out and "ESPRO (3 simplexes of 3 vertices)" in out
    assert "points' disagreement" not in out and "training cost" not in out
    typed = Report.from_json(old)
    assert typed.part.details.cost is None and typed.part.methods[0].gradient_evaluations is None
    evaluated = run_ok(
        "evaluate", str(tmp_path / "old"), "--eval-samples", "4", "--device", "cpu", "--out", str(tmp_path / "e")
    )
    assert evaluated["test"] == pytest.approx(reports["espro"]["test"], rel=1e-6)


def test_ensemble_report_matches_its_checkpoints(runs):
    """The ensemble's test metrics, recomputed from its saved modes with plain softmax."""
    root, reports = runs
    data = _digits()
    probs = torch.stack(
        [
            torch.softmax(sk.nn.checkpoint.load_module(root / "ensemble" / m["checkpoint"])(data.x_test).double(), -1)
            for m in reports["ensemble"]["members"]
        ]
    ).mean(0)
    y = data.y_test
    nll = -probs[torch.arange(len(y)), y].log().mean().item()
    accuracy = (probs.argmax(1) == y).double().mean().item()
    assert reports["ensemble"]["test"]["nll"] == pytest.approx(nll, rel=1e-5)
    assert reports["ensemble"]["test"]["accuracy"] == pytest.approx(accuracy, abs=1e-12)
    confident_first = torch.argsort(-probs.max(1).values, stable=True)
    wrong = (probs.argmax(1) != y)[confident_first].double()
    aurc = (wrong.cumsum(0) / torch.arange(1, len(y) + 1)).mean().item()
    assert reports["ensemble"]["uncertainty"]["aurc"] == pytest.approx(aurc, rel=1e-4, abs=1e-6)
    # the same seed gives every command the same modes: ESPRO's deep-ensemble baseline is this ensemble
    assert reports["espro"]["details"]["deep_ensemble"]["test"] == pytest.approx(reports["ensemble"]["test"], rel=1e-6)
    single = reports["ensemble"]["methods"][0]
    assert single["name"] == "single mode (mean of the 3)"
    assert single["test"]["nll"] == pytest.approx(np.mean([m["test"]["nll"] for m in reports["ensemble"]["members"]]))


def test_points_disagreement_within_each_simplex(runs):
    """ESPRO's points' disagreement, recomputed from its checkpoints: each simplex at its M = 4
    points, every pair of points' top labels compared by hand, averaged over simplexes."""
    from simplexkern.eval.predict import member_points

    root, reports = runs
    data, per_simplex = _digits(), []
    for j, member in enumerate(reports["espro"]["members"]):
        model = sk.load_checkpoint(root / "espro" / member["checkpoint"]).eval()
        with torch.no_grad():
            labels = model(data.x_test, member_points(model, 4, 0, j)).argmax(-1)
        pairs = [(a, b) for a in range(4) for b in range(a + 1, 4)]
        per_simplex.append(np.mean([(labels[a] != labels[b]).double().mean().item() for a, b in pairs]))
    assert reports["espro"]["uncertainty"]["point_disagreement"] == pytest.approx(np.mean(per_simplex), abs=1e-12)
    assert reports["ensemble"]["uncertainty"]["point_disagreement"] is None


def test_curve_has_low_loss_in_the_middle_and_its_plane_passes_through_its_ends(runs, tmp_path):
    root, reports = runs
    mid = reports["curve"]["details"]["midpoint"]
    assert mid["t"] == 0.5 and mid["curve"]["train_loss"] < mid["segment"]["train_loss"]
    plane = run_ok("surface", str(root / "curve"), "--grid", "5", "--device", "cpu", "--out", str(tmp_path / "p"))
    check_report(plane, tmp_path / "p", "surface")
    data = _digits()
    points = {p["name"]: p for p in plane["details"]["points"]}
    for name, mode in (("t = 0", 0), ("t = 1", 1)):  # the ends are the modes, evaluated here directly
        model = sk.nn.checkpoint.load_module(root / "curve" / "modes" / f"mode_{mode}.pt")
        loss = torch.nn.functional.cross_entropy(model(data.x_train), data.y_train).item()
        assert points[name]["train_loss"] == pytest.approx(loss, rel=1e-4)
    assert points["t = 1/2"]["train_loss"] == pytest.approx(mid["curve"]["train_loss"], rel=1e-4)
    grids = np.load(tmp_path / "p" / "plane.npz")
    assert grids["train_loss"].shape == (5, 5) and np.isfinite(grids["train_loss"]).all()
    assert plane["details"]["range"]["train_loss"]["min"] == pytest.approx(grids["train_loss"].min())


def test_surface_through_simplex_vertices_and_through_ensemble_members(runs, tmp_path):
    root, _ = runs
    simplex = run_ok(
        "surface", str(root / "espro"), "--member", "1", "--grid", "3", "--device", "cpu", "--out", str(tmp_path / "s")
    )
    assert [p["name"] for p in simplex["details"]["points"]] == ["vertex 0", "vertex 1", "vertex 2"]
    members = run_ok(
        "surface",
        str(root / "ensemble"),
        "--grid",
        "3",
        "--points",
        "2,0,1",
        "--device",
        "cpu",
        "--out",
        str(tmp_path / "m"),
    )
    assert [p["name"] for p in members["details"]["points"]] == ["mode 2", "mode 0", "mode 1"]
    check_png(tmp_path / "m" / "plane.png")


def test_evaluate_an_earlier_run_on_its_data_and_on_a_corrupted_copy(runs, tmp_path):
    root, reports = runs
    same = run_ok(
        "evaluate", str(root / "espro"), "--eval-samples", "4", "--device", "cpu", "--out", str(tmp_path / "a")
    )
    check_report(same, tmp_path / "a", "evaluate")
    assert same["test"] == pytest.approx(reports["espro"]["test"], rel=1e-6)
    assert same["settings"]["data"] == "digits" and same["settings"]["val_fraction"] == 0.2
    noisy = run_ok(
        "evaluate",
        str(root / "espro"),
        "--eval-samples",
        "4",
        "--gaussian-noise",
        "5",
        "--device",
        "cpu",
        "--out",
        str(tmp_path / "b"),
    )
    assert noisy["test"]["nll"] > same["test"]["nll"] and noisy["data"]["name"] == "digits (gaussian noise 5)"
    one = run_ok(
        "evaluate",
        str(root / "train" / "modes" / "mode_0.pt"),
        "--data",
        "digits",
        "--device",
        "cpu",
        "--out",
        str(tmp_path / "c"),
    )
    assert one["test"] == pytest.approx(reports["train"]["test"], rel=1e-6)


def test_a_finished_run_is_not_redone_and_another_runs_folder_is_refused(runs, capsys):
    root, reports = runs
    folder = str(root / "ensemble")
    before = (root / "ensemble" / "report.json").read_text()
    assert cli.main(["ensemble", *TINY, "--out", folder]) == 0
    assert (root / "ensemble" / "report.json").read_text() == before
    assert "deep ensemble (3 modes)" in capsys.readouterr().out
    assert cli.main(["ensemble", *TINY, "--lr", "0.1", "--out", folder]) == 2
    err = capsys.readouterr().err
    assert "--lr 0.05 (now 0.1)" in err and "another --out" in err
    assert cli.main(["espro", *TINY, "--out", folder]) == 2
    assert "holds a 'ensemble' run" in capsys.readouterr().err
    assert cli.main(["ensemble", *TINY, "--resume", "--out", folder]) == 0
    assert cli.main(["ensemble", "--resume", "--epochs", "5", "--out", folder]) == 2
    assert "--epochs (recorded: 2)" in capsys.readouterr().err


def test_an_interrupted_espro_run_resumes_without_redoing_finished_work(tmp_path, monkeypatch, capsys):
    args = ["espro", *TINY, *SIMPLEX, "--modes", "2", "--reg", "1", "--out"]
    whole = run_ok(*args, str(tmp_path / "whole"))
    import simplexkern.train.loop as loop

    real_step, calls, cut = loop._step, [], []

    def interrupted(*a, **k):
        calls.append(1)
        # 2 modes x 2 epochs x 8 steps, then the first step of vertex 1's epoch 1
        if len(calls) == 2 * 2 * 8 + 9 and not cut:
            cut.append(1)
            raise KeyboardInterrupt
        return real_step(*a, **k)

    monkeypatch.setattr(loop, "_step", interrupted)
    out = str(tmp_path / "cut")
    assert cli.main([*args, out]) == 130
    assert "the same command resumes" in capsys.readouterr().err
    mode_files = {p: p.stat().st_mtime_ns for p in (tmp_path / "cut" / "modes").glob("*.pt")}
    assert len(mode_files) == 2
    calls.clear()
    resumed = run_ok(*args, out)
    assert resumed["resumed"] and resumed["test"] == whole["test"]
    assert [m["test"] for m in resumed["members"]] == [m["test"] for m in whole["members"]]
    assert {p: p.stat().st_mtime_ns for p in mode_files} == mode_files  # the modes were not trained again
    # no mode step, and of the 2 simplexes x 2 vertices x 2 epochs x 8 steps only the finished epoch is not redone
    assert len(calls) == 2 * 2 * 2 * 8 - 8


def test_compiled_steps_give_the_same_report(runs, tmp_path):
    """--compile changes how the steps run, not what they compute (nor the run's settings)."""
    root, reports = runs
    compiled = run_ok("train", *TINY, "--compile", "--out", str(tmp_path / "c"))
    assert compiled["settings"] == reports["train"]["settings"]
    assert compiled["test"] == pytest.approx(reports["train"]["test"], rel=1e-4, abs=1e-6)


def test_own_npz_data_with_any_features_and_classes(tmp_path):
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(5, 7)) * 3
    y = rng.integers(0, 5, 300)
    x = (centres[y] + rng.normal(size=(300, 7))).astype(np.float32)
    np.savez(tmp_path / "my.npz", x_train=x[:200], y_train=y[:200], x_test=x[200:], y_test=y[200:])
    common = ["--data", str(tmp_path / "my.npz"), "--model", "mlp", "--modes", "2", *TINY]
    es = run_ok("espro", *common, "--vertices", "1", *SIMPLEX, "--reg", "1", "--out", str(tmp_path / "es"))
    de = run_ok("ensemble", *common, "--out", str(tmp_path / "de"))
    assert es["data"]["n_classes"] == 5 and es["data"]["input_shape"] == [7] and es["data"]["n_val"] == 40
    assert es["details"]["deep_ensemble"]["test"] == pytest.approx(de["test"], rel=1e-6)
    assert es["test"]["accuracy"] > 0.5


@pytest.mark.parametrize(
    "args, message",
    [
        (["ensemble", "--data", "missing.npz"], "missing.npz"),
        (["ensemble", "--data", "BAD"], "x_train"),
        (["train", "--model", "resnet9000"], "unknown architecture 'resnet9000'"),
        (["espro", "--vertices", "0"], "--vertices: must be >= 1"),
        (["ensemble", "--modes", "0"], "--modes: must be >= 1"),
        (["espro", "--reg", "1,x"], "--reg"),
        (["spro", "--reg", "1,2"], "spro trains one complex"),
        (["evaluate", "EMPTY"], "holds no checkpoints"),
        (["evaluate", "nowhere"], "no such file or folder"),
        (["surface", "EMPTY"], "holds no checkpoints"),
        (["espro", "--val-fraction", "0"], "validation split"),
        (["train", "--out", "FILE"], "is not a folder"),
        (["train", "--out", "OTHER"], "folder of other files"),
        (["train", "--resume", "--out", "EMPTY"], "nothing to resume"),
    ],
)
def test_errors_are_one_line_with_status_2(args, message, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    (tmp_path / "file").write_text("")
    np.savez(
        tmp_path / "bad.npz",
        x_train=np.zeros((4, 3)),
        y_train=np.zeros(5, int),
        x_test=np.zeros((2, 3)),
        y_test=np.zeros(2, int),
    )
    names = {
        "EMPTY": tmp_path / "empty",
        "BAD": tmp_path / "bad.npz",
        "OTHER": tmp_path / "other",
        "FILE": tmp_path / "file",
    }
    args = [str(names.get(a, a)) for a in args]
    if "--out" not in args:
        args += ["--out", str(tmp_path / "out")]
    try:
        status = cli.main([*args, "--quiet", "--device", "cpu"])
    except SystemExit as exit_:
        status = exit_.code
    err = capsys.readouterr().err
    assert status == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()  # nothing written for a refused command
    assert list((tmp_path / "other").iterdir()) == [tmp_path / "other" / "notes.txt"]


def test_source_models_that_do_not_fit_the_data_are_refused(runs, capsys):
    root, _ = runs
    assert (
        cli.main(
            ["evaluate", str(root / "train"), "--data", "mnist1d", "--device", "cpu", "--out", str(root / "never")]
        )
        == 2
    )
    assert "mode 0 does not take the inputs of mnist1d" in capsys.readouterr().err
    assert not (root / "never").exists()
    assert cli.main(["surface", str(root / "train"), "--device", "cpu", "--out", str(root / "never")]) == 2
    assert "a plane needs three points" in capsys.readouterr().err


def test_the_real_command_exits_2_without_a_traceback(tmp_path):
    cases = [(["ensemble", "--data", "missing.npz"], "missing.npz"), (["espro", "--modes", "0"], "--modes")]
    if not torch.cuda.is_available():
        cases.append((["train", "--device", "cuda"], "no CUDA GPU"))
    for args, message in cases:
        out = command(*args, "--out", str(tmp_path / "x"))
        assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr, out.stderr
        assert len(out.stderr.strip().splitlines()) == 1


def test_help_of_every_subcommand_documents_every_flag_and_default(capsys):
    for name in cli.COMMANDS:
        with pytest.raises(SystemExit) as exit_:
            cli.main([name, "--help"])
        assert exit_.value.code == 0
        text = " ".join(capsys.readouterr().out.split())
        for dest in cli.setting_names(name) + ["device", "out", "quiet", "resume"]:
            flag = cli.FLAGS.get(dest, cli.RUNTIME.get(dest, ("--out",)))[0]
            assert flag in text, (name, flag)
        assert "(default: runs/" in text and ("(default: 0)" in text or "(default: 0,1,2)" in text)
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    text = capsys.readouterr().out
    assert all(name in text for name in cli.COMMANDS)


def test_demo_prints_the_comparison_and_writes_its_plots(tmp_path):
    out = command(
        "demo", *TINY, "--vertex-epochs", "1", "--reg", "0,1", "--eval-samples", "3", "--out", str(tmp_path / "demo")
    )
    assert out.returncode == 0, out.stderr
    rows = {
        name: [float(v) for v in values]
        for name, *values in re.findall(
            r"^(\S.*?)\s+(0\.\d+|1\.0+)\s+(\d+\.\d+)\s+(\d+\.\d+)\s+(\d+\.\d+)\s+[\d.]+s\s+[\d.]+[kM]\s+"
            r"[\d.]+ ms$",
            out.stdout,
            re.M,
        )
    }
    assert "deep ensemble (3 modes)" in rows and "ESPRO (3 simplexes of 3 vertices)" in rows, out.stdout
    assert len(rows) == 5  # single mode, the two ensembles, and both after temperature scaling
    for accuracy, nll, ece, brier in rows.values():
        assert 0.5 < accuracy <= 1 and 0 < nll < 5 and 0 <= ece < 1 and 0 < brier < 1
    assert re.search(r"λ = (0|1)\s+NLL [0-9.]+ .*<- chosen", out.stdout)
    for name in ("ensemble_size.png", "reg_choice.png"):
        check_png(tmp_path / "demo" / name)
    report = check_typed_report(json.loads((tmp_path / "demo" / "report.json").read_text()))
    assert report.command == "demo" and report.part.details.reg in (0, 1)


def test_info():
    assert re.search(r"simplexkern \d+\.\d+\.\d+: torch ", command("info").stdout)


def test_kernels_demo_reports_agreeing_results():
    out = command("kernels", "--batch", "300", "--device", "cpu")
    assert out.returncode == 0, out.stderr
    diffs = [float(v) for v in re.findall(r"max \|difference\|(?: in log V)?\s+([0-9.e+-]+)", out.stdout)]
    assert len(diffs) == 5  # log-volumes; reference and torch backends of simplex_linear and simplex_conv2d
    assert max(diffs) < 1e-4
    assert out.stdout.count("fixed vertices' gradient: 0.0 (exactly zero)") == 2
    bad = command("kernels", "--vertices", "1")
    assert bad.returncode == 2 and "--vertices" in bad.stderr


def test_each_seed_draws_its_own_validation_split_and_evaluate_keeps_the_sources(tmp_path):
    from simplexkern.cli.run_data import load_data

    splits = [load_data({"data": "digits", "val_fraction": 0.2, "seed": seed}) for seed in (0, 1)]
    assert splits[0].x_val.shape == splits[1].x_val.shape and not torch.equal(splits[0].x_val, splits[1].x_val)
    trained = run_ok("train", *TINY, "--seed", "1", "--out", str(tmp_path / "seed1"))
    evaluated = run_ok(
        "evaluate", str(tmp_path / "seed1"), "--quiet", "--device", "cpu", "--out", str(tmp_path / "eval")
    )
    assert evaluated["val"] == pytest.approx(trained["val"], rel=1e-9)  # the source's split, not seed 0's
    assert evaluated["settings"]["split_seed"] == 1


def test_espro_counts_its_cost_and_adds_the_deep_ensemble_of_equal_compute(tmp_path):
    """Costs against the arithmetic of the settings (960 training examples, batches of 128:
    no batch dropped); the equal-compute ensembles against their modes' checkpoints."""
    out = tmp_path / "espro"
    report = run_ok(
        "espro",
        *TINY,
        "--vertex-epochs",
        "1",
        "--samples",
        "2",
        "--vertices",
        "1",
        "--reg",
        "0,3",
        "--eval-samples",
        "2",
        "--equal-compute",
        "--out",
        str(out),
    )
    mode, simplex = 2 * 960, 1 * 1 * 960 * 2  # one mode: 2 epochs; one simplex: 1 vertex x 1 epoch x H = 2
    rows = report["details"]["reg_rows"]
    assert sorted(r["gradient_evaluations"] for r in rows) == [simplex, 3 * simplex]  # one λ stops after simplex 0
    cost = report["details"]["cost"]
    assert cost == {"mode": mode, "espro": 3 * mode + 3 * simplex, "with_search": 3 * mode + 4 * simplex}
    n = {"espro": (3 * mode + 3 * simplex) // mode, "with_search": (3 * mode + 4 * simplex) // mode}
    assert report["details"]["equal_compute_modes"] == n == {"espro": 6, "with_search": 7}
    assert sorted(p.name for p in (out / "modes").glob("mode_*.pt")) == [f"mode_{j}.pt" for j in range(7)]
    data = _digits()
    probs = torch.stack(
        [
            torch.softmax(sk.nn.checkpoint.load_module(out / "modes" / f"mode_{j}.pt")(data.x_test).double(), -1)
            for j in range(7)
        ]
    )
    for key in ("espro", "with_search"):
        row = next(r for r in report["methods"] if r["name"].startswith(f"deep ensemble of {n[key]} modes"))
        p = probs[: n[key]].mean(0)
        assert row["test"]["nll"] == pytest.approx(-p[torch.arange(len(p)), data.y_test].log().mean().item(), rel=1e-5)
        assert row["gradient_evaluations"] == n[key] * mode
    assert report["details"]["deep_ensemble"]["test"]["nll"] == pytest.approx(
        -probs[:3].mean(0)[torch.arange(len(p)), data.y_test].log().mean().item(), rel=1e-5
    )
    assert report["details"]["ensemble_size"]["deep ensemble"][-1]["members"] == 7


def test_out_of_distribution_detection_in_the_report(tmp_path, capsys):
    """AUROC, AUPR and FPR95 against scikit-learn and a direct count, from the saved mode."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    report = run_ok("train", *TINY, "--ood-gaussian-noise", "5", "--out", str(tmp_path / "t"))
    assert "out-of-distribution inputs told from the test inputs" in capsys.readouterr().out
    model = sk.nn.checkpoint.load_module(tmp_path / "t" / "modes" / "mode_0.pt").requires_grad_(False)
    inside = torch.softmax(model(_digits().x_test), -1).double()  # float32 probabilities, as predicted
    away = torch.softmax(model(sk.data.load("digits", val_fraction=0.2, gaussian_noise=5).x_test), -1).double()
    labels = np.r_[np.zeros(len(inside)), np.ones(len(away))]
    for name, of in (
        ("max_prob", lambda p: 1 - p.max(1).values),
        ("entropy", lambda p: -torch.special.xlogy(p, p).sum(1)),
    ):
        scores = torch.cat([of(inside), of(away)]).numpy()
        got = report["uncertainty"]["ood"][name]
        assert got["auroc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-6)
        assert got["aupr"] == pytest.approx(average_precision_score(labels, scores), abs=1e-6)
        threshold = np.sort(scores[len(inside) :])[::-1][int(np.ceil(0.95 * len(away))) - 1]
        assert got["fpr95"] == pytest.approx((scores[: len(inside)] >= threshold).mean(), abs=1e-9)
    assert (
        cli.main(["train", *TINY, "--ood-gaussian-noise", "5", "--ood-data", "digits", "--out", str(tmp_path / "u")])
        == 2
    )
    assert "give one of them" in capsys.readouterr().err and not (tmp_path / "u").exists()
    assert cli.main(["train", *TINY, "--ood-data", "mnist1d", "--out", str(tmp_path / "v")]) == 2
    assert "--ood-data: " in capsys.readouterr().err and not (tmp_path / "v").exists()  # refused before training


def test_compare_puts_every_method_on_one_cost_axis(tmp_path, capsys):
    """Tiny settings: one mode 2 epochs over 960 examples; a simplex vertex 1 epoch at H = 1
    (half a mode); FGE one cycle of 2 epochs; a complex of 2 modes and 1 connector. ESPRO
    with its search of two λ costs the most (3 modes, simplex 0 for both λ, simplexes 1 and
    2 for one: 5 modes), so the deep ensemble runs to 5."""
    out = tmp_path / "c"
    flags = [
        *TINY,
        "--vertex-epochs",
        "1",
        "--samples",
        "1",
        "--vertices",
        "1",
        "--reg",
        "0,0.1",
        "--eval-samples",
        "2",
        "--cycles",
        "1",
        "--cycle-epochs",
        "2",
        "--connectors",
        "1",
        "--seeds",
        "0,1",
        "--out",
        str(out),
    ]
    report = run_ok("compare", *flags)
    text = capsys.readouterr().out
    typed = check_typed_report(report)
    assert typed.part.details.method_lines == report["details"]["lines"] and typed.part.test is None
    assert [row.forward_passes for row in typed.part.methods] == [5, 6, 1, 2]
    espro_row = typed.part.methods[1]
    assert espro_row.test_std.nll == report["methods"][1]["test_std"]["nll"]
    assert espro_row.vs_deep_ensemble.nll_vs_de == report["methods"][1]["vs_deep_ensemble"]["nll_vs_de"]
    assert "the best at each training budget" in text and "mean ± std over seeds" in text
    d, m = report["details"], 2 * 960
    assert d["mode_cost"] == m and d["deep_ensemble_modes"] == 5
    assert d["espro_with_search"]["gradient_evaluations"] == 5 * m
    assert report["plots"] == ["cost.png", "uncertainty.png"]
    check_png(out / "cost.png")
    check_png(out / "uncertainty.png")
    lines = d["lines"]
    assert [p["gradient_evaluations"] for p in lines["deep ensemble"]] == [k * m for k in range(1, 6)]
    assert [p["gradient_evaluations"] for p in lines["ESPRO"]] == [k * (m + 960) for k in (1, 2, 3)]
    assert [p["gradient_evaluations"] for p in lines["FGE"]] == [2 * m]
    assert [p["gradient_evaluations"] for p in lines["SPRO complex"]] == [2 * m + 960]
    data = [sk.data.load("digits", val_fraction=0.2, split_seed=seed) for seed in (0, 1)]
    assert not torch.equal(data[0].y_train, data[1].y_train)  # each seed its own split
    nll, fge_vs_pairs = [], []

    def nll_of(probs, y):
        return -probs[torch.arange(len(y)), y].log().mean().item()

    for seed, ds in zip((0, 1), data):
        folder = out / f"seed_{seed}"
        probs = torch.stack(
            [
                torch.softmax(sk.nn.checkpoint.load_module(folder / "modes" / f"mode_{j}.pt")(ds.x_test).double(), -1)
                for j in range(5)
            ]
        )
        nll.append(nll_of(probs.mean(0), ds.y_test))
        fge = torch.softmax(sk.nn.checkpoint.load_module(folder / "fge" / "fge_snapshot_0.pt")(ds.x_test).double(), -1)
        pairs = [nll_of(probs[[a, b]].mean(0), ds.y_test) for a in range(5) for b in range(a + 1, 5)]
        fge_vs_pairs.append(nll_of(fge, ds.y_test) - np.mean(pairs))  # FGE costs 2 modes: every pair of this seed
    assert lines["deep ensemble"][-1]["nll"] == pytest.approx(np.mean(nll), rel=1e-5)
    assert lines["deep ensemble"][-1]["nll_std"] == pytest.approx(np.std(nll, ddof=1), rel=1e-4, abs=1e-9)
    assert lines["FGE"][0]["nll_vs_de"] == pytest.approx(np.mean(fge_vs_pairs), abs=1e-5)
    assert lines["FGE"][0]["nll_vs_de_std"] == pytest.approx(np.std(fge_vs_pairs, ddof=1), rel=1e-3, abs=1e-6)
    assert lines["FGE"][0]["seeds_below_de"] == sum(v < 0 for v in fge_vs_pairs)
    for p in lines["ESPRO"] + lines["FGE"] + lines["SPRO complex"]:  # paired within seeds: means subtract
        same = lines["deep ensemble"][min(5, int(p["gradient_evaluations"] // m)) - 1]
        assert p["nll_vs_de"] == pytest.approx(p["nll"] - same["nll"], abs=1e-12)
    assert all(p["nll_vs_de"] == 0 and p["seeds_below_de"] == 0 for p in lines["deep ensemble"])
    points = [p for line in lines.values() for p in line]
    for b in d["best_at_budget"]:
        affordable = [p for p in points if p["gradient_evaluations"] <= b["budget"]]
        assert b["nll"] == min(p["nll"] for p in affordable)
        assert b["best_error"]["error"] == min(p["error"] for p in affordable)
        assert b["deep_ensemble"]["members"] == min(5, b["budget"] // m)
    assert [r["name"] for r in report["methods"]] == [
        "deep ensemble (5 members)",
        "ESPRO (3 members)",
        "FGE (1 members)",
        "SPRO complex (2 points)",
    ]
    assert run_ok("compare", *flags) == report  # finished: not redone
    assert cli.main(["compare", *flags[:-1], str(tmp_path / "d"), "--lr-min", "0.1"]) == 2  # FGE's checks apply
    assert not (tmp_path / "d").exists()
