"""The vertex store: every vertex of a model in one flat store.

Fixed vertices live in a buffer ``fixed`` (k_fixed, P) and trainable ones in a parameter
``trainable`` (k_trainable, P), so an optimizer built from ``model.parameters()`` never sees
a fixed vertex: weight decay and momentum cannot move it. Each layer's tensors are named slots, a
range of the P columns. Rows are ordered fixed first; ``order[r]`` is the vertex in row r.

Both are views of one (k, P) block of memory, fixed rows first, so that a layer's k vertices
are a view of it too (``layer_weights``): a forward copies no part of the store. Whatever
separates them (``Module.to``, loading a state) is undone at the next use (``_packed``).
"""

import math
from collections.abc import Collection, Mapping

import torch
from torch import nn

from simplexkern import _checks


class VertexStore(nn.Module):
    """``tensors``: name -> tensor, the content of vertex 0 (the store's only vertex)."""

    def __init__(self, tensors: Mapping[str, torch.Tensor]) -> None:
        super().__init__()
        self.slots, offset = {}, 0  # name -> (offset, shape), in registration order
        for name, t in tensors.items():
            self.slots[name] = (offset, tuple(t.shape))
            offset += t.numel()
        self.n_columns = offset
        first = next(iter(tensors.values()), torch.empty(0))
        flat = torch.cat([t.detach().reshape(-1).to(first) for t in tensors.values()]) if tensors else first
        self.register_buffer("fixed", flat.new_empty(0, self.n_columns))
        self.trainable = nn.Parameter(flat.clone()[None])
        self.register_buffer("order", torch.zeros(1, dtype=torch.long, device=flat.device))
        self._sizes = [math.prod(shape) for _, shape in self.slots.values()]

    @property
    def n_vertices(self) -> int:
        return self.fixed.shape[0] + self.trainable.shape[0]

    @property
    def n_fixed(self) -> int:
        return self.fixed.shape[0]

    def rows(self) -> torch.Tensor:
        """All rows, fixed first (differentiable w.r.t. ``trainable``): a view of the store."""
        if not self.n_fixed:
            return self.trainable
        if _traced():
            return torch.cat([self.fixed, self.trainable])
        return _Views.apply(self.trainable, self._packed(), self.n_fixed, [self.n_columns])[0]

    def _packed(self) -> torch.Tensor:
        """The (k, P) block that ``fixed`` and ``trainable`` are views of; first re-lays them
        into one when they are not (one copy, after ``Module.to`` or a load)."""
        block, fixed, trainable = self.__dict__.get("_block"), self.fixed, self.trainable
        if not (
            block is not None
            and block.shape == (self.n_vertices, self.n_columns)
            and block.dtype == trainable.dtype
            and block.device == trainable.device
            and _is_rows(fixed, block, 0)
            and _is_rows(trainable, block, self.n_fixed)
        ):
            self._pack(fixed, trainable.data)
        return self._block

    def _pack(self, fixed: torch.Tensor, trainable: torch.Tensor) -> None:
        """Makes ``fixed`` and ``trainable`` views of one new block holding these rows (the
        parameter object stays the same; a normal tensor even when the first use after ``to``
        is under torch.inference_mode)."""
        with torch.inference_mode(False):
            self._block = torch.cat([fixed, trainable])
            self.fixed, self.trainable.data = self._block[: len(fixed)], self._block[len(fixed) :]

    def vertices(self) -> torch.Tensor:
        """(k, P) in vertex order (differentiable w.r.t. ``trainable``)."""
        return self.rows()[self.inverse_order()]

    def inverse_order(self) -> torch.Tensor:
        return torch.argsort(self.order).to(self.trainable.device)

    def layer_weights(self, names: Collection[str] | None = None) -> dict[str, torch.Tensor]:
        """name -> (k, *shape) tensor in row order for the slots ``names`` (default all): views
        of the store (each vertex's part contiguous, the vertices P apart), differentiable
        w.r.t. ``trainable``; the backward is one gather of every slot's trainable rows into
        ``trainable.grad``. Under torch.compile or a torch.func transform: contiguous copies."""
        items = [(name, shape) for name, (_, shape) in self.slots.items()]
        if _traced():
            stores = [t.split(self._sizes, 1) for t in (self.fixed, self.trainable) if t.shape[0]]
            parts = [torch.cat(p) if len(stores) > 1 else p[0].contiguous() for p in zip(*stores)]
        else:  # without gradients (no_grad, frozen vertices) the same views, no graph
            parts = _Views.apply(self.trainable, self._packed(), self.n_fixed, self._sizes)
        return {
            name: w.view(w.shape[0], *shape) for w, (name, shape) in zip(parts, items) if names is None or name in names
        }

    def combine_columns(self, coeffs: torch.Tensor, start: int) -> torch.Tensor:
        """``coeffs`` (S, k) in row order times columns ``start:`` of the store -> (S, P - start),
        one GEMM per part of the store (no copy of it); differentiable w.r.t. ``trainable``."""
        parts = [(coeffs[:, : self.n_fixed], self.fixed), (coeffs[:, self.n_fixed :], self.trainable)]
        (c, rows), *rest = [(c, rows) for c, rows in parts if rows.shape[0]]
        out = c @ rows[:, start:]
        for c, rows in rest:
            out = torch.addmm(out, c, rows[:, start:])
        return out

    def slot(self, flat: torch.Tensor, name: str, start: int = 0) -> torch.Tensor:
        """The part of a flat (..., P) tensor that belongs to slot ``name``, shaped; ``flat``
        may hold the columns from ``start`` on only."""
        offset, shape = self.slots[name]
        offset -= start
        return flat[..., offset : offset + math.prod(shape)].reshape(*flat.shape[:-1], *shape)

    # ------------------------------------------------------------------ changes
    def _check_vertex(self, i, name="i"):
        i = _checks.count(i, name, minimum=0)
        if i >= self.n_vertices:
            raise ValueError(f"{name} must be a vertex index below {self.n_vertices}, got {i}")
        return i

    def _rebuild(self, vertices, fixed_mask):
        """Re-lays the store from (k, P) vertices in vertex order and a fixed mask. The
        parameter object stays the same (its data is swapped): rebuild optimizers after this."""
        fixed_idx = [i for i, f in enumerate(fixed_mask) if f]
        trainable_idx = [i for i, f in enumerate(fixed_mask) if not f]
        vertices = vertices.detach()
        order = torch.tensor(fixed_idx + trainable_idx, dtype=torch.long, device=self.order.device)
        self._pack(vertices[fixed_idx], vertices[trainable_idx])  # copies, both made before any is set
        self.trainable.grad, self.order = None, order

    def fixed_mask(self) -> list[bool]:
        mask = [False] * self.n_vertices
        for i in self.order[: self.n_fixed].tolist():
            mask[i] = True
        return mask

    def set_fixed(self, i: int, fixed: bool) -> None:
        i = self._check_vertex(i)
        mask = self.fixed_mask()
        if mask[i] != fixed:
            mask[i] = fixed
            self._rebuild(self.vertices(), mask)

    def append(self, vertex: torch.Tensor, fixed: bool = False) -> None:
        """Adds vertex k as the last fixed or trainable row: one copy of the store (rebuild
        optimizers after this)."""
        vertex = vertex.detach().to(self.trainable.dtype).reshape(1, self.n_columns)
        n_fixed, index = self.n_fixed, self.order.new_tensor([self.n_vertices])
        if fixed:
            self._pack(torch.cat([self.fixed, vertex]), self.trainable.data)
            order = torch.cat([self.order[:n_fixed], index, self.order[n_fixed:]])
        else:
            self._pack(self.fixed, torch.cat([self.trainable.data, vertex]))
            order = torch.cat([self.order, index])
        self.trainable.grad, self.order = None, order

    def vertex(self, i: int) -> torch.Tensor:
        """Vertex i's row of the store (a view, detached)."""
        i = self._check_vertex(i)
        row = int((self.order == i).nonzero())
        return self.fixed[row] if row < self.n_fixed else self.trainable.detach()[row - self.n_fixed]

    def mean(self, indices: list[int]) -> torch.Tensor:
        """(P,): the mean of the vertices ``indices``, by one product per part of the store (no copy of it)."""
        weights = torch.zeros(self.n_vertices, dtype=self.trainable.dtype, device=self.trainable.device)
        weights[indices] = 1 / len(indices)
        return self.combine_columns(weights[self.order][None], 0).detach()[0]

    def rms(self, name: str) -> torch.Tensor:
        """The root-mean-square of slot ``name`` over all vertices, in one pass over views."""
        offset, shape = self.slots[name]
        n = math.prod(shape)
        square = sum(
            torch.linalg.vector_norm(t.detach()[:, offset : offset + n]).square()
            for t in (self.fixed, self.trainable)
            if t.shape[0]
        )
        return (square / (self.n_vertices * n)).sqrt()

    def vertex_from(self, tensors: Mapping[str, torch.Tensor], i: int, name: str = "state_dict") -> torch.Tensor:
        """(P,): vertex i as a row of the store, from ``tensors`` (slot name -> tensor, e.g. a
        plain state dict), each slot checked for presence and shape (``name`` names ``tensors``
        in errors)."""
        flat = torch.empty(self.n_columns, dtype=self.trainable.dtype, device=self.trainable.device)
        for slot, (_, shape) in self.slots.items():
            if slot not in tensors:
                raise ValueError(f"{name} has no {slot!r}, which vertex {i} needs")
            t = tensors[slot]
            if tuple(t.shape) != shape:
                raise ValueError(f"{name}[{slot!r}] has shape {tuple(t.shape)}, the model expects {shape}")
            self.slot(flat, slot).copy_(t)
        return flat

    @torch.no_grad()
    def perturb(self, vertex: torch.Tensor, noise: float, generator: torch.Generator | None = None) -> None:
        """Adds Gaussian noise to ``vertex`` (P,) in place: in each slot, with standard deviation
        ``noise`` times the slot's root-mean-square value over the stored vertices."""
        for name in self.slots:
            part = self.slot(vertex, name)
            eps = torch.randn(
                part.shape,
                generator=generator,
                device=vertex.device if generator is None else generator.device,
                dtype=vertex.dtype,
            ).to(vertex.device)
            part.add_(noise * self.rms(name) * eps)  # a view into vertex

    @torch.no_grad()
    def set_vertex(self, i: int, vertex: torch.Tensor) -> None:
        self.vertex(i).copy_(vertex.reshape(-1))

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        if prefix + "free" in state_dict and prefix + "trainable" not in state_dict:  # its name in earlier checkpoints
            state_dict[prefix + "trainable"] = state_dict.pop(prefix + "free")
        # The vertex count and fixed mask come with the state: take the saved shapes first.
        fixed, trainable, order = (state_dict.get(prefix + n) for n in ("fixed", "trainable", "order"))
        if fixed is not None and trainable is not None and order is not None:
            if fixed.shape[1:] != (self.n_columns,) or trainable.shape[1:] != (self.n_columns,):
                error_msgs.append(
                    f"vertex store: the saved vertices have {trainable.shape[1]} values each, this "
                    f"model has {self.n_columns}"
                )
                return
            self._pack(self.fixed.new_empty(fixed.shape), self.trainable.data.new_empty(trainable.shape))
            self.order = self.order.new_empty(order.shape)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )


def _is_rows(t, block, start):
    """Whether ``t`` is the contiguous rows of ``block`` from ``start`` (an empty ``t`` always is)."""
    return t.numel() == 0 or (t.is_contiguous() and t.data_ptr() == block[start].data_ptr())


def _traced():
    """Under torch.compile or a torch.func transform, which see plain tensor ops only."""
    return torch.compiler.is_compiling() or torch._C._are_functorch_transforms_active()


class _Views(torch.autograd.Function):
    """Column ranges of ``block`` (k, P), the store whose rows ``n_fixed:`` are ``trainable``, as
    views differentiable w.r.t. ``trainable``. Backward: the ranges' gradients, trainable rows
    only, gathered side by side into one (k_trainable, P) gradient. ``trainable`` is saved, so
    changing it in place between the forward and the backward is an error, as for any weight."""

    @staticmethod
    def forward(ctx, trainable, block, n_fixed, sizes):
        ctx.n_fixed, ctx.sizes = n_fixed, sizes
        ctx.save_for_backward(trainable)
        ctx.set_materialize_grads(False)
        return block.split(sizes, 1)

    @staticmethod
    def backward(ctx, *grads):
        (trainable,) = ctx.saved_tensors  # autograd's check that it has not changed since the forward
        n = ctx.n_fixed
        parts = [
            g[n:] if g is not None else trainable.new_zeros(len(trainable), size) for g, size in zip(grads, ctx.sizes)
        ]
        return torch.cat(parts, 1), None, None, None
