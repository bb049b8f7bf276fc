"""Bad input to the ``simplexkern`` command, its files and the train / eval / data functions:
each is refused with one line naming the flag, file or argument (exit status 2 for the
command), and nothing is written or changed."""

import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import simplexkern as sk
from simplexkern import _atomic, cli

TINY = ["--quiet", "--device", "cpu", "--epochs", "1", "--batch-size", "256"]


def _listing(*roots):
    """path -> (mode, SHA-256 of a file's bytes or 'folder') of everything under ``roots``."""
    out = {}
    for root in roots:
        for path in [pathlib.Path(root), *pathlib.Path(root).rglob("*")]:
            mode = path.stat().st_mode
            out[str(path)] = (mode, hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "folder")
    return out


def _status(argv):
    try:
        return cli.main(argv)
    except SystemExit as exit_:
        return exit_.code


def refused(argv, named, capsys, *watch):
    """Runs the command; asserts exit status 2, one line without a traceback naming each of
    ``named``, and every file under ``watch`` as it was."""
    before = _listing(*watch)
    status = _status([str(a) for a in argv])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert status == 2 and len(lines) == 1 and "Traceback" not in err, err
    for text in named:
        assert str(text) in err, (text, err)
    assert _listing(*watch) == before
    return lines[0]


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """Finished runs to evaluate and draw planes from: one mode (``train``) and an ESPRO
    simplex of three vertices."""
    root = tmp_path_factory.mktemp("sources")
    assert cli.main(["train", *TINY, "--out", str(root / "train")]) == 0
    assert (
        cli.main(
            [
                "espro",
                *TINY,
                "--modes",
                "1",
                "--vertices",
                "2",
                "--vertex-epochs",
                "1",
                "--samples",
                "2",
                "--eval-samples",
                "3",
                "--reg",
                "1",
                "--out",
                str(root / "espro"),
            ]
        )
        == 0
    )
    return root


# ------------------------------------------------------------------------------ flags

COMMAND_OF = {  # flag -> the command line it is tried in
    "--val-fraction": ["train"],
    "--model": ["train"],
    "--epochs": ["train"],
    "--lr": ["train"],
    "--batch-size": ["train"],
    "--seed": ["train"],
    "--device": ["train"],
    "--timeout": ["train"],
    "--data": ["train"],
    "--modes": ["ensemble"],
    "--vertices": ["espro"],
    "--vertex-epochs": ["espro"],
    "--samples": ["espro"],
    "--eval-samples": ["espro"],
    "--reg": ["espro"],
    "--reg-scale": ["espro"],
    "--backend": ["espro"],
    "--kind": ["curve"],
    "--bends": ["curve"],
    "--curve-epochs": ["curve"],
    "--cycles": ["fge"],
    "--cycle-epochs": ["fge"],
    "--lr-max": ["fge"],
    "--lr-min": ["fge"],
    "--gaussian-noise": ["evaluate", "SOURCE"],
    "--points": ["surface", "SOURCE"],
    "--member": ["surface", "SOURCE"],
    "--grid": ["surface", "SOURCE"],
    "--margin": ["surface", "SOURCE"],
}
INTEGER = {
    "--epochs": "0",
    "--batch-size": "0",
    "--seed": "-1",
    "--modes": "0",
    "--vertices": "0",
    "--vertex-epochs": "0",
    "--samples": "0",
    "--eval-samples": "0",
    "--bends": "2",
    "--curve-epochs": "0",
    "--cycles": "0",
    "--cycle-epochs": "0",
    "--gaussian-noise": "6",
    "--member": "-1",
    "--grid": "1",
}
NUMBER = {"--val-fraction": "1", "--lr": "0", "--timeout": "0", "--lr-max": "-1", "--lr-min": "-1", "--margin": "-0.5"}
FLAG_CASES = [
    *[(flag, value) for flag, low in INTEGER.items() for value in (low, "1.5", "x", "inf", "nan", "1e999")],
    *[(flag, value) for flag, low in NUMBER.items() for value in (low, "x", "inf", "-inf", "nan", "1e999")],
    *[(flag, "bogus") for flag in ("--reg-scale", "--kind", "--backend", "--device")],
    *[("--reg", value) for value in ("-1", "inf", "nan", "1e999", "1,x", "", "1,,2", "1,1")],
    *[("--points", value) for value in ("0,1", "a,b,c", "0,1,2,3", "0,1,inf")],
    ("--grid", "100000"),
    ("--model", "resnet9000"),
    ("--model", "torchvision.resnet9000"),
    ("--model", ""),
    ("--data", "nosuch"),
    ("--data", ""),
]


@pytest.mark.parametrize("flag, value", FLAG_CASES)
def test_every_flag_refuses_an_invalid_and_a_non_finite_value(flag, value, sources, tmp_path, capsys):
    argv = [str(sources / "espro") if a == "SOURCE" else a for a in COMMAND_OF[flag]]
    line = refused(
        [*argv, f"{flag}={value}", "--quiet", "--device", "cpu", "--out", tmp_path / "out"],
        [flag] if value in ("", "bogus") else [flag, value],
        capsys,
        tmp_path,
        sources,
    )
    assert not (tmp_path / "out").exists(), line


def test_the_unknown_model_is_named_before_the_data_are_looked_at(tmp_path, capsys):
    line = refused(
        ["train", "--model", "resnet9000", "--data", "mnist1d", "--out", tmp_path / "o"],
        ["resnet9000"],
        capsys,
        tmp_path,
    )
    assert "unknown" in line and "takes" not in line


# ------------------------------------------------------------------- combinations

COMBINATIONS = [  # (command line, what the message names); SOURCE / PLAIN: the sources' espro / train runs
    (["fge", "--lr-min", "0.1", "--lr-max", "0.05"], ["--lr-min", "--lr-max"]),
    (["fge", "--cycle-epochs", "1", "--batch-size", "2000"], ["--cycle-epochs"]),
    (["train", "--data-parallel"], ["--data-parallel", "torchrun"]),
    (["espro", "--reg", "1,2", "--val-fraction", "0"], ["--val-fraction"]),
    (["spro", "--reg", "1,2"], ["--reg"]),
    (["train", "--model", "lenet5", "--data", "mnist1d"], ["lenet5"]),
    (["train", "--model", "transformer"], ["transformer"]),
    (["surface", "SOURCE", "--points", "0,0,1"], ["--points", "0,0,1"]),
    (["surface", "SOURCE", "--points", "0,1,3"], ["--points", "0,1,3"]),
    (["surface", "SOURCE", "--member", "1"], ["--member", "1"]),
    (["surface", "PLAIN"], ["three points"]),
    (["evaluate", "PLAIN", "--data", "mnist1d"], ["mnist1d"]),
    (["evaluate", "SOURCE", "--data", "spirals"], ["spirals"]),
]


@pytest.mark.parametrize("argv, named", COMBINATIONS)
def test_combinations_that_cannot_run_are_refused_before_anything_is_written(argv, named, sources, tmp_path, capsys):
    names = {"SOURCE": sources / "espro", "PLAIN": sources / "train"}
    argv = [names.get(a, a) for a in argv]
    how = ["--quiet", "--device", "cpu"] if argv[0] in ("surface", "evaluate") else TINY
    refused([argv[0], *how, *argv[1:], "--out", tmp_path / "out"], named, capsys, tmp_path, sources)
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------- files


def _npz(path, **arrays):
    base = dict(
        x_train=np.random.rand(30, 4), y_train=np.arange(30) % 3, x_test=np.random.rand(9, 4), y_test=np.arange(9) % 3
    )
    np.savez(path, **{k: v for k, v in {**base, **arrays}.items() if v is not None})


def _truncated(path, make):
    make(path)
    data = pathlib.Path(path).read_bytes()
    pathlib.Path(path).write_bytes(data[: len(data) // 2])


NPZ_CASES = {  # name -> how the file is made
    "truncated": lambda p: _truncated(p, _npz),
    "empty file": lambda p: p.write_bytes(b""),
    "foreign bytes": lambda p: p.write_bytes(os.urandom(300)),
    "an .npy": lambda p: np.save(open(p, "wb"), np.zeros((3, 4))),
    "a folder": lambda p: p.mkdir(),
    "no arrays": lambda p: np.savez(p),
    "strings": lambda p: _npz(p, x_train=np.array([["a"] * 4] * 30)),
    "objects": lambda p: _npz(p, x_train=np.array([[None] * 4] * 30, dtype=object)),
    "zero features": lambda p: _npz(p, x_train=np.zeros((30, 0)), x_test=np.zeros((9, 0))),
    "flat features": lambda p: _npz(p, x_train=np.zeros(30)),
    "label 1e9": lambda p: _npz(p, y_train=np.r_[np.arange(29) % 3, 10**9]),
    "fractional labels": lambda p: _npz(p, y_train=np.arange(30) % 3 + 0.5),
    "negative labels": lambda p: _npz(p, y_test=-np.ones(9, int)),
    "beyond float32": lambda p: _npz(p, x_train=np.full((30, 4), 1e300)),
    "nan features": lambda p: _npz(p, x_test=np.full((9, 4), np.nan)),
    "rows differ": lambda p: _npz(p, y_train=np.arange(29) % 3),
    "other features": lambda p: _npz(p, x_test=np.random.rand(9, 5)),
    "one class": lambda p: _npz(p, y_train=np.zeros(30, int), y_test=np.zeros(9, int)),
}


@pytest.mark.parametrize("case", NPZ_CASES)
def test_bad_npz_files_are_refused_by_the_command_and_by_data_load(case, tmp_path, capsys):
    path = tmp_path / "my.npz"
    NPZ_CASES[case](path)
    line = refused(["train", "--data", path, *TINY, "--out", tmp_path / "out"], [path], capsys, tmp_path)
    assert "Error" not in line.split("error:", 1)[1], line  # no exception class name relayed as the message
    with pytest.raises(ValueError, match="my.npz"):
        sk.data.load(path)


def test_the_message_for_values_beyond_float32_says_so(tmp_path):
    NPZ_CASES["beyond float32"](tmp_path / "big.npz")
    with pytest.raises(ValueError, match="float32"):
        sk.data.load(tmp_path / "big.npz")


def _state_dict_file(p):
    torch.save({"weight": torch.zeros(2)}, p)


CHECKPOINT_CASES = {
    "truncated": lambda p, src: _truncated(p, lambda q: shutil.copy(src, q)),
    "empty file": lambda p, src: p.write_bytes(b""),
    "foreign bytes": lambda p, src: p.write_bytes(os.urandom(500)),
    "a pickled module": lambda p, src: torch.save(nn.Linear(2, 2), p),
    "a tensor": lambda p, src: torch.save(torch.zeros(3), p),
    "empty object": lambda p, src: torch.save({}, p),
    "a foreign state dict": lambda p, src: _state_dict_file(p),
    "wrong field types": lambda p, src: torch.save(
        {
            "format": "simplexkern",
            "format_version": 1,
            "kind": "plain",
            "architecture": {"name": 5, "kwargs": []},
            "metadata": "{}",
            "state_dict": {},
        },
        p,
    ),
    "a json file": lambda p, src: p.write_text("{}"),
}


@pytest.mark.parametrize("case", CHECKPOINT_CASES)
def test_bad_checkpoints_are_refused_as_not_simplexkern_checkpoints(case, sources, tmp_path, capsys):
    path = tmp_path / "model.pt"
    CHECKPOINT_CASES[case](path, sources / "train" / "modes" / "mode_0.pt")
    line = refused(
        ["evaluate", path, "--data", "digits", "--device", "cpu", "--out", tmp_path / "out"],
        [path],
        capsys,
        tmp_path,
        sources,
    )
    assert "weights_only" not in line and "Error" not in line.split("error:", 1)[1], line
    if case == "a pickled module":
        assert "Python objects" in line


JSON_CASES = {
    "truncated": '{"command": "tra',
    "foreign bytes": "\x00\x01garbage",
    "empty object": "{}",
    "a list": "[1, 2]",
    "wrong field types": '{"command": 3, "settings": [1], "phases": 7, "members": 5, "environment": 1}',
    "wrong member types": '{"command": "train", "members": [{"name": 1, "checkpoint": 7}, 3]}',
}


@pytest.mark.parametrize("case", JSON_CASES)
def test_a_bad_report_in_a_source_folder_is_refused(case, sources, tmp_path, capsys):
    folder = tmp_path / "src"
    shutil.copytree(sources / "train", folder)
    (folder / "report.json").write_text(JSON_CASES[case])
    refused(
        ["evaluate", folder, "--device", "cpu", "--out", tmp_path / "out"], [folder / "report.json"], capsys, tmp_path
    )


@pytest.mark.parametrize("resume", [False, True])
@pytest.mark.parametrize("case", JSON_CASES)
def test_a_bad_run_record_in_out_is_refused(case, resume, tmp_path, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "run.json").write_text(JSON_CASES[case])
    refused(
        ["train", *TINY, "--out", tmp_path / "out", *(["--resume"] if resume else [])],
        [tmp_path / "out" / "run.json"],
        capsys,
        tmp_path,
    )


@pytest.mark.parametrize("case", JSON_CASES)
def test_a_bad_report_of_a_finished_run_in_out_is_refused(case, sources, tmp_path, capsys):
    shutil.copytree(sources / "train", tmp_path / "out")
    (tmp_path / "out" / "report.json").write_text(JSON_CASES[case])
    refused(["train", *TINY, "--out", tmp_path / "out"], [tmp_path / "out" / "report.json"], capsys, tmp_path)


# ---------------------------------------------------------------------- --out


def _mount_tmpfs(path, options):
    path.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    return done.returncode == 0


@pytest.fixture
def read_only(tmp_path):
    folder = tmp_path / "ro"
    if _mount_tmpfs(folder, "ro,size=64k"):
        yield folder
        subprocess.run(["umount", str(folder)], check=True)
    elif os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
    else:
        pytest.skip("root without mount: no folder is read-only for this process")


@pytest.fixture
def full_disk(tmp_path):
    folder = tmp_path / "full"
    if not _mount_tmpfs(folder, "size=64k"):
        pytest.skip("a full disk is simulated with a small tmpfs, which needs root and mount")
    yield folder
    subprocess.run(["umount", str(folder)], check=True)


def test_out_in_a_read_only_folder_is_one_line(read_only, tmp_path, capsys):
    refused(["train", *TINY, "--out", read_only / "run"], [read_only / "run"], capsys, tmp_path)


def test_out_where_no_folder_can_be_made_is_one_line(tmp_path, capsys):
    refused(["train", *TINY, "--out", "/proc/simplexkern-run"], ["/proc/simplexkern-run"], capsys, tmp_path)


def test_a_full_disk_is_one_line_and_leaves_no_partial_files(full_disk, capsys):
    status = _status(["ensemble", *TINY, "--modes", "3", "--model", "convnet", "--out", str(full_disk / "run")])
    err = capsys.readouterr().err
    assert status == 2 and len(err.strip().splitlines()) == 1 and "no space left" in err and str(full_disk) in err, err
    assert not [p for p in full_disk.rglob("*") if p.name.endswith(".tmp")]


def test_files_get_the_mode_open_gives_and_leftover_temporary_files_are_removed(tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    out = tmp_path / "run"
    assert cli.main(["train", *TINY, "--out", str(out)]) == 0
    for path in [out / "run.json", out / "report.json", out / "modes" / "mode_0.pt"]:
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path
    gone = subprocess.Popen(["true"])
    gone.wait()  # a writer killed mid-write: its process is gone
    host = _atomic._host()
    leftovers = [out / f".run.json.{host}-{gone.pid}.abc_12.tmp", out / "modes" / f".mode_0.pt.{host}-{gone.pid}.x.tmp"]
    live = out / f".report.json.{host}-{os.getpid()}.abc.tmp"  # a live writer's file is kept
    for path in [*leftovers, live]:
        path.write_bytes(b"partial")
    assert cli.main(["train", *TINY, "--out", str(out)]) == 0
    assert not any(p.exists() for p in leftovers) and live.exists()
    killed_first = tmp_path / "first"  # killed while writing its first run.json
    killed_first.mkdir()
    (killed_first / f".run.json.{host}-{gone.pid}.q.tmp").write_bytes(b"{")
    assert cli.main(["train", *TINY, "--out", str(killed_first)]) == 0
    assert sorted(p.name for p in killed_first.iterdir()) == ["modes", "report.json", "run.json", "uncertainty.png"]


# ---------------------------------------------------------------- Python functions


@pytest.fixture(scope="module")
def digits():
    return sk.data.load("digits", val_fraction=0.2)


def _mlp(d_in=64, classes=10):
    return nn.Sequential(nn.Flatten(), nn.Linear(d_in, 16), nn.ReLU(), nn.Linear(16, classes))


def test_train_mode_refuses_a_model_that_does_not_fit_the_data_before_writing(digits, tmp_path):
    with pytest.raises(ValueError, match=r"model does not take the inputs of digits.*mat1"):
        sk.train.train_mode(_mlp(d_in=7), digits, epochs=1, out=tmp_path / "o", progress=False)
    with pytest.raises(ValueError, match=r"model gives 3 outputs.*10 classes"):
        sk.train.train_mode(_mlp(classes=3), digits, epochs=1, out=tmp_path / "o", progress=False)
    with pytest.raises(ValueError, match=r"float64.*float32"):
        sk.train.train_mode(_mlp().double(), digits, epochs=1, out=tmp_path / "o", progress=False)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("regs", [(0, -1), (0, float("nan")), (0, float("inf")), (0, "1"), (1, True)])
def test_choose_reg_checks_every_value_before_training_any(regs, digits, tmp_path):
    with pytest.raises((ValueError, TypeError), match="regs"):
        sk.train.choose_reg([_mlp()], digits, regs=regs, out=tmp_path / "o", vertex_epochs=1, progress=False)
    assert not (tmp_path / "o").exists()


def test_fge_without_a_middle_step_refuses_before_writing(digits, tmp_path):
    with pytest.raises(ValueError, match="cycle_epochs"):
        sk.train.fge(_mlp(), digits, cycles=2, cycle_epochs=1, batch_size=2000, out=tmp_path / "o", progress=False)
    assert not (tmp_path / "o").exists()


def test_dimensionality_sweep_checks_max_connectors(digits, tmp_path):
    for bad in (0, -1, 1.5, True):
        with pytest.raises((ValueError, TypeError), match="max_connectors"):
            sk.train.dimensionality_sweep(_mlp(), digits, bad, out=tmp_path / "o", progress=False)
    assert not (tmp_path / "o").exists()


def test_simplexify_checks_init_with_one_vertex():
    with pytest.raises(ValueError, match="init"):
        sk.simplexify(_mlp(), 1, init="bogus")


def test_predict_refuses_inputs_the_models_cannot_take(digits):
    model = _mlp(d_in=10, classes=3)
    with pytest.raises(ValueError, match=r"one row per input"):
        sk.eval.predict([model], torch.randn(10))
    with pytest.raises(ValueError, match=r"members\[0\] does not take"):
        sk.eval.predict([model], torch.randn(5, 7))
    with pytest.raises(ValueError, match=r"members\[0\].*float64"):
        sk.eval.predict([model.double()], torch.randn(5, 10))
    with pytest.raises(ValueError, match=r"members\[1\] gives outputs of shape \(3,\).*\(10,\)"):
        sk.eval.predict([_mlp(), _mlp(classes=3)], digits)


@pytest.mark.parametrize("margin", [-0.5, float("nan"), float("inf"), "0.2", True])
def test_loss_plane_checks_its_margin(margin, digits):
    models_ = [_mlp() for _ in range(3)]
    with pytest.raises((ValueError, TypeError), match="margin"):
        sk.eval.loss_plane(models_, digits, grid=2, margin=margin)


def _confident(n, classes, correct=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (n,), generator=g)
    logits = torch.randn(n, classes, generator=g)
    logits[torch.arange(n), y if correct else (y + 1) % classes] += 6
    return torch.softmax(logits, -1), y


def test_a_degenerate_temperature_fit_warns_and_stays_bounded():
    probs, y = _confident(40, 3)  # every validation example right: the NLL falls as T -> 0
    with pytest.warns(UserWarning, match="every validation example"):
        t = sk.eval.fit_temperature(probs, y)
    assert sk.eval.TEMPERATURE_BOUNDS[0] <= t <= 1.0
    mixed, ym = _confident(400, 3, seed=1)
    wrong = torch.rand(400, generator=torch.Generator().manual_seed(2)) < 0.3
    ym = torch.where(wrong, (ym + 1) % 3, ym)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t = sk.eval.fit_temperature(mixed, ym)  # 30% confidently wrong: a proper fit, T > 1
    grid = torch.logspace(-1.5, 1.5, 301, dtype=torch.float64)
    nlls = [sk.eval.metrics(sk.eval.apply_temperature(mixed, float(s)), ym)["nll"] for s in grid]
    assert t == pytest.approx(float(grid[int(np.argmin(nlls))]), rel=0.03) and t > 1


def test_the_command_keeps_temperature_one_when_the_fit_is_degenerate(tmp_path, capsys):
    rng = np.random.RandomState(0)
    y = np.arange(120) % 2
    x = (y[:, None] * 8.0 + rng.rand(120, 3)).astype(np.float32)  # separable by a wide margin
    np.savez(tmp_path / "easy.npz", x_train=x[:90], y_train=y[:90], x_test=x[90:], y_test=y[90:])
    assert (
        cli.main(
            [
                "train",
                "--data",
                str(tmp_path / "easy.npz"),
                "--quiet",
                "--device",
                "cpu",
                "--epochs",
                "5",
                "--out",
                str(tmp_path / "run"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["temperature"]["value"] == 1.0 and "every validation example" in report["temperature"]["note"]
    assert "temperature not fitted" in out


def test_an_unexpected_exception_is_one_line_and_a_log_with_the_traceback(tmp_path, monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise KeyError("a bug")

    from simplexkern.cli import jobs

    monkeypatch.setitem(jobs.JOBS, "train", jobs.Job(broken, broken, broken))
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    assert _status(["train", *TINY, "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "internal error" in err and "Traceback" not in err, err
    log = pathlib.Path(err.split("the traceback is in ")[1].strip())
    assert log.parent == tmp_path and "Traceback" in log.read_text() and "KeyError: 'a bug'" in log.read_text()


def test_resume_checks_every_recorded_setting(sources, tmp_path, capsys):
    for name, value in [("epochs", "1"), ("lr", -1), ("batch_size", 0), ("model", 5), ("data", None)]:
        out = tmp_path / f"run_{name}"
        shutil.copytree(sources / "train", out)
        (out / "report.json").unlink()
        record = json.loads((out / "run.json").read_text())
        record["settings"][name] = value
        if value is None:
            del record["settings"][name]
        (out / "run.json").write_text(json.dumps(record))
        refused(["train", "--resume", "--quiet", "--device", "cpu", "--out", out], [out / "run.json"], capsys, tmp_path)


def test_a_source_that_cannot_make_a_plane_is_refused_before_writing(sources, tmp_path, capsys):
    for members, named in [
        ([("mode", "modes/mode_0.pt"), ("simplex 0", "espro/simplex_0.pt")], "--member 0"),
        ([("a", "modes/mode_0.pt")] * 3, "span no plane"),
    ]:
        folder = tmp_path / "src"
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(sources / "espro", folder)
        report = json.loads((folder / "report.json").read_text())
        report["members"] = [{"name": n, "checkpoint": c} for n, c in members]
        (folder / "report.json").write_text(json.dumps(report))
        refused(
            ["surface", folder, "--grid", "2", "--quiet", "--device", "cpu", "--out", tmp_path / "out"],
            [named],
            capsys,
            tmp_path,
        )
        assert not (tmp_path / "out").exists()


def test_one_training_example_and_an_empty_out_are_refused(tmp_path, capsys):
    _npz(tmp_path / "two.npz", x_train=np.random.rand(2, 4), y_train=np.array([0, 1]), y_test=np.arange(9) % 2)
    refused(
        ["train", "--data", tmp_path / "two.npz", "--val-fraction", "0.5", *TINY, "--out", tmp_path / "o"],
        ["--val-fraction"],
        capsys,
        tmp_path,
    )
    refused(["train", *TINY, "--out="], ["--out"], capsys, tmp_path)


def test_choose_reg_flags_saturated_validation_probabilities_and_prefers_the_others(digits, monkeypatch):
    """λ = 100 gives hard 0/1 validation probabilities, all right (NLL ~0): flagged, and λ = 1
    (soft, NLL > 0) is chosen; when every λ saturates, the lowest NLL is."""
    from simplexkern.train import reg_search

    class Done:
        device = torch.device("cpu")
        metadata = {"history": []}

        def __init__(self, reg):
            self.reg = reg

    y = digits.y_val
    soft = torch.full((len(y), 10), 0.02).scatter_(1, y[:, None], 0.82)
    hard = torch.nn.functional.one_hot(y, 10).float()
    nearly_hard = (hard * (1 - 9e-8) + 1e-8).float()  # saturated too, with a slightly higher NLL
    monkeypatch.setattr(reg_search, "espro", lambda modes, data, reg, **kw: [Done(reg)])
    for regs, probs, saturated, chosen in [
        ((1, 100), [soft, hard], [False, True], 1),
        ((30, 100), [nearly_hard, hard], [True, True], 100),
    ]:
        by_reg = dict(zip(regs, probs))
        monkeypatch.setattr(reg_search, "predict", lambda simplexes, data, **kw: by_reg[simplexes[0].reg])
        reg, _, rows = sk.train.choose_reg([_mlp()], digits, regs=regs, stop_early=False)
        assert [r["saturated"] for r in rows] == saturated and reg == chosen, rows
        assert [r["near_hard"] for r in rows] == saturated and all(r["zero_val_error"] for r in rows)


def test_models_of_other_architectures_and_wrong_types_are_named(digits, tmp_path):
    conv = sk.models.for_data("convnet", digits)
    with pytest.raises(ValueError, match="b is not a model of a's architecture"):
        sk.train.train_curve(_mlp(), conv, digits, epochs=1, out=tmp_path / "o", progress=False)
    with pytest.raises(ValueError, match=r"modes\[1\] is not a model of modes\[0\]'s architecture"):
        sk.train.spro_complex([_mlp(), conv], digits, 1, vertex_epochs=1, out=tmp_path / "o", progress=False)
    with pytest.raises(TypeError, match="progress"):
        sk.train.train_mode(_mlp(), digits, epochs=1, out=tmp_path / "o", progress="yes")
    with pytest.raises(ValueError, match="momentum"):
        sk.train.train_mode(_mlp(), digits, epochs=1, momentum=1.5, out=tmp_path / "o", progress=False)
    with pytest.raises(TypeError, match="out"):
        sk.train.train_mode(_mlp(), digits, epochs=1, out=123, progress=False)
    with pytest.raises(ValueError, match="regs lists a"):
        sk.train.choose_reg([_mlp()], digits, regs=(1, 1.0), out=tmp_path / "o", progress=False)
    with pytest.raises(TypeError, match="standardize_features"):
        sk.data.load("digits", standardize_features="no")
    with pytest.raises(TypeError, match="root"):
        sk.data.load("cifar10", root=5)
    assert not (tmp_path / "o").exists()


def _tokens(path, high, oov=None):
    rng = np.random.RandomState(0)
    x, y = rng.randint(0, high, (120, 6)), np.arange(120) % 2
    if oov is not None:
        x[-1, 0] = oov  # a late test row, in no batch a first-row check would see
    np.savez(path, x_train=x[:90], y_train=y[:90], x_test=x[90:], y_test=y[90:])


def test_token_ids_the_model_has_no_embedding_for_are_refused_before_writing(tmp_path, capsys):
    _tokens(tmp_path / "tok.npz", 10)
    _tokens(tmp_path / "oov.npz", 10, oov=50)
    assert (
        cli.main(
            [
                "train",
                "--data",
                str(tmp_path / "tok.npz"),
                "--model",
                "transformer",
                *TINY,
                "--out",
                str(tmp_path / "run"),
            ]
        )
        == 0
    )
    capsys.readouterr()
    refused(
        [
            "evaluate",
            tmp_path / "run",
            "--data",
            tmp_path / "oov.npz",
            "--quiet",
            "--device",
            "cpu",
            "--out",
            tmp_path / "eval",
        ],
        ["oov.npz", "index out of range"],
        capsys,
        tmp_path,
    )
    assert not (tmp_path / "eval").exists()
    _tokens(tmp_path / "huge.npz", 10, oov=2**40)  # beyond 2**24: numbers, not token ids
    assert sk.data.load(tmp_path / "huge.npz").vocab_size is None


def test_api_misuse_found_by_probing_names_the_argument(digits, sources, tmp_path):
    simplex = sk.load_checkpoint(sources / "espro" / "espro" / "simplex_0.pt")
    with pytest.raises(TypeError, match="points"):
        sk.eval.loss_plane(np.array(["a", "b", "c"]), digits, model=simplex, grid=2)
    with pytest.raises(ValueError, match="seed"):
        sk.eval.predict(_mlp(), digits, seed=-1)
    (tmp_path / "folder").mkdir()
    with pytest.raises(ValueError, match="is a folder"):
        sk.save_checkpoint(_mlp(), tmp_path / "folder")
    (tmp_path / "text.npz").write_text("x_train,y_train\n1,2\n")
    with pytest.raises(ValueError, match="not a zip archive"):
        sk.data.load(tmp_path / "text.npz")
