"""The CUDA kernels (csrc/geometry/cuda/*.cu) compiled for sm_80 (A100) and sm_90 (H100) by nvcc,
compile only (``-c``, no GPU needed): the CPU build never compiles them, so without this a .cu
file that does not build would reach CI green.

The flags are those of the extension's CUDA build (setup.py: CUDAExtension, nvcc -O3 and
torch's own nvcc flags, C++ standard and ABI), with ptxas -v for each kernel's registers. nvcc
is $NVCC, else the pip wheel's in the venv (``make cuda-check`` installs it: nvidia-cuda-nvcc
with its nvvm, crt and cccl, the CUDA 13.0 of torch's cu130 build), else $CUDA_HOME/bin/nvcc
or nvcc on PATH; without one the test skips. ``python python_tests/test_cuda_compile.py``
(what ``make cuda-check`` runs) fails instead of skipping.
"""

import glob
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import warnings

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCES = sorted(glob.glob(os.path.join(ROOT, "csrc", "geometry", "cuda", "*.cu")))
ARCHS = (80, 90)
REGS_PER_SM = 65536
MAX_REGS_PER_THREAD = 255


def find_nvcc():
    """The nvcc to use, or None."""
    spec = importlib.util.find_spec("nvidia")
    wheels = [os.path.join(p, "cu13", "bin", "nvcc") for p in (spec.submodule_search_locations or [])] if spec else []
    homes = [os.environ[v] for v in ("CUDA_HOME", "CUDA_PATH") if os.environ.get(v)]
    candidates = [
        os.environ.get("NVCC"),
        *wheels,
        *(os.path.join(h, "bin", "nvcc") for h in homes),
        shutil.which("nvcc"),
    ]
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


def nvcc_command(nvcc, source, output):
    import torch
    from torch.utils import cpp_extension

    # The CUDA headers are nvcc's own (its nvcc.profile: <toolkit>/include and include/cccl, the
    # pip wheels' nvidia/cu13/include); torch's come from torch.
    return [
        nvcc,
        "-c",
        source,
        "-o",
        output,
        *[f"-gencode=arch=compute_{a},code=sm_{a}" for a in ARCHS],
        "--threads",
        "0",
        "-O3",
        "-std=c++20",
        *cpp_extension.COMMON_NVCC_FLAGS,
        "-DWITH_CUDA",
        "-DTORCH_EXTENSION_NAME=_C",
        "-DTORCH_API_INCLUDE_EXTENSION_H",
        f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}",
        "-Xcompiler",
        "-fPIC",
        *[f"-I{p}" for p in cpp_extension.include_paths(device_type="cpu")],
        "-Xptxas",
        "-v",  # per-kernel registers and spills
    ]


def compile_source(nvcc, source, outdir):
    """Compiles ``source``; returns (seconds, [(mangled name, arch, registers, spill stores)]),
    or raises AssertionError with nvcc's output."""
    out = os.path.join(outdir, os.path.basename(source) + ".o")
    start = time.perf_counter()
    proc = subprocess.run(nvcc_command(nvcc, source, out), capture_output=True, text=True)
    seconds = time.perf_counter() - start
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"nvcc failed (exit {proc.returncode}) on {source}:\n{log[-8000:]}"
    assert os.path.getsize(out) > 0
    entries = []
    # ptxas -v: "Compiling entry function '<mangled>' for 'sm_80'", then its spills and registers.
    entry = r"Compiling entry function '(\w+)' for 'sm_(\d+)a?'(.*?)Compile time"
    for name, arch, body in re.findall(entry, log, re.S):
        regs = re.search(r"Used (\d+) registers", body)
        spills = re.search(r"(\d+) bytes spill stores", body)
        assert regs and spills, f"unexpected ptxas output:\n{body}"
        entries.append((name, int(arch), int(regs.group(1)), int(spills.group(1))))
    return seconds, entries


def check(nvcc, outdir):
    """Compiles every source; checks that each __global__ kernel was compiled for every arch
    and that its registers fit the block size it is launched with. Returns [(source, seconds,
    {(kernel, arch): (registers, spill stores), the most over its instantiations})]."""
    results = []
    for source in SOURCES:
        with open(source) as f:
            text = f.read()
        kernels = set(re.findall(r"__global__\s+void\s+(\w+)", text))
        threads = int(re.search(r"constexpr int kThreads = (\d+);", text).group(1))  # every launch's block size
        seconds, entries = compile_source(nvcc, source, outdir)
        usage = {}
        for name, arch, regs, spills in entries:
            kernel = next(k for k in kernels if f"{len(k)}{k}I" in name)  # mangled <length><name><template args>
            usage[kernel, arch] = max(usage.get((kernel, arch), (0, 0)), (regs, spills))
        for arch in ARCHS:
            for kernel in kernels:
                assert (kernel, arch) in usage, f"{kernel} was not compiled for sm_{arch}"
                regs = usage[kernel, arch][0]
                assert regs <= MAX_REGS_PER_THREAD, (kernel, arch, regs)
                assert -(-regs // 8) * 8 * threads <= REGS_PER_SM, f"{kernel} sm_{arch}: {regs} registers x {threads}"
        results.append((source, seconds, usage))
    return results


def test_cuda_kernels_compile(tmp_path):
    nvcc = find_nvcc()
    if nvcc is None:
        pytest.skip("no nvcc found (make cuda-check installs one into the venv; or set NVCC / CUDA_HOME)")
    assert SOURCES, "no .cu sources found"
    for source, _, usage in check(nvcc, str(tmp_path)):
        for (kernel, arch), (regs, spills) in usage.items():
            if spills:
                warnings.warn(f"{kernel} sm_{arch}: {regs} registers, {spills} bytes spilled", stacklevel=1)


if __name__ == "__main__":
    nvcc = find_nvcc()
    if nvcc is None:
        sys.exit("no nvcc found: run `make cuda-check`, or set NVCC / CUDA_HOME")
    print(f"nvcc: {nvcc}")
    with tempfile.TemporaryDirectory() as tmp:
        for source, seconds, usage in check(nvcc, tmp):
            print(f"{os.path.relpath(source, ROOT)}: sm_{'/sm_'.join(map(str, ARCHS))} in {seconds:.0f} s")
            for (kernel, arch), (regs, spill) in sorted(usage.items()):
                print(f"  {kernel:<28} sm_{arch}  {regs:>3} registers, {spill} bytes spilled")
