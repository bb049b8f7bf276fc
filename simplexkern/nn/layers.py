"""The fused simplex layers: the replacements of the layers that have one (Linear, Conv1d/2d,
BatchNorm1d/2d/3d (``nn/batchnorm.py``), Embedding, the recurrent layers, and pooling, which has
no parameters but pools all points in one call). What a layer is: ``nn/simplex_layer.py``.
Parameters of every other module take the model's generic path (``nn/model.py``).
"""

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from simplexkern import _vmap
from simplexkern.nn import pointwise
from simplexkern.nn.batchnorm import SimplexBatchNorm
from simplexkern.nn.points import Evaluation
from simplexkern.nn.simplex_layer import SimplexLayer
from simplexkern.ops.conv import conv2d, conv_arguments
from simplexkern.ops.linear import linear


class SimplexLinear(SimplexLayer):
    """``nn.Linear`` by the fused linear op."""

    plain_types = (nn.Linear,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self._points()
        w, b = self.vertices_of("weight"), self.store_weight("bias")
        if x.dim() < 1 or x.shape[-1] != w.shape[2]:
            raise ValueError(f"{self.where()}: expected inputs of {w.shape[2]} features, got shape {tuple(x.shape)}")
        self.check_input(x, w)
        y = linear(x.reshape(-1, w.shape[2]), w, b, p.coeffs, p.trainable, p.backend)  # (M, out)
        return y.reshape(*x.shape[:-1], w.shape[1])


class SimplexConv2d(SimplexLayer):
    """``nn.Conv2d`` (zero padding) by the fused convolution."""

    plain_types: tuple[type[nn.Module], ...] = (nn.Conv2d,)
    _skeleton: nn.modules.conv._ConvNd

    @classmethod
    def accepts(cls, plain: nn.Module) -> bool:
        return super().accepts(plain) and plain.padding_mode == "zeros"

    def __init__(
        self, plain: nn.Conv1d | nn.Conv2d, evaluation: Evaluation, prefix: str, slots: dict[str, str]
    ) -> None:
        super().__init__(plain, evaluation, prefix, slots)
        # the convolution's arguments, checked once: each call checks only the input's shape
        self._arguments = conv_arguments(*self._conv_args(), plain.groups)

    def _conv_args(self) -> tuple[Any, Any, Any, Any]:
        """stride, padding, dilation and kernel size of the 2-D convolution."""
        s = self._skeleton
        return s.stride, s.padding, s.dilation, s.kernel_size

    def _conv(self, x, w, shape):
        """The convolution of a batch ``x`` (B, C, H, W) at the point, by the ops' inner call;
        ``shape``: the input's as the model gave it, for messages."""
        conv, extra = self._arguments
        channels = w.shape[2] * conv[3]
        if x.shape[-3] != channels:
            raise ValueError(f"{self.where()} expects inputs of {channels} channels, got shape {tuple(shape)}")
        self.check_input(x, w)
        if any(extra):  # "same" with an even kernel: the odd row/column goes at the bottom/right
            x = F.pad(x, (0, extra[1], 0, extra[0]))
        p = self._points()
        return conv2d(x, w, self.store_weight("bias"), p.coeffs, conv, p.trainable, p.backend)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() not in (3, 4):
            raise ValueError(f"{self.where()} expects (C, H, W) or (B, C, H, W) inputs, got shape {tuple(x.shape)}")
        y = self._conv(x if x.dim() == 4 else x[None], self.vertices_of("weight"), x.shape)
        return y if x.dim() == 4 else y[0]


class SimplexConv1d(SimplexConv2d):
    """A 1-D convolution as a 2-D one of height 1."""

    plain_types = (nn.Conv1d,)

    def _conv_args(self) -> tuple[Any, Any, Any, Any]:
        s = self._skeleton
        pad = s.padding if isinstance(s.padding, str) else (0, s.padding[0])
        return (1, s.stride[0]), pad, (1, s.dilation[0]), (1, s.kernel_size[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() not in (2, 3):
            raise ValueError(f"{self.where()} expects (C, L) or (B, C, L) inputs, got shape {tuple(x.shape)}")
        xs = x if x.dim() == 3 else x[None]
        y = self._conv(xs.unsqueeze(-2), self.vertices_of("weight").unsqueeze(-2), x.shape).squeeze(-2)
        return y if x.dim() == 3 else y[0]


class SimplexEmbedding(SimplexLayer):
    """Gathers the rows of the k vertices, then combines them: the S tables are never made."""

    plain_types = (nn.Embedding,)
    _skeleton: nn.Embedding
    plain_parameters = frozenset({"weight"})

    @classmethod
    def accepts(cls, plain: nn.Module) -> bool:
        return super().accepts(plain) and plain.max_norm is None and not plain.scale_grad_by_freq and not plain.sparse

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        p = self._points()
        w = self.vertices_of("weight")  # (k, num, dim)
        if idx.dtype not in (torch.long, torch.int):
            raise TypeError(f"{self.where()}: expected integer indices (torch.long or torch.int), got {idx.dtype}")
        rows = w[:, idx]  # (k, *idx.shape, dim)
        y = torch.tensordot(p.coeffs.to(w.dtype), rows, dims=1)
        pad = self._skeleton.padding_idx
        if pad is not None:  # the padding row gets no gradient, as in nn.Embedding
            y = torch.where((idx == pad)[..., None], y.detach(), y)
        return y


class SimplexRecurrent(SimplexLayer):
    """RNN, LSTM and GRU: torch.func.vmap has no batching rule for them, so the plain layer
    runs once per point with that point's weights (the rest of the model stays batched)."""

    plain_types = (nn.RNN, nn.LSTM, nn.GRU)

    _skeleton: nn.RNNBase

    @classmethod
    def plain_parameters_of(cls, plain: nn.Module) -> frozenset[str]:
        if isinstance(plain, nn.RNNBase):
            return frozenset(plain._flat_weights_names)
        return super().plain_parameters_of(plain)

    def forward(self, *args, **kwargs):
        return pointwise.call(self._run, {n: self.combine_param(n) for n in self.param_names}, args, kwargs)

    def _run(self, params, args, kwargs):
        runner = self._skeleton.train(self.training)
        try:
            return torch.func.functional_call(runner, params, args, kwargs)
        finally:
            runner._init_flat_weights()  # drop the references to this forward's weights

    def plain(self, params: dict[str, nn.Parameter], buffers: dict[str, torch.Tensor] | None = None) -> nn.Module:
        module = super().plain(params, buffers)
        if isinstance(module, nn.RNNBase):  # always: a copy of the plain layer
            module._init_flat_weights()
        return module


class SimplexPool(SimplexLayer):
    """A pooling layer (no parameters) that pools all points in one call on the activations as
    they lie in memory: vmap's own rule moves the points in front of the batch, a copy when
    the points lie example-major (as the fused convolutions leave them), and computes max
    pooling's indices even when no gradient is needed."""

    plain_types = (
        nn.MaxPool1d,
        nn.MaxPool2d,
        nn.AvgPool1d,
        nn.AvgPool2d,
        nn.AdaptiveAvgPool1d,
        nn.AdaptiveAvgPool2d,
        nn.AdaptiveMaxPool1d,
        nn.AdaptiveMaxPool2d,
    )
    plain_parameters = frozenset()

    @classmethod
    def accepts(cls, plain: nn.Module) -> bool:
        return super().accepts(plain) and not getattr(plain, "return_indices", False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        interpreter = _vmap.innermost()
        if interpreter is None:
            return self._skeleton(x)
        return _vmap.call_unbatched(interpreter, self._at_points, x)

    def _at_points(self, n, dims, x):
        pool, d = self._skeleton, dims[0]
        if d is None:  # no point dimension: one result for all points
            return pool(x), None
        batched = 3 if type(pool).__name__.endswith("1d") else 4  # one point's (B, C, ...) input
        if x.dim() == batched:  # unbatched inputs, (C, ...) per point: the points are the batch
            return pool(x.movedim(d, 0)), 0
        x = x.movedim(d, 1)  # (B, S, C, ...)
        if x.stride(0) == x.shape[1] * x.stride(1):  # example-major: merging B and S is a view
            return pool(x.flatten(0, 1)).unflatten(0, x.shape[:2]), 1
        x = x.transpose(0, 1)
        return pool(x.flatten(0, 1)).unflatten(0, x.shape[:2]), 0


LAYERS = (
    SimplexLinear,
    SimplexConv2d,
    SimplexConv1d,
    SimplexBatchNorm,
    SimplexEmbedding,
    SimplexRecurrent,
    SimplexPool,
)


def simplex_layer_for(module: nn.Module) -> type[SimplexLayer] | None:
    """The fused simplex layer that replaces ``module``, or None (its parameters, if any, take
    the generic path)."""
    for cls in LAYERS:
        if cls.accepts(module):
            return cls
    return None
