"""benchmarks/gpu_check.py, the one script a GPU host runs: its target arithmetic, and the whole
pipeline in its CPU dry run."""

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_check  # noqa: E402


def _row(method, network, implementation, value):
    return (
        f"bench_real_step.RealStep.{method}",
        {"implementation": implementation, "device": "cuda", "network": network},
        value,
        10,
    )


def test_targets_are_ratios_of_the_same_run():
    rows = [
        _row("time_step", "resnet18", "plain", 0.010),
        _row("time_step", "resnet18", "reference", 0.100),
        _row("time_step", "resnet18", "simplex", 0.012),
        _row("time_step", "resnet18", "graphed", 0.0130),
        _row("track_gpu_memory", "resnet18", "plain", 1000.0),
        _row("track_gpu_memory", "resnet18", "simplex", 1300.0),
        ("bench_step.Inference.time_predict", {"implementation": "simplex", "device": "cuda"}, 0.5, 10),
        ("bench_step.Inference.time_predict", {"implementation": "vmap", "device": "cuda"}, 0.55, 10),
    ]
    lines = gpu_check.targets(rows)
    assert "- resnet18 simplex step over the floor (target <= 1.25x): 1.20x (met)" in lines
    assert "- resnet18 graphed step over the floor (target <= 1.25x): 1.30x (missed)" in lines
    assert "- resnet18 simplex step speed-up over reference (target >= 5x): 8.33x (met)" in lines
    assert "- resnet18 simplex peak memory over the floor's (target <= 1.2x): 1.30x (missed)" in lines
    assert "- ESPRO inference speed-up over vmap (target >= 1.2x): 1.10x (missed)" in lines
    assert not any("vgg16_bn" in line or "compiled" in line for line in lines)  # nothing that did not run


def test_the_dry_run_writes_its_report(tmp_path):
    out = tmp_path / "check.md"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--dry-run", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    text = out.read_text()
    assert text.startswith("# simplexkern GPU check (dry run on the CPU)")
    assert "tests collected" in text and "python_tests/ops" in text
    rows = [line for line in text.splitlines() if line.startswith("| bench_step.TrainingStep.time_step")]
    assert len(rows) == 3 and any("implementation=plain" in r and "| 1.00x |" in r for r in rows)
