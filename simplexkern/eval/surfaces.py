"""The loss surface around trained points: profiles along a curve (and along the straight
segment between its ends), and the loss / error on the plane through three points (SPEC
§6, §8). Every point of a profile or a plane is a coefficient vector over the model's
vertices, so many points are evaluated in one multi-point forward."""

import math
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike

from simplexkern import _checks, geometry
from simplexkern.data.dataset import Dataset, check_dataset
from simplexkern.eval.predict import split_metrics
from simplexkern.nn.convert import simplexify
from simplexkern.nn.model import SimplexModel
from simplexkern.nn.samplers import CurveSampler


def metrics_at(
    model: SimplexModel, coeffs: torch.Tensor, data: Dataset, *, batch_size: int = 256, points_per_pass: int = 64
) -> dict[str, np.ndarray]:
    """Train and test loss / error of each point ``coeffs`` (S, k) of a simplex model on
    ``data``: a dict of (S,) NumPy arrays "train_loss", "train_error", "test_loss",
    "test_error" (BatchNorm statistics recomputed per point from the training inputs)."""
    check_dataset(data)
    out = {}
    splits = {split: (getattr(data, f"x_{split}"), getattr(data, f"y_{split}")) for split in ("train", "test")}
    for start in range(0, len(coeffs), points_per_pass):
        values = split_metrics(
            model,
            coeffs[start : start + points_per_pass],
            splits,
            task=data.task,
            bn_inputs=data.x_train,
            batch_size=batch_size,
            noise_std=data.observation_noise if data.task == "regression" else 1.0,
        )
        for split, m in values.items():
            for name, v in m.items():
                out.setdefault(f"{split}_{name}", []).append(v.numpy())
    return {k: np.concatenate(v) for k, v in out.items()}


def _summary(values, lengths):
    """min / max / mean over the t grid, and the mean weighted by arc length (the trapezoid
    rule over the grid's segments of lengths ``lengths``)."""
    mids = (values[1:] + values[:-1]) / 2
    weighted = float((mids * lengths).sum() / lengths.sum()) if lengths.sum() > 0 else float(values.mean())
    return {
        "min": float(values.min()),
        "max": float(values.max()),
        "mean": float(values.mean()),
        "length_weighted": weighted,
    }


def _sqnorms(model, deltas):
    """|sum_i δ_i v_i|^2 in weight space for each row δ of ``deltas`` (n, k) (weights summing
    to 0: differences of points), exactly from the vertices' float64 distances D: -δᵀ D δ / 2."""
    d = geometry.pairwise_sqdist(model.store.vertices().detach()).cpu()
    deltas = deltas.detach().double().cpu()
    return (-0.5 * torch.einsum("ni,ij,nj->n", deltas, d, deltas)).clamp_min(0).numpy()


def _arc_lengths(model, coeffs):
    """Weight-space lengths |θ(c_{j+1}) - θ(c_j)| between consecutive points ``coeffs`` (n, k)."""
    return np.sqrt(_sqnorms(model, coeffs[1:] - coeffs[:-1]))


def curve_profile(curve: SimplexModel, data: Dataset, n_t: int = 21, *, batch_size: int = 256) -> dict[str, Any]:
    """Train loss / error and test loss / error along a trained curve at ``n_t`` evenly
    spaced t in [0, 1], and the same along the straight segment between its endpoints.

    Returns {"t": (n_t,), "curve": {metric: (n_t,)}, "segment": {metric: (n_t,)},
    "length": {"curve" | "segment": total arc length in weight space},
    "summary": {"curve" | "segment": {metric: {"min", "max", "mean", "length_weighted"}}}}
    ("length_weighted": the integral along the path by arc length over the path's length).
    """
    if not isinstance(curve, SimplexModel) or not isinstance(curve.sampler, CurveSampler):
        raise TypeError("curve must be a SimplexModel with a CurveSampler (from train_curve)")
    _checks.count(n_t, "n_t", minimum=2)
    t = torch.linspace(0, 1, n_t, dtype=torch.float64)
    k = curve.n_vertices
    segment = torch.zeros(n_t, k, dtype=torch.float64)
    segment[:, 0], segment[:, -1] = 1 - t, t
    coeffs = torch.cat([curve.sampler.coefficients(t, curve).cpu().double(), segment])
    values = metrics_at(curve, coeffs.to(curve.device, curve.dtype), data, batch_size=batch_size)
    out = {"t": t.numpy(), "curve": {}, "segment": {}, "length": {}, "summary": {"curve": {}, "segment": {}}}
    for name, rows in (("curve", slice(0, n_t)), ("segment", slice(n_t, 2 * n_t))):
        lengths = _arc_lengths(curve, coeffs[rows])
        out["length"][name] = float(lengths.sum())
        for metric, v in values.items():
            out[name][metric] = v[rows]
            out["summary"][name][metric] = _summary(v[rows], lengths)
    return out


def three_point_model(points):
    """A simplex model whose vertices are three plain models."""
    for i, p in enumerate(points):
        if isinstance(p, SimplexModel) or not isinstance(p, torch.nn.Module):
            raise TypeError(f"points[{i}] must be a plain torch.nn.Module (or pass model= and coefficients)")
    model = simplexify(points[0], 1)
    for i in (1, 2):
        model.add_vertex("copy", noise=0)
        model.set_vertex(i, points[i].state_dict())
    return model, torch.eye(3, dtype=model.dtype, device=model.device)


def plane_basis(model: SimplexModel, points: torch.Tensor) -> np.ndarray:
    """The plane through the three points ``points`` (3, k) of ``model``, in float64 from
    exact distances: B (2, 2) maps the affine weights (s, r) of p0 + s (p1 - p0) + r (p2 - p0)
    to orthonormal coordinates (x, y) (Gram-Schmidt: x along p1 - p0)."""
    a = points.detach().double().cpu()
    d01, d02, d12 = (float(v) for v in _sqnorms(model, torch.stack([a[1] - a[0], a[2] - a[0], a[2] - a[1]])))
    g12 = (d01 + d02 - d12) / 2
    h2 = d02 - g12**2 / d01 if d01 > 0 else 0.0
    if d01 <= 0 or h2 <= 1e-12 * max(d01, d02):
        raise ValueError("the three points are (nearly) on one line: they span no plane")
    return np.array([[math.sqrt(d01), g12 / math.sqrt(d01)], [0.0, math.sqrt(h2)]])


def loss_plane(
    points: list[torch.nn.Module] | tuple[torch.nn.Module, ...] | torch.Tensor | ArrayLike,
    data: Dataset,
    *,
    model: SimplexModel | None = None,
    grid: int = 21,
    margin: float = 0.2,
    batch_size: int = 256,
) -> dict[str, Any]:
    """Loss and error on the plane through three weight vectors (SPEC §8): centre c of the
    three points, Gram-Schmidt basis u, v, grid c + x u + y v over the points' extent
    widened by ``margin`` on each side.

    ``points``: three plain models of one architecture, or, with ``model`` (a SimplexModel),
    three coefficient vectors (3, k) over its vertices (e.g. the vertices of a simplex, or a
    curve's endpoints and its midpoint). Returns {"x": (G,), "y": (G,), "points": (3, 2)
    coordinates, "train_loss" | "train_error" | "test_loss" | "test_error": (G, G) indexed
    [y, x], "at_points": those four metrics at the three points themselves, (3,) each}.
    """
    _checks.number(margin, "margin", minimum=0)
    if model is None:
        if len(_checks.sequence(points, "points", "three plain models (or coefficient vectors with model=)")) != 3:
            raise ValueError("points must be three plain models (or three coefficient vectors with model=)")
        model, coeffs = three_point_model(points)
        coeffs = coeffs.double()
    else:
        if not isinstance(model, SimplexModel):
            raise TypeError(f"model must be a SimplexModel, got {type(model).__name__}")
        try:
            coeffs = torch.as_tensor(points, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(f"points must be 3 coefficient vectors of numbers, got {type(points).__name__}") from None
        if coeffs.shape != (3, model.n_vertices):
            raise ValueError(
                f"points must be 3 coefficient vectors, shape (3, {model.n_vertices}), got {tuple(coeffs.shape)}"
            )
    _checks.count(grid, "grid", minimum=2)
    basis = plane_basis(model, coeffs)
    corners = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]) - 1 / 3  # (s, r) of the points, centred
    xy = corners @ basis.T
    lo, hi = xy.min(0), xy.max(0)
    span = hi - lo
    xs = np.linspace(lo[0] - margin * span[0], hi[0] + margin * span[0], grid)
    ys = np.linspace(lo[1] - margin * span[1], hi[1] + margin * span[1], grid)
    if not (np.isfinite(xs).all() and np.isfinite(ys).all()):
        raise ValueError(f"margin {margin} makes the plane's extent overflow; use a smaller margin")
    gx, gy = np.meshgrid(xs, ys)  # [y, x]
    sr = np.linalg.solve(basis, np.stack([gx.ravel(), gy.ravel()])).T + 1 / 3
    weights = np.stack([1 - sr.sum(1), sr[:, 0], sr[:, 1]], 1)  # affine weights of the three points
    plane = torch.cat([torch.from_numpy(weights) @ coeffs.cpu(), coeffs.cpu()])  # the grid, then the points
    values = metrics_at(model, plane.to(model.device, model.dtype), data, batch_size=batch_size)
    out = {"x": xs, "y": ys, "points": xy}
    out.update({k: v[:-3].reshape(grid, grid) for k, v in values.items()})
    out["at_points"] = {k: v[-3:] for k, v in values.items()}
    return out
