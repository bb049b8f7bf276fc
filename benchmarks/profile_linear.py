"""CUDA kernel times of one simplex_linear forward+backward (torch profiler), to see where a
backend spends its time: python benchmarks/profile_linear.py [backend] [batch]"""
import sys

import torch

import simplexkern.ops as ops

backend = sys.argv[1] if len(sys.argv) > 1 else "triton"
batch = int(sys.argv[2]) if len(sys.argv) > 2 else 16
k, S, n = 4, 5, 4096
w = (torch.randn(k, n, n, device="cuda", dtype=torch.bfloat16) / n**0.5).requires_grad_(True)
b = torch.zeros(k, n, device="cuda", dtype=torch.bfloat16, requires_grad=True)
c = torch.rand(S, k, device="cuda")
x = torch.randn(batch, n, device="cuda", dtype=torch.bfloat16, requires_grad=True)
dy = torch.randn(S, batch, n, device="cuda", dtype=torch.bfloat16)
for _ in range(3):
    ops.simplex_linear(x, w, b, c, trainable=[3], backend=backend).backward(dy)
torch.cuda.synchronize()
with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
    for _ in range(5):
        ops.simplex_linear(x, w, b, c, trainable=[3], backend=backend).backward(dy)
    torch.cuda.synchronize()
print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=12, max_name_column_width=60))
