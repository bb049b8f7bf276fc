"""How a SimplexModel's forward takes its S points through the inner module, as its
``point_evaluation`` says: "vmap" (one forward under ``torch.func.vmap`` over the points),
"loop" (one forward per point), or "auto" (vmap, and the loop from the first forward vmap
cannot follow on).

With "auto", what vmap cannot batch is found at the first forward. Random draws vmap cannot
make per point (in-place ``bernoulli_`` on a new tensor) are then made once for all points;
anything else (a branch on a value, an op without a batching rule) makes the model evaluate
its points one at a time from then on, after a warning naming the module.
"""

import functools
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils import _pytree as pytree

from simplexkern.nn.batchnorm import Statistics
from simplexkern.nn.points import Evaluation, Points
from simplexkern.nn.simplex_layer import SimplexLayer

POINT_EVALUATIONS = ("auto", "vmap", "loop")


class PointEvaluator:
    """Runs the inner ``module`` of a SimplexModel at its points and remembers what vmap could
    not do. ``evaluation``: the point the model's layers read; ``generic``: (module, parameter
    name, store slot) of each generic parameter, which the module holds as None between
    forwards and ``run`` puts in place.

    ``randomness``: vmap's ("different": each point draws its own random numbers; "same": the
    model's draws cannot be made per point). ``loop_reason``: why "auto" evaluates point by
    point, or None while vmap works.
    """

    def __init__(self, module: nn.Module, evaluation: Evaluation, generic: list[tuple[nn.Module, str, str]]) -> None:
        self.module = module
        self.evaluation = evaluation
        self.generic = generic
        self.randomness = "different"
        self.loop_reason: str | None = None
        self.vmap_works = False  # one forward under vmap succeeded: no more trials

    def _at_point(self, frame, coeffs, params, stats, x):
        """The inner module's forward at one point (under vmap: at all of them)."""
        self.evaluation.current = Points(coeffs=coeffs, batchnorm=stats, **frame)
        for module, name, slot in self.generic:
            module._parameters[name] = params[slot]
        try:
            return self.module(x)
        finally:  # whatever raises, the model is left as it was
            for module, name, _ in self.generic:
                module._parameters[name] = None
            self.evaluation.current = None

    def run(
        self,
        mode: str,
        frame: dict[str, Any],
        coeffs: torch.Tensor,
        params: dict[str, torch.Tensor],
        point_statistics: Callable[[], dict[str, Statistics]],
        x: torch.Tensor,
        per_point: bool,
    ) -> tuple[dict[str, Statistics], Any]:
        """(the BatchNorm statistics the points used, the output (S, B, ...)) of the inner module
        at the points ``coeffs`` (S, k), by vmap or by the loop as ``mode`` (a ``point_evaluation``)
        says. ``frame``: the fields of ``Points`` that all points share; ``params``: slot -> the
        S values of each generic parameter; ``point_statistics()``: fresh copies of the points'
        BatchNorm statistics."""
        trial = self._buffers_now() if mode == "auto" and not self.vmap_works else None
        while mode == "vmap" or (mode == "auto" and self.loop_reason is None):
            stats = point_statistics()  # fresh copies: a failed pass may have changed them
            frame["updated"].clear()
            batched = torch.func.vmap(
                functools.partial(self._at_point, frame),
                randomness=self.randomness,
                in_dims=(0, 0, 0, 0 if per_point else None),
            )
            if torch.compiler.is_compiling():
                return stats, batched(coeffs, params, stats, x)
            try:
                out = batched(coeffs, params, stats, x)
                self.vmap_works = True
                return stats, out
            except (RuntimeError, NotImplementedError) as err:
                if trial is not None:
                    self._put_back(trial)  # what the failed pass changed
                where = self._failing_module(err)
                if self.randomness == "different" and "randomness" in str(err):
                    self.randomness = "same"
                    warnings.warn(
                        f"torch.func.vmap cannot draw random numbers per point {where}; from now on the "
                        "random draws of a forward (dropout masks, stochastic depth) are the same at all "
                        "its points",
                        stacklevel=3,
                    )
                    continue
                if mode == "vmap":
                    raise type(err)(
                        f"torch.func.vmap cannot evaluate the points of this model together "
                        f"({where}): {err}; set model.point_evaluation = 'loop' to evaluate them one "
                        "at a time"
                    ) from err
                reason = f"{str(err).splitlines()[0]} ({where})"
            frame["updated"].clear()
            stats = point_statistics()
            out = self._loop(frame, coeffs, params, stats, x, per_point)  # raises the model's own errors, if any
            self.loop_reason = reason
            warnings.warn(
                f"torch.func.vmap cannot evaluate the points of this model together: {reason}. From now "
                "on the model evaluates its points one at a time: the same results, more slowly (set "
                "model.point_evaluation = 'loop' to skip this trial)",
                stacklevel=3,
            )
            return stats, out
        stats = point_statistics()
        return stats, self._loop(frame, coeffs, params, stats, x, per_point)

    def _loop(self, frame, coeffs, params, stats, x, per_point):
        """One forward per point, the outputs stacked. Refuses a model that changes buffers
        other than per-point BatchNorm statistics (the points would share that state), and
        puts them back first."""
        buffers = self._buffers_now()
        outs = [
            self._at_point(
                frame,
                coeffs[s],
                {slot: v[s] for slot, v in params.items()},
                {key: tuple(t[s] for t in v) for key, v in stats.items()},
                x[s] if per_point else x,
            )
            for s in range(coeffs.shape[0])
        ]
        changed = self._put_back(buffers)
        if changed:
            raise TypeError(
                f"the model's forward changes its buffer {changed[0]!r}, which all points would share; "
                "only BatchNorm1d/2d/3d keep statistics per point (turn off running statistics there, "
                "e.g. track_running_stats=False)"
            )
        return pytree.tree_map(lambda *ys: torch.stack(ys), *outs)

    def _buffers_now(self):
        """(name, buffer, version, copy) of the buffers outside the simplex layers."""
        return [
            (f"{path}.{n}" if path else n, b, b._version, b.detach().clone())
            for path, m in self.module.named_modules()
            if not isinstance(m, SimplexLayer)
            for n, b in m._buffers.items()
            if b is not None
        ]

    @torch.no_grad()
    def _put_back(self, buffers):
        """Restores the buffers a forward changed since ``_buffers_now``; returns their names."""
        changed = [(name, b, saved) for name, b, version, saved in buffers if b._version != version]
        for _, b, saved in changed:
            b.copy_(saved)
        return [name for name, _, _ in changed]

    def _failing_module(self, err):
        """'module <path> (<type>)': the innermost module of this model in ``err``'s traceback."""
        paths = {id(m): (path, m) for path, m in self.module.named_modules(remove_duplicate=False)}
        found, tb = None, err.__traceback__
        while tb is not None:
            owner = tb.tb_frame.f_locals.get("self")
            if id(owner) in paths and paths[id(owner)][1] is owner:
                found = paths[id(owner)]
            tb = tb.tb_next
        if found is None:
            return "in the model's forward"
        path, m = found
        name = type(m._skeleton if isinstance(m, SimplexLayer) else m).__name__
        return f"in module {path or 'the model'!r} ({name})"
