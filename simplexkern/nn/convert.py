"""``simplexify``: any PyTorch model as a SimplexModel whose vertex 0 holds its weights."""

import copy
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import nn

from simplexkern import _checks
from simplexkern.nn.layers import simplex_layer_for
from simplexkern.nn.model import INITS, SimplexModel, replace_submodule
from simplexkern.nn.points import Evaluation
from simplexkern.nn.simplex_layer import SimplexLayer
from simplexkern.nn.store import VertexStore


def _walk(module: nn.Module, path: str, shared: set[str]) -> Iterator[tuple[str, nn.Module]]:
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


def _refuse(module: nn.Module, path: str) -> None:
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
    n_vertices, shared_paths = _checked_arguments(model, n_vertices, init, noise, shared)
    module = copy.deepcopy(model)
    evaluation = Evaluation()
    slots = _Slots()
    replace, generic = _collect(module, shared_paths, evaluation, slots)
    if not slots.tensors:
        raise ValueError("the model has no parameters outside shared= to make vertices of")
    slots.check_shared(module, shared_paths)
    store = slots.store({slot for *_, slot in generic})
    for path, name, _ in generic:
        module.get_submodule(path)._parameters[name] = None  # the store holds it now
    for path, layer in replace:
        layer.train(model.training)
        if not path:
            module = layer
        else:
            replace_submodule(module, path, layer)
    arch = architecture if architecture is not None else getattr(model, "simplexkern_architecture", None)
    out = SimplexModel(module, store, evaluation, sorted(shared_paths), arch, generic=generic, aliases=slots.aliases)
    out.train(model.training)
    for _ in range(n_vertices - 1):
        out.add_vertex(init, noise)
    return out


def _checked_arguments(
    model: nn.Module, n_vertices: int, init: str, noise: float, shared: str | Iterable[str]
) -> tuple[int, set[str]]:
    """``simplexify``'s arguments checked: (n_vertices, the set of shared module paths)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    n_vertices = _checks.count(n_vertices, "n_vertices")
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    _checks.number(noise, "noise", minimum=0)
    if isinstance(shared, str):
        shared = (shared,)
    if not isinstance(shared, (list, tuple, set, frozenset)) or not all(isinstance(s, str) for s in shared):
        raise TypeError(f"shared must be a submodule path or a list of paths, got {shared!r}")
    paths = dict(model.named_modules())
    for s in set(shared):
        if s not in paths or s == "":
            raise ValueError(
                f"shared lists {s!r}, which is not a submodule path of the model (the whole model cannot be shared)"
            )
    return n_vertices, set(shared)


class _Slots:
    """The vertex parameters as the walk finds them: slot (the parameter's path where it is
    first found) -> tensor; a tensor found again (tied) is an alias of its slot."""

    def __init__(self) -> None:
        self.tensors: dict[str, torch.Tensor] = {}
        self.slot_of: dict[int, str] = {}  # id(tensor) -> its slot
        self.aliases: dict[str, str] = {}  # tied parameter path -> slot

    def slot_for(self, prefix: str, name: str, t: torch.Tensor) -> str:
        """The slot of parameter ``name`` of the module at ``prefix``, a new one unless tied."""
        path = prefix + name
        if id(t) in self.slot_of:  # tied: the same tensor at another place
            self.aliases[path] = self.slot_of[id(t)]
            return self.slot_of[id(t)]
        if not t.requires_grad:
            raise ValueError(
                f"{path} has requires_grad=False: vertices are trained, so a frozen parameter cannot be "
                f"one; list {prefix[:-1]!r} in shared= to keep it as one frozen copy"
            )
        self.slot_of[id(t)] = path
        self.tensors[path] = t
        return path

    def check_shared(self, module: nn.Module, shared: set[str]) -> None:
        """Refuses a shared parameter tied to a vertex parameter."""
        for s in sorted(shared):
            for n, t in module.get_submodule(s).named_parameters():
                if id(t) in self.slot_of:
                    raise ValueError(
                        f"{s}.{n} is tied to {self.slot_of[id(t)]}, which is a vertex parameter: a tie cannot be "
                        "both; list both modules in shared= or neither"
                    )

    def store(self, generic: set[str]) -> VertexStore:
        """The vertex store of the slots: the fused layers' columns, then the ``generic`` ones
        (one product gives all their points)."""
        dtypes = {(t.dtype, t.device) for t in self.tensors.values()}
        if len(dtypes) > 1:
            raise TypeError(f"all vertex parameters must share one dtype and device, got {sorted(map(str, dtypes))}")
        return VertexStore({s: self.tensors[s] for s in sorted(self.tensors, key=lambda s: s in generic)})


def _collect(
    module: nn.Module, shared: set[str], evaluation: Evaluation, slots: _Slots
) -> tuple[list[tuple[str, SimplexLayer]], list[tuple[str, str, str]]]:
    """Walks ``module`` and gives every parameter outside ``shared`` a slot: (the fused layers
    to put in place, as (path, layer); the generic parameters, as (module path, name, slot))."""
    layers: dict[int, SimplexLayer] = {}
    replace, generic = [], []
    for path, m in _walk(module, "", shared):
        prefix = f"{path}." if path else ""
        own = [(n, t) for n, t in m._parameters.items() if t is not None]
        cls = simplex_layer_for(m)
        if cls is None:
            if own:
                _refuse(m, path)
            generic += [(path, n, slots.slot_for(prefix, n, t)) for n, t in own]
            continue
        if id(m) not in layers:  # a module used at several places is one layer there
            cls.check_plain(m, path or "the model")
            layers[id(m)] = cls(m, evaluation, prefix, {n: slots.slot_for(prefix, n, t) for n, t in own})
        replace.append((path, layers[id(m)]))
    return replace, generic
