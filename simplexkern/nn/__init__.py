"""Simplex layers and models: ``simplexify`` any PyTorch model into a ``SimplexModel`` whose
weights are a combination of k vertices kept in one vertex store."""
from simplexkern.nn.checkpoint import load as load_checkpoint
from simplexkern.nn.checkpoint import save as save_checkpoint
from simplexkern.nn.layers import (
    SimplexBatchNorm,
    SimplexConv1d,
    SimplexConv2d,
    SimplexEmbedding,
    SimplexGroupNorm,
    SimplexLayer,
    SimplexLayerNorm,
    SimplexLinear,
)
from simplexkern.nn.model import SimplexModel, simplexify
from simplexkern.nn.samplers import ComplexSampler, CurveSampler, FixedSampler, SimplexSampler
from simplexkern.nn.store import VertexStore

__all__ = ["SimplexModel", "simplexify", "save_checkpoint", "load_checkpoint", "VertexStore", "SimplexLayer",
           "SimplexLinear", "SimplexConv1d", "SimplexConv2d", "SimplexBatchNorm", "SimplexLayerNorm",
           "SimplexGroupNorm", "SimplexEmbedding", "SimplexSampler", "ComplexSampler", "CurveSampler", "FixedSampler"]
