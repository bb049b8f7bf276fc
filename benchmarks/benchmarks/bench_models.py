"""Whole simplex models, forward+backward, against the two baselines that bound them:

- ``reference``: the model built the way the published code trains one, S sequential
  forwards (one per sampled point, each combining its weights then running the layers),
  all S losses backpropagated together;
- ``plain``: the floor, the plain model's forward+backward at batch S x B (the same
  arithmetic with no vertices at all).

VGG16 (no BatchNorm) and ResNet-18 (torchvision, with BatchNorm, per-point statistics), k = 4
vertices of which 1 trainable (as when SPRO grows a vertex), S = 5 points, one shared input
batch, cross-entropy loss. GPU: batch 128, float32 (TF32 allowed). CPU: batch 4, float32.
"""

import torch
import torch.nn.functional as F
import torchvision

import simplexkern as sk

K, S = 4, 5
NETWORKS = {"vgg16": lambda: sk.models.create("vgg16"), "resnet18": lambda: torchvision.models.resnet18(num_classes=10)}
IMPLEMENTATIONS = ["reference", "torch", "triton", "auto", "plain"]


class SimplexModelStep:
    params = (IMPLEMENTATIONS, ["cpu", "cuda"], list(NETWORKS))
    param_names = ["implementation", "device", "network"]
    timeout = 1200

    def setup(self, implementation, device, network):
        if device == "cuda" and not torch.cuda.is_available():
            raise NotImplementedError("no CUDA device")
        if implementation == "triton" and device == "cpu":
            raise NotImplementedError("triton runs on the GPU (the CPU interpreter is for tests)")
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        torch.manual_seed(0)
        self.device, self.implementation = device, implementation
        batch = 128 if device == "cuda" else 4
        plain = NETWORKS[network]().to(device).train()
        gen = torch.Generator(device=device).manual_seed(0)
        self.x = torch.randn(batch, 3, 32, 32, device=device, generator=gen)
        self.y = torch.randint(0, 10, (batch,), device=device, generator=gen)
        if implementation == "plain":
            self.model = plain
            self.x, self.y = self.x.repeat(S, 1, 1, 1), self.y.repeat(S)
            return
        self.model = sk.simplexify(plain, K, noise=0.01)
        for i in range(K - 1):
            self.model.fix(i)
        self.model.backend = {"auto": None, "reference": "reference"}.get(implementation, implementation)
        self.coeffs = sk.geometry.sample_simplex(S, K, gen, device=device)

    def _loss(self):
        if self.implementation == "plain":
            return F.cross_entropy(self.model(self.x), self.y)
        if self.implementation == "reference":
            return sum(F.cross_entropy(self.model(self.x, c), self.y) for c in self.coeffs) / S
        out = self.model(self.x, self.coeffs)
        return F.cross_entropy(out.flatten(0, 1), self.y.repeat(S))

    def _sync(self):
        if self.device == "cuda":
            torch.cuda.synchronize()

    def time_forward(self, *params):
        with torch.no_grad():
            self._loss()
        self._sync()

    def time_forward_backward(self, *params):
        self.model.zero_grad(set_to_none=True)
        self._loss().backward()
        self._sync()
