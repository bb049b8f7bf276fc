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


def test_demo_reports_agreeing_results():
    text = run("demo", "--batch", "300", "--device", "cpu")
    diffs = [float(v) for v in re.findall(r"max \|difference\|(?: in log V)?\s+([0-9.e+-]+)", text)]
    assert len(diffs) == 5  # log-volumes; reference and torch backends of simplex_linear and simplex_conv2d
    assert max(diffs) < 1e-4
    assert text.count("fixed vertices' gradient: 0.0 (exactly zero)") == 2


def test_demo_rejects_bad_arguments():
    out = subprocess.run([sys.executable, "-m", "simplexkern.cli", "demo", "--vertices", "1"],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "--vertices" in out.stderr
