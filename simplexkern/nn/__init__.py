"""Simplex layers and models: ``simplexify`` any PyTorch model into a ``SimplexModel`` whose
weights are a combination of k vertices kept in one vertex store."""

from simplexkern.nn.batchnorm import SimplexBatchNorm
from simplexkern.nn.checkpoint import load as load_checkpoint
from simplexkern.nn.checkpoint import save as save_checkpoint
from simplexkern.nn.convert import simplexify
from simplexkern.nn.layers import SimplexConv1d, SimplexConv2d, SimplexEmbedding, SimplexLinear, SimplexRecurrent
from simplexkern.nn.model import SimplexModel
from simplexkern.nn.samplers import ComplexSampler, CurveSampler, FixedSampler, SimplexSampler
from simplexkern.nn.simplex_layer import SimplexLayer
from simplexkern.nn.store import VertexStore

__all__ = [
    "SimplexModel",
    "simplexify",
    "save_checkpoint",
    "load_checkpoint",
    "VertexStore",
    "SimplexLayer",
    "SimplexLinear",
    "SimplexConv1d",
    "SimplexConv2d",
    "SimplexBatchNorm",
    "SimplexEmbedding",
    "SimplexRecurrent",
    "SimplexSampler",
    "ComplexSampler",
    "CurveSampler",
    "FixedSampler",
]
