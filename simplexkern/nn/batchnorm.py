"""Per-point BatchNorm: each point of a SimplexModel normalises with its own statistics.

Running statistics belong to points, not to the model. ``TrackedPoints`` keeps the points a
model tracks, the rows of its ``bn_points`` buffer (T, k); row t of every tracked layer's
``running_mean`` / ``running_var`` / ``num_batches_tracked`` holds the statistics of point t.
A training forward updates them only when its points are exactly the tracked ones; an
evaluation forward reads each point's row and refuses a point that has none. ``update``
recomputes them for given points from a pass over data, as the papers do before evaluating
a point.
"""

import dataclasses
import functools
from collections.abc import Iterable
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from simplexkern import _vmap
from simplexkern.nn.points import Evaluation
from simplexkern.nn.simplex_layer import SimplexLayer

STATISTICS = ("running_mean", "running_var", "num_batches_tracked")
# (running_mean, running_var, num_batches_tracked)
Statistics = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class SimplexBatchNorm(SimplexLayer):
    """Batch normalisation with per-point statistics.

    Training: each point normalises with its own batch statistics. Running statistics are
    kept per tracked point (rows of ``running_mean`` / ``running_var``, one per row of the
    model's ``bn_points``) and updated only when the forward's points are exactly the tracked
    ones; evaluation uses the row of each point and refuses points that have none.
    """

    plain_types = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
    _skeleton: nn.modules.batchnorm._BatchNorm
    running_mean: torch.Tensor
    running_var: torch.Tensor
    num_batches_tracked: torch.Tensor

    def __init__(
        self, plain: nn.modules.batchnorm._BatchNorm, evaluation: Evaluation, prefix: str, slots: dict[str, str]
    ) -> None:
        super().__init__(plain, evaluation, prefix, slots)
        self.eps, self.momentum = plain.eps, plain.momentum
        self.track_running_stats = plain.track_running_stats
        if self.track_running_stats:
            mean, var, count = _statistics_of(plain)
            self.register_buffer("running_mean", mean.detach().clone()[None])
            self.register_buffer("running_var", var.detach().clone()[None])
            self.register_buffer("num_batches_tracked", count.detach().clone().reshape(1))

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

    def statistics(self) -> Statistics:
        """(running_mean, running_var, num_batches_tracked) of every tracked point."""
        return self.running_mean, self.running_var, self.num_batches_tracked

    def set_statistics(self, stats: Statistics) -> None:
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

    def point_statistics(self, rows: torch.Tensor) -> Statistics:
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
        mean, var, count = (None, None, None) if stats is None else stats
        weights = [self.store_weight(n) for n in ("weight", "bias")]
        interpreter = _vmap.innermost()
        if interpreter is not None:  # all points as one native batch norm over S x C channels
            return _vmap.call_unbatched(
                interpreter, functools.partial(self._at_points, update), x, p.coeffs, *weights, mean, var, count
            )
        w, b = (None if t is None else self.combine_param(n) for n, t in zip(("weight", "bias"), weights))
        return self._normalise(x, w, b, mean, var, count, update)

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


def _statistics_of(plain: nn.modules.batchnorm._BatchNorm) -> Statistics:
    """The running statistics of a plain BatchNorm that tracks them (``check_plain`` refuses one
    without)."""
    mean, var, count = plain.running_mean, plain.running_var, plain.num_batches_tracked
    if mean is None or var is None or count is None:
        raise ValueError(f"{type(plain).__name__} tracks running statistics but has none")
    return mean, var, count


# ``TrackedPoints.state()``: the tracked points, and each tracked layer with its statistics.
BatchNormState = tuple[torch.Tensor, list[tuple[SimplexBatchNorm, Statistics]]]


class Owner(Protocol):
    """The model whose ``bn_points`` buffer holds the tracked points (so that they are saved
    with its state under that key)."""

    bn_points: torch.Tensor
    training: bool

    def __call__(self, x: torch.Tensor, coeffs: torch.Tensor) -> Any: ...

    def train(self, mode: bool = True) -> Any: ...

    def register_buffer(self, name: str, tensor: torch.Tensor | None, persistent: bool = True) -> None: ...


@dataclasses.dataclass(frozen=True)
class ForwardRows:
    """Where the S points of one forward keep their statistics: the tracked row of each point,
    for the layers the forward reads."""

    layers: list[SimplexBatchNorm]
    rows: torch.Tensor | None = None  # (S,); None when no layer keeps statistics
    # whether every point is tracked, a tensor that masks a training update (no host read); None: all are
    valid: torch.Tensor | None = None

    def statistics(self) -> dict[str, Statistics]:
        """Layer prefix -> copies of its statistics at the points (a training forward updates them)."""
        if self.rows is None:
            return {}
        return {m.prefix: m.point_statistics(self.rows) for m in self.layers}

    def store(self, stats: dict[str, Statistics], updated: set[str]) -> None:
        """Writes back the statistics of the layers a training forward updated (``updated``)."""
        if self.rows is None:
            return
        for m in self.layers:
            if m.prefix in updated:
                m.store(self.rows, self.valid, stats[m.prefix])


class TrackedPoints:
    """The points whose BatchNorm statistics a SimplexModel keeps (``owner.bn_points``, (T, k)
    in vertex order; (1, 1) at first, for vertex 0, and (0, 1) when no layer keeps statistics),
    and the statistics' rows of each point in every layer that keeps them.

    A view made on each access (``SimplexModel.batchnorm``), which the model does not hold:
    a model that held it would hold itself, and outlive its last reference."""

    def __init__(self, owner: Owner, layers: list[tuple[str, SimplexBatchNorm]]) -> None:
        self._owner = owner
        self._layers = layers  # (path, layer) of every per-point BatchNorm, each once

    @staticmethod
    def register(owner: Owner, layers: list[tuple[str, SimplexBatchNorm]], like: torch.Tensor) -> None:
        """Gives ``owner`` its ``bn_points`` buffer: vertex 0 tracked when a layer keeps statistics."""
        n = 1 if any(m.track_running_stats for _, m in layers) else 0
        owner.register_buffer("bn_points", torch.ones(n, 1, dtype=like.dtype, device=like.device))

    @property
    def points(self) -> torch.Tensor:
        """(T, k): the tracked points."""
        return self._owner.bn_points

    @points.setter
    def points(self, points: torch.Tensor) -> None:
        self._owner.bn_points = points

    def named_layers(self) -> list[tuple[str, SimplexBatchNorm]]:
        """(path, layer) of the BatchNorm layers that keep running statistics."""
        return [(path, m) for path, m in self._layers if m.track_running_stats]

    def layers(self) -> list[SimplexBatchNorm]:
        """The BatchNorm layers that keep running statistics."""
        return [m for _, m in self.named_layers()]

    # ------------------------------------------------------------------ rows of points
    def row(self, point: torch.Tensor) -> int | None:
        """The row of ``point`` (k,), or None when it is not tracked."""
        match = (self.points == point.to(self.points)).all(1).nonzero().flatten()
        return int(match[0]) if len(match) else None

    def add(self, point: torch.Tensor) -> int:
        """Tracks ``point`` (k,), with fresh statistics; returns its row."""
        self.points = torch.cat([self.points, point.to(self.points)[None]])
        for m in self.layers():
            m.append_statistics()
        return len(self.points) - 1

    def add_vertex(self) -> None:
        """A vertex was added: every tracked point gives it coefficient 0."""
        self.points = torch.cat([self.points, self.points.new_zeros(len(self.points), 1)], 1)

    def forward_rows(self, coeffs: torch.Tensor) -> ForwardRows:
        """The rows of the points ``coeffs`` (S, k) for a forward. Evaluating a point that is not
        tracked is an error; in training (and under torch.compile) the check is on the device, so
        a training step reads nothing on the host."""
        layers = self.layers() if len(self.points) else []
        if not layers:
            return ForwardRows([])
        eq = (coeffs[:, None, :] == self.points[None]).all(-1)
        rows, valid = eq.int().argmax(1), eq.any(1).all()
        if self._owner.training:  # the update is masked on the device: no host read in a training step
            return ForwardRows(layers, rows, valid)
        if torch.compiler.is_compiling():
            torch._assert_async(
                valid,
                "no running BatchNorm statistics for the points being evaluated; "
                "compute them with model.update_bn(batches, coeffs)",
            )
            return ForwardRows(layers, rows, valid)
        if bool(valid):
            return ForwardRows(layers, rows, None)
        raise ValueError(
            "no running BatchNorm statistics for the points being evaluated; evaluate at tracked "
            "points (model.bn_points) or compute them first with model.update_bn(batches, coeffs)"
        )

    # ------------------------------------------------------------------ state
    def state(self) -> BatchNormState:
        """The tracked points and the statistics of every tracked layer, to put back with
        ``restore`` (``update`` replaces these tensors, never changes them)."""
        return self.points, [(m, m.statistics()) for m in self.layers()]

    def restore(self, state: BatchNormState) -> None:
        self.points = state[0]
        for m, stats in state[1]:
            m.set_statistics(stats)

    def before_load(self, state_dict: dict[str, Any], prefix: str) -> None:
        """Makes room for the tracked points of a state about to be loaded (their number comes
        with it)."""
        saved = state_dict.get(prefix + "bn_points")
        if saved is not None and saved.dim() == 2:
            self.points = self.points.new_empty(saved.shape)

    # ------------------------------------------------------------------ updates
    @torch.no_grad()
    def update(self, batches: Iterable[Any], coeffs: torch.Tensor) -> None:
        """Recomputes the statistics of the points ``coeffs`` (T, k), checked, from a pass of the
        owner over ``batches`` (inputs or (input, target) pairs): the cumulative average of each
        point's batch statistics. Afterwards these T points are the tracked ones; on an error,
        the state before is put back."""
        layers = self.layers()
        if not layers:
            raise ValueError("this model has no BatchNorm layer that tracks running statistics")
        saved = self.state()
        self.points = coeffs.clone()
        was_training, momenta = self._owner.training, [m.momentum for m in layers]
        for m in layers:
            m.reset_statistics(len(coeffs))
            m.momentum = None
        self._owner.train()
        done = False
        try:
            n = 0
            for batch in batches:
                x = batch[0] if isinstance(batch, (tuple, list)) else batch
                self._owner(x, coeffs)
                n += 1
            if n == 0:
                raise ValueError("batches is empty: no data to compute statistics from")
            done = True
        finally:
            for m, momentum in zip(layers, momenta):
                m.momentum = momentum
            self._owner.train(was_training)
            if not done:
                self.restore(saved)

    # ------------------------------------------------------------------ plain state dicts
    def statistics_keys(self) -> set[str]:
        """The keys of a plain state dict that hold the statistics of tracked layers."""
        return {f"{path}.{name}" for path, _ in self.named_layers() for name in STATISTICS}

    def misshapen(self, state_dict: dict[str, torch.Tensor]) -> list[str]:
        """The statistics in a plain state dict whose shape the layers' do not match."""
        layers = dict(self.named_layers())
        return [
            k
            for k in self.statistics_keys()
            if k in state_dict
            and not k.endswith("num_batches_tracked")
            and state_dict[k].shape != layers[k.rsplit(".", 1)[0]].running_mean.shape[1:]
        ]

    def load_point(self, point: torch.Tensor, state_dict: dict[str, torch.Tensor]) -> None:
        """Makes the statistics in a plain state dict (checked) those of ``point`` (k,), tracking
        it if it is not; nothing when the state dict lacks some layer's statistics."""
        layers = self.named_layers()
        if not layers or not all(f"{path}.running_mean" in state_dict for path, _ in layers):
            return
        row = self.row(point)
        if row is None:
            row = self.add(point)
        for path, m in layers:
            m.running_mean[row] = state_dict[f"{path}.running_mean"]
            m.running_var[row] = state_dict[f"{path}.running_var"]
            m.num_batches_tracked[row] = state_dict.get(f"{path}.num_batches_tracked", torch.tensor(0))
