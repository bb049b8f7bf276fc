"""Geometry computed the way the published research code does it: the baselines that
benchmarks and the demo measure ``simplexkern.geometry`` against. Slow, and
``pairwise_sqdist`` is float32 throughout; use ``simplexkern.geometry`` for real work."""

import numpy as np
import torch


def log_volume(sqdist):
    """log V of each simplex in an ``(N, n, n)`` numpy array: a Python loop building one
    bordered Cayley-Menger matrix per simplex and calling ``numpy.linalg.det``."""
    n = sqdist.shape[-1]
    dim = n - 1
    b = np.ones((n + 1, n + 1))
    b[0, 0] = 0.0
    scale = (-1) ** (dim + 1) / (2**dim * float(np.prod(np.arange(1, dim + 1))) ** 2)
    out = np.empty(len(sqdist))
    for i, d in enumerate(sqdist):
        b[1:, 1:] = d
        v2 = scale * np.linalg.det(b)
        out[i] = 0.5 * np.log(v2) if v2 > 0 else -np.inf
    return out


def pairwise_sqdist(vertices):
    """``(n, D)`` vertices -> ``(n, n)`` squared distances, a float32 loop over pairs."""
    n = vertices.shape[0]
    out = torch.zeros(n, n, device=vertices.device)
    for i in range(n):
        for j in range(i + 1, n):
            out[i, j] = out[j, i] = (vertices[i] - vertices[j]).pow(2).sum()
    return out
