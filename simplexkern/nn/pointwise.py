"""Calls that ``torch.func.vmap`` cannot batch (recurrent layers: ``aten::lstm`` and ``aten::gru``
have no batching rule), run once per point inside a SimplexModel's batched forward."""

from collections.abc import Callable
from typing import Any

import torch
from torch.utils import _pytree as pytree


class _Output:
    """Where the vmap rule leaves the structure of ``fn``'s output (an object, not a container:
    functorch flattens containers among the arguments)."""

    spec: pytree.TreeSpec


class _PerPoint(torch.autograd.Function):
    """``fn(*tree)`` once per element of the vmapped dimension, the outputs stacked. Only its
    vmap rule runs: it calls ``fn`` on plain tensors, so autograd records those calls."""

    @staticmethod
    def forward(fn, spec, out, *leaves):
        raise NotImplementedError("a layer that runs once per point supports torch.func.vmap only")

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def vmap(info, in_dims, fn, spec, out, *leaves):
        dims = in_dims[3:]
        outs = []
        for i in range(info.batch_size):
            args = [t if d is None else t.select(d, i) for t, d in zip(leaves, dims)]
            flat, out.spec = pytree.tree_flatten(fn(*pytree.tree_unflatten(args, spec)))
            outs.append(flat)
        return tuple(torch.stack(ys) for ys in zip(*outs)), tuple(0 for _ in outs[0])


def call(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)``; under vmap, once per point with that point's slice of every batched tensor.
    ``fn`` returns a tree of tensors."""
    if not torch._C._are_functorch_transforms_active():
        return fn(*args)
    leaves, spec = pytree.tree_flatten(args)
    out = _Output()
    return pytree.tree_unflatten(list(_PerPoint.apply(fn, spec, out, *leaves)), out.spec)
