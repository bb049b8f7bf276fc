"""What the layers of one SimplexModel share during a forward: the point being evaluated.

A SimplexModel runs its module's forward once under ``torch.func.vmap`` over the S points:
every tensor that depends on the point (the coefficients, the parameters, the activations
they produce) carries the point dimension as a vmap dimension, and everything else (the
input, tensors the model makes inside its forward, positions, masks) has none. The model's
own code sees one point's tensors, so whatever it does with them (reshapes that merge the
batch with other dimensions, ``torch.arange``, indexing) is what the plain model does, and
points cannot mix. The fused ops see all S points in one call through their vmap rules.
"""

import dataclasses

import torch
from torch import nn


@dataclasses.dataclass(frozen=True)
class Points:
    """The point a forward evaluates, as every simplex layer of the model may read it. Under
    the model's vmap the tensors marked "batched" hold all S points."""

    coeffs: torch.Tensor  # (k,) in store row order, checked finite; batched
    weights: dict[str, torch.Tensor]  # slot name -> (k, *shape) in store row order: the fused layers' vertices
    trainable: list[int]  # store rows that receive gradients
    backend: str | None  # of the fused ops
    # BatchNorm prefix -> the point's (running_mean, running_var, num_batches_tracked), batched; a training
    # forward updates the first two in place and adds the prefix to ``updated``
    batchnorm: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = dataclasses.field(default_factory=dict)
    updated: set[str] = dataclasses.field(default_factory=set)


class Evaluation:
    """The point of the forward in progress: set by the SimplexModel that owns it, around
    its inner module's forward, and read by that model's layers."""

    def __init__(self) -> None:
        self.current: Points | None = None

    def points(self, layer: nn.Module) -> Points:
        if self.current is None:
            raise RuntimeError(
                f"{type(layer).__name__} runs inside a SimplexModel's forward, which supplies the "
                "points to evaluate; call the SimplexModel, not its inner module"
            )
        return self.current
