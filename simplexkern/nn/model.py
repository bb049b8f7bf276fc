"""``SimplexModel`` and ``simplexify``: any PyTorch model as a simplex, complex or curve of
its weights, evaluated at S points in one pass."""
import copy
import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from simplexkern import _checks, geometry
from simplexkern.nn import samplers
from simplexkern.nn.layers import LAYERS, SimplexBatchNorm, SimplexLayer, simplex_layer_for
from simplexkern.nn.points import Evaluation, Points, merge
from simplexkern.nn.store import VertexStore

INITS = ("mean", "copy", "random")
# ``batchnorm_state()``: the tracked points, and each tracked BatchNorm with its (running_mean, running_var,
# num_batches_tracked).
BatchNormState = tuple[torch.Tensor, list[tuple[SimplexBatchNorm, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]]]


def _replace_submodule(root, path, new):
    parent, _, child = path.rpartition(".")
    setattr(root.get_submodule(parent), child, new)


def _apply_tensors(fn, out):
    if isinstance(out, torch.Tensor):
        return fn(out)
    if isinstance(out, (tuple, list)):
        return type(out)(_apply_tensors(fn, o) for o in out)
    if isinstance(out, dict):
        return {key: _apply_tensors(fn, o) for key, o in out.items()}
    return out


class SimplexModel(nn.Module):
    """A model whose weights are ``sum_i c_i V_i`` over k vertices in one vertex store.

    Made by ``simplexify``. ``forward(x, coeffs=None, n_samples=None)`` evaluates S points in
    one pass; ``sampler`` says where when no ``coeffs`` are given.
    """

    def __init__(self, module: nn.Module, store: VertexStore, evaluation: Evaluation, shared: Iterable[str] = (),
                 architecture: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.module = module
        self.store = store
        object.__setattr__(self, "_evaluation", evaluation)  # its layers read the points of a forward from it
        self.shared = tuple(shared)
        self.architecture = architecture
        self.sampler = samplers.SimplexSampler()
        self.backend = None  # fused-op backend for this model's layers (None: the ops' own choice)
        self.metadata = {}  # training metadata, saved with checkpoints
        tracked = bool(self._tracked_norms())
        self.register_buffer("bn_points", torch.ones(1 if tracked else 0, 1, dtype=store.trainable.dtype,
                                                     device=store.trainable.device))

    # ------------------------------------------------------------------ properties
    @property
    def n_vertices(self) -> int:
        return self.store.n_vertices

    @property
    def dtype(self) -> torch.dtype:
        return self.store.trainable.dtype

    @property
    def device(self) -> torch.device:
        return self.store.trainable.device

    def fixed_mask(self) -> list[bool]:
        """Per vertex: True when it is fixed (receives no updates)."""
        return self.store.fixed_mask()

    def simplex_layers(self) -> list[tuple[str, SimplexLayer]]:
        return [(name, m) for name, m in self.module.named_modules() if isinstance(m, SimplexLayer)]

    def _tracked_norms(self):
        """(path, layer) of the BatchNorm layers that keep running statistics."""
        return [(name, m) for name, m in self.simplex_layers()
                if isinstance(m, SimplexBatchNorm) and m.track_running_stats]

    def _one_hot(self, i):
        point = torch.zeros(self.n_vertices, dtype=self.dtype, device=self.device)
        point[self._vertex_index(i)] = 1
        return point

    # ------------------------------------------------------------------ vertices
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
    def add_vertex(self, init: str = "mean", noise: float = 0.01, *, source: int | Iterable[int] | None = None,
                   fixed: bool = False, generator: torch.Generator | None = None) -> int:
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
        if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not (noise >= 0 and math.isfinite(noise)):
            raise ValueError(f"noise must be a finite non-negative number, got {noise!r}")
        vertices = self.store.vertices()
        if init == "mean":
            rows = range(self.n_vertices) if source is None else samplers._vertex_tuple(source, "source")
            new = vertices[[self._vertex_index(i, "source") for i in rows]].mean(0)
        elif init == "copy":
            new = vertices[self._vertex_index(self.n_vertices - 1 if source is None else source, "source")].clone()
        else:
            new = self._random_vertex(vertices[0])
        if noise:
            for name in self.store.slots:
                part = self.store.slot(new, name)
                rms = self.store.slot(vertices, name).pow(2).mean().sqrt()
                eps = torch.randn(part.shape, generator=generator, device=new.device if generator is None
                                  else generator.device, dtype=new.dtype).to(new.device)
                part.add_(noise * rms * eps)  # a view into new
        bn_points = torch.cat([self.bn_points, self.bn_points.new_zeros(len(self.bn_points), 1)], 1)
        self.store.append(new, fixed)
        self.bn_points = bn_points
        return self.n_vertices - 1

    def _random_vertex(self, like):
        new = torch.empty_like(like)
        for _, layer in self.simplex_layers():
            params = {n: self.store.slot(like, layer.prefix + n) for n in layer.param_names}
            plain = layer.plain(params, layer.plain_buffers(None))
            if hasattr(plain, "reset_parameters"):
                plain.reset_parameters()
            for n in layer.param_names:
                self.store.slot(new, layer.prefix + n).copy_(getattr(plain, n))
        return new

    def vertex_state_dict(self, i: int) -> dict[str, torch.Tensor]:
        """A plain state dict of the original architecture with vertex i's weights (and its
        BatchNorm statistics when tracked, else fresh ones)."""
        point = self._one_hot(i)
        tracked = self._stats_row(point) is not None
        return self.at(point, bn_stats="tracked" if tracked else "fresh").state_dict()

    @torch.no_grad()
    def set_vertex(self, i: int, state_dict: dict[str, torch.Tensor]) -> None:
        """Loads vertex i from a plain state dict of the original architecture (e.g. a trained
        model). Its BatchNorm statistics, when present, become the tracked ones of that vertex.
        Shared (non-vertex) parameters are loaded only for vertex 0. Everything is checked
        before anything changes."""
        i = self._vertex_index(i)
        if not isinstance(state_dict, dict):
            raise TypeError(f"state_dict must be a dict of tensors, got {type(state_dict).__name__}")
        bad = [k for k, v in state_dict.items() if not isinstance(v, torch.Tensor)]
        if bad:
            raise TypeError(f"state_dict must map names to tensors; {bad[0]!r} is a "
                            f"{type(state_dict[bad[0]]).__name__}")
        flat = torch.empty(self.store.n_columns, dtype=self.dtype, device=self.device)
        for name, (offset, shape) in self.store.slots.items():
            if name not in state_dict:
                raise ValueError(f"state_dict has no {name!r}, which vertex {i} needs")
            t = state_dict[name]
            if tuple(t.shape) != shape:
                raise ValueError(f"state_dict[{name!r}] has shape {tuple(t.shape)}, the model expects {shape}")
            self.store.slot(flat, name).copy_(t)
        norms = dict(self._tracked_norms())
        stats_keys = {f"{n}.{b}" for n in norms for b in ("running_mean", "running_var", "num_batches_tracked")}
        shared = {k: v for k, v in state_dict.items() if k not in self.store.slots and k not in stats_keys}
        own = dict(self.module.state_dict())
        unknown = [k for k in shared if k not in own]
        if unknown:
            raise ValueError(f"state_dict has keys this model does not have: {unknown[:5]}")
        wrong = [k for k in (shared if i == 0 else ()) if shared[k].shape != own[k].shape]
        wrong += [k for k in stats_keys if k in state_dict and not k.endswith("num_batches_tracked")
                  and state_dict[k].shape != norms[k.rsplit(".", 1)[0]].running_mean.shape[1:]]
        if wrong:
            raise ValueError(f"state_dict[{wrong[0]!r}] has shape {tuple(state_dict[wrong[0]].shape)}, which the "
                             "model's does not match")
        self.store.set_vertex(i, flat)
        if i == 0 and shared:
            self.module.load_state_dict(shared, strict=False)
        if norms and all(f"{n}.running_mean" in state_dict for n in norms):
            point = self._one_hot(i)
            row = self._stats_row(point)
            if row is None:
                row = self._add_tracked_point(point)
            for n, m in norms.items():
                m.running_mean[row] = state_dict[f"{n}.running_mean"]
                m.running_var[row] = state_dict[f"{n}.running_var"]
                m.num_batches_tracked[row] = state_dict.get(f"{n}.num_batches_tracked", torch.tensor(0))

    # ------------------------------------------------------------------ BatchNorm statistics
    def _stats_row(self, point):
        match = (self.bn_points == point.to(self.bn_points)).all(1).nonzero().flatten()
        return int(match[0]) if len(match) else None

    def _add_tracked_point(self, point):
        self.bn_points = torch.cat([self.bn_points, point.to(self.bn_points)[None]])
        for _, m in self._tracked_norms():
            m.append_statistics()
        return len(self.bn_points) - 1

    def _stats_rows(self, coeffs):
        """Row of each point in the tracked statistics and whether every point has one
        (a tensor under torch.compile, where a host branch would break the graph)."""
        eq = (coeffs[:, None, :] == self.bn_points[None]).all(-1)
        rows, valid = eq.int().argmax(1), eq.any(1).all()
        if self.training:  # the update is masked on the device: no host read in a training step
            return rows, valid
        if torch.compiler.is_compiling():
            torch._assert_async(valid, "no running BatchNorm statistics for the points being evaluated; "
                                       "compute them with model.update_bn(batches, coeffs)")
            return rows, valid
        if bool(valid):
            return rows, None
        raise ValueError("no running BatchNorm statistics for the points being evaluated; evaluate at tracked "
                         "points (model.bn_points) or compute them first with model.update_bn(batches, coeffs)")

    @torch.no_grad()
    def update_bn(self, batches: Iterable[torch.Tensor | tuple[torch.Tensor, ...] | list[torch.Tensor]],
                  coeffs: torch.Tensor) -> None:
        """Recomputes the BatchNorm running statistics of the points ``coeffs`` ((k,) or
        (T, k)) from a pass over ``batches`` (an iterable of inputs or of (input, target)
        pairs): the cumulative average of each point's batch statistics, as the papers do
        before evaluating a point. Afterwards these T points are the tracked ones."""
        coeffs, _ = self._check_coeffs(coeffs)
        coeffs = _checks.known_finite(coeffs)  # checked once here, not again per batch
        norms = [m for _, m in self._tracked_norms()]
        if not norms:
            raise ValueError("this model has no BatchNorm layer that tracks running statistics")
        saved = self.batchnorm_state()
        self.bn_points = coeffs.clone()
        was_training, momenta = self.training, [m.momentum for m in norms]
        for m in norms:
            m.reset_statistics(len(coeffs))
            m.momentum = None
        self.train()
        done = False
        try:
            n = 0
            for batch in batches:
                x = batch[0] if isinstance(batch, (tuple, list)) else batch
                self(x, coeffs)
                n += 1
            if n == 0:
                raise ValueError("batches is empty: no data to compute statistics from")
            done = True
        finally:
            for m, momentum in zip(norms, momenta):
                m.momentum = momentum
            self.train(was_training)
            if not done:
                self.restore_batchnorm_state(saved)

    def batchnorm_state(self) -> BatchNormState:
        """The tracked points and the statistics of every tracked BatchNorm, to put back with
        ``restore_batchnorm_state`` (``update_bn`` replaces these tensors, never changes them)."""
        return self.bn_points, [(m, m.statistics()) for _, m in self._tracked_norms()]

    def restore_batchnorm_state(self, state: BatchNormState) -> None:
        self.bn_points = state[0]
        for m, stats in state[1]:
            m.set_statistics(stats)

    # ------------------------------------------------------------------ evaluation
    def _check_coeffs(self, coeffs, name="coeffs"):
        _checks.floating(coeffs, name)
        k = self.n_vertices
        if coeffs.dim() not in (1, 2) or coeffs.shape[-1] != k or (coeffs.dim() == 2 and coeffs.shape[0] == 0):
            raise ValueError(f"{name} must have shape ({k},) or (S, {k}) for this model's {k} vertices, "
                             f"got {tuple(coeffs.shape)}")
        if coeffs.dtype != self.dtype:
            raise TypeError(f"{name} must have the model's dtype {self.dtype}, got {coeffs.dtype}")
        if coeffs.device != self.device:
            raise ValueError(f"{name} must be on the model's device {self.device}, got {coeffs.device}")
        _checks.finite(coeffs, name)
        return coeffs.reshape(-1, k), coeffs.dim() == 1

    def forward(self, x: torch.Tensor, coeffs: torch.Tensor | None = None, n_samples: int | None = None, *,
                per_point_input: bool = False, generator: torch.Generator | None = None) -> Any:
        """Evaluates the model at S points in one pass.

        - ``coeffs``: (k,) for one point -> output (B, ...); (S, k) -> (S, B, ...). When None,
          ``n_samples`` points (default 1) come from ``self.sampler`` -> (S, B, ...).
        - ``x``: (B, ...) shared by all points, or (S, B, ...) with ``per_point_input=True``.
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
        S = coeffs.shape[0]
        if self._evaluation.current is not None:
            raise RuntimeError("SimplexModel.forward is not re-entrant")
        if per_point_input:
            if x.dim() < 2 or x.shape[0] != S:
                raise ValueError(f"x with per_point_input=True must have shape (S={S}, B, ...), got {tuple(x.shape)}")
            merged, shared = merge(x), {}
        else:
            if x.dim() < 1:
                raise ValueError("x must have a batch dimension")
            merged = x if S == 1 else merge(x.expand(S, *x.shape))
            shared = {"shared_input": x, "shared_merged": merged}
        stats = dict(zip(("stats_rows", "stats_valid"), self._stats_rows(coeffs))) if self._has_tracked_norms() else {}
        trainable = list(range(self.store.n_fixed, self.n_vertices)) if self.store.trainable.requires_grad else []
        points = Points(coeffs=_checks.known_finite(coeffs[:, self.store.order]),  # checked once, not per layer
                        weights=self.store.layer_weights(), trainable=trainable, backend=self.backend, **shared,
                        **stats)
        try:  # whatever raises from here on, the model is left as it was
            self._evaluation.current = points
            out = self.module(merged)
        finally:
            self._evaluation.current = None

        def unmerge(y):
            y = y.reshape(y.shape[0] // S, S, *y.shape[1:]).transpose(0, 1)
            return y[0] if single else y
        return _apply_tensors(unmerge, out)

    def _has_tracked_norms(self):
        return len(self.bn_points) > 0

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
        row = self._stats_row(coeffs[0])
        if bn_stats == "tracked" and row is None and self._has_tracked_norms():
            raise ValueError("no BatchNorm statistics are tracked at this point; compute them with "
                             "model.update_bn(batches, coeffs) or pass bn_stats='fresh'")
        flat = coeffs[0] @ self.store.vertices()
        module = copy.deepcopy(self.module)
        layers = [(name, m) for name, m in module.named_modules() if isinstance(m, SimplexLayer)]
        for name, layer in layers:
            params = {n: self.store.slot(flat, layer.prefix + n) for n in layer.param_names}
            plain = layer.plain(params, layer.plain_buffers(row))
            if not name:
                return plain
            _replace_submodule(module, name, plain)
        return module

    def log_volume(self, simplices: Sequence[Iterable[int]] | None = None, *, check: bool = True) -> torch.Tensor:
        """log V of the simplex of all vertices (a scalar), or of each simplex in
        ``simplices`` (a list of vertex-index tuples) -> (n,). Float64 pairwise distances
        over the whole store, then the compiled log-volume; differentiable w.r.t. the trainable
        vertices. ``check=False`` skips the validation of the distances (no host
        synchronisation, as a training step needs): a non-finite vertex then gives a
        non-finite result instead of an error."""
        if simplices is not None and (isinstance(simplices, (str, bytes)) or not hasattr(simplices, "__len__")
                                      or not len(simplices)):
            raise ValueError(f"simplices must be a non-empty list of vertex-index tuples, got {simplices!r}")
        tuples = None if simplices is None else [samplers._vertex_tuple(s, "each simplex") for s in simplices]
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

    def _index(self, simplex):
        """The simplex's vertex indices as a tensor on the model's device, made once."""
        cache = self.__dict__.setdefault("_index_cache", {})
        key = (simplex, self.device)
        if key not in cache:
            cache[key] = torch.tensor(simplex, device=self.device)
        return cache[key]

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        saved = state_dict.get(prefix + "bn_points")  # the number of tracked points comes with the state
        if saved is not None and saved.dim() == 2:
            self.bn_points = self.bn_points.new_empty(saved.shape)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return f"n_vertices={self.n_vertices}, fixed={self.fixed_mask()}, sampler={self.sampler.config()}"


def _walk(module, path, shared):
    """Yields (path, module) of the modules to convert, skipping shared subtrees; a module
    used at several places is yielded at each of them."""
    if path in shared:
        return
    yield path, module
    if simplex_layer_for(module) is not None:
        return
    for name, child in module._modules.items():
        if child is not None:
            yield from _walk(child, f"{path}.{name}" if path else name, shared)


def simplexify(model: nn.Module, n_vertices: int = 1, *,
               shared: str | list[str] | tuple[str, ...] | set[str] | frozenset[str] = (), init: str = "mean",
               noise: float = 0.01, architecture: dict[str, Any] | None = None) -> SimplexModel:
    """Converts ``model`` (any ``nn.Module`` built from supported layers) into a
    ``SimplexModel`` whose vertex 0 holds the model's current weights; further vertices come
    from ``add_vertex(init, noise)``. The model itself is not changed.

    Supported layers with parameters: Linear, Conv1d, Conv2d, BatchNorm1d/2d, LayerNorm,
    GroupNorm, Embedding. Layers without parameters work unchanged. A module with parameters
    of another type raises TypeError naming it and its path, unless its path is listed in
    ``shared`` (its parameters then stay one shared copy, not vertices).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    n_vertices = _checks.count(n_vertices, "n_vertices")
    if isinstance(shared, str):
        shared = (shared,)
    if not isinstance(shared, (list, tuple, set, frozenset)) or not all(isinstance(s, str) for s in shared):
        raise TypeError(f"shared must be a submodule path or a list of paths, got {shared!r}")
    shared = set(shared)
    paths = dict(model.named_modules())
    for s in shared:
        if s not in paths or s == "":
            raise ValueError(f"shared lists {s!r}, which is not a submodule path of the model")
    module = copy.deepcopy(model)
    evaluation, tensors, seen, places, replace = Evaluation(), {}, {}, {}, []
    for path, m in _walk(module, "", shared):
        cls = simplex_layer_for(m)
        own = [(n, t) for n, t in m.named_parameters(recurse=False)]
        if own and id(m) in places:
            raise ValueError(f"{path} is the same module as {places[id(m)] or 'the model'} (one module used at two "
                             "places; its weights would be vertices twice); list one of the paths in shared=")
        places[id(m)] = path
        frozen = [n for n, t in own if not t.requires_grad]
        if cls is not None and frozen:
            raise ValueError(f"{path or 'the model'}.{frozen[0]} has requires_grad=False: vertices are trained, so a "
                             f"frozen parameter cannot be one; list {path!r} in shared= to keep it as one frozen copy")
        if cls is None:
            if own:
                names = ", ".join(c.__name__ for layer in LAYERS for c in layer.plain_types)
                raise TypeError(f"{path or 'the model'} ({type(m).__name__}) has parameters but no simplex layer "
                                f"(supported: {names}); pass shared=[{path!r}] to keep it as one shared copy")
            continue
        cls.check_plain(m, path or "the model")
        prefix = f"{path}." if path else ""
        for n, t in own:
            if id(t) in seen:
                raise ValueError(f"{prefix}{n} is the same tensor as {seen[id(t)]} (tied weights are not "
                                 "supported as vertices); list one of the modules in shared=")
            seen[id(t)] = prefix + n
            tensors[prefix + n] = t
        replace.append((path, cls(m, evaluation, prefix)))
    if not tensors:
        raise ValueError("the model has no parameters in supported layers to make vertices of")
    dtypes = {(t.dtype, t.device) for t in tensors.values()}
    if len(dtypes) > 1:
        raise TypeError(f"all vertex parameters must share one dtype and device, got {sorted(map(str, dtypes))}")
    store = VertexStore(tensors)
    for path, layer in replace:
        layer.train(model.training)
        if not path:
            module = layer
        else:
            _replace_submodule(module, path, layer)
    arch = architecture if architecture is not None else getattr(model, "simplexkern_architecture", None)
    out = SimplexModel(module, store, evaluation, sorted(shared), arch)
    out.train(model.training)
    for _ in range(n_vertices - 1):
        out.add_vertex(init, noise)
    return out
