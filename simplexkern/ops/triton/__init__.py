"""Triton kernels, one family per module: linear_forward, linear_input_grad and
linear_weight_grad (simplex_linear), conv_forward, conv_input_grad and conv_weight_grad
(simplex_conv2d, implicit GEMM; tile helpers in _tiles), combine (whole-store combination),
pairwise_sqdist (distances between vertices)."""
