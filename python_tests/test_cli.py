"""The `simplexkern` command runs and its numbers agree with their references."""
import re
import subprocess
import sys


def run(*args):
    out = subprocess.run([sys.executable, "-m", "simplexkern.cli", *args], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_info():
    assert re.search(r"simplexkern \d+\.\d+\.\d+: torch ", run("info"))


def test_kernels_demo_reports_agreeing_results():
    text = run("kernels", "--batch", "300", "--device", "cpu")
    diffs = [float(v) for v in re.findall(r"max \|difference\|(?: in log V)?\s+([0-9.e+-]+)", text)]
    assert len(diffs) == 5  # log-volumes; reference and torch backends of simplex_linear and simplex_conv2d
    assert max(diffs) < 1e-4
    assert text.count("fixed vertices' gradient: 0.0 (exactly zero)") == 2


def test_kernels_demo_rejects_bad_arguments():
    out = subprocess.run([sys.executable, "-m", "simplexkern.cli", "kernels", "--vertices", "1"],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "--vertices" in out.stderr


def test_demo_prints_the_comparison():
    text = run("demo", "--quiet", "--epochs", "3", "--vertex-epochs", "2", "--regs", "0,1", "--eval-samples", "3",
               "--device", "cpu")
    rows = {name: [float(v) for v in values] for name, *values in
            re.findall(r"^(\S.*?)\s+(0\.\d+|1\.0+)\s+(\d+\.\d+)\s+(\d+\.\d+)\s+(\d+\.\d+)\s+[\d.]+s\s+[\d.]+ ms$",
                       text, re.M)}
    assert "deep ensemble (3 modes)" in rows and "ESPRO (3 simplexes of 3 vertices)" in rows, text
    assert len(rows) == 5  # single mode, the two ensembles, and both after temperature scaling
    for accuracy, nll, ece, brier in rows.values():
        assert 0.5 < accuracy <= 1 and 0 < nll < 2 and 0 <= ece < 1 and 0 < brier < 1
    assert re.search(r"λ = (0|1)\s+NLL [0-9.]+ .*<- chosen", text)


def test_demo_errors_are_one_line_and_status_2():
    for args, message in ((["--device", "cuda"], "no CUDA GPU"), (["--modes", "0"], "--modes"),
                          (["--regs", "1,x"], "--regs"), (["--data", "missing.npz"], "missing.npz")):
        if args[0] == "--device" and __import__("torch").cuda.is_available():
            continue
        out = subprocess.run([sys.executable, "-m", "simplexkern", "demo", "--quiet", *args], capture_output=True,
                             text=True, timeout=120)
        assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr, out.stderr
