"""simplex_conv2d: every backend against the per-point ``reference`` loop, forward and
forward+backward, over the convolutions of VGG16 and ResNet-18 on CIFAR (32 x 32 inputs).

k = 4 vertices, 1 of them trainable (as when SPRO grows one vertex), S = 5 points; every
layer takes one input per point except the first, whose input all points share.
- GPU: full width, batch 128, bfloat16, channels-last.
- CPU: quarter width, batch 16, float32, NCHW; ``torch_grouped`` / ``torch_loop`` force the
  torch backend's two CPU strategies, to check the choice ``auto`` makes.

``SimplexConv2dNetwork`` times all of a network's convolutions one after another (each
forward, or forward and backward, on its own input); ``SimplexConv2dLayer`` times the
distinct layers one by one (GPU).
"""

import torch

from simplexkern.ops import conv_torch, simplex_conv2d

# (in, out, input size, kernel, stride, count)
NETWORKS = {
    "vgg16": [
        (3, 64, 32, 3, 1, 1),
        (64, 64, 32, 3, 1, 1),
        (64, 128, 16, 3, 1, 1),
        (128, 128, 16, 3, 1, 1),
        (128, 256, 8, 3, 1, 1),
        (256, 256, 8, 3, 1, 2),
        (256, 512, 4, 3, 1, 1),
        (512, 512, 4, 3, 1, 2),
        (512, 512, 2, 3, 1, 3),
    ],
    "resnet18": [
        (3, 64, 32, 3, 1, 1),
        (64, 64, 32, 3, 1, 4),
        (64, 128, 32, 3, 2, 1),
        (64, 128, 32, 1, 2, 1),
        (128, 128, 16, 3, 1, 3),
        (128, 256, 16, 3, 2, 1),
        (128, 256, 16, 1, 2, 1),
        (256, 256, 8, 3, 1, 3),
        (256, 512, 8, 3, 2, 1),
        (256, 512, 8, 1, 2, 1),
        (512, 512, 4, 3, 1, 3),
    ],
}
LAYERS = {
    f"{net}:{c_in}-{c_out}@{size}k{kernel}s{stride}": (c_in, c_out, size, kernel, stride)
    for net, layers in NETWORKS.items()
    for c_in, c_out, size, kernel, stride, _ in layers
}
K, S, TRAINABLE = 4, 5, [3]
IMPLEMENTATIONS = ["reference", "torch", "triton", "auto", "torch_grouped", "torch_loop"]


def _sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


class _Conv:
    """One convolution's operands; ``run(backward)`` calls it."""

    def __init__(self, c_in, c_out, size, kernel, stride, device, gen):
        gpu = device == "cuda"
        if not gpu:
            c_in, c_out = (c_in if c_in == 3 else c_in // 4), c_out // 4
        batch, dtype = (128, torch.bfloat16) if gpu else (16, torch.float32)
        layout = torch.channels_last if gpu else torch.contiguous_format
        shared = c_in == 3
        x = torch.randn(*(() if shared else (S,)), batch, c_in, size, size, device=device, dtype=dtype, generator=gen)
        if gpu:
            x = x.contiguous(memory_format=layout) if shared else x.movedim(2, -1).contiguous().movedim(-1, 2)
        self.x = x.requires_grad_(not shared)
        self.weight = (
            torch.randn(K, c_out, c_in, kernel, kernel, device=device, dtype=dtype, generator=gen)
            / (c_in * kernel**2) ** 0.5
        ).requires_grad_(True)
        self.bias = torch.zeros(K, c_out, device=device, dtype=dtype, requires_grad=True)
        self.coeffs = torch.rand(S, K, device=device, generator=gen)
        self.coeffs /= self.coeffs.sum(-1, keepdim=True)
        self.conv = dict(stride=stride, padding=kernel // 2)
        with torch.no_grad():
            self.dy = torch.randn_like(self.forward(None))

    def forward(self, backend):
        return simplex_conv2d(
            self.x, self.weight, self.bias, self.coeffs, **self.conv, trainable=TRAINABLE, backend=backend
        )

    def run(self, backend, backward):
        if not backward:
            with torch.no_grad():
                return self.forward(backend)
        for t in (self.weight, self.bias, self.x):  # as after optimizer.zero_grad(): no accumulation
            t.grad = None
        self.forward(backend).backward(self.dy)


class _Bench:
    timeout = 1200

    def _setup(self, implementation, device, layers):
        if device == "cuda" and not torch.cuda.is_available():
            raise NotImplementedError("no CUDA device")
        if implementation == "triton" and device == "cpu":
            raise NotImplementedError("triton runs on the GPU (the CPU interpreter is for tests)")
        if implementation.startswith("torch_") and device != "cpu":
            raise NotImplementedError("the torch backend's strategy choice is a CPU matter")
        gen = torch.Generator(device=device).manual_seed(0)
        self.device = device
        self.convs = [_Conv(*layer, device, gen) for layer in layers]
        self.backend = {"auto": None}.get(implementation, implementation.split("_")[0])
        self.grouped = {"torch_grouped": True, "torch_loop": False}.get(implementation)

    def _run(self, backward):
        original = conv_torch.grouped_on_cpu
        if self.grouped is not None:
            conv_torch.grouped_on_cpu = lambda *a: self.grouped
        try:
            for conv in self.convs:
                conv.run(self.backend, backward)
        finally:
            conv_torch.grouped_on_cpu = original
        _sync(self.device)

    def time_forward(self, *params):
        self._run(False)

    def time_forward_backward(self, *params):
        self._run(True)


class SimplexConv2dNetwork(_Bench):
    params = (IMPLEMENTATIONS, ["cpu", "cuda"], list(NETWORKS))
    param_names = ["implementation", "device", "network"]

    def setup(self, implementation, device, network):
        layers = [layer[:5] for layer in NETWORKS[network] for _ in range(layer[5])]
        self._setup(implementation, device, layers)


class SimplexConv2dLayer(_Bench):
    params = (IMPLEMENTATIONS[:4], ["cuda"], list(LAYERS))
    param_names = ["implementation", "device", "layer"]

    def setup(self, implementation, device, layer):
        self._setup(implementation, device, [LAYERS[layer]])


class SimplexConv2dMemory(SimplexConv2dNetwork):
    """Peak GPU memory of the network's convolutions, forward and backward (GPU only)."""

    params = (IMPLEMENTATIONS[:4], ["cuda"], list(NETWORKS))

    def track_peak_gpu_memory_mb(self, implementation, device, network):
        self._run(True)  # warm-up: Triton's autotuning allocates buffers of its own once
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        self._run(True)
        return (torch.cuda.max_memory_allocated() - base) / 2**20

    track_peak_gpu_memory_mb.unit = "MiB"
