"""Simplex layers: each holds no weights of its own, only the names of its slots in the
model's vertex store, and runs all S points of a forward in one call.

A layer is made from the plain module it replaces and gives a plain module back for one
point (``plain``), so a converted model can always be baked out.
"""
import copy

import torch
import torch.nn.functional as F
from torch import nn

from simplexkern.nn.points import Evaluation, Points, merge
from simplexkern.ops.conv import conv2d, conv_arguments
from simplexkern.ops.linear import linear
from simplexkern.ops.vertices import combine_vertices


class SimplexLayer(nn.Module):
    plain_types = ()

    def __init__(self, plain: nn.Module, evaluation: Evaluation, prefix: str) -> None:
        super().__init__()
        skeleton = copy.copy(plain)  # the plain module's settings, without its tensors
        skeleton._parameters = {n: None if t is None else nn.Parameter(t.detach().to("meta"), t.requires_grad)
                                for n, t in plain._parameters.items()}
        skeleton._buffers = {n: None if t is None else t.detach().to("meta") for n, t in plain._buffers.items()}
        skeleton._modules = {}
        object.__setattr__(self, "_skeleton", skeleton)  # not a submodule: no parameters, no state
        object.__setattr__(self, "_evaluation", evaluation)
        self.prefix = prefix
        self.param_names = [n for n, p in plain.named_parameters(recurse=False)]

    @classmethod
    def check_plain(cls, plain: nn.Module, path: str) -> None:
        """Raises if this plain module has settings the simplex layer does not implement."""

    def extra_repr(self) -> str:
        return f"{type(self._skeleton).__name__}: {self._skeleton.extra_repr()}"

    def where(self) -> str:
        return f"{type(self._skeleton).__name__} at {self.prefix[:-1] or 'the model'!r}"

    def check_input(self, xs: torch.Tensor, weight: torch.Tensor) -> None:
        """The input's dtype and device against the weights' (the ops' inner calls check neither)."""
        if xs.dtype != weight.dtype:
            raise TypeError(f"{self.where()}: x must have the dtype of the weights ({weight.dtype}), got {xs.dtype}")
        if xs.device != weight.device:
            raise ValueError(f"{self.where()}: x is on {xs.device} but the weights are on {weight.device}")

    def _points(self) -> Points:
        """The points of the forward in progress."""
        return self._evaluation.points(self)

    def store_weight(self, name: str) -> torch.Tensor | None:
        return self._points().weights.get(self.prefix + name)

    def combine_param(self, name: str) -> torch.Tensor:
        """(S, *shape): the parameter at each point."""
        return combine_vertices(self._points().coeffs, self.store_weight(name))

    def per_point(self, x: torch.Tensor) -> tuple[torch.Tensor, bool]:
        """(S, B, ...) from the merged input, expanding a shared input, and whether it was one."""
        p = self._points()
        xs, shared = p.split(x)
        return (xs.expand(p.n, *xs.shape) if shared else xs), shared

    def plain_buffers(self, row: int | None) -> dict[str, torch.Tensor]:
        """The buffers of the plain module at tracked point ``row`` (None: fresh ones)."""
        return {}

    def plain(self, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor] | None = None) -> nn.Module:
        """The plain module with the given parameters (name -> tensor) and buffers."""
        module = copy.deepcopy(self._skeleton)
        for name in self.param_names:
            module._parameters[name] = nn.Parameter(params[name].clone())
        for name, value in (buffers or {}).items():
            module._buffers[name] = value
        return module.train(self.training)


class SimplexLinear(SimplexLayer):
    plain_types = (nn.Linear,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self._points()
        xs, shared = p.split(x)
        w, b = self.store_weight("weight"), self.store_weight("bias")
        if xs.dim() < 2:
            raise ValueError(f"{self.where()}: x must have a batch dimension, (B, ..., {w.shape[2]}), got shape "
                             f"{tuple(xs.shape)}")
        if xs.shape[-1] != w.shape[2]:
            raise ValueError(f"{self.where()}: expected inputs of {w.shape[2]} features, got shape {tuple(xs.shape)}")
        self.check_input(xs, w)
        rows = xs.reshape(-1, xs.shape[-1]) if shared else xs.reshape(p.n, -1, xs.shape[-1])
        y = linear(rows, w, b, p.coeffs, p.trainable, p.backend)  # (S, M, out)
        return merge(y.reshape(p.n, *(xs.shape[:-1] if shared else xs.shape[1:-1]), w.shape[1]))


class SimplexConv2d(SimplexLayer):
    plain_types = (nn.Conv2d,)

    @classmethod
    def check_plain(cls, plain: nn.Module, path: str) -> None:
        if plain.padding_mode != "zeros":
            raise ValueError(f"{path}: {type(plain).__name__} with padding_mode={plain.padding_mode!r} is not "
                             "supported (only 'zeros'); list it in shared= to keep it as one shared copy")

    def __init__(self, plain: nn.Conv1d | nn.Conv2d, evaluation: Evaluation, prefix: str) -> None:
        super().__init__(plain, evaluation, prefix)
        # the convolution's arguments, checked once: each call checks only the input's shape
        self._arguments = conv_arguments(*self._conv_args(), plain.groups)

    def _conv_args(self):
        """stride, padding, dilation and kernel size of the 2-D convolution."""
        s = self._skeleton
        return s.stride, s.padding, s.dilation, s.kernel_size

    def _conv(self, xs, w, shape=None):
        """The convolution at the points, by the ops' inner call; ``shape``: the input's as
        the user gave it, for messages."""
        conv, extra = self._arguments
        channels = w.shape[2] * conv[3]
        if xs.dim() not in (4, 5):  # (B, C, H, W) shared, or (S, B, C, H, W) per point
            raise ValueError(f"{self.where()} expects batched inputs, (B, {channels}, H, W), got shape "
                             f"{tuple(xs.shape)}")
        if xs.shape[-3] != channels:
            raise ValueError(f"{self.where()} expects inputs of {channels} channels, got shape "
                             f"{tuple(shape or xs.shape)}")
        self.check_input(xs, w)
        if any(extra):  # "same" with an even kernel: the odd row/column goes at the bottom/right
            xs = F.pad(xs, (0, extra[1], 0, extra[0]))
        p = self._points()
        return conv2d(xs, w, self.store_weight("bias"), p.coeffs, conv, p.trainable, p.backend)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xs, _ = self._points().split(x)
        return merge(self._conv(xs, self.store_weight("weight")))


class SimplexConv1d(SimplexConv2d):
    """A 1-D convolution as a 2-D one of height 1."""
    plain_types = (nn.Conv1d,)

    def _conv_args(self):
        s = self._skeleton
        pad = s.padding if isinstance(s.padding, str) else (0, s.padding[0])
        return (1, s.stride[0]), pad, (1, s.dilation[0]), (1, s.kernel_size[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xs, _ = self._points().split(x)
        if xs.dim() not in (3, 4):  # (B, C, L) shared, or (S, B, C, L) per point
            raise ValueError(f"{self.where()} expects batched inputs, (B, C, L), got shape {tuple(xs.shape)}")
        y = self._conv(xs.unsqueeze(-2), self.store_weight("weight").unsqueeze(-2), xs.shape)
        return merge(y.squeeze(-2))


def _channel_view(v, ndim):
    """(S, C) -> (S, 1, C, 1, ...) for a (S, B, C, ...) tensor of ``ndim`` dims."""
    return v.reshape(v.shape[0], 1, v.shape[1], *([1] * (ndim - 3)))


class SimplexBatchNorm(SimplexLayer):
    """Batch normalisation with per-point statistics.

    Training: each point normalises with its own batch statistics. Running statistics are
    kept per tracked point (rows of ``running_mean`` / ``running_var``, one per row of the
    model's ``bn_points``) and updated only when the forward's points are exactly the tracked
    ones; evaluation uses the row of each point and refuses points that have none.
    """
    plain_types = (nn.BatchNorm1d, nn.BatchNorm2d)

    def __init__(self, plain: nn.BatchNorm1d | nn.BatchNorm2d, evaluation: Evaluation, prefix: str) -> None:
        super().__init__(plain, evaluation, prefix)
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self._points()
        xs, shared = self.per_point(x)
        if xs.dim() not in (3, 4, 5):
            raise ValueError(f"{self.where()} expects (N, C) or (N, C, ...) inputs, got {tuple(x.shape)}")
        if xs.numel() == 0:  # an empty batch: nothing to normalise, no statistics to update
            return merge(xs)
        use_batch = self.training or not self.track_running_stats
        per_channel = xs.numel() // max(xs.shape[0] * xs.shape[2], 1)
        if use_batch and per_channel == 1:
            raise ValueError(f"{self.where()}: expected more than 1 value per channel when normalising with batch "
                             f"statistics, got input of shape {tuple(x.shape)} ({p.n} points)")
        if self.momentum is not None and not shared:
            return self._native(x, xs.shape[2], use_batch)
        if use_batch:
            var, mean = torch.var_mean(xs, dim=(1, *range(3, xs.dim())), correction=0)
            if self.training and self.track_running_stats and p.stats_rows is not None:
                self._update(p.stats_rows, p.stats_valid, mean.detach(), var.detach(), per_channel)
        else:
            mean, var = self.running_mean[p.stats_rows], self.running_var[p.stats_rows]
        scale = torch.rsqrt(var + self.eps)
        shift = -mean * scale
        if "weight" in self.param_names:
            gamma, beta = self.combine_param("weight"), self.combine_param("bias")
            scale, shift = scale * gamma, shift * gamma + beta
        y = xs * _channel_view(scale, xs.dim()) + _channel_view(shift, xs.dim())
        return merge(y)

    def _native(self, x, c, use_batch):
        """The S per-point normalisations as one ``F.batch_norm`` over S * C channels: the
        merged (B * S, C, ...) input is example-major, so it is (B, S * C, ...) as it lies."""
        p = self._points()
        xv = x.reshape(x.shape[0] // p.n, p.n * c, *x.shape[2:])
        w = self.combine_param("weight").reshape(-1) if "weight" in self.param_names else None
        b = self.combine_param("bias").reshape(-1) if "bias" in self.param_names else None
        rows = p.stats_rows
        if not use_batch:
            y = F.batch_norm(xv, self.running_mean[rows].reshape(-1), self.running_var[rows].reshape(-1), w, b, False,
                             0.0, self.eps)
        elif self.training and self.track_running_stats and rows is not None:
            mean, var = self.running_mean[rows].reshape(-1), self.running_var[rows].reshape(-1)  # copies, updated
            y = F.batch_norm(xv, mean, var, w, b, True, self.momentum, self.eps)
            self._store(rows, p.stats_valid, mean.view(p.n, c), var.view(p.n, c))
        else:
            y = F.batch_norm(xv, None, None, w, b, True, 0.0, self.eps)
        return y.reshape(x.shape)

    @torch.no_grad()
    def _store(self, rows, valid, new_mean, new_var):
        """Running statistics of the tracked rows, already updated (masked by ``valid``, a
        tensor under torch.compile, when the points are not the tracked ones)."""
        count = self.num_batches_tracked[rows] + 1
        if valid is not None:
            count = torch.where(valid, count, count - 1)
            new_mean = torch.where(valid, new_mean, self.running_mean[rows])
            new_var = torch.where(valid, new_var, self.running_var[rows])
        self.num_batches_tracked[rows] = count
        self.running_mean[rows] = new_mean
        self.running_var[rows] = new_var

    @torch.no_grad()
    def _update(self, rows, valid, mean, var, n):
        """Running-statistics update of the tracked rows; ``valid`` (a tensor, under
        torch.compile) masks it when the points are not the tracked ones."""
        m = (1.0 / (self.num_batches_tracked[rows] + 1).to(mean.dtype))[:, None] if self.momentum is None else \
            self.momentum
        self._store(rows, valid, (1 - m) * self.running_mean[rows] + m * mean,
                    (1 - m) * self.running_var[rows] + m * var * (n / max(n - 1, 1)))

    def plain_buffers(self, row: int | None) -> dict[str, torch.Tensor]:
        if not self.track_running_stats:
            return {}
        if row is None:  # fresh statistics, as a new nn.BatchNorm has
            c = self.running_mean.shape[1]
            return {"running_mean": self.running_mean.new_zeros(c), "running_var": self.running_var.new_ones(c),
                    "num_batches_tracked": self.num_batches_tracked.new_zeros(())}
        return {"running_mean": self.running_mean[row].clone(), "running_var": self.running_var[row].clone(),
                "num_batches_tracked": self.num_batches_tracked[row].clone()}


class SimplexLayerNorm(SimplexLayer):
    plain_types = (nn.LayerNorm,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self._skeleton
        xs, _ = self.per_point(x)
        y = F.layer_norm(xs, s.normalized_shape, None, None, s.eps)
        n = xs.shape[0]
        view = (n, *([1] * (xs.dim() - 1 - len(s.normalized_shape))), *s.normalized_shape)
        if "weight" in self.param_names:
            y = y * self.combine_param("weight").reshape(view)
        if "bias" in self.param_names:
            y = y + self.combine_param("bias").reshape(view)
        return merge(y)


class SimplexGroupNorm(SimplexLayer):
    plain_types = (nn.GroupNorm,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self._skeleton
        xs, _ = self.per_point(x)
        y = self._points().split(F.group_norm(merge(xs), s.num_groups, None, None, s.eps))[0]
        if "weight" in self.param_names:
            gamma, beta = self.combine_param("weight"), self.combine_param("bias")
            y = y * _channel_view(gamma, xs.dim()) + _channel_view(beta, xs.dim())
        return merge(y)


class SimplexEmbedding(SimplexLayer):
    plain_types = (nn.Embedding,)

    @classmethod
    def check_plain(cls, plain: nn.Module, path: str) -> None:
        if plain.max_norm is not None or plain.scale_grad_by_freq or plain.sparse:
            raise ValueError(f"{path}: nn.Embedding with max_norm, scale_grad_by_freq or sparse is not supported; "
                             "list it in shared= to keep it as one shared copy")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self._points()
        idx, shared = p.split(x)
        w = self.store_weight("weight")  # (k, num, dim)
        if shared:
            rows = w[:, idx.reshape(-1)]  # (k, M, dim)
            y = torch.einsum("sk,kmd->smd", p.coeffs, rows)
        else:
            rows = w[:, idx.reshape(p.n, -1)]  # (k, S, M, dim)
            y = torch.einsum("sk,ksmd->smd", p.coeffs, rows)
        pad = self._skeleton.padding_idx
        if pad is not None:  # the padding row gets no gradient, as in nn.Embedding
            flat = idx.reshape(1 if shared else p.n, -1, 1) == pad
            y = torch.where(flat, y.detach(), y)
        batch = idx.shape if shared else idx.shape[1:]
        return merge(y.reshape(p.n, *batch, w.shape[-1]))


LAYERS = (SimplexLinear, SimplexConv2d, SimplexConv1d, SimplexBatchNorm, SimplexLayerNorm, SimplexGroupNorm,
          SimplexEmbedding)


def simplex_layer_for(module: nn.Module) -> type[SimplexLayer] | None:
    """The simplex layer class that replaces ``module``'s exact type, or None."""
    for cls in LAYERS:
        if type(module) in cls.plain_types:
            return cls
    return None
