"""Where a SimplexModel's forward evaluates when no coefficients are given.

A sampler maps ``(n_samples, model)`` to coefficients ``(n_samples, k)`` over the model's
vertices (vertex order). Simplexes, complexes and curves all share the one model; only the
sampler differs. ``config()`` / ``from_config`` make samplers part of a checkpoint.
"""

from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import torch
from numpy.typing import ArrayLike

from simplexkern import _checks, geometry


class SampledModel(Protocol):
    """What a sampler reads of the model it samples for (a SimplexModel)."""

    @property
    def n_vertices(self) -> int: ...

    @property
    def device(self) -> torch.device: ...

    @property
    def dtype(self) -> torch.dtype: ...

    def log_volume(self, simplices: Sequence[Iterable[int]] | None = None, *, check: bool = True) -> torch.Tensor: ...


def vertex_tuple(simplex: Any, name: str) -> tuple[int, ...]:
    """``simplex`` (an iterable of distinct vertex indices) as a tuple, checked; ``name`` names it in errors."""
    if isinstance(simplex, (str, bytes)) or not hasattr(simplex, "__iter__"):
        raise TypeError(f"{name} must be a tuple of vertex indices, got {simplex!r}")
    items = tuple(simplex)
    for i in items:
        _checks.count(i, f"{name} entries", minimum=0)
    if len(set(items)) != len(items) or not items:
        raise ValueError(f"{name} must list distinct vertex indices, got {items}")
    return items


class Sampler:
    """Where a model's forward evaluates when no coefficients are given: ``sample`` gives
    (n_samples, k) coefficients over the model's vertices, ``config`` describes the sampler."""

    name: str | None = None

    def sample(
        self, n_samples: int | None, model: SampledModel, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        return {"name": self.name}

    def _out(self, model, n_samples):
        n = 1 if n_samples is None else _checks.count(n_samples, "n_samples")
        return n, model.n_vertices


class SimplexSampler(Sampler):
    """Uniform on the simplex of all the model's vertices (Dirichlet(1))."""

    name = "simplex"

    def sample(
        self, n_samples: int | None, model: SampledModel, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        n, k = self._out(model, n_samples)
        return geometry.sample_simplex(n, k, generator, device=model.device, dtype=model.dtype)


class ComplexSampler(Sampler):
    """A simplicial complex: ``simplices`` is a list of vertex-index tuples. Each sample picks
    a simplex, proportional to its volume (``weighting="volume"``, a uniform distribution over
    the complex; all must have the same dimension) or uniformly (``"uniform"``), then a uniform
    point inside it."""

    name = "complex"

    def __init__(self, simplices: Iterable[Iterable[int]], weighting: str = "volume") -> None:
        if isinstance(simplices, (str, bytes)) or not hasattr(simplices, "__iter__"):
            raise TypeError(f"simplices must be a list of vertex-index tuples, got {simplices!r}")
        self.simplices = [vertex_tuple(s, "each simplex") for s in simplices]
        if not self.simplices:
            raise ValueError("simplices must not be empty")
        if weighting not in ("volume", "uniform"):
            raise ValueError(f"weighting must be 'volume' or 'uniform', got {weighting!r}")
        if weighting == "volume" and len({len(s) for s in self.simplices}) > 1:
            raise ValueError(
                "weighting='volume' needs simplices of one dimension (volumes of different "
                "dimensions do not compare); use weighting='uniform'"
            )
        self.weighting = weighting

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "simplices": [list(s) for s in self.simplices], "weighting": self.weighting}

    def probabilities(self, model: SampledModel) -> torch.Tensor:
        """(n_simplices,) float64 probability of picking each simplex, on the model's device
        (computed there: no host synchronisation)."""
        n = len(self.simplices)
        if self.weighting == "uniform" or n == 1:
            return torch.full((n,), 1 / n, dtype=torch.float64, device=model.device)
        with torch.no_grad():
            logv = model.log_volume(self.simplices, check=False).to(torch.float64)
        degenerate = torch.isneginf(logv).all()  # no volume to weigh by: uniform
        return torch.where(degenerate, torch.full_like(logv, 1 / n), torch.softmax(logv, 0))

    def membership(self, model: SampledModel) -> torch.Tensor:
        """(n_simplices, k) 0/1 matrix: which vertices each simplex has (made once per
        vertex count, device and dtype)."""
        key = (model.n_vertices, model.device, model.dtype)
        if getattr(self, "_membership", (None,))[0] != key:
            m = torch.zeros(len(self.simplices), model.n_vertices, dtype=model.dtype)
            for j, simplex in enumerate(self.simplices):
                m[j, list(simplex)] = 1
            self._membership = key, m.to(model.device)
        return self._membership[1]

    def sample(
        self, n_samples: int | None, model: SampledModel, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        n, k = self._out(model, n_samples)
        if max(max(s) for s in self.simplices) >= k:
            raise ValueError(f"the complex names vertex {max(max(s) for s in self.simplices)}, but the model has {k}")
        device = model.device if generator is None else generator.device
        pick = torch.multinomial(self.probabilities(model).to(device), n, replacement=True, generator=generator)
        # Dirichlet(1) on the picked simplex's face: normalised exponentials of its vertices only.
        e = torch.empty(n, k, dtype=model.dtype, device=device).exponential_(generator=generator)
        e = e * self.membership(model).to(device)[pick]
        return (e / e.sum(-1, keepdim=True)).to(model.device)


class CurveSampler(Sampler):
    """A curve over all the model's vertices as control points (in vertex order), at
    ``t ~ U(0, 1)``: ``kind="bezier"`` (Bernstein weights) or ``"polychain"`` (hat functions)."""

    name = "curve"

    def __init__(self, kind: str = "bezier") -> None:
        if kind not in ("bezier", "polychain"):
            raise ValueError(f"kind must be 'bezier' or 'polychain', got {kind!r}")
        self.kind = kind

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind}

    def coefficients(self, t: float | torch.Tensor, model: SampledModel) -> torch.Tensor:
        fn = geometry.bezier_coefficients if self.kind == "bezier" else geometry.polychain_coefficients
        return fn(t, model.n_vertices).to(model.device, model.dtype)

    def sample(
        self, n_samples: int | None, model: SampledModel, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        n, k = self._out(model, n_samples)
        t = torch.rand(
            n,
            generator=generator,
            dtype=torch.float64,
            device=generator.device if generator is not None else model.device,
        )
        # t is in [0, 1) by construction: the formulas without the checks (no host read)
        fn = geometry.bernstein if self.kind == "bezier" else geometry.hat_functions
        return fn(t, k).to(model.device, model.dtype)


class FixedSampler(Sampler):
    """Always the given point(s): ``coeffs`` (k,) or (S, k)."""

    name = "fixed"

    def __init__(self, coeffs: torch.Tensor | ArrayLike) -> None:
        coeffs = torch.as_tensor(coeffs, dtype=torch.float64) if not isinstance(coeffs, torch.Tensor) else coeffs
        _checks.floating(coeffs, "coeffs")
        _checks.finite(coeffs, "coeffs")
        if coeffs.dim() not in (1, 2) or coeffs.shape[-1] == 0:
            raise ValueError(f"coeffs must have shape (k,) or (S, k), got {tuple(coeffs.shape)}")
        self.coeffs = coeffs.detach().to("cpu", torch.float64).reshape(-1, coeffs.shape[-1]).clone()

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "coeffs": self.coeffs.tolist()}

    def sample(
        self, n_samples: int | None, model: SampledModel, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        if self.coeffs.shape[1] != model.n_vertices:
            raise ValueError(
                f"the fixed point has {self.coeffs.shape[1]} coefficients, the model {model.n_vertices} vertices"
            )
        if n_samples is not None and _checks.count(n_samples, "n_samples") != len(self.coeffs):
            if len(self.coeffs) != 1:
                raise ValueError(f"this fixed sampler holds {len(self.coeffs)} points; n_samples={n_samples}")
            return self.coeffs.expand(n_samples, -1).to(model.device, model.dtype, copy=True)
        return self.coeffs.to(model.device, model.dtype, copy=True)


def from_config(config: dict[str, Any]) -> Sampler:
    """The sampler a ``config()`` dict describes."""
    if not isinstance(config, dict) or "name" not in config:
        raise ValueError(f"a sampler config is a dict with a 'name', got {config!r}")
    name = config["name"]
    try:
        if name == "simplex":
            return SimplexSampler()
        if name == "complex":
            return ComplexSampler([tuple(s) for s in config["simplices"]], config["weighting"])
        if name == "curve":
            return CurveSampler(config["kind"])
        if name == "fixed":
            return FixedSampler(torch.tensor(config["coeffs"], dtype=torch.float64))
    except KeyError as err:
        raise ValueError(f"the {name!r} sampler config lacks the field {err.args[0]!r}: {config!r}") from None
    raise ValueError(f"unknown sampler {name!r}; expected simplex, complex, curve or fixed")


__all__ = [
    "SampledModel",
    "vertex_tuple",
    "Sampler",
    "SimplexSampler",
    "ComplexSampler",
    "CurveSampler",
    "FixedSampler",
    "from_config",
]
