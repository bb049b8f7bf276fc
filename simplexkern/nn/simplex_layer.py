"""``SimplexLayer``: what every fused simplex layer is (``nn/layers.py``, ``nn/batchnorm.py``).

A layer holds no weights of its own, only the store slots of its parameters, and computes at
the point of the forward in progress (under the model's vmap, at all S points: the fused ops
see them in one call). It is made from the plain module it replaces and gives a plain module
back for one point (``plain``), so a converted model can always be baked out. Reading a
parameter of a layer during a forward (``self.out_proj.weight`` in ``nn.MultiheadAttention``,
a head tied to an embedding in forward code) gives its value at the point.
"""

import copy

import torch
from torch import nn
from torch.nn.utils import parametrize

from simplexkern.nn.points import Evaluation, Points
from simplexkern.ops.vertices import combine_vertices


class SimplexLayer(nn.Module):
    """The replacement of a plain module whose parameters are combinations of vertices.

    ``plain``: the module it replaces (its settings are kept, its tensors are not);
    ``evaluation``: the owning model's point of the forward in progress; ``prefix``: the
    module's path with a trailing dot; ``slots``: parameter name -> store slot.
    """

    plain_types: tuple[type[nn.Module], ...] = ()
    plain_parameters: frozenset[str] = frozenset({"weight", "bias"})  # the parameter names of the plain module
    _skeleton: nn.Module
    _evaluation: Evaluation

    def __init__(self, plain: nn.Module, evaluation: Evaluation, prefix: str, slots: dict[str, str]) -> None:
        super().__init__()
        skeleton = copy.copy(plain)  # the plain module's settings, without its tensors
        skeleton._parameters = {
            n: None if t is None else nn.Parameter(t.detach().to("meta"), t.requires_grad)
            for n, t in plain._parameters.items()
        }
        skeleton._buffers = {n: None if t is None else t.detach().to("meta") for n, t in plain._buffers.items()}
        skeleton._modules = {}
        object.__setattr__(self, "_skeleton", skeleton)  # not a submodule: no parameters, no state
        object.__setattr__(self, "_evaluation", evaluation)
        self.prefix = prefix
        self.slots = dict(slots)  # parameter name -> store slot (tied parameters share a slot)
        self.param_names = list(slots)

    @classmethod
    def accepts(cls, plain: nn.Module) -> bool:
        """Whether this layer computes what ``plain`` computes: one of ``plain_types`` or a
        subclass with its forward and parameters, no hooks and no parametrization."""
        base = next((t for t in cls.plain_types if isinstance(plain, t)), None)
        return (
            base is not None
            and type(plain).forward is base.forward
            and set(plain._parameters) == set(cls.plain_parameters_of(plain))
            and not parametrize.is_parametrized(plain)
            and not (
                plain._forward_hooks or plain._forward_pre_hooks or plain._backward_hooks or plain._backward_pre_hooks
            )
        )

    @classmethod
    def plain_parameters_of(cls, plain: nn.Module) -> frozenset[str]:
        return cls.plain_parameters

    @classmethod
    def check_plain(cls, plain: nn.Module, path: str) -> None:
        """Raises if this plain module has settings the simplex layer does not implement."""

    def extra_repr(self) -> str:
        return f"{type(self._skeleton).__name__}: {self._skeleton.extra_repr()}"

    def where(self) -> str:
        return f"{type(self._skeleton).__name__} at {self.prefix[:-1] or 'the model'!r}"

    def check_input(self, x: torch.Tensor, weight: torch.Tensor) -> None:
        """The input's dtype and device against the weights' (the ops' inner calls check neither)."""
        if x.dtype != weight.dtype:
            raise TypeError(f"{self.where()}: x must have the dtype of the weights ({weight.dtype}), got {x.dtype}")
        if x.device != weight.device:
            raise ValueError(f"{self.where()}: x is on {x.device} but the weights are on {weight.device}")

    def _points(self) -> Points:
        """The point of the forward in progress."""
        return self._evaluation.points(self)

    def vertices_of(self, name: str) -> torch.Tensor:
        """(k, *shape): the vertices of parameter ``name``, which the plain module has."""
        return self._points().weights[self.slots[name]]

    def store_weight(self, name: str) -> torch.Tensor | None:
        """(k, *shape): the vertices of parameter ``name`` (None when the plain module has none)."""
        return self.vertices_of(name) if name in self.slots else None

    def combine_param(self, name: str) -> torch.Tensor:
        """The parameter at the point (batched over the points under the model's vmap)."""
        p = self._points()
        return combine_vertices(p.coeffs[None], p.weights[self.slots[name]])[0]

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name not in self.__dict__.get("slots", ()):
                raise
        if self._evaluation.current is None:
            raise AttributeError(
                f"{self.where()}: its {name} is a combination of vertices and exists only at a "
                "point: during the SimplexModel's forward, or in model.at(coeffs)"
            )
        return self.combine_param(name)

    def plain_buffers(self, row: int | None) -> dict[str, torch.Tensor]:
        """The buffers of the plain module at tracked point ``row`` (None: fresh ones)."""
        return {}

    def plain(self, params: dict[str, nn.Parameter], buffers: dict[str, torch.Tensor] | None = None) -> nn.Module:
        """The plain module with the given parameters (name -> Parameter, used as they are, so
        that tied parameters stay tied) and buffers."""
        module = copy.deepcopy(self._skeleton)
        for name in self.param_names:
            module._parameters[name] = params[name]
        for name, value in (buffers or {}).items():
            module._buffers[name] = value
        return module.train(self.training)
