"""Which backend runs a fused op: the ``backend=`` argument, else the innermost
``use_backend(...)`` block, else the SIMPLEXKERN_BACKEND environment variable, else "auto":
``torch`` on the CPU; on a GPU the op's own choice (``triton`` for simplex_linear, which
itself picks fused kernels or materialised weights by rows per point; ``torch`` for
simplex_conv2d until its GPU measurements exist; ``torch`` for float64). Shape-dependent
choices within a backend are the backend's own."""

import contextlib
import contextvars
import os
from collections.abc import Iterator

import torch

from simplexkern.ops.triton._config import AVAILABLE, INTERPRET

BACKENDS = ("triton", "torch", "reference")
ENV_VAR = "SIMPLEXKERN_BACKEND"
_context = contextvars.ContextVar("simplexkern_backend", default=None)


def _check_name(name, what):
    if name not in BACKENDS + ("auto",):
        raise ValueError(f"{what} must be one of {BACKENDS + ('auto',)}, got {name!r}")
    return name


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Run the fused ops inside the block with backend ``name`` (or "auto")."""
    token = _context.set(_check_name(name, "backend"))
    try:
        yield
    finally:
        _context.reset(token)


def requested_backend(backend: str | None = None) -> str:
    """The backend asked for by argument, context or environment ("auto" when none)."""
    if backend is not None:
        return _check_name(backend, "backend")
    asked = _context.get()
    if asked is not None:
        return asked
    return _check_name(os.environ.get(ENV_VAR, "auto"), ENV_VAR)


def resolve(
    device: torch.device, backend: str | None = None, gpu_auto: str = "triton", dtype: torch.dtype | None = None
) -> str:
    """The backend that runs a fused op on ``device`` with weights of ``dtype`` (shape choices
    are the backend's own); "auto" is ``gpu_auto`` on a GPU, ``torch`` on the CPU and for
    float64, which the Triton kernels do not run (they accumulate in float32)."""
    name = requested_backend(backend)
    if name == "auto":
        name = gpu_auto if device.type == "cuda" and AVAILABLE and dtype != torch.float64 else "torch"
    if name == "triton" and dtype == torch.float64:
        raise ValueError(
            "backend 'triton' runs float32, float16 and bfloat16 (its kernels accumulate in float32); "
            "float64 runs on the 'torch' backend"
        )
    if name == "triton" and not AVAILABLE:
        raise ValueError(
            "backend 'triton' needs the triton package, which is not installed (pip install triton, or "
            "simplexkern[triton]); the 'torch' and 'reference' backends work without it"
        )
    if name == "triton" and device.type != "cuda" and not INTERPRET:
        raise ValueError(f"backend 'triton' needs CUDA tensors (or TRITON_INTERPRET=1), got tensors on {device}")
    return name
