"""Triton kernels, one family per module: combined_matmul (forward and input gradient of the
fused simplex layers), vertex_grad (vertex and coefficient gradients), combine (whole-store
combination), pairwise_sqdist (distances between vertices)."""
