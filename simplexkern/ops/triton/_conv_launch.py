"""Host-side helpers of the convolution kernels' launches: the problem's sizes, point strides
and the dot precision."""

import torch

from simplexkern.ops._fused import output_size
from simplexkern.ops.triton._config import dot_precision


def precision(dtype):
    return dot_precision(dtype, allow_tf32=torch.backends.cudnn.allow_tf32)  # as F.conv2d


def point_strides(t):
    """(point, b, c, h, w) strides of a (B, C, H, W) shared tensor (point stride 0) or an (S, B, C, H, W) one."""
    return (0, *t.stride()) if t.dim() == 4 else t.stride()


def conv_shape(x, weight, conv):
    """B, C, H, W, O, Cg, KH, KW, OH, OW, G and (stride, padding, dilation) flattened."""
    stride, padding, dilation, G = conv
    B, C, H, W = x.shape[-4:]
    O, Cg, KH, KW = weight.shape[1:]
    OH, OW = output_size((H, W), (KH, KW), stride, padding, dilation)
    return B, C, H, W, O, Cg, KH, KW, OH, OW, G, (*stride, *padding, *dilation)
