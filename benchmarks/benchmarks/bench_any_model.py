"""A training step of models of every kind, simplex against plain, in one run: the cost of the
generic path beside the fused one.

- ``resnet18``: torchvision's ResNet-18 (with BatchNorm): every parameter in a fused layer.
- ``vit``: torchvision's VisionTransformer: ``nn.MultiheadAttention``'s input projection, the
  class token, the positions and the LayerNorms take the generic path; the MLPs and the
  attention's output projection are fused Linears.
- ``gpt``: ``simplexkern.models.Transformer`` as a language model (nanoGPT's layout: Linear
  attention, positions from ``torch.arange``, head tied to the token embedding): fused Linear
  and Embedding, generic LayerNorms.

A step: forward at S = 5 points of a simplex of k = 4 vertices (the last trainable), the
mean cross-entropy, backward and an SGD step. Implementations: ``simplex`` (a SimplexModel),
``loop`` (the published training loop: per point, the weights combined from the vertices and
one plain forward) and ``plain`` (the floor: the plain model's step at batch S x B). CPU: small
widths, batch 4; GPU: ResNet-18 batch 128, ViT-S/4 batch 128, a 6-layer GPT of width 384 on
16 sequences of 256 tokens.
"""

import torch
import torch.nn.functional as F
import torchvision
from torchvision.models.vision_transformer import VisionTransformer

import simplexkern as sk

from .published import PublishedLoop

K, S = 4, 5


def _network(name, gpu):
    """(plain model, a batch of inputs and targets)."""
    if name == "resnet18":
        batch = 128 if gpu else 4
        return (
            torchvision.models.resnet18(num_classes=10),
            torch.randn(batch, 3, 32, 32),
            torch.randint(0, 10, (batch,)),
        )
    if name == "vit":
        batch = 128 if gpu else 4
        width, depth, heads, patch = (384, 6, 6, 4) if gpu else (64, 2, 4, 8)
        model = VisionTransformer(32, patch, depth, heads, width, 4 * width, num_classes=10)
        return model, torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))
    batch, length, width, depth, heads = (16, 256, 384, 6, 6) if gpu else (4, 64, 64, 2, 4)
    model = sk.models.Transformer(length=length, vocab_size=512, dim=width, depth=depth, heads=heads)
    tokens = torch.randint(0, 512, (batch, length + 1))
    return model, tokens[:, :-1], tokens[:, 1:]


def _loss(out, y):
    return F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))


class AnyModelStep:
    params = (["simplex", "loop", "plain"], ["cpu", "cuda"], ["resnet18", "vit", "gpt"])
    param_names = ["implementation", "device", "network"]
    timeout = 900

    def setup(self, implementation, device, network):
        if device == "cuda" and not torch.cuda.is_available():
            raise NotImplementedError("no CUDA device")
        if device == "cpu":
            torch.set_num_threads(1)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        torch.manual_seed(0)
        self.device, self.implementation = device, implementation
        plain, x, y = _network(network, device == "cuda")
        plain, self.x, self.y = plain.to(device).train(), x.to(device), y.to(device)
        self.coeffs = sk.geometry.sample_simplex(S, K, torch.Generator().manual_seed(0)).to(device)
        if implementation == "plain":
            self.model = plain
            self.x, self.y = self.x.repeat(S, *[1] * (x.dim() - 1)), self.y.repeat(S, *[1] * (y.dim() - 1))
            params = list(plain.parameters())
        elif implementation == "loop":
            self.loop = PublishedLoop(plain, K)
            params = self.loop.parameters
        else:
            self.model = sk.simplexify(plain, K, noise=0.01)
            for i in range(K - 1):
                self.model.fix(i)
            params = list(self.model.parameters())
        self.optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=5e-4)
        self.time_step()  # momentum buffers, caches and the point evaluation's choice exist from here on

    def _loss(self):
        if self.implementation == "plain":
            return _loss(self.model(self.x), self.y)
        if self.implementation == "loop":
            return self.loop.loss(self.x, self.y, self.coeffs, _loss)
        out = self.model(self.x, self.coeffs)
        return _loss(out, self.y.expand(S, *self.y.shape))

    def time_step(self, *params):
        self.optimizer.zero_grad(set_to_none=True)
        self._loss().backward()
        self.optimizer.step()
        if self.device == "cuda":
            torch.cuda.synchronize()
