"""simplex_linear: every backend against the per-point ``reference`` loop, forward and
forward+backward, plus the plain ``nn.Linear`` floor for the compute-bound case.

Shapes (k = 4 vertices, 1 of them trainable, as when SPRO grows one vertex):
- ``weight_bound``: S = 5 points, 4096 x 4096, batch 16 and 64, bfloat16 (GPU);
  1024 x 1024, float32 (CPU);
- ``compute_bound``: S = 1 point, 4096 x 4096, batch 8192, bfloat16 (GPU); 1024 x 1024,
  batch 1024, float32 (CPU). ``plain_linear`` is nn.Linear at that size.
"""

import torch

import simplexkern.ops as ops

CASES = {
    # name: (S, batch, features on GPU, features on CPU, batch on CPU)
    "weight_bound_b16": (5, 16, 4096, 1024, 16),
    "weight_bound_b64": (5, 64, 4096, 1024, 64),
    "compute_bound_b8192": (1, 8192, 4096, 1024, 1024),
}


def _sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


class SimplexLinear:
    params = (["reference", "torch", "triton", "auto", "plain_linear"], ["cpu", "cuda"], list(CASES))
    param_names = ["implementation", "device", "case"]
    timeout = 600

    def setup(self, implementation, device, case):
        if device == "cuda" and not torch.cuda.is_available():
            raise NotImplementedError("no CUDA device")
        if implementation == "triton" and device == "cpu":
            raise NotImplementedError("triton runs on the GPU (the CPU interpreter is for tests)")
        S, batch, features, cpu_features, cpu_batch = CASES[case]
        if implementation == "plain_linear" and S != 1:
            raise NotImplementedError("the nn.Linear floor is for the single-point case")
        if device == "cpu":
            features, batch = cpu_features, cpu_batch
        dtype = torch.bfloat16 if device == "cuda" else torch.float32
        gen = torch.Generator(device=device).manual_seed(0)
        k = 4
        self.device = device
        self.weight = torch.randn(k, features, features, device=device, dtype=dtype, generator=gen) / features**0.5
        self.weight.requires_grad_(True)
        self.bias = torch.zeros(k, features, device=device, dtype=dtype, requires_grad=True)
        self.coeffs = torch.rand(S, k, device=device, generator=gen)
        self.coeffs /= self.coeffs.sum(-1, keepdim=True)
        self.x = torch.randn(batch, features, device=device, dtype=dtype, generator=gen, requires_grad=True)
        self.dy = torch.randn(S, batch, features, device=device, dtype=dtype, generator=gen)
        if implementation == "plain_linear":
            self.linear = torch.nn.Linear(features, features, device=device, dtype=dtype)
            self.fn = lambda: self.linear(self.x)[None]
        else:
            backend = None if implementation == "auto" else implementation
            self.fn = lambda: ops.simplex_linear(
                self.x, self.weight, self.bias, self.coeffs, trainable=[3], backend=backend
            )

    def time_forward(self, implementation, device, case):
        with torch.no_grad():
            self.fn()
        _sync(self.device)

    def _forward_backward(self):
        for t in (self.weight, self.bias, self.x):  # as after optimizer.zero_grad(): no accumulation
            t.grad = None
        self.fn().backward(self.dy)

    def time_forward_backward(self, implementation, device, case):
        self._forward_backward()
        _sync(self.device)


class SimplexLinearMemory(SimplexLinear):
    """Peak GPU memory of one forward+backward (GPU only)."""

    params = (SimplexLinear.params[0], ["cuda"], list(CASES))

    def track_peak_gpu_memory_mb(self, implementation, device, case):
        self._forward_backward()  # warm-up: Triton's autotuning allocates buffers of its own once
        for t in (self.weight, self.bias, self.x):
            t.grad = None
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        self.fn().backward(self.dy)  # peak above the inputs: activations, workspaces and the gradients
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20

    track_peak_gpu_memory_mb.unit = "MiB"
