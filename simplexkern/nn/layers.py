"""Fused simplex layers: the replacements of the layers that have one (Linear, Conv1d/2d,
BatchNorm1d/2d/3d, Embedding, the recurrent layers, and pooling, which has no parameters but
pools all points in one call). Each holds no weights of its own, only the store slots of its
parameters, and computes at the point of the forward in progress (under the model's vmap, at
all S points: the fused ops see them in one call). Parameters of every other module take the
model's generic path (``nn/model.py``).

A layer is made from the plain module it replaces and gives a plain module back for one
point (``plain``), so a converted model can always be baked out. Reading a parameter of a
layer during a forward (``self.out_proj.weight`` in ``nn.MultiheadAttention``, a head tied
to an embedding in forward code) gives its value at the point.
"""

import copy
import functools

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from simplexkern import _vmap
from simplexkern.nn import pointwise
from simplexkern.nn.points import Evaluation, Points
from simplexkern.ops.conv import conv2d, conv_arguments
from simplexkern.ops.linear import linear
from simplexkern.ops.vertices import combine_vertices


class SimplexLayer(nn.Module):
    plain_types: tuple[type[nn.Module], ...] = ()
    plain_parameters: frozenset[str] = frozenset({"weight", "bias"})  # the parameter names of the plain module

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

    def store_weight(self, name: str) -> torch.Tensor | None:
        """(k, *shape): the vertices of parameter ``name`` (None when the plain module has none)."""
        slot = self.slots.get(name)
        return None if slot is None else self._points().weights[slot]

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


class SimplexLinear(SimplexLayer):
    plain_types = (nn.Linear,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self._points()
        w, b = self.store_weight("weight"), self.store_weight("bias")
        if x.dim() < 1 or x.shape[-1] != w.shape[2]:
            raise ValueError(f"{self.where()}: expected inputs of {w.shape[2]} features, got shape {tuple(x.shape)}")
        self.check_input(x, w)
        y = linear(x.reshape(-1, w.shape[2]), w, b, p.coeffs, p.trainable, p.backend)  # (M, out)
        return y.reshape(*x.shape[:-1], w.shape[1])


class SimplexConv2d(SimplexLayer):
    plain_types = (nn.Conv2d,)

    @classmethod
    def accepts(cls, plain: nn.Module) -> bool:
        return super().accepts(plain) and plain.padding_mode == "zeros"

    def __init__(
        self, plain: nn.Conv1d | nn.Conv2d, evaluation: Evaluation, prefix: str, slots: dict[str, str]
    ) -> None:
        super().__init__(plain, evaluation, prefix, slots)
        # the convolution's arguments, checked once: each call checks only the input's shape
        self._arguments = conv_arguments(*self._conv_args(), plain.groups)

    def _conv_args(self):
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
        y = self._conv(x if x.dim() == 4 else x[None], self.store_weight("weight"), x.shape)
        return y if x.dim() == 4 else y[0]


class SimplexConv1d(SimplexConv2d):
    """A 1-D convolution as a 2-D one of height 1."""

    plain_types = (nn.Conv1d,)

    def _conv_args(self):
        s = self._skeleton
        pad = s.padding if isinstance(s.padding, str) else (0, s.padding[0])
        return (1, s.stride[0]), pad, (1, s.dilation[0]), (1, s.kernel_size[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() not in (2, 3):
            raise ValueError(f"{self.where()} expects (C, L) or (B, C, L) inputs, got shape {tuple(x.shape)}")
        xs = x if x.dim() == 3 else x[None]
        y = self._conv(xs.unsqueeze(-2), self.store_weight("weight").unsqueeze(-2), x.shape).squeeze(-2)
        return y if x.dim() == 3 else y[0]


class SimplexBatchNorm(SimplexLayer):
    """Batch normalisation with per-point statistics.

    Training: each point normalises with its own batch statistics. Running statistics are
    kept per tracked point (rows of ``running_mean`` / ``running_var``, one per row of the
    model's ``bn_points``) and updated only when the forward's points are exactly the tracked
    ones; evaluation uses the row of each point and refuses points that have none.
    """

    plain_types = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)

    def __init__(
        self, plain: nn.modules.batchnorm._BatchNorm, evaluation: Evaluation, prefix: str, slots: dict[str, str]
    ) -> None:
        super().__init__(plain, evaluation, prefix, slots)
        self.eps, self.momentum = plain.eps, plain.momentum
        self.track_running_stats = plain.track_running_stats
        if self.track_running_stats:
            self.register_buffer("running_mean", plain.running_mean.detach().clone()[None])
            self.register_buffer("running_var", plain.running_var.detach().clone()[None])
            self.register_buffer("num_batches_tracked", plain.num_batches_tracked.detach().clone().reshape(1))

    @classmethod
    def check_plain(cls, plain: nn.Module, path: str) -> None:
        if plain.track_running_stats and plain.running_mean is None:
            raise ValueError(f"{path}: {type(plain).__name__} tracks running statistics but has none")

    def reset_statistics(self, n_points: int) -> None:
        if self.track_running_stats:
            c = self.running_mean.shape[1]
            self.running_mean = self.running_mean.new_zeros(n_points, c)
            self.running_var = self.running_var.new_ones(n_points, c)
            self.num_batches_tracked = self.num_batches_tracked.new_zeros(n_points)

    def statistics(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(running_mean, running_var, num_batches_tracked) of every tracked point."""
        return self.running_mean, self.running_var, self.num_batches_tracked

    def set_statistics(self, stats: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> None:
        self.running_mean, self.running_var, self.num_batches_tracked = stats

    def append_statistics(self) -> None:
        """One more tracked point, with fresh statistics."""
        fresh = self.plain_buffers(None)
        for name, value in fresh.items():
            setattr(self, name, torch.cat([getattr(self, name), value[None]]))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # The number of tracked points comes with the state.
        saved = state_dict.get(prefix + "running_mean")
        if self.track_running_stats and saved is not None and saved.dim() == 2:
            self.reset_statistics(saved.shape[0])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def point_statistics(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Copies of the statistics of tracked rows ``rows`` (S,), for a forward at S points."""
        return self.running_mean[rows], self.running_var[rows], self.num_batches_tracked[rows]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self._points()
        try:
            self._skeleton._check_input_dim(x)
        except ValueError as err:
            raise ValueError(f"{self.where()}: {err}") from None
        if x.numel() == 0:  # an empty batch: nothing to normalise, no statistics to update
            return x.clone()
        stats = p.batchnorm.get(self.prefix)  # None: no running statistics, batch statistics always
        update = self.training and stats is not None
        if update:
            p.updated.add(self.prefix)
        stats = stats or (None, None, None)
        weights = [self.store_weight(n) for n in ("weight", "bias")]
        interpreter = _vmap.innermost()
        if interpreter is not None:  # all points as one native batch norm over S x C channels
            return _vmap.call_unbatched(
                interpreter, functools.partial(self._at_points, update), x, p.coeffs, *weights, *stats
            )
        w, b = (None if t is None else self.combine_param(n) for n, t in zip(("weight", "bias"), weights))
        return self._normalise(x, w, b, *stats, update)

    def _at_points(self, update, n, dims, x, coeffs, w, b, mean, var, count):
        """The S points' normalisations as one over S x C channels, on the plain tensors: x (B, C, ...)
        shared or batched, coeffs (S, k), w and b (k, C) or None, the statistics (S, C) and (S,)."""
        c = coeffs.movedim(dims[1], 0)
        xs = x.unsqueeze(1).expand(x.shape[0], n, *x.shape[1:]) if dims[0] is None else x.movedim(dims[0], 1)
        shape = xs.shape  # (B, S, C, ...)
        w, b = (None if t is None else (c.to(t.dtype) @ t).reshape(-1) for t in (w, b))
        mean, var = (None if t is None else t.view(-1) for t in (mean, var))  # views: updated in place
        count = None if count is None else count.repeat_interleave(shape[2])
        y = self._normalise(xs.reshape(shape[0], n * shape[2], *shape[3:]), w, b, mean, var, count, update)
        return y.view(shape), 1

    def _normalise(self, x, w, b, mean, var, count, update):
        """F.batch_norm of x (B, C, ...) with the running statistics ``mean`` and ``var`` (C,),
        updated in place when ``update`` (``count``: batches so far, for momentum=None)."""
        if not update:
            training = mean is None
            return F.batch_norm(x, mean, var, w, b, training, 0.0, self.eps)
        if self.momentum is not None:
            return F.batch_norm(x, mean, var, w, b, True, self.momentum, self.eps)
        y = F.batch_norm(x, None, None, w, b, True, 0.0, self.eps)
        with torch.no_grad():  # the cumulative average: weight 1 / (batches so far + 1)
            batch_var, batch_mean = torch.var_mean(x, dim=[d for d in range(x.dim()) if d != 1], correction=1)
            weight = 1 / (count + 1).to(x.dtype)
            mean.add_((batch_mean - mean) * weight)
            var.add_((batch_var - var) * weight)
        return y

    @torch.no_grad()
    def store(self, rows: torch.Tensor, valid: torch.Tensor | None, stats: tuple[torch.Tensor, ...]) -> None:
        """Writes the statistics a training forward left in ``stats`` (from ``point_statistics``)
        back to the tracked rows, one more batch counted; ``valid`` (a tensor) masks the write
        when the points were not the tracked ones."""
        new_mean, new_var, count = stats
        count = count + 1
        if valid is not None:
            count = torch.where(valid, count, count - 1)
            new_mean = torch.where(valid, new_mean, self.running_mean[rows])
            new_var = torch.where(valid, new_var, self.running_var[rows])
        self.num_batches_tracked[rows] = count
        self.running_mean[rows] = new_mean
        self.running_var[rows] = new_var

    def plain_buffers(self, row: int | None) -> dict[str, torch.Tensor]:
        if not self.track_running_stats:
            return {}
        if row is None:  # fresh statistics, as a new nn.BatchNorm has
            c = self.running_mean.shape[1]
            return {
                "running_mean": self.running_mean.new_zeros(c),
                "running_var": self.running_var.new_ones(c),
                "num_batches_tracked": self.num_batches_tracked.new_zeros(()),
            }
        return {
            "running_mean": self.running_mean[row].clone(),
            "running_var": self.running_var[row].clone(),
            "num_batches_tracked": self.num_batches_tracked[row].clone(),
        }


class SimplexEmbedding(SimplexLayer):
    """Gathers the rows of the k vertices, then combines them: the S tables are never made."""

    plain_types = (nn.Embedding,)
    plain_parameters = frozenset({"weight"})

    @classmethod
    def accepts(cls, plain: nn.Module) -> bool:
        return super().accepts(plain) and plain.max_norm is None and not plain.scale_grad_by_freq and not plain.sparse

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        p = self._points()
        w = self.store_weight("weight")  # (k, num, dim)
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

    @classmethod
    def plain_parameters_of(cls, plain: nn.Module) -> frozenset[str]:
        return frozenset(plain._flat_weights_names)

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
