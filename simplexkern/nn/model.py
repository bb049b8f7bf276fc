"""``SimplexModel``: any PyTorch model as a simplex, complex or curve of its weights,
evaluated at S points in one pass (``simplexify`` in ``nn/convert.py`` makes one).

Its parameters take one of two paths. A layer with a fused simplex layer (``nn/layers.py``)
is replaced by it; every other parameter is *generic*: at each forward the S combined values
of all generic parameters come from one product with the store, and they are put into their
modules (where the plain model has them) for the forward. The forward runs under
``torch.func.vmap`` over the points (``nn/points.py``), so the model's own code runs
unchanged and the points never mix; what vmap cannot batch is found at the first forward,
and the model then evaluates its points one at a time (``nn/point_evaluation.py``).
BatchNorm statistics are kept per point (``nn/batchnorm.py``).
"""

import copy
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils import _pytree as pytree

from simplexkern import _checks, geometry
from simplexkern.nn import samplers
from simplexkern.nn.batchnorm import BatchNormState, SimplexBatchNorm, TrackedPoints
from simplexkern.nn.point_evaluation import POINT_EVALUATIONS, PointEvaluator
from simplexkern.nn.points import Evaluation
from simplexkern.nn.simplex_layer import SimplexLayer
from simplexkern.nn.store import VertexStore

INITS = ("mean", "copy", "random")


def replace_submodule(root: nn.Module, path: str, new: nn.Module) -> None:
    parent, _, child = path.rpartition(".")
    setattr(root.get_submodule(parent), child, new)


class SimplexModel(nn.Module):
    """A model whose weights are ``sum_i c_i V_i`` over k vertices in one vertex store.

    Made by ``simplexify``. ``forward(x, coeffs=None, n_samples=None)`` evaluates S points in
    one pass; ``sampler`` says where when no ``coeffs`` are given. ``point_evaluation``: how
    the points travel through the model: "vmap" (one batched forward), "loop" (one forward
    per point), or "auto" (the default: vmap, and the loop from the first forward vmap
    cannot follow on). ``batchnorm``: the points whose BatchNorm statistics it tracks.
    """

    bn_points: torch.Tensor  # (T, k): the points whose BatchNorm statistics are tracked
    _evaluation: Evaluation

    def __init__(
        self,
        module: nn.Module,
        store: VertexStore,
        evaluation: Evaluation,
        shared: Iterable[str] = (),
        architecture: dict[str, Any] | None = None,
        *,
        generic: Sequence[tuple[str, str, str]] = (),
        aliases: dict[str, str] | None = None,
    ) -> None:
        super().__init__()
        self.module = module
        self.store = store
        object.__setattr__(self, "_evaluation", evaluation)  # its layers read the point of a forward from it
        self.shared = tuple(shared)
        self.architecture = architecture
        self.sampler: samplers.Sampler = samplers.SimplexSampler()
        self.backend: str | None = None  # fused-op backend for this model's layers (None: the ops' own choice)
        self.metadata: dict[str, Any] = {}  # training metadata, saved with checkpoints
        self.point_evaluation = "auto"
        # generic parameters: (path of the module that holds it, its name there, store slot); between forwards
        # the module holds None in its place
        self._generic_paths = list(generic)
        self._generic = [(module.get_submodule(path), name, slot) for path, name, slot in generic]
        self._generic_start = min((store.slots[slot][0] for *_, slot in generic), default=store.n_columns)
        self._aliases = dict(aliases or {})  # parameter path -> the slot of the parameter it is tied to
        layers = self.simplex_layers()
        self._fused_slots = {slot for _, m in layers for slot in m.slots.values()}
        self.point_evaluator = PointEvaluator(module, evaluation, self._generic)
        self._batchnorms = [(path, m) for path, m in layers if isinstance(m, SimplexBatchNorm)]
        TrackedPoints.register(self, self._batchnorms, store.trainable)

    @property
    def n_vertices(self) -> int:
        return self.store.n_vertices

    @property
    def dtype(self) -> torch.dtype:
        return self.store.trainable.dtype

    @property
    def device(self) -> torch.device:
        return self.store.trainable.device

    @property
    def batchnorm(self) -> TrackedPoints:
        """The tracked points and their BatchNorm statistics (``nn.batchnorm.TrackedPoints``)."""
        return TrackedPoints(self, self._batchnorms)

    @property
    def tracks_batchnorm(self) -> bool:
        """Whether the model has BatchNorm layers that keep running statistics (per point)."""
        return bool(self.batchnorm.layers())

    def fixed_mask(self) -> list[bool]:
        """Per vertex: True when it is fixed (receives no updates)."""
        return self.store.fixed_mask()

    def simplex_layers(self) -> list[tuple[str, SimplexLayer]]:
        """(path, layer) of the fused simplex layers, each once."""
        return [(name, m) for name, m in self.module.named_modules() if isinstance(m, SimplexLayer)]

    def vertex_point(self, i: int) -> torch.Tensor:
        """(k,): the coefficients of vertex i (one-hot)."""
        point = torch.zeros(self.n_vertices, dtype=self.dtype, device=self.device)
        point[self._vertex_index(i)] = 1
        return point

    def _vertex_index(self, i, name="i"):
        return self.store._check_vertex(i, name)

    def fix(self, i: int) -> None:
        """Makes vertex i fixed: it leaves the parameter and receives no gradient or update.
        Build the optimizer after fix / unfix / add_vertex."""
        self.store.set_fixed(i, True)

    def unfix(self, i: int) -> None:
        """Makes vertex i trainable again."""
        self.store.set_fixed(i, False)

    @torch.no_grad()
    def add_vertex(
        self,
        init: str = "mean",
        noise: float = 0.01,
        *,
        source: int | Iterable[int] | None = None,
        fixed: bool = False,
        generator: torch.Generator | None = None,
    ) -> int:
        """Adds a vertex and returns its index.

        ``init``: "mean" of the existing vertices (SPRO; ``source``, a list of vertex indices,
        limits it to those), "copy" of vertex ``source`` (default the last), or "random" (each
        layer's own fresh initialisation). ``noise``: standard deviation of a Gaussian
        perturbation, relative to each layer tensor's root-mean-square value over the existing
        vertices; a vertex at the mean lies in the affine hull (log volume -inf) until
        perturbed, so keep noise > 0 there.
        """
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")
        _checks.number(noise, "noise", minimum=0)
        if init == "mean":
            rows = range(self.n_vertices) if source is None else samplers.vertex_tuple(source, "source")
            new = self.store.mean([self._vertex_index(i, "source") for i in rows])
        elif init == "copy":
            new = self.store.vertex(
                self._vertex_index(self.n_vertices - 1 if source is None else source, "source")
            ).clone()
        else:
            new = self.random_vertex(self.store.vertex(0))
        if noise:
            self.store.perturb(new, noise, generator)
        self.store.append(new, fixed)
        self.batchnorm.add_vertex()
        return self.n_vertices - 1

    def random_vertex(self, like: torch.Tensor) -> torch.Tensor:
        """(P,): a vertex of fresh weights, ``reset_parameters()`` of every module of the plain
        model that has one; a parameter no module resets keeps its value in ``like`` (P,)."""
        plain = self._plain(like, None)
        for m in plain.modules():
            reset = getattr(m, "reset_parameters", None)
            if callable(reset):
                reset()
        return torch.cat([plain.get_parameter(name).detach().reshape(-1) for name in self.store.slots])

    def vertex_state_dict(self, i: int) -> dict[str, torch.Tensor]:
        """A plain state dict of the original architecture with vertex i's weights (and its
        BatchNorm statistics when tracked, else fresh ones)."""
        point = self.vertex_point(i)
        tracked = self.batchnorm.row(point) is not None
        return self.at(point, bn_stats="tracked" if tracked else "fresh").state_dict()

    @torch.no_grad()
    def set_vertex(self, i: int, state_dict: dict[str, torch.Tensor]) -> None:
        """Loads vertex i from a plain state dict of the original architecture (e.g. a trained
        model). Its BatchNorm statistics, when present, become the tracked ones of that vertex.
        Shared (non-vertex) parameters are loaded only for vertex 0. Everything is checked
        before anything changes."""
        i = self._vertex_index(i)
        _check_tensors(state_dict)
        flat = self.store.vertex_from(state_dict, i)
        for alias, slot in self._aliases.items():
            if alias in state_dict and not torch.equal(state_dict[alias], state_dict[slot]):
                raise ValueError(
                    f"state_dict[{alias!r}] differs from state_dict[{slot!r}], the parameter this model ties it to"
                )
        shared = self._shared_of(state_dict, i)
        self.store.set_vertex(i, flat)
        if i == 0 and shared:
            self.module.load_state_dict(shared, strict=False)
        self.batchnorm.load_point(self.vertex_point(i), state_dict)

    def _shared_of(self, state_dict: dict[str, torch.Tensor], i: int) -> dict[str, torch.Tensor]:
        """The entries of a plain state dict that are neither vertex parameters nor tracked
        BatchNorm statistics, checked against the model (their shapes only for vertex 0, the
        one that loads them), as are the statistics' shapes."""
        stats_keys = self.batchnorm.statistics_keys()
        shared = {
            k: v
            for k, v in state_dict.items()
            if k not in self.store.slots and k not in self._aliases and k not in stats_keys
        }
        own = dict(self.module.state_dict())
        unknown = [k for k in shared if k not in own]
        if unknown:
            raise ValueError(f"state_dict has keys this model does not have: {unknown[:5]}")
        wrong = [k for k in (shared if i == 0 else ()) if shared[k].shape != own[k].shape]
        wrong += self.batchnorm.misshapen(state_dict)
        if wrong:
            raise ValueError(
                f"state_dict[{wrong[0]!r}] has shape {tuple(state_dict[wrong[0]].shape)}, which the "
                "model's does not match"
            )
        return shared

    @torch.no_grad()
    def update_bn(
        self, batches: Iterable[torch.Tensor | tuple[torch.Tensor, ...] | list[torch.Tensor]], coeffs: torch.Tensor
    ) -> None:
        """Recomputes the BatchNorm running statistics of the points ``coeffs`` ((k,) or
        (T, k)) from a pass over ``batches`` (an iterable of inputs or of (input, target)
        pairs): the cumulative average of each point's batch statistics, as the papers do
        before evaluating a point. Afterwards these T points are the tracked ones."""
        coeffs, _ = self._check_coeffs(coeffs)
        self.batchnorm.update(batches, _checks.known_finite(coeffs))  # checked once here, not again per batch

    def batchnorm_state(self) -> BatchNormState:
        """The tracked points and the statistics of every tracked BatchNorm, to put back with
        ``restore_batchnorm_state`` (``update_bn`` replaces these tensors, never changes them)."""
        return self.batchnorm.state()

    def restore_batchnorm_state(self, state: BatchNormState) -> None:
        """Puts back what ``batchnorm_state`` returned."""
        self.batchnorm.restore(state)

    def _check_coeffs(self, coeffs, name="coeffs"):
        _checks.floating(coeffs, name)
        k = self.n_vertices
        if coeffs.dim() not in (1, 2) or coeffs.shape[-1] != k or (coeffs.dim() == 2 and coeffs.shape[0] == 0):
            raise ValueError(
                f"{name} must have shape ({k},) or (S, {k}) for this model's {k} vertices, got {tuple(coeffs.shape)}"
            )
        if coeffs.dtype != self.dtype:
            raise TypeError(f"{name} must have the model's dtype {self.dtype}, got {coeffs.dtype}")
        if coeffs.device != self.device:
            raise ValueError(f"{name} must be on the model's device {self.device}, got {coeffs.device}")
        _checks.finite(coeffs, name)
        return coeffs.reshape(-1, k), coeffs.dim() == 1

    def forward(
        self,
        x: torch.Tensor,
        coeffs: torch.Tensor | None = None,
        n_samples: int | None = None,
        *,
        per_point_input: bool = False,
        generator: torch.Generator | None = None,
    ) -> Any:
        """Evaluates the model at S points in one pass.

        - ``coeffs``: (k,) for one point -> output (B, ...); (S, k) -> (S, B, ...). When None,
          ``n_samples`` points (default 1) come from ``self.sampler`` -> (S, B, ...).
        - ``x``: (B, ...) shared by all points, or (S, B, ...) with ``per_point_input=True``.

        Each point's output is what the plain model with that point's weights gives (``at``).
        """
        if coeffs is None:
            coeffs, single = self.sampler.sample(n_samples, self, generator), False
            # finite by construction: only the shape, dtype and device are checked (no host read)
            coeffs, _ = self._check_coeffs(_checks.known_finite(coeffs), "sampled coeffs")
        else:
            if n_samples is not None:
                raise ValueError("give coeffs or n_samples, not both")
            coeffs, single = self._check_coeffs(coeffs)
        _checks.tensor(x, "x")
        if self.point_evaluation not in POINT_EVALUATIONS:
            raise ValueError(f"point_evaluation must be one of {POINT_EVALUATIONS}, got {self.point_evaluation!r}")
        if self._evaluation.current is not None:
            raise RuntimeError("SimplexModel.forward is not re-entrant")
        S = coeffs.shape[0]
        if per_point_input and (x.dim() < 1 or x.shape[0] != S):
            raise ValueError(f"x with per_point_input=True must have shape (S={S}, B, ...), got {tuple(x.shape)}")
        tracked = self.batchnorm.forward_rows(coeffs)
        c = _checks.known_finite(coeffs[:, self.store.order])  # checked once, not per layer
        trainable = list(range(self.store.n_fixed, self.n_vertices)) if self.store.trainable.requires_grad else []
        frame: dict[str, Any] = {
            "weights": self.store.layer_weights(self._fused_slots),
            "trainable": trainable,
            "backend": self.backend,
            "updated": set(),
        }
        params = {}
        if self._generic:  # the S values of every generic parameter, from one product with the store
            flat = self.store.combine_columns(c, self._generic_start)
            params = {slot: self.store.slot(flat, slot, self._generic_start) for *_, slot in self._generic}
        stats, out = self.point_evaluator.run(
            self.point_evaluation, frame, c, params, tracked.statistics, x, per_point_input
        )
        tracked.store(stats, frame["updated"])
        return pytree.tree_map(lambda y: y[0], out) if single else out

    @torch.no_grad()
    def at(self, coeffs: torch.Tensor, bn_stats: str = "tracked") -> nn.Module:
        """A plain ``nn.Module`` (the original architecture) with the weights at one point
        ``coeffs`` (k,), for deployment and export. BatchNorm statistics: those tracked for
        this point (``bn_stats="tracked"``, an error if there are none) or fresh ones to be
        recomputed (``"fresh"``)."""
        if bn_stats not in ("tracked", "fresh"):
            raise ValueError(f"bn_stats must be 'tracked' or 'fresh', got {bn_stats!r}")
        coeffs, single = self._check_coeffs(coeffs)
        if not single:
            raise ValueError(f"coeffs must be one point of shape ({self.n_vertices},), got {tuple(coeffs.shape)}")
        row = self.batchnorm.row(coeffs[0])
        if bn_stats == "tracked" and row is None and len(self.batchnorm.points):
            raise ValueError(
                "no BatchNorm statistics are tracked at this point; compute them with "
                "model.update_bn(batches, coeffs) or pass bn_stats='fresh'"
            )
        return self._plain(coeffs[0] @ self.store.vertices(), row)

    def _plain(self, flat: torch.Tensor, row: int | None) -> nn.Module:
        """The plain model with the weights ``flat`` (P,) and the BatchNorm statistics of tracked
        row ``row`` (None: fresh ones). Tied parameters stay tied."""
        params = {slot: nn.Parameter(self.store.slot(flat, slot).detach().clone()) for slot in self.store.slots}
        module = copy.deepcopy(self.module)
        plains: dict[int, nn.Module] = {}
        for name, layer in list(module.named_modules(remove_duplicate=False)):
            if isinstance(layer, SimplexLayer):
                if id(layer) not in plains:
                    plains[id(layer)] = layer.plain(
                        {n: params[slot] for n, slot in layer.slots.items()}, layer.plain_buffers(row)
                    )
                if not name:
                    return plains[id(layer)]
                replace_submodule(module, name, plains[id(layer)])
        for path, name, slot in self._generic_paths:
            module.get_submodule(path)._parameters[name] = params[slot]
        return module

    def log_volume(self, simplices: Sequence[Iterable[int]] | None = None, *, check: bool = True) -> torch.Tensor:
        """log V of the simplex of all vertices (a scalar), or of each simplex in
        ``simplices`` (a list of vertex-index tuples) -> (n,). Float64 pairwise distances
        over the whole store, then the compiled log-volume; differentiable w.r.t. the trainable
        vertices. ``check=False`` skips the validation of the distances (no host
        synchronisation, as a training step needs): a non-finite vertex then gives a
        non-finite result instead of an error."""
        if simplices is not None and (isinstance(simplices, (str, bytes)) or not hasattr(simplices, "__len__")):
            raise TypeError(f"simplices must be a list of vertex-index tuples, got {type(simplices).__name__}")
        if simplices is not None and not len(simplices):
            raise ValueError(f"simplices must be a non-empty list of vertex-index tuples, got {simplices!r}")
        tuples = None if simplices is None else [samplers.vertex_tuple(s, "each simplex") for s in simplices]
        for s in tuples or ():
            if max(s) >= self.n_vertices:
                raise ValueError(f"simplex {s} names a vertex beyond the model's {self.n_vertices}")
        inverse = self.store.inverse_order()  # distances of the rows as stored, then put in vertex order
        sqdist = geometry.pairwise_sqdist(self.store.rows(), check=check)[inverse][:, inverse]
        if tuples is None:
            return geometry.log_volume(sqdist, check=check)
        sub = [sqdist[idx][:, idx] for idx in (self._index(s) for s in tuples)]
        if len({t.shape for t in sub}) > 1:
            return torch.stack([geometry.log_volume(t, check=check) for t in sub])
        return geometry.log_volume(torch.stack(sub), check=check)

    def _index(self, simplex: tuple[int, ...]) -> torch.Tensor:
        """The simplex's vertex indices as a tensor on the model's device, made once."""
        cache = self.__dict__.setdefault("_index_cache", {})
        key = (simplex, self.device)
        if key not in cache:
            cache[key] = torch.tensor(simplex, device=self.device)
        return cache[key]

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        self.batchnorm.before_load(state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return f"n_vertices={self.n_vertices}, fixed={self.fixed_mask()}, sampler={self.sampler.config()}"


def _check_tensors(state_dict: Any) -> None:
    """TypeError unless ``state_dict`` is a dict of tensors."""
    if not isinstance(state_dict, dict):
        raise TypeError(f"state_dict must be a dict of tensors, got {type(state_dict).__name__}")
    bad = [k for k, v in state_dict.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise TypeError(f"state_dict must map names to tensors; {bad[0]!r} is a {type(state_dict[bad[0]]).__name__}")
