"""A real-size simplex training step against the plain network doing the same arithmetic, in
one run: where weight traffic, not Python, sets the cost.

A step: forward at S points of a simplex of k vertices, the mean cross-entropy, backward and
an SGD step (momentum 0.9, weight decay 5e-4). Networks: torchvision's ResNet-18 (10
classes) and the VGG16 layout with BatchNorm.

- CPU (one thread): S = 3, k = 3 with two trainable vertices (``trainable=2``, as a curve
  or a simplex grown two vertices at once) or one (``trainable=1``: the SPRO / ESPRO step);
  ResNet-18 on 64x64 images, batch 8; VGG16-BN at half width on 32x32 images, batch 16.
- GPU: S = 5, k = 4 with the last trainable, full width, 32x32 images, batch 128.

Implementations: ``simplex`` (a SimplexModel, eager), ``compiled`` (its loss under
``torch.compile``; GPU only), ``graphed`` (the whole step captured once in a CUDA graph and
replayed), ``reference`` (the same model on the reference backend) and ``plain`` (the floor:
the plain network's step at batch S x B). ``track_gpu_memory``: the step's peak GPU memory
in MiB.
"""

import torch
import torch.nn.functional as F
import torchvision

import simplexkern as sk
from simplexkern import _checks

CPU = {"S": 3, "k": 3}
GPU = {"S": 5, "k": 4}


def _network(name, gpu):
    """(plain model, batch size, image size)."""
    if name == "resnet18":
        return torchvision.models.resnet18(num_classes=10), (128 if gpu else 8), (32 if gpu else 64)
    return sk.models.create("vgg16_bn", width=1.0 if gpu else 0.5), (128 if gpu else 16), 32


def graphed(step):
    """``step`` (no host reads, static tensors) captured once in a CUDA graph; returns its replay."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up outside the capture: allocator pools, autotuning, lazy state
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    return graph.replay


class RealStep:
    params = (
        ["simplex", "compiled", "graphed", "reference", "plain"],
        ["cpu", "cuda"],
        ["resnet18", "vgg16_bn"],
        [2, 1],
    )
    param_names = ["implementation", "device", "network", "trainable"]
    timeout = 900

    def setup(self, implementation, device, network, trainable):
        gpu = device == "cuda"
        if gpu and not torch.cuda.is_available():
            raise NotImplementedError("no CUDA device")
        if gpu and trainable != 1:
            raise NotImplementedError("the GPU configuration trains one vertex")
        if not gpu and implementation in ("compiled", "graphed"):
            raise NotImplementedError("GPU only")
        if not gpu:
            torch.set_num_threads(1)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        torch.manual_seed(0)
        cfg = GPU if gpu else CPU
        self.S, self.device = cfg["S"], device
        plain, batch, size = _network(network, gpu)
        plain = plain.to(device).train()
        gen = torch.Generator(device=device).manual_seed(0)
        self.x = torch.randn(batch, 3, size, size, device=device, generator=gen)
        self.y = torch.randint(0, 10, (batch,), device=device, generator=gen)
        # finite by construction, as the training loop marks its sampled points: no host read per step (which a
        # CUDA graph capture would refuse)
        self.coeffs = _checks.known_finite(sk.geometry.sample_simplex(self.S, cfg["k"], gen, device=device))
        if implementation == "plain":
            self.model, self.x, self.y = plain, self.x.repeat(self.S, 1, 1, 1), self.y.repeat(self.S)
            loss = self._plain_loss
        else:
            self.model = sk.simplexify(plain, cfg["k"], noise=0.01)
            for i in range(cfg["k"] - trainable):
                self.model.fix(i)
            self.model.backend = "reference" if implementation == "reference" else None
            loss = torch.compile(self._simplex_loss) if implementation == "compiled" else self._simplex_loss
        self.loss, self.keep_grads = loss, implementation == "graphed"
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
        self.step = self._step
        self.step()  # momentum buffers exist from here on
        if implementation == "graphed":
            self.step = graphed(self._step)

    def _plain_loss(self):
        return F.cross_entropy(self.model(self.x), self.y)

    def _simplex_loss(self):
        return F.cross_entropy(self.model(self.x, self.coeffs).flatten(0, 1), self.y.repeat(self.S))

    def _step(self):
        self.optimizer.zero_grad(set_to_none=not self.keep_grads)  # a graph replays into gradients kept allocated
        self.loss().backward()
        self.optimizer.step()

    def time_step(self, *params):
        self.step()
        if self.device == "cuda":
            torch.cuda.synchronize()

    def track_gpu_memory(self, *params):
        if self.device != "cuda":
            raise NotImplementedError("GPU only")
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        self.step()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() / 2**20

    track_gpu_memory.unit = "MiB"
