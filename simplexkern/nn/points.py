"""What the layers of one SimplexModel share during a forward: the S points being evaluated.

Inside a simplex model the activations of all points travel merged on the batch dimension,
``(B * S, ...)``, example-major (row b * S + s is example b at point s), so the model's own
forward code (flatten, pooling, residual adds, views) runs unchanged; each simplex layer
views the leading dimension as ``(S, B)`` itself. Example-major is the layout of the points
side by side as channel groups, ``(B, S * C, ...)``: a grouped convolution over the points
reads and writes it without copies.
"""
import torch
from torch import nn


def merge(y: torch.Tensor) -> torch.Tensor:
    """(S, B, ...) -> the merged (B * S, ...) (a view when y is laid out example-major)."""
    return y.transpose(0, 1).reshape(y.shape[0] * y.shape[1], *y.shape[2:])


class Points:
    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.active = False
        self.n = 0  # S
        self.coeffs = None  # (S, k) in store row order
        self.weights = None  # slot name -> (k, *shape), row order
        self.trainable = []  # store rows that receive gradients
        self.shared_merged = None  # the (B * S, ...) input the model made from a shared input
        self.shared_input = None  # ... and that (B, ...) input itself
        self.stats_rows = None  # BatchNorm: tracked statistics row of each point, or None
        self.stats_valid = None  # in training and under torch.compile: a tensor, whether stats_rows is valid
        self.backend = None

    def require(self, layer: nn.Module) -> None:
        if not self.active:
            raise RuntimeError(f"{type(layer).__name__} runs inside a SimplexModel's forward, which supplies the "
                               "points to evaluate; call the SimplexModel, not its inner module")

    def split(self, x: torch.Tensor, name: str = "x") -> tuple[torch.Tensor, bool]:
        """The merged (B * S, ...) -> an (S, B, ...) view, or the shared (B, ...) input when x is it."""
        if x is self.shared_merged:
            return self.shared_input, True
        if x.shape[0] % self.n:
            raise ValueError(f"{name}: a simplex layer expects its input's first dimension to be points x batch "
                             f"(a multiple of S={self.n}), got shape {tuple(x.shape)}")
        return x.reshape(x.shape[0] // self.n, self.n, *x.shape[1:]).transpose(0, 1), False
