"""λ_v, the strength of SPRO's volume regulariser -λ_v log V for each new vertex.
``reg_scale`` sets it from ``reg`` = λ:

- "none" (default): λ_v = λ. The gradient of -λ log V with respect to the new vertex is
  -λ h / |h|^2, h its height above the affine hull of the others: a push of strength λ / |h|
  away from that hull, the same for every architecture, vertex count and data set.
  The push never weakens, so a new vertex drifts until the training loss stops it: the
  default λ = 0.1 keeps one simplex's points as good as its mode (at λ = 1 the vertices of
  digits' MLP end 1.4 |mode| away and its points generalise worse; README, "One simplex").
- "random": the paper's normalisation (its eq. A.3), λ_v = λ / log V(K̃_v), K̃_v a complex
  of the same structure whose vertices are fresh random initialisations of the
  architecture. Unlike the published code it uses log V (not log(V² + 1e-4), about 2 log V)
  and raises ValueError when log V(K̃_v) <= 0 (the published max(λ_v, 1e-8) silently turns
  the regulariser off there).
"""

import torch

from simplexkern import geometry
from simplexkern._seeds import seeded

REG_SCALES = ("none", "random")


def random_vertices(model, n_vertices, seed):
    """(n_vertices, P) fresh random initialisations of the model's architecture (each
    layer's own ``reset_parameters``), drawn from ``seed``."""
    with seeded(seed), torch.no_grad():
        like = model.store.vertices()[0]
        return torch.stack([model.random_vertex(like) for _ in range(n_vertices)])


def random_log_volume(model, n_vertices, simplices, seed):
    """log V of a complex of the same structure as ``simplices`` over ``n_vertices``
    vertices, each a fresh random initialisation of the model's architecture (K̃)."""
    d = geometry.pairwise_sqdist(random_vertices(model, n_vertices, seed))
    if simplices is None:
        return float(geometry.log_volume(d))
    return float(torch.logsumexp(torch.stack([geometry.log_volume(d[list(s)][:, list(s)]) for s in simplices]), 0))


def reg_for_vertex(model, reg, reg_scale, n_vertices, simplices, seed):
    """λ_v for training vertex n_vertices - 1 (see this module's docstring)."""
    if reg_scale == "none" or reg == 0:
        return float(reg)
    log_v = random_log_volume(model, n_vertices, simplices, seed)
    if not log_v > 0:
        raise ValueError(
            f"reg_scale='random': a random complex of this architecture with {n_vertices} vertices has "
            f"log V = {log_v:.3g} <= 0, so λ / log V would not reward volume; use reg_scale='none'"
        )
    return reg / log_v
