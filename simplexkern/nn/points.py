"""What the layers of one SimplexModel share during a forward: the S points being evaluated.

Inside a simplex model the activations of all points travel merged on the batch dimension,
``(B * S, ...)``, example-major (row b * S + s is example b at point s), so the model's own
forward code (flatten, pooling, residual adds, views) runs unchanged; each simplex layer
views the leading dimension as ``(S, B)`` itself. Example-major is the layout of the points
side by side as channel groups, ``(B, S * C, ...)``: a grouped convolution over the points
reads and writes it without copies.
"""
import dataclasses

import torch
from torch import nn


def merge(y: torch.Tensor) -> torch.Tensor:
    """(S, B, ...) -> the merged (B * S, ...) (a view when y is laid out example-major)."""
    return y.transpose(0, 1).reshape(y.shape[0] * y.shape[1], *y.shape[2:])


@dataclasses.dataclass(frozen=True)
class Points:
    """The points one forward evaluates, as every simplex layer of the model may read them."""
    coeffs: torch.Tensor  # (S, k) in store row order, checked finite
    weights: dict[str, torch.Tensor]  # slot name -> (k, *shape) in store row order
    trainable: list[int]  # store rows that receive gradients
    backend: str | None  # of the fused ops
    shared_input: torch.Tensor | None = None  # the (B, ...) input shared by all points ...
    shared_merged: torch.Tensor | None = None  # ... and the (B * S, ...) the model made of it
    stats_rows: torch.Tensor | None = None  # BatchNorm: the tracked statistics row of each point, or None
    stats_valid: torch.Tensor | None = None  # in training and under torch.compile: whether stats_rows is valid

    @property
    def n(self) -> int:
        """S."""
        return self.coeffs.shape[0]

    def split(self, x: torch.Tensor, name: str = "x") -> tuple[torch.Tensor, bool]:
        """The merged (B * S, ...) -> an (S, B, ...) view, or the shared (B, ...) input when x is it."""
        if x is self.shared_merged:
            return self.shared_input, True
        if x.shape[0] % self.n:
            raise ValueError(f"{name}: a simplex layer expects its input's first dimension to be points x batch "
                             f"(a multiple of S={self.n}), got shape {tuple(x.shape)}")
        return x.reshape(x.shape[0] // self.n, self.n, *x.shape[1:]).transpose(0, 1), False


class Evaluation:
    """The points of the forward in progress: set by the SimplexModel that owns it, around
    its inner module's forward, and read by that model's layers."""

    def __init__(self) -> None:
        self.current: Points | None = None

    def points(self, layer: nn.Module) -> Points:
        if self.current is None:
            raise RuntimeError(f"{type(layer).__name__} runs inside a SimplexModel's forward, which supplies the "
                               "points to evaluate; call the SimplexModel, not its inner module")
        return self.current
