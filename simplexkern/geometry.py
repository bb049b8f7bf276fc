"""Geometry of simplexes of weights: sampling, curve coefficients, distances, volumes.

Volumes come from the compiled ops ``torch.ops.simplexkern.*`` (float64 inside, Gram form
with Cholesky, ``-inf`` for degenerate simplexes). A simplex of dimension dim has n = dim + 1
vertices (``k`` is the vertex count of the fused ops' stores); ``sqdist`` holds squared
Euclidean distances between them.
"""

import math

import torch

from simplexkern import _checks
from simplexkern.ops.triton._config import AVAILABLE as TRITON

__all__ = [
    "sample_simplex",
    "bezier_coefficients",
    "polychain_coefficients",
    "pairwise_sqdist",
    "cayley_menger_determinant",
    "log_volume",
    "simplex_log_volume",
]


# --------------------------------------------------------------------------- sampling


def sample_simplex(
    n_samples: int,
    n_vertices: int,
    generator: torch.Generator | None = None,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Draw ``n_samples`` points uniformly from the standard simplex with ``n_vertices`` corners.

    Dirichlet(1, .., 1) as normalised exponentials. Returns ``(n_samples, n_vertices)``
    non-negative coefficients whose rows sum to one, on ``device`` (default: the
    generator's device, else CPU).
    """
    n_samples = _checks.count(n_samples, "n_samples")
    n_vertices = _checks.count(n_vertices, "n_vertices")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating-point torch.dtype, got {dtype}")
    if device is None:
        device = generator.device if generator is not None else "cpu"
    e = torch.empty(n_samples, n_vertices, device=device, dtype=dtype).exponential_(generator=generator)
    return e / e.sum(-1, keepdim=True)


def _curve_parameter(t, name="t"):
    if isinstance(t, bool):
        raise TypeError(f"{name} must be a real number or a floating-point tensor, got bool")
    if isinstance(t, (int, float)):
        t = torch.tensor(float(t), dtype=torch.get_default_dtype())
    _checks.floating(t, name)
    _checks.finite(t, name)
    if bool(((t < 0) | (t > 1)).any()):
        raise ValueError(f"{name} must lie in [0, 1], got values in [{t.min().item()}, {t.max().item()}]")
    return t


def bezier_coefficients(t: float | torch.Tensor, n_points: int) -> torch.Tensor:
    """Bernstein weights ``C(n, i) t^i (1 - t)^(n - i)`` of a Bezier curve with ``n_points``
    control points (n = n_points - 1). ``t``: float or tensor ``(...)`` in [0, 1];
    returns ``(..., n_points)``, non-negative, summing to one."""
    return bernstein(_curve_parameter(t), _checks.count(n_points, "n_points"))


def bernstein(t: torch.Tensor, n_points: int) -> torch.Tensor:
    """``bezier_coefficients`` without argument checks (``t`` a tensor in [0, 1])."""
    n = n_points - 1
    i = torch.arange(n_points, device=t.device, dtype=torch.float64)
    binom = torch.exp(math.lgamma(n + 1) - torch.lgamma(i + 1) - torch.lgamma(n - i + 1)).round().to(t.dtype)
    i = i.to(t.dtype)
    t = t.unsqueeze(-1)
    return binom * t.pow(i) * (1 - t).pow(n - i)


def polychain_coefficients(t: float | torch.Tensor, n_points: int) -> torch.Tensor:
    """Hat-function weights ``max(0, 1 - |t n - i|)`` of a polygonal chain through
    ``n_points`` points (n = n_points - 1). ``t``: float or tensor ``(...)`` in [0, 1];
    returns ``(..., n_points)``, non-negative, summing to one."""
    return hat_functions(_curve_parameter(t), _checks.count(n_points, "n_points"))


def hat_functions(t: torch.Tensor, n_points: int) -> torch.Tensor:
    """``polychain_coefficients`` without argument checks (``t`` a tensor in [0, 1])."""
    i = torch.arange(n_points, device=t.device, dtype=t.dtype)
    return (1 - (t.unsqueeze(-1) * (n_points - 1) - i).abs()).clamp_min(0)


# --------------------------------------------------------------------------- distances


def _pairwise_sqdist_cuda(v):
    """The CUDA kernel of ``simplexkern::_pairwise_sqdist`` (its CPU kernel and its autograd
    are C++): the Triton kernel, or without Triton exact float64 differences a pair at a time."""
    if not TRITON:
        n = v.shape[-2]
        d = v.new_zeros(v.shape[0], n, n, dtype=torch.float64)
        for i in range(n):
            for j in range(i + 1, n):
                d[:, i, j] = d[:, j, i] = (v[:, i].double() - v[:, j].double()).square().sum(-1)
        return d
    from simplexkern.ops.triton.pairwise_sqdist import pairwise_sqdist

    v = v.contiguous()
    return torch.stack([pairwise_sqdist(store) for store in v])


_LIBRARY = torch.library.Library("simplexkern", "IMPL")
_LIBRARY.impl("_pairwise_sqdist", _pairwise_sqdist_cuda, "CUDA")


def pairwise_sqdist(vertices: torch.Tensor, *, check: bool = True) -> torch.Tensor:
    """``(..., n, D)`` vertices -> ``(..., n, n)`` squared distances, float64.

    Each entry is ``sum_d (v_i[d] - v_j[d])^2`` from differences taken in float64, so it is
    accurate for vertices that are close together relative to their norms (no
    ``|v_i|^2 + |v_j|^2 - 2 <v_i, v_j>`` cancellation). Differentiable. ``check=False``
    skips the finiteness check of the result (a host synchronisation).
    """
    _checks.floating(vertices, "vertices")
    if vertices.dim() < 2 or vertices.shape[-2] < 1:
        raise ValueError(f"vertices must have shape (..., n, D) with n >= 1, got {tuple(vertices.shape)}")
    n, dim = vertices.shape[-2:]
    if dim == 0 or vertices.numel() == 0:  # no coordinates (or no simplexes): nothing to measure
        return vertices.new_zeros(*vertices.shape[:-1], n, dtype=torch.float64)
    out = torch.ops.simplexkern._pairwise_sqdist(vertices.reshape(-1, n, dim)).reshape(*vertices.shape[:-2], n, n)
    # A NaN or inf coordinate makes every distance to its vertex non-finite, so checking the
    # (small) result checks the (large) input; a lone vertex has no distance to look at.
    if check and not bool(torch.isfinite(vertices.detach() if n == 1 else out.detach()).all()):
        raise ValueError("vertices must be finite, but they contain NaN or inf (or their distances overflow float64)")
    return out


# --------------------------------------------------------------------------- volumes


def _check_sqdist(sqdist):
    _checks.floating(sqdist, "sqdist")
    if sqdist.dim() < 2 or sqdist.shape[-1] != sqdist.shape[-2] or sqdist.shape[-1] < 1:
        raise ValueError(f"sqdist must have shape (..., n, n) with n >= 1, got {tuple(sqdist.shape)}")
    _checks.cuda_kernels(sqdist, "sqdist")
    return sqdist


def _check_rtol(sqdist):
    """Tolerance of the op's own validation (finite, >= 0, symmetric, zero diagonal),
    relative to each matrix's largest entry."""
    return 64 * torch.finfo(sqdist.dtype).eps


def cayley_menger_determinant(sqdist: torch.Tensor) -> torch.Tensor:
    """``(..., n, n)`` squared distances -> ``(...,)`` signed determinant of the bordered
    Cayley-Menger matrix ``[[0, 1^T], [1, D]]``. For the simplex of dimension dim = n - 1,
    ``V^2 = (-1)^(dim+1) det / (2^dim (dim!)^2)``. Differentiable."""
    return torch.ops.simplexkern.cayley_menger_determinant(_check_sqdist(sqdist), _check_rtol(sqdist))


def log_volume(sqdist: torch.Tensor, *, check: bool = True) -> torch.Tensor:
    """``(..., n, n)`` squared distances -> ``(...,)`` ``log V`` of the (n-1)-simplexes.

    Gram form ``G_ij = (d_0i + d_0j - d_ij) / 2``, ``log V = 1/2 logdet G - log dim!``, by a
    float64 Cholesky. A degenerate simplex (affinely dependent vertices, to the precision of
    the distances) gives ``-inf`` with a zero gradient, never NaN; distances that no
    Euclidean simplex has raise ValueError. Result in the input dtype. ``check=False``
    skips the validation of the matrices (and with it, on a GPU, a host synchronisation):
    bad matrices then give NaN.
    """
    return torch.ops.simplexkern.log_volume(_check_sqdist(sqdist), _check_rtol(sqdist) if check else math.nan)


def simplex_log_volume(vertices: torch.Tensor) -> torch.Tensor:
    """``(..., n, D)`` vertices -> ``(...,)`` float64 ``log V`` of the simplex they span."""
    return log_volume(pairwise_sqdist(vertices))
