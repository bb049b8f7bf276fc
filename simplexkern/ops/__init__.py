"""Fused simplex ops: layers whose weights are a combination of k stored vertices.

Backends: ``triton`` (fused kernels), ``torch`` (materialised weights + cuBLAS / cuDNN),
``reference`` (per-point loop); choose per call, with ``use_backend(...)`` or with
$SIMPLEXKERN_BACKEND.
"""

from simplexkern.ops.conv import simplex_conv2d
from simplexkern.ops.dispatch import BACKENDS, use_backend
from simplexkern.ops.linear import simplex_linear
from simplexkern.ops.vertices import combine

__all__ = ["BACKENDS", "use_backend", "simplex_linear", "simplex_conv2d", "combine"]
