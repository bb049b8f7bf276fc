"""``simplexify``: any PyTorch model as a SimplexModel whose vertex 0 holds its weights."""

import copy
import math
from typing import Any

from torch import nn

from simplexkern import _checks
from simplexkern.nn.layers import simplex_layer_for
from simplexkern.nn.model import INITS, SimplexModel, replace_submodule
from simplexkern.nn.points import Evaluation
from simplexkern.nn.store import VertexStore


def _walk(module, path, shared):
    """Yields (path, module) of the modules to convert, skipping shared subtrees and not
    entering modules a fused layer replaces; a module used at several places is yielded at
    each of them."""
    if path in shared:
        return
    yield path, module
    if simplex_layer_for(module) is not None:
        return
    for name, child in module._modules.items():
        if child is not None:
            yield from _walk(child, f"{path}.{name}" if path else name, shared)


def _refuse(module, path):
    """Raises for a module whose parameters could be vertices but whose behaviour the points
    cannot follow."""
    where = f"{path or 'the model'} ({type(module).__name__})"
    if isinstance(module, nn.modules.batchnorm._NormBase) and module.running_mean is not None:
        raise TypeError(
            f"{where} keeps running statistics, which every point would share; per-point statistics "
            "are kept for BatchNorm1d/2d/3d (with their own forward); set track_running_stats=False or "
            f"list {path!r} in shared="
        )
    if isinstance(module, nn.Embedding) and (module.max_norm is not None or module.sparse):
        raise ValueError(
            f"{where}: an embedding with max_norm (which rescales its weight in place) or sparse "
            f"gradients cannot be a combination of vertices; list {path!r} in shared= to keep it as one "
            "shared copy"
        )


def simplexify(
    model: nn.Module,
    n_vertices: int = 1,
    *,
    shared: str | list[str] | tuple[str, ...] | set[str] | frozenset[str] = (),
    init: str = "mean",
    noise: float = 0.01,
    architecture: dict[str, Any] | None = None,
) -> SimplexModel:
    """Converts ``model`` (any ``nn.Module``) into a ``SimplexModel`` whose vertex 0 holds the
    model's current weights; further vertices come from ``add_vertex(init, noise)``. The
    model itself is not changed.

    Every parameter is a vertex parameter, unless its module's path is listed in ``shared``
    (its parameters then stay one shared copy). Linear, Conv1d, Conv2d, BatchNorm1d/2d/3d,
    Embedding, RNN, LSTM and GRU become fused simplex layers; every other parameter (norms,
    attention, transposed and 3-D convolutions, parameters a module holds directly) takes the
    generic path. Tied parameters (one tensor at several places) are one vertex entry and
    stay tied at every point.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    n_vertices = _checks.count(n_vertices, "n_vertices")
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not (noise >= 0 and math.isfinite(noise)):
        raise ValueError(f"noise must be a finite non-negative number, got {noise!r}")
    if isinstance(shared, str):
        shared = (shared,)
    if not isinstance(shared, (list, tuple, set, frozenset)) or not all(isinstance(s, str) for s in shared):
        raise TypeError(f"shared must be a submodule path or a list of paths, got {shared!r}")
    shared = set(shared)
    paths = dict(model.named_modules())
    for s in shared:
        if s not in paths or s == "":
            raise ValueError(
                f"shared lists {s!r}, which is not a submodule path of the model (the whole model cannot be shared)"
            )
    module = copy.deepcopy(model)
    evaluation = Evaluation()
    tensors, slot_of, aliases = {}, {}, {}  # slot -> tensor; id(tensor) -> slot; tied parameter path -> slot
    layers, replace, generic = {}, [], []

    def slot_for(prefix, name, t):
        path = prefix + name
        if id(t) in slot_of:  # tied: the same tensor at another place
            aliases[path] = slot_of[id(t)]
            return slot_of[id(t)]
        if not t.requires_grad:
            raise ValueError(
                f"{path} has requires_grad=False: vertices are trained, so a frozen parameter cannot be "
                f"one; list {prefix[:-1]!r} in shared= to keep it as one frozen copy"
            )
        slot_of[id(t)] = path
        tensors[path] = t
        return path

    for path, m in _walk(module, "", shared):
        prefix = f"{path}." if path else ""
        own = [(n, t) for n, t in m._parameters.items() if t is not None]
        cls = simplex_layer_for(m)
        if cls is None:
            if own:
                _refuse(m, path)
            generic += [(path, n, slot_for(prefix, n, t)) for n, t in own]
            continue
        if id(m) not in layers:  # a module used at several places is one layer there
            cls.check_plain(m, path or "the model")
            layers[id(m)] = cls(m, evaluation, prefix, {n: slot_for(prefix, n, t) for n, t in own})
        replace.append((path, layers[id(m)]))
    if not tensors:
        raise ValueError("the model has no parameters outside shared= to make vertices of")
    for s in sorted(shared):
        for n, t in module.get_submodule(s).named_parameters():
            if id(t) in slot_of:
                raise ValueError(
                    f"{s}.{n} is tied to {slot_of[id(t)]}, which is a vertex parameter: a tie cannot be "
                    "both; list both modules in shared= or neither"
                )
    dtypes = {(t.dtype, t.device) for t in tensors.values()}
    if len(dtypes) > 1:
        raise TypeError(f"all vertex parameters must share one dtype and device, got {sorted(map(str, dtypes))}")
    # columns: the fused layers' slots, then the generic ones (one product gives all their points)
    generic_slots = {slot for *_, slot in generic}
    store = VertexStore({s: tensors[s] for s in sorted(tensors, key=lambda s: s in generic_slots)})
    for path, name, _ in generic:
        module.get_submodule(path)._parameters[name] = None  # the store holds it now
    for path, layer in replace:
        layer.train(model.training)
        if not path:
            module = layer
        else:
            replace_submodule(module, path, layer)
    arch = architecture if architecture is not None else getattr(model, "simplexkern_architecture", None)
    out = SimplexModel(module, store, evaluation, sorted(shared), arch, generic=generic, aliases=aliases)
    out.train(model.training)
    for _ in range(n_vertices - 1):
        out.add_vertex(init, noise)
    return out
