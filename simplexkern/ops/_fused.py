"""What the fused ops share: ``FusedOp``, which builds an op's compiled and eager faces from
its backend functions; the ``trainable`` argument; and the checks of the public boundary."""

from collections.abc import Callable

import torch
from torch.autograd.function import once_differentiable

from simplexkern import _vmap

TENSORS = "Tensor x, Tensor weight, Tensor? bias, Tensor coeffs"


class FusedOp:
    """One fused op ``simplexkern::{name}(x, weight, bias, coeffs, *args)``, its last two
    arguments ``trainable`` (the vertices that get gradients) and ``backend``.

    From ``forward(x, weight, bias, coeffs, *args) -> y``, ``backward(dy, x, weight, bias,
    coeffs, *args, needs) -> [dx, dweight, dbias, dcoeffs]`` (None where ``needs`` says not
    needed) and ``output_shape(x, weight, coeffs, *args)`` it builds both faces:

    - under torch.compile, a ``torch.library`` custom op whose backward is a second custom op,
      both with fake kernels, so that the compiler sees two opaque ops of known shapes;
    - eagerly, an ``autograd.Function`` with the same forward and backward, without the
      custom-op layer's per-call overhead (tens of microseconds, which weight-bound layers feel).

    The custom op has a ``torch.func.vmap`` rule: a SimplexModel evaluates its points as a vmap
    dimension and calls the op with one point's coefficients (1, k) batched over the S points;
    the rule makes that one call of the op with (S, k). ``shared_dims`` is the number of
    dimensions of an input shared by all points (x of a per-point input has one more).

    Calling the FusedOp runs the face that fits; it checks nothing (the public op does)."""

    def __init__(
        self, name: str, schema: str, forward: Callable, backward: Callable, output_shape: Callable, shared_dims: int
    ):
        # outputs detached: not views of intermediates, so in-place ops on them are allowed
        self.op = torch.library.custom_op(
            f"simplexkern::{name}",
            lambda *a: forward(*a).contiguous().detach(),
            mutates_args=(),
            schema=f"({TENSORS}, {schema}) -> Tensor",
        )
        self.op.register_fake(
            lambda x, weight, bias, coeffs, *args: x.new_empty(output_shape(x, weight, coeffs, *args))
        )
        # the backward op returns tensors only: an empty tensor stands for "not needed"
        self.backward_op = torch.library.custom_op(
            f"simplexkern::{name}_backward",
            lambda dy, *a: [g.contiguous() if g is not None else dy.new_empty(0) for g in backward(dy, *a)],
            mutates_args=(),
            schema=f"(Tensor dy, {TENSORS}, {schema}, bool[] needs) -> Tensor[]",
        )
        self.backward_op.register_fake(_fake_grads)
        self.op.register_autograd(lambda ctx, dy: self._backward(ctx, dy, self.backward_op), setup_context=_save)
        self.op.register_vmap(lambda info, in_dims, *a: self._vmap(self.op, info.batch_size, in_dims, *a))
        self.shared_dims = shared_dims
        fused = self

        class Eager(torch.autograd.Function):
            @staticmethod
            def forward(ctx, *inputs):  # ctx-style: no signature binding per call
                _save(ctx, inputs, None)
                return forward(*inputs).detach()  # detached: in-place ops on the result are allowed

            @staticmethod
            @once_differentiable
            def backward(ctx, dy):
                return fused._backward(ctx, dy, backward)

        Eager.__name__ = Eager.__qualname__ = f"{name}_eager"
        self.eager = Eager

    def __call__(self, *inputs):
        interpreter = _vmap.innermost()
        if interpreter is not None:  # eager under vmap: the vmap rule without the custom op's per-call cost
            return _vmap.call_unbatched(
                interpreter, lambda n, dims, *t: self._vmap(self, n, dims, *t, *inputs[4:]), *inputs[:4]
            )
        if torch.compiler.is_compiling() or torch._C._are_functorch_transforms_active():
            return self.op(*inputs)  # the face with a vmap rule
        return self.eager.apply(*inputs)

    def point(self, x, weight, bias, coeffs, *args):
        """The op at one point, ``coeffs`` (k,): its output without the points' dimension. Under
        vmap (a SimplexModel's points) one call of the op with the (S, k) coefficients."""
        interpreter = _vmap.innermost()
        if interpreter is not None:
            return _vmap.call_unbatched(
                interpreter, lambda n, dims, *t: self._point_vmap(n, dims, *t, *args), x, weight, bias, coeffs
            )
        return self(x, weight, bias, coeffs[None], *args)[0]

    def _point_vmap(self, n, in_dims, x, weight, bias, coeffs, *args):
        x_dim, weight_dim, bias_dim, coeffs_dim = in_dims
        if coeffs_dim is not None and weight_dim is None and bias_dim is None:  # the points: coeffs (n, k)
            return self(
                x if x_dim is None else x.movedim(x_dim, 0), weight, bias, coeffs.movedim(coeffs_dim, 0), *args
            ), 0

        def element(t, d, i):
            return t if d is None else t.select(d, i)

        return torch.stack(
            [
                self.point(*(element(t, d, i) for t, d in zip((x, weight, bias, coeffs), in_dims)), *args)
                for i in range(n)
            ]
        ), 0

    def _vmap(self, call, n, in_dims, x, weight, bias, coeffs, *args):
        """The vmap rule, by ``call`` (the custom op or the FusedOp). Points batched by vmap: coeffs
        (n, S', k) with the store shared -> one call with the n * S' points; any other batching
        (the store, or the input alone): one call per element."""
        x_dim, weight_dim, bias_dim, coeffs_dim = in_dims[:4]
        if all(d is None for d in in_dims[:4]):
            return call(x, weight, bias, coeffs, *args), None
        if coeffs_dim is None or weight_dim is not None or bias_dim is not None:

            def element(t, d, i):
                return t if d is None else t.select(d, i)

            return torch.stack(
                [call(*(element(t, d, i) for t, d in zip((x, weight, bias, coeffs), in_dims)), *args) for i in range(n)]
            ), 0
        c = coeffs.movedim(coeffs_dim, 0)  # (n, S', k)
        points = c.shape[1]
        shared = x.dim() - (x_dim is not None) == self.shared_dims
        if x_dim is not None:
            x = x.movedim(x_dim, 0)
            x = x.unsqueeze(1).expand(n, points, *x.shape[1:]).flatten(0, 1) if shared else x.flatten(0, 1)
        elif not shared:
            x = x.expand(n, *x.shape).flatten(0, 1)
        return call(x, weight, bias, c.flatten(0, 1), *args).unflatten(0, (n, points)), 0

    def _backward(self, ctx, dy, backward):
        x, weight, bias, coeffs = ctx.saved_tensors
        trainable = ctx.args[-2]
        need_x, need_w, need_b, need_c = ctx.needs_input_grad[:4]
        needs = [need_x, need_w and bool(trainable), need_b and bias is not None and bool(trainable), need_c]
        grads = backward(dy, x, weight, bias, coeffs, *ctx.args, needs)
        out = [g if need else None for g, need in zip(grads, needs)]
        # zeros for a weight or bias that asked for a gradient when no vertex is trainable
        if need_w and out[1] is None:
            out[1] = torch.zeros_like(weight)
        if need_b and bias is not None and out[2] is None:
            out[2] = torch.zeros_like(bias)
        return (*out, *([None] * len(ctx.args)))


def _save(ctx, inputs, output):
    ctx.save_for_backward(*inputs[:4])
    ctx.args = inputs[4:]


def _fake_grads(dy, x, weight, bias, coeffs, *args):
    needs = args[-1]
    return [
        t.new_empty(t.shape) if need and t is not None else dy.new_empty(0)
        for t, need in zip((x, weight, bias, coeffs), needs)
    ]


def trainable_indices(trainable, k, weight, bias):
    """``trainable`` (None, boolean mask or index list) as a sorted list of vertex indices."""
    if trainable is None:
        return list(range(k)) if weight.requires_grad or (bias is not None and bias.requires_grad) else []
    if isinstance(trainable, torch.Tensor):
        if trainable.dtype == torch.bool:
            if trainable.shape != (k,):
                raise ValueError(f"trainable as a boolean mask must have shape ({k},), got {tuple(trainable.shape)}")
            return [int(i) for i in torch.nonzero(trainable.cpu()).flatten()]
        if trainable.dim() != 1:
            raise TypeError(
                f"trainable must be a boolean mask or a list of vertex indices, got a tensor of shape "
                f"{tuple(trainable.shape)}"
            )
        trainable = trainable.tolist()
    if isinstance(trainable, (str, bytes)) or not hasattr(trainable, "__iter__"):
        raise TypeError(f"trainable must be a boolean mask or a list of vertex indices, got {trainable!r}")
    items = list(trainable)
    if all(isinstance(t, bool) for t in items) and items:
        if len(items) != k:
            raise ValueError(f"trainable as a list of bools must have {k} entries, got {len(items)}")
        return [i for i, t in enumerate(items) if t]
    for t in items:
        if isinstance(t, bool) or not isinstance(t, int):
            raise TypeError(f"trainable must be a boolean mask or a list of vertex indices, got {trainable!r}")
        if not 0 <= t < k:
            raise ValueError(f"trainable index {t} is out of range for {k} vertices")
    return sorted(set(items))


def check_operands(x, weight, bias, coeffs, weight_dims, weight_desc):
    """Types, shapes, dtypes, devices and finiteness common to the fused ops; returns k."""
    from simplexkern import _checks

    for t, name in ((x, "x"), (weight, "weight"), (coeffs, "coeffs")):
        _checks.floating(t, name)
    if bias is not None:
        _checks.floating(bias, "bias")
    if weight.dim() != weight_dims or weight.shape[0] < 1:
        raise ValueError(f"weight must have shape {weight_desc} with k >= 1 vertices, got {tuple(weight.shape)}")
    if weight.numel() == 0:
        raise ValueError(f"weight must have no empty dimension, got {tuple(weight.shape)}")
    k, out = weight.shape[:2]
    if bias is not None and bias.shape != (k, out):
        raise ValueError(f"bias must have shape (k, out) = ({k}, {out}), got {tuple(bias.shape)}")
    if coeffs.dim() not in (1, 2) or coeffs.shape[-1] != k or coeffs.numel() == 0:
        raise ValueError(
            f"coeffs must have shape ({k},) or (S, {k}) with S >= 1 for weight with k={k} vertices, "
            f"got {tuple(coeffs.shape)}"
        )
    for t, name in ((x, "x"), (bias, "bias")):
        if t is not None and t.dtype != weight.dtype:
            raise TypeError(f"{name} must have the dtype of weight ({weight.dtype}), got {t.dtype}")
    for t, name in ((x, "x"), (bias, "bias"), (coeffs, "coeffs")):
        if t is not None and t.device != weight.device:
            raise ValueError(f"{name} is on {t.device} but weight is on {weight.device}")
    _checks.finite(coeffs, "coeffs")
    return k


def output_size(in_hw, kernel_hw, stride, padding, dilation):
    """A convolution's output height and width."""
    return [
        (n + 2 * p - d * (kk - 1) - 1) // s + 1 for n, kk, s, p, d in zip(in_hw, kernel_hw, stride, padding, dilation)
    ]


def gradient_rows(t, trainable):
    """``t`` (k, ...) whose gradient reaches only the rows in ``trainable``: itself when every
    row is trainable, else an exact copy (t - t.detach() is zero) with the other rows' gradient
    masked to zero. For the plain-op form of an op under torch.compile."""
    if t is None or not t.requires_grad or len(trainable) == t.shape[0]:
        return t
    mask = torch.zeros(t.shape[0], dtype=t.dtype, device=t.device)
    mask[trainable] = 1
    return t.detach() + (t - t.detach()) * mask.view(-1, *([1] * (t.dim() - 1)))
