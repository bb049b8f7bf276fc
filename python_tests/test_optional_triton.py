"""Triton is optional: with it hidden, simplexkern imports, the torch and reference backends,
simplex models and training work, and asking for the triton backend is a clear error."""

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import importlib.abc, importlib.util, sys

    class Hide(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name == "triton" or name.startswith("triton."):
                raise ModuleNotFoundError(f"No module named {name!r}")

    sys.meta_path.insert(0, Hide())
    find_spec = importlib.util.find_spec
    importlib.util.find_spec = lambda name, *a: None if name.split(".")[0] == "triton" else find_spec(name, *a)

    import torch
    import simplexkern as sk
    from simplexkern.train.loop import Phase, run_phase

    g = torch.Generator().manual_seed(0)
    x, w, b = torch.randn(3, 5, generator=g), torch.randn(2, 4, 5, generator=g), torch.randn(2, 4, generator=g)
    c = sk.geometry.sample_simplex(3, 2, g)
    ref = sk.ops.simplex_linear(x, w, b, c, backend="reference")
    assert torch.allclose(sk.ops.simplex_linear(x, w, b, c, backend="torch"), ref, atol=1e-6)
    assert torch.allclose(sk.ops.combine(c, w.reshape(2, -1)), c @ w.reshape(2, -1), atol=1e-6)
    try:
        sk.ops.simplex_linear(x, w, b, c, backend="triton")
        raise AssertionError("the triton backend ran without triton")
    except ValueError as err:
        assert "triton package" in str(err), err
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3, padding=1), torch.nn.BatchNorm2d(3), torch.nn.ReLU(),
                              torch.nn.Flatten(), torch.nn.Linear(3 * 16, 2))
    model = sk.simplexify(net, 2, noise=0.1)
    model.fix(0)
    xs, ys = torch.randn(16, 1, 4, 4, generator=g), torch.randint(0, 2, (16,), generator=g)
    data = sk.data.Dataset("toy", "classification", xs, ys, xs[:4], ys[:4], 2)
    run_phase(model, data, Phase(epochs=1, lr=0.1, n_samples=2, reg=0.1, batch_size=8), key=(0,),
              device=torch.device("cpu"))
    assert torch.isfinite(model.log_volume()) and "triton" not in sys.modules
    print("ok")
""")


def test_everything_but_the_triton_backend_works_without_triton():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
