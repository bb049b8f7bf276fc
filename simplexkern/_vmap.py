"""Eager calls on the plain tensors under ``torch.func.vmap``: what a vmap rule does, without
the per-call cost of a custom op's or an ``autograd.Function``'s rule, for code that sees all
points of a SimplexModel at once (the fused ops, per-point BatchNorm)."""

from collections.abc import Callable

import torch
from torch._C import _functorch
from torch._C._functorch import TransformType
from torch._functorch import pyfunctorch


def innermost() -> pyfunctorch.VmapInterpreter | None:
    """The innermost vmap when it is the innermost transform and nothing is compiling, else None."""
    if torch.compiler.is_compiling() or not torch._C._are_functorch_transforms_active():
        return None
    interpreter = pyfunctorch.retrieve_current_functorch_interpreter()
    return interpreter if interpreter.key() == TransformType.Vmap else None


def call_unbatched(interpreter: pyfunctorch.VmapInterpreter, fn: Callable, *tensors: torch.Tensor | None):
    """``fn(n, dims, *plain)`` below the vmap ``interpreter``, on the plain tensors of ``tensors``
    (``dims[i]``: the vmapped dimension of tensor i, None when it is not batched; n: the vmap's
    size). ``fn`` returns (y, its vmapped dimension or None); the result is y batched back.
    Autograd records what ``fn`` does on the plain tensors."""
    level = interpreter.level()
    unwrapped = [(None, None) if t is None else _functorch._unwrap_batched(t, level) for t in tensors]
    with interpreter.lower():
        y, dim = fn(interpreter.batch_size(), [d for _, d in unwrapped], *(t for t, _ in unwrapped))
    return y if dim is None else _functorch._add_batch_dim(y, dim, level)
