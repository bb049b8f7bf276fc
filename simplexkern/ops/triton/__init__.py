"""Triton kernels, one family per module: vertex_matmul, vertex_input_grad and
vertex_weight_grad (simplex_linear), conv_forward, conv_input_grad and conv_weight_grad
(simplex_conv2d, implicit GEMM; tile helpers in _tiles), combine (whole-store combination),
pairwise_sqdist (distances between vertices)."""
