"""Every Triton kernel compiled ahead of time for the GPUs it runs on, without a GPU.

CI runs the kernels through Triton's interpreter (TRITON_INTERPRET=1), which accepts code that
the compiler rejects and knows nothing of shared memory or registers. Here each kernel of
simplexkern.ops.triton is compiled by the pinned Triton for sm_80 (A100) and sm_90 (H100), with
every autotune configuration it can be launched with, for every dtype its launch code passes
(float32 both as "ieee" and as "tf32" dots), and the cubin's shared memory and registers are
checked against the GPU's limits. Spills are allowed (a performance matter) but reported as
warnings. Each kernel's main variant (CASES) is compiled with every configuration; its other
variants (constexpr branches, layouts, vertex counts) with the one a launch without autotuning
takes. A configuration the kernel's pruner drops for a case is never launched: skipped.

The launches are recorded, not run: each module's launch function is called on CPU tensors with
the kernel swapped for a recorder, so the arguments, dtypes and constexprs are those the launch
code passes; Triton's JIT binder turns them into the signature and specialisation a GPU launch
compiles (unit strides as constants, 16-divisible sizes and pointers) and the autotuner's own
pruner says which configurations a launch would try. Shapes are GPU-sized and 16-aligned: the
case in which the loads are vectorised and pipelined through shared memory.

The compiles run in one subprocess without TRITON_INTERPRET (under it @triton.jit makes
interpreter objects, and the modules pick their interpreter configuration at import), in a pool
of one process per core (SIMPLEXKERN_AOT_JOBS to change), once per session, for the selected
tests only: about 2 minutes on 2 cores for all of them.
``python python_tests/ops/test_triton_aot.py`` prints the resources of every compile.
"""

import contextlib
import importlib
import inspect
import io
import json
import os
import pkgutil
import re
import subprocess
import sys
import tempfile
import time
import types
import warnings
from unittest import mock

import pytest
import torch

#: Per-block shared memory (static + dynamic, opt-in maximum) and the register file.
TARGETS = {"sm_80": 80, "sm_90": 90}
MAX_SHARED = {80: 166912, 90: 232448}  # A100: 163 KiB, H100: 227 KiB
REGS_PER_SM = 65536
MAX_REGS_PER_THREAD = 255
REG_ALLOC_UNIT = 8  # registers are allocated per thread in multiples of 8 (256 per warp)

#: float32 dots run as "ieee" or "tf32" (torch's TF32 switches): two different kernels. float64
#: never reaches the dot kernels (the dispatcher sends it to the torch backend).
DOT_DTYPES = ["float32_ieee", "float32_tf32", "float16", "bfloat16"]
PLAIN_DTYPES = ["float32", "float16", "bfloat16", "float64"]


# --------------------------------------------------------------------------- the launches
# Each case calls a module's launch function as the backends do (simplexkern.ops.linear_triton,
# conv_triton, vertices.combine, geometry) with GPU-sized, 16-aligned CPU tensors.


def _t(*shape, dtype):
    return torch.empty(*shape, dtype=getattr(torch, dtype))


def _linear_forward(dtype, shared, mode, bias, k=3):
    from simplexkern.ops.triton import linear_forward as m

    S, M, N, K = 4, 64, 256, 512
    a = _t(M if shared else S * M, K, dtype=dtype)
    weight, c = _t(k, N, K, dtype=dtype), _t(S, k, dtype="float32")
    if mode == "forward":
        m.launch(
            a, M, shared, weight, c, m.FORWARD, _t(S, M, N, dtype=dtype), bias=_t(S, N, dtype=dtype) if bias else None
        )
    else:  # dY rows, dc float32
        m.launch(a, M, shared, weight, c, m.COEFF_GRAD, _t(S * M, N, dtype=dtype), dc=_t(S, k, dtype="float32"))


def _linear_input_grad(dtype, scale_rows, k=3):
    from simplexkern.ops.triton import linear_input_grad as m

    S, M, N, K = 4, 64, 256, 512
    weight, c = _t(k, N, K, dtype=dtype), _t(S, k, dtype="float32")
    if scale_rows:  # per-point input: dY rows scaled in the prologue
        m.launch(_t(S * M, N, dtype=dtype), S * M, M, weight, c, True)
    else:  # shared input: A_i = sum_s c_si dY_s, (k, M, N)
        m.launch(_t(k, M, N, dtype=dtype), M, M, weight, c, False)


def _linear_weight_grad(dtype, shared_x, k=3):
    from simplexkern.ops.triton import linear_weight_grad as m

    S, M, N, K = 4, 64, 256, 512
    idx = torch.arange(1, k, dtype=torch.int32)
    m.launch(
        _t(S * M, N, dtype=dtype),
        _t(M if shared_x else S * M, K, dtype=dtype),
        M,
        _t(S, k, dtype="float32"),
        idx,
        _t(k, N, K, dtype=dtype),
        shared_x,
    )


def _conv_tensors(dtype, shared, channels_last, k=3, S=4, B=8, C=64, O=64, hw=16):
    """x (B, C, H, W) or (S, B, C, H, W), NCHW or channels-last per point; weight (k, O, C, 3, 3);
    the (stride, padding, dilation, groups) of a 3x3 same convolution; the (S, B, O, H, W) output."""

    def act(*shape):
        lead, (ch, h, w) = shape[:-3], shape[-3:]
        return _t(*lead, h, w, ch, dtype=dtype).movedim(-1, -3) if channels_last else _t(*shape, dtype=dtype)

    x = act(B, C, hw, hw) if shared else act(S, B, C, hw, hw)
    return x, _t(k, O, C, 3, 3, dtype=dtype), ((1, 1), (1, 1), (1, 1), 1), act(S, B, O, hw, hw)


def _conv_forward(dtype, shared, channels_last, bias, k=3, S=4):
    from simplexkern.ops.triton import conv_forward as m

    x, weight, conv, y = _conv_tensors(dtype, shared, channels_last, k, S)
    m.launch(x, weight, _t(S, k, dtype="float32"), _t(S, weight.shape[1], dtype="float32") if bias else None, y, conv)


def _conv_input_grad(dtype, shared, channels_last, k=3, S=4):
    from simplexkern.ops.triton import conv_input_grad as m

    dx, weight, conv, dy = _conv_tensors(dtype, shared, channels_last, k, S)
    m.launch(dy, weight, _t(S, k, dtype="float32"), dx, conv)


def _conv_weight_grad(dtype, per_point, shared, channels_last, split, k=3, S=4):
    """``split``: the reduction split over chunks (atomic accumulation) as on a 132-SM H100;
    else one chunk (plain stores)."""
    from simplexkern.ops.triton import conv_weight_grad as m

    x, weight, conv, dy = _conv_tensors(dtype, shared, channels_last, k, S, B=32 if split else 8)
    c = _t(S, k, dtype="float32")
    sms = 132 if split else 1  # the launch counts a CPU tensor's device as one SM
    old, m.PROGRAMS_PER_SM = m.PROGRAMS_PER_SM, m.PROGRAMS_PER_SM * sms
    try:
        if per_point:  # the S per-point gradients G_s
            m.launch(
                dy,
                x,
                weight,
                c,
                torch.arange(S, dtype=torch.int32),
                _t(S, *weight.shape[1:], dtype="float32"),
                conv,
                S,
                per_point=True,
            )
        else:  # dV_i = sum_s c_si G_s for one trainable vertex, accumulated in float32
            m.launch(
                dy,
                x,
                weight,
                c[:, 1:2],
                torch.zeros(1, dtype=torch.int32),
                _t(1, *weight.shape[1:], dtype="float32"),
                conv,
                1,
                per_point=False,
            )
    finally:
        m.PROGRAMS_PER_SM = old


def _combine(dtype, S, coeffs_dtype="float32"):
    from simplexkern.ops.triton import combine as m

    k, P = 3, 1 << 16
    m.combine(_t(S, k, dtype=coeffs_dtype), _t(k, P, dtype=dtype))


def _pairwise_sqdist(dtype, k):
    from simplexkern.ops.triton import pairwise_sqdist as m

    with mock.patch("torch.cuda.get_device_properties", lambda _: types.SimpleNamespace(multi_processor_count=132)):
        m.pairwise_sqdist(_t(k, 1 << 16, dtype=dtype))  # its program count, as on an H100


def _case(kernel, variant, build, dtypes, all_configs=True):
    return {"kernel": kernel, "variant": variant, "build": build, "dtypes": dtypes, "all_configs": all_configs}


#: kernel -> (module, attribute). Every launchable @triton.jit kernel of simplexkern.ops.triton.
KERNELS = {
    "linear_forward": ("linear_forward", "_linear_forward_kernel"),
    "linear_input_grad": ("linear_input_grad", "_linear_input_grad_kernel"),
    "linear_weight_grad": ("linear_weight_grad", "_linear_weight_grad_kernel"),
    "conv_forward": ("conv_forward", "_conv_forward_kernel"),
    "conv_input_grad": ("conv_input_grad", "_conv_input_grad_kernel"),
    "conv_weight_grad": ("conv_weight_grad", "_conv_weight_grad_kernel"),
    "combine": ("combine", "_combine_kernel"),
    "pairwise_sqdist": ("pairwise_sqdist", "_pairwise_sqdist_kernel"),
}

#: The variants a kernel is launched in (constexpr branches, layouts, specialisations). A
#: kernel's first variant is compiled with every autotune configuration; the others with the
#: configuration a launch without autotuning takes (SIMPLEXKERN_AUTOTUNE=0: the pruner's first).
CASES = [
    _case("linear_forward", "per_point+forward+bias", lambda d: _linear_forward(d, False, "forward", True), DOT_DTYPES),
    _case("linear_forward", "shared+forward", lambda d: _linear_forward(d, True, "forward", False), DOT_DTYPES, False),
    _case(
        "linear_forward",
        "shared+coeff_grad",
        lambda d: _linear_forward(d, True, "coeff_grad", False),
        DOT_DTYPES,
        False,
    ),
    _case(
        "linear_forward",
        "per_point+coeff_grad",
        lambda d: _linear_forward(d, False, "coeff_grad", False),
        DOT_DTYPES,
        False,
    ),
    _case("linear_forward", "k2", lambda d: _linear_forward(d, False, "forward", True, k=2), DOT_DTYPES, False),
    _case("linear_forward", "k8", lambda d: _linear_forward(d, False, "forward", True, k=8), DOT_DTYPES, False),
    _case("linear_input_grad", "scale_rows", lambda d: _linear_input_grad(d, True), DOT_DTYPES),
    _case("linear_input_grad", "shared", lambda d: _linear_input_grad(d, False), DOT_DTYPES, False),
    _case("linear_weight_grad", "per_point", lambda d: _linear_weight_grad(d, False), DOT_DTYPES),
    _case("linear_weight_grad", "shared", lambda d: _linear_weight_grad(d, True), DOT_DTYPES, False),
    _case("conv_forward", "nchw+per_point+bias", lambda d: _conv_forward(d, False, False, True), DOT_DTYPES),
    _case("conv_forward", "channels_last+shared", lambda d: _conv_forward(d, True, True, False), DOT_DTYPES, False),
    _case("conv_input_grad", "nchw+per_point", lambda d: _conv_input_grad(d, False, False), DOT_DTYPES),
    _case("conv_input_grad", "channels_last+shared", lambda d: _conv_input_grad(d, True, True), DOT_DTYPES, False),
    _case("conv_weight_grad", "per_point+nchw", lambda d: _conv_weight_grad(d, True, False, False, False), DOT_DTYPES),
    _case(
        "conv_weight_grad",
        "combined+channels_last+split",
        lambda d: _conv_weight_grad(d, False, True, True, True),
        DOT_DTYPES,
        False,
    ),
    _case("combine", "S8", lambda d: _combine(d, 8), PLAIN_DTYPES),
    _case("combine", "S1", lambda d: _combine(d, 1), PLAIN_DTYPES, False),
    _case("combine", "S8+coeffs_float64", lambda d: _combine(d, 8, "float64"), ["float64"], False),
    _case("pairwise_sqdist", "k3", lambda d: _pairwise_sqdist(d, 3), PLAIN_DTYPES),
    # k vertices -> NV_BLOCK = next_pow2(k): the (NV_BLOCK, NV_BLOCK, BLOCK) float64 differences in registers.
    # Not here, for time: k = 33..64 (NV_BLOCK 64, ~8 s a compile; it spills ~45 KB per thread).
    *[
        _case("pairwise_sqdist", f"k{k}", (lambda k: lambda d: _pairwise_sqdist(d, k))(k), ["float32"])
        for k in (2, 5, 9, 17)
    ],
]


# --------------------------------------------------------------------------- units of work


def _config_label(cfg):
    if cfg is None or isinstance(cfg, str):
        return cfg or "launch"
    short = {"BLOCK_M": "M", "BLOCK_N": "N", "BLOCK_K": "K", "BLOCK_R": "R", "BLOCK": "B"}
    return "_".join(
        [f"{short.get(k, k)}{v}" for k, v in cfg.kwargs.items()] + [f"w{cfg.num_warps}", f"s{cfg.num_stages}"]
    )


def _gpu_configs(kernel):
    """The autotune configurations of ``kernel`` on a GPU (the module's list, whatever the
    interpreter does at import), or [None] for a kernel launched without autotuning."""
    module = importlib.import_module(f"simplexkern.ops.triton.{KERNELS[kernel][0]}")
    return getattr(module, "_GPU_CONFIGS", [None])


def _units():
    units = []
    for case in CASES:
        configs = list(enumerate(_gpu_configs(case["kernel"])))
        if not case["all_configs"] and configs[0][1] is not None:
            configs = [(None, "default")]
        for dtype in case["dtypes"]:
            for target, arch in TARGETS.items():
                for i, cfg in configs:
                    uid = f"{case['kernel']}:{case['variant']}-{_config_label(cfg)}-{dtype}-{target}"
                    units.append(
                        {
                            "id": uid,
                            "kernel": case["kernel"],
                            "variant": case["variant"],
                            "dtype": dtype,
                            "arch": arch,
                            "config": i,
                        }
                    )
    return units


# --------------------------------------------------------------------------- the compiler side
# (runs in the worker subprocess, without TRITON_INTERPRET)


class _Recorder:
    """Stands in for a kernel: ``kernel[grid](*args, **kwargs)`` records the call."""

    def __init__(self):
        self.calls = []

    def __getitem__(self, grid):
        return lambda *args, **kwargs: self.calls.append((args, kwargs))


def _record(case, dtype):
    """(kernel object, args, kwargs) of the one launch ``case`` makes in ``dtype``."""
    module_name, attr = KERNELS[case["kernel"]]
    module = importlib.import_module(f"simplexkern.ops.triton.{module_name}")
    kernel, recorder = getattr(module, attr), _Recorder()
    torch_dtype, _, precision = dtype.partition("_")
    flags = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    setattr(module, attr, recorder)
    try:
        if precision:
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = precision == "tf32"
        case["build"](torch_dtype)
    finally:
        setattr(module, attr, kernel)
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags
    assert len(recorder.calls) == 1, f"expected one launch of {attr}, got {len(recorder.calls)}"
    args, kwargs = recorder.calls[0]
    if precision:
        assert kwargs.get("PRECISION") == precision, f"launched with PRECISION={kwargs.get('PRECISION')!r}"
    return kernel, args, kwargs


_PTXAS_REGS = re.compile(r"Used (\d+) registers")
_PTXAS_SPILLS = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_PTXAS_SMEM = re.compile(r"(\d+) bytes smem")


def _resource_usage(cubin, workdir):
    """cuobjdump's REG, SHARED, LOCAL and STACK of the one function in ``cubin``."""
    import triton

    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin", dir=workdir) as f:
        f.write(cubin)
        f.flush()
        out = subprocess.run([tool, "--dump-resource-usage", f.name], capture_output=True, text=True, check=True)
    return {k: int(v) for k, v in re.findall(r"\b(REG|SHARED|LOCAL|STACK):(\d+)", out.stdout)}


def _compile_unit(unit):
    """Compiles one unit; returns its resources, or why it was not compiled."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from triton.compiler.compiler import make_backend
    from triton.runtime.autotuner import Autotuner
    from triton.runtime.jit import create_function_from_signature

    case = next(c for c in CASES if (c["kernel"], c["variant"]) == (unit["kernel"], unit["variant"]))
    start = time.perf_counter()
    kernel, args, kwargs = _record(case, unit["dtype"])
    if isinstance(kernel, Autotuner):
        configs = kernel.configs
        assert configs == _gpu_configs(unit["kernel"]), "the autotuner's configurations are not the module's"
        kept = configs
        if kernel.early_config_prune is not None:
            kept = kernel.early_config_prune(configs, dict(zip(kernel.arg_names, args)), **kwargs)
        cfg = kept[0] if unit["config"] is None else configs[unit["config"]]
        if cfg not in kept:
            return {"status": "pruned"}
        kwargs = {**kwargs, **cfg.all_kwargs()}
        fn, label = kernel.fn, _config_label(cfg)
    else:
        fn, label = kernel, f"w{kwargs.get('num_warps', 4)}"
    target = GPUTarget("cuda", unit["arch"], 32)
    backend = make_backend(target)
    # What JITFunction.run does on a GPU to specialise a launch, minus the driver.
    bound, specialization, options = create_function_from_signature(fn.signature, fn.params, backend)(*args, **kwargs)
    options, signature, constexprs, attrs = fn._pack_args(backend, kwargs, bound, specialization, options)
    log = io.StringIO()
    try:
        with contextlib.redirect_stdout(log):
            compiled = triton.compile(
                ASTSource(fn, signature, constexprs, attrs), target=target, options=options.__dict__
            )
    except Exception as err:  # a compile error: this unit's test reports it
        return {
            "status": "error",
            "config": label,
            "error": f"{type(err).__name__}: {err}"[-4000:],
            "log": log.getvalue()[-4000:],
        }
    ptxas = log.getvalue()
    regs = _PTXAS_REGS.findall(ptxas)
    spills = _PTXAS_SPILLS.findall(ptxas)
    if len(regs) != 1 or len(spills) != 1:
        return {
            "status": "error",
            "config": label,
            "error": "no (or several) ptxas -v reports in the compile log",
            "log": ptxas[-4000:],
        }
    cubin = compiled.asm.get("cubin", b"")
    usage = _resource_usage(cubin, os.environ.get("TRITON_CACHE_DIR"))
    return {
        "status": "ok",
        "config": label,
        "cubin_bytes": len(cubin),
        "elf": cubin[:4] == b"\x7fELF",
        "arch_in_ptx": re.search(r"^\.target (\S+)", compiled.asm["ptx"], re.M).group(1),
        "num_warps": compiled.metadata.num_warps,
        "dynamic_shared": compiled.metadata.shared,
        "static_shared": sum(int(x) for x in _PTXAS_SMEM.findall(ptxas)),
        "regs": int(regs[0]),
        "cuobjdump": usage,
        "stack": int(spills[0][0]),
        "spill_stores": int(spills[0][1]),
        "spill_loads": int(spills[0][2]),
        "seconds": round(time.perf_counter() - start, 2),
    }


def _safe_compile_unit(unit):
    try:
        result = _compile_unit(unit)
    except Exception as err:  # a broken case fails its own test, not the session
        import traceback

        result = {"status": "error", "error": f"{type(err).__name__}: {err}", "log": traceback.format_exc()[-4000:]}
    return unit["id"], result


def _die_with_parent():
    """On Linux, be killed when the parent process exits: a pytest stopped halfway leaves no
    compiles running."""
    try:
        import ctypes
        import signal

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _worker(units_path, results_path, jobs, parent):
    """Compiles the units in ``units_path`` in a pool of ``jobs`` processes; writes {id: result}."""
    import multiprocessing

    from triton import knobs

    _die_with_parent()
    if os.getppid() != parent:
        sys.exit("the test session that started this worker has ended")
    knobs.nvidia.dump_ptxas_log = True  # ptxas -v output (registers, spills, smem), printed per compile
    with open(units_path) as f:
        units = json.load(f)
    # The long ones (dot kernels) first, so that the pool's last tasks are short.
    units.sort(key=lambda u: (u["kernel"] in ("combine", "pairwise_sqdist"), u["id"]))
    if jobs > 1:
        with multiprocessing.get_context("fork").Pool(jobs, initializer=_die_with_parent) as pool:
            results = dict(pool.imap_unordered(_safe_compile_unit, units, chunksize=1))
    else:
        results = dict(map(_safe_compile_unit, units))
    with open(results_path, "w") as f:
        json.dump(results, f)


def _jobs():
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return int(os.environ.get("SIMPLEXKERN_AOT_JOBS", min(cores, 8)))


def _run_worker(units, workdir):
    """Runs the compiles in a subprocess with a clean environment; returns {id: result}."""
    units_path, results_path = os.path.join(workdir, "units.json"), os.path.join(workdir, "results.json")
    with open(units_path, "w") as f:
        json.dump(units, f)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.update(
        TRITON_CACHE_DIR=os.path.join(workdir, "triton-cache"),  # a fresh cache: every unit really compiles
        SIMPLEXKERN_AUTOTUNE="1",
    )  # the pruner keeps every configuration that fits, as when autotuning
    proc = subprocess.run(
        [
            sys.executable,
            os.path.abspath(__file__),
            "--worker",
            units_path,
            results_path,
            str(_jobs()),
            str(os.getpid()),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"the compile worker failed (exit {proc.returncode}):\n{proc.stderr[-6000:]}")
    with open(results_path) as f:
        return json.load(f)


# --------------------------------------------------------------------------- the tests

if __name__ != "__main__":
    triton = pytest.importorskip("triton", reason="Triton is not installed (optional: simplexkern[triton])")
    UNITS = _units()


@pytest.fixture(scope="session")
def aot_results(request):
    """{unit id: result} for the units of the selected tests, compiled once per session."""
    selected = {
        item.callspec.params["unit"]["id"]
        for item in request.session.items
        if getattr(item, "function", None) is test_compiles_and_fits
    }
    with tempfile.TemporaryDirectory(prefix="triton-aot-") as tmp:  # Triton's cache: ~200 MB of IR
        return _run_worker([u for u in UNITS if u["id"] in selected], tmp)


@pytest.mark.parametrize("unit", UNITS if __name__ != "__main__" else [], ids=lambda u: u["id"])
def test_compiles_and_fits(unit, aot_results):
    result = aot_results[unit["id"]]
    if result["status"] == "pruned":
        pytest.skip("never launched: the kernel's config pruner drops it for this case (shared memory budget)")
    where = f"{unit['id']} (config {result.get('config')})"
    assert result["status"] == "ok", f"{where}: {result['error']}\n{result.get('log', '')}"
    arch = unit["arch"]
    assert result["elf"] and result["cubin_bytes"] > 0, f"{where}: no cubin"
    assert result["arch_in_ptx"] == (f"sm_{arch}a" if arch >= 90 else f"sm_{arch}"), where
    usage = result["cuobjdump"]
    assert usage["REG"] == result["regs"], f"{where}: cuobjdump {usage} but ptxas says {result['regs']} registers"
    shared = result["dynamic_shared"] + result["static_shared"]
    assert shared <= MAX_SHARED[arch], f"{where}: {shared} bytes of shared memory per block > {MAX_SHARED[arch]}"
    regs, threads = result["regs"], 32 * result["num_warps"]
    assert regs <= MAX_REGS_PER_THREAD, f"{where}: {regs} registers per thread"
    regs_per_block = -(-regs // REG_ALLOC_UNIT) * REG_ALLOC_UNIT * threads
    assert regs_per_block <= REGS_PER_SM, f"{where}: {regs} registers x {threads} threads > {REGS_PER_SM}"
    if result["spill_stores"] or result["spill_loads"]:
        warnings.warn(
            f"{where}: {regs} registers, spills {result['spill_stores']} B stored / "
            f"{result['spill_loads']} B loaded per thread (stack {result['stack']} B)",
            stacklevel=1,
        )


def test_every_kernel_is_covered():
    """Each @triton.jit function of simplexkern.ops.triton is a kernel compiled here, or a device
    function that one of them calls."""
    from triton.runtime.autotuner import Autotuner

    import simplexkern.ops.triton as package

    def jit(obj):  # the JIT (or, under the interpreter, interpreter) function behind a kernel object
        return obj.fn if isinstance(obj, Autotuner) else obj

    assert set(KERNELS) == {c["kernel"] for c in CASES}
    kernels = {importlib.import_module(f"{package.__name__}.{m}"): a for m, a in KERNELS.values()}
    bodies = "".join(inspect.getsource(jit(getattr(m, a)).fn) for m, a in kernels.items())
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        for name, obj in vars(module).items():
            fn = jit(obj)
            if not (hasattr(fn, "fn") and hasattr(fn, "arg_names")) or fn.fn.__module__ != module.__name__:
                continue  # not a jit function defined here
            if kernels.get(module) != name:
                assert re.search(rf"\b{name}\(", bodies), f"{module.__name__}.{name} is not compiled by this test"


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        _worker(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
    else:  # the resource table of every compile
        os.environ.pop("TRITON_INTERPRET", None)
        units = _units()
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            results = _run_worker(units, tmp)
        print(f"{len(units)} units in {time.perf_counter() - t0:.0f} s")
        for u in units:
            r = results[u["id"]]
            if r["status"] != "ok":
                print(f"{u['id']:<90} {r['status']} {r.get('error', '')[:200]}")
                continue
            print(
                f"{u['id']:<90} {r['config']:<18} regs {r['regs']:>3} "
                f"spill {r['spill_stores']:>6}/{r['spill_loads']:<6} "
                f"smem {r['dynamic_shared'] + r['static_shared']:>6} {r['seconds']:>5.1f} s"
            )
