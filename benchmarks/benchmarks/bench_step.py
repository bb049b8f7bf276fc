"""The whole simplex training step and ESPRO inference, against what bounds them, in one run:

- ``TrainingStep``: forward at H = S = 5 sampled points of a simplex of k = 4 vertices (the
  last trainable, as when SPRO grows a vertex), cross-entropy, backward and an SGD step
  (momentum 0.9, weight decay 5e-4). Implementations: ``simplex`` (a SimplexModel, backend
  auto), ``reference`` (the same model on the reference backend), ``loop`` (the published
  training loop: per point, the layer weights combined from the vertices and one plain
  forward, S forwards per step), ``compiled`` (the simplex model's loss under
  ``torch.compile``, Inductor; compilation happens in setup) and ``plain`` (the floor: the plain network's step at batch
  S x B, the same arithmetic without vertices).
- ``Inference``: M = 25 points of each of J simplexes on one batch. ``simplex`` (one
  multi-point forward per simplex), ``loop`` (plain forwards of the materialised points)
  and ``vmap`` (``torch.func.stack_module_state`` + ``vmap`` over the materialised points).

CPU: the VGG16 layout at 1/16 width (step, batch 2) and 1/8 width (inference, batch 64,
J = 1), one thread. GPU: full width, batch 128, J = 8.
"""

import torch
import torch.nn.functional as F

import simplexkern as sk

from .published import PublishedLoop

K, S, M = 4, 5, 25


def _net(network, device):
    width = 1.0 if device == "cuda" else 1 / 16
    return sk.models.create(network, width=width)


def _setup_device(device):
    if device == "cuda" and not torch.cuda.is_available():
        raise NotImplementedError("no CUDA device")
    if device == "cpu":
        torch.set_num_threads(1)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(0)


def _sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


class TrainingStep:
    params = (["simplex", "compiled", "reference", "loop", "plain"], ["cpu", "cuda"], ["vgg16", "vgg16_bn"])
    param_names = ["implementation", "device", "network"]
    timeout = 600

    def setup(self, implementation, device, network):
        _setup_device(device)
        self.device, self.implementation = device, implementation
        batch = 128 if device == "cuda" else 2
        plain = _net(network, device).to(device).train()
        gen = torch.Generator(device=device).manual_seed(0)
        self.x = torch.randn(batch, 3, 32, 32, device=device, generator=gen)
        self.y = torch.randint(0, 10, (batch,), device=device, generator=gen)
        self.coeffs = sk.geometry.sample_simplex(S, K, gen, device=device)
        if implementation == "plain":
            self.model, self.x, self.y = plain, self.x.repeat(S, 1, 1, 1), self.y.repeat(S)
            params = list(plain.parameters())
        elif implementation == "loop":
            self.loop = PublishedLoop(plain, K)
            params = self.loop.parameters
        else:
            self.model = sk.simplexify(plain, K, noise=0.01)
            for i in range(K - 1):
                self.model.fix(i)
            self.model.backend = "reference" if implementation == "reference" else None
            params = list(self.model.parameters())
            if implementation == "compiled":
                self._simplex_loss = torch.compile(self._simplex_loss)
        self.optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=5e-4)
        self.step()  # momentum buffers exist from here on

    def _loss(self):
        if self.implementation == "plain":
            return F.cross_entropy(self.model(self.x), self.y)
        if self.implementation == "loop":
            return self.loop.loss(self.x, self.y, self.coeffs, F.cross_entropy)
        return self._simplex_loss(self.x, self.y, self.coeffs)

    def _simplex_loss(self, x, y, coeffs):
        return F.cross_entropy(self.model(x, coeffs).flatten(0, 1), y.repeat(S))

    def step(self):
        self.optimizer.zero_grad(set_to_none=True)
        self._loss().backward()
        self.optimizer.step()

    def time_step(self, *params):
        self.step()
        _sync(self.device)

    def peakmem_step(self, *params):
        self.step()


class Inference:
    params = (["simplex", "loop", "vmap"], ["cpu", "cuda"])
    param_names = ["implementation", "device"]
    timeout = 600

    def setup(self, implementation, device):
        _setup_device(device)
        self.device, self.implementation = device, implementation
        batch, n_simplexes, width = (128, 8, 1.0) if device == "cuda" else (64, 1, 1 / 8)
        gen = torch.Generator(device=device).manual_seed(0)
        self.x = torch.randn(batch, 3, 32, 32, device=device, generator=gen)
        self.simplexes = []
        for _ in range(n_simplexes):
            model = sk.simplexify(sk.models.create("vgg16", width=width).to(device), K, noise=0.01).eval()
            for i in range(K):
                model.fix(i)
            self.simplexes.append((model, sk.geometry.sample_simplex(M, K, gen, device=device)))
        if implementation != "simplex":
            self.points = [model.at(c).eval() for model, cs in self.simplexes for c in cs]
        if implementation == "vmap":
            self.params, self.buffers = torch.func.stack_module_state(self.points)
            base = self.points[0]

            def one(params, buffers, x):
                return torch.func.functional_call(base, (params, buffers), (x,))

            self.forward = torch.func.vmap(one, in_dims=(0, 0, None))

    @torch.no_grad()
    def time_predict(self, *params):
        if self.implementation == "simplex":
            probs = sum(torch.softmax(model(self.x, cs), -1).mean(0) for model, cs in self.simplexes)
        elif self.implementation == "loop":
            probs = sum(torch.softmax(p(self.x), -1) for p in self.points)
        else:
            probs = torch.softmax(self.forward(self.params, self.buffers, self.x), -1).sum(0)
        _sync(self.device)
        return probs


class InferenceAtPoints:
    """Eval-mode prediction at M points of one simplex (VGG16 layout, k = 4 vertices, batch 64,
    one CPU thread) against the loop it replaces: per point, every weight combined from the
    vertices and one plain forward."""

    params = (["simplex", "loop"], [1, 5, 25], ["1/16", "1/8", "1/4"])
    param_names = ["implementation", "points", "width"]
    timeout = 600

    def setup(self, implementation, points, width):
        _setup_device("cpu")
        gen = torch.Generator().manual_seed(0)
        self.x = torch.randn(64, 3, 32, 32, generator=gen)
        numerator, denominator = (int(t) for t in width.split("/"))
        self.model = sk.simplexify(sk.models.create("vgg16", width=numerator / denominator), K, noise=0.01).eval()
        self.coeffs = sk.geometry.sample_simplex(points, K, gen)
        self.implementation = implementation
        if implementation == "loop":
            self.plain = self.model.at(self.coeffs[0]).eval()
            states = [self.model.vertex_state_dict(i) for i in range(K)]
            self.vertices = {n: torch.stack([s[n] for s in states]) for n in self.model.store.slots}

    @torch.no_grad()
    def time_predict(self, *params):
        if self.implementation == "simplex":
            return self.model(self.x, self.coeffs)
        return torch.stack(
            [
                torch.func.functional_call(
                    self.plain, {n: torch.einsum("k,k...->...", c, v) for n, v in self.vertices.items()}, (self.x,)
                )
                for c in self.coeffs
            ]
        )


class StepOps:
    """What a training step asks of the host (the ``TrainingStep`` CPU configuration): the aten
    ops it dispatches (forward, backward and optimizer) and the nodes of its autograd graph,
    simplex against the plain network at batch S x B."""

    params = (["simplex", "plain"], ["vgg16", "vgg16_bn"])
    param_names = ["implementation", "network"]

    def setup(self, implementation, network):
        self.bench = TrainingStep()
        self.bench.setup(implementation, "cpu", network)

    def track_aten_ops(self, *params):
        from torch.utils._python_dispatch import TorchDispatchMode

        class Count(TorchDispatchMode):
            n = 0

            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                Count.n += 1
                return func(*args, **(kwargs or {}))

        with Count():
            self.bench.step()
        return Count.n

    def track_autograd_nodes(self, *params):
        self.bench.optimizer.zero_grad(set_to_none=True)
        loss = self.bench._loss()
        seen, todo = set(), [loss.grad_fn]
        while todo:
            node = todo.pop()
            if node is None or node in seen:
                continue
            seen.add(node)
            todo.extend(next_fn for next_fn, _ in node.next_functions)
        loss.backward()
        return len(seen)
