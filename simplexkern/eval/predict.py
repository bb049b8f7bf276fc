"""Predictions of ensembles of simplexes, complexes, curves and plain models (SPEC §5, §7).

A simplex member is evaluated at its M sampled points in one multi-point forward per
batch; before that, its BatchNorm statistics are recomputed for exactly those points from
the training inputs (the model's own statistics are put back afterwards). Probabilities,
never logits, are averaged: over the M points of a member, then over the members.
"""

import contextlib
import copy
import itertools
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from simplexkern import _checks
from simplexkern import distributed as dist
from simplexkern._seeds import derive_seed, seeded
from simplexkern.data import Dataset
from simplexkern.data.batches import batch_bounds
from simplexkern.eval.metrics import gaussian_nll
from simplexkern.nn.model import SimplexModel


def model_device(model):
    return next(itertools.chain(model.parameters(), model.buffers())).device


def has_batchnorm(model):
    """Whether evaluating ``model`` needs running BatchNorm statistics."""
    if isinstance(model, SimplexModel):
        return model.tracks_batchnorm
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats for m in model.modules())


@contextlib.contextmanager
def restored_batchnorm(model):
    """Puts a simplex model's tracked points and BatchNorm statistics back on exit."""
    saved = model.batchnorm_state()
    try:
        yield
    finally:
        model.restore_batchnorm_state(saved)


def _chunks(x, batch_size, device):
    for start in range(0, len(x), batch_size):
        yield x[start : start + batch_size].to(device, non_blocking=True)


def _statistics_batches(x, batch_size, device):
    """Batches for a BatchNorm statistics pass (a lone last row joins the batch before)."""
    for start, end in batch_bounds(len(x), batch_size, lone_row="merge"):
        yield x[start:end].to(device, non_blocking=True)


@torch.no_grad()
def with_fresh_batchnorm(model, inputs, batch_size=256, seed=0):
    """A copy of the plain ``model`` whose BatchNorm statistics are the cumulative average
    over ``inputs`` (as the papers recompute them before evaluating; the pass runs in
    training mode, with dropout drawn from ``seed``)."""
    model = copy.deepcopy(model)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    with seeded(seed):
        for xb in _statistics_batches(inputs, batch_size, model_device(model)):
            model(xb)
    return model.eval()


@contextlib.contextmanager
def evaluated_at(model, coeffs=None, *, bn_inputs=None, batch_size=256, seed=0):
    """Inside: ``forward(x)`` -> outputs (S, B, ...) of a simplex model at the S points
    ``coeffs`` (S, k), or of a plain model as one point (S = 1), without gradients.
    BatchNorm statistics are recomputed from ``bn_inputs`` once, on entry (required for a
    simplex model with BatchNorm; a plain model keeps its own when none are given), in
    training mode with dropout drawn from ``seed``; the model is put back as it was on exit."""
    _checks.count(batch_size, "batch_size")
    device = model_device(model)
    was_training = model.training
    with torch.no_grad():
        if isinstance(model, SimplexModel):
            if coeffs is None:
                raise ValueError("a simplex model is evaluated at given points: pass coeffs (S, k)")
            bn = has_batchnorm(model)
            if bn and bn_inputs is None:
                raise ValueError(
                    "this simplex model has BatchNorm: its statistics must be recomputed for the points "
                    "evaluated; pass the training inputs (bn_inputs / a Dataset)"
                )
            with restored_batchnorm(model) if bn else contextlib.nullcontext():
                if bn:
                    with seeded(seed):
                        model.update_bn(_statistics_batches(bn_inputs, batch_size, device), coeffs)
                model.eval()
                try:
                    yield lambda x: model(x, coeffs)
                finally:
                    model.train(was_training)
            return
        plain = (
            with_fresh_batchnorm(model, bn_inputs, batch_size, seed)
            if bn_inputs is not None and has_batchnorm(model)
            else model
        )
        plain.eval()
        try:
            yield lambda x: plain(x)[None]
        finally:
            model.train(was_training)


def _batches_of(forward, x, batch_size, device):
    """(start row, forward(batch)) over ``x``."""
    for start, xb in zip(range(0, len(x), batch_size), _chunks(x, batch_size, device)):
        yield start, forward(xb)


def outputs_at(
    model: nn.Module,
    x: torch.Tensor,
    coeffs: torch.Tensor | None = None,
    *,
    bn_inputs: torch.Tensor | None = None,
    batch_size: int = 256,
    seed: int = 0,
) -> Iterator[tuple[int, torch.Tensor]]:
    """Yields (start row, outputs (S, B, ...)) over ``x`` in batches, the model evaluated as
    ``evaluated_at`` says."""
    _checks.tensor(x, "x")
    with evaluated_at(model, coeffs, bn_inputs=bn_inputs, batch_size=batch_size, seed=seed) as forward:
        yield from _batches_of(forward, x, batch_size, model_device(model))


def member_points(model: nn.Module, n_points: int, seed: int, member: int) -> torch.Tensor | None:
    """The M points member ``member`` is evaluated at: drawn from its sampler with a
    generator seeded by (seed, member); None for a plain model."""
    if not isinstance(model, SimplexModel):
        return None
    if model.n_vertices == 1:
        return torch.ones(1, 1, dtype=model.dtype, device=model.device)
    generator = torch.Generator(model.device).manual_seed(derive_seed(seed, member))
    return model.sampler.sample(n_points, model, generator)


def _inputs(data, split, bn_data):
    if isinstance(data, Dataset):
        if split not in ("train", "val", "test"):
            raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
        x = getattr(data, f"x_{split}")
        if x is None:
            raise ValueError(f"the data set has no {split} split (load it with val_fraction= for one)")
        noise = data.observation_noise if data.task == "regression" else None
        return x, data.x_train if bn_data is None else bn_data, data.task, noise
    _checks.tensor(data, "data")
    return data, bn_data, "classification", None


def _checked(batches, x, batch_size, name):
    """``batches`` of (start, outputs (S, B, ...)), with an error naming the member when the
    first one fails or a batch's outputs do not have one row per input."""
    try:
        start, out = next(batches)
    except StopIteration:
        return
    except (RuntimeError, ValueError, TypeError, IndexError) as err:
        if isinstance(err, torch.OutOfMemoryError):
            raise
        raise ValueError(f"{name} does not take inputs of shape {tuple(x.shape[1:])}: {_checks.reason(err)}") from None
    for start, out in itertools.chain([(start, out)], batches):
        rows = min(batch_size, len(x) - start)
        if out.dim() < 2 or out.shape[1] != rows:
            raise ValueError(
                f"{name} gave outputs of shape {tuple(out.shape[1:])} for {rows} inputs: not one row "
                f"per input (inputs must have shape (N, *input_shape), got {tuple(x.shape)})"
            )
        yield start, out


def predict(
    members: nn.Module | Sequence[nn.Module],
    data: Dataset | torch.Tensor,
    *,
    split: str = "test",
    n_points: int = 25,
    bn_data: torch.Tensor | None = None,
    batch_size: int = 256,
    seed: int = 0,
    per_member: bool = False,
    task: str | None = None,
    noise_std: float | None = None,
    distributed: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """The predictive distribution of an ensemble on ``data``'s ``split`` (a ``Dataset``) or
    on inputs ``data`` (a tensor).

    ``members``: a model or a list of models: simplex models (ESPRO members, complexes,
    curves; each evaluated at ``n_points`` points from its sampler, drawn with a generator
    seeded by (seed, member index)) and plain models. BatchNorm statistics are recomputed
    per point from the training inputs (``data.x_train``, or ``bn_data``).

    Classification: the probabilities averaged over points and members, (N, C); with
    ``per_member``, each member's own average, (J, N, C). Regression (a regression
    ``Dataset``, or ``task="regression"``): (mean, var) of the Gaussian mixture, var
    including the observation noise ``noise_std`` (default: the data set's
    ``observation_noise``, as in training; 1 for tensor inputs); (J, N, 1) each per member,
    else (N, 1).

    ``distributed``: ``members`` is this process's share of an ensemble spread over the
    processes of a process group (members rank, rank + W, ...; possibly none, see
    ``simplexkern.distributed``); each process predicts its share, and every process
    returns the prediction of the whole ensemble, the same as one process predicting all.
    """
    world = dist.world() if distributed else dist.World()
    models_, n_members = _members(members, world)
    _checks.count(n_points, "n_points")
    _checks.count(seed, "seed", minimum=0)
    x, bn_inputs, data_task, data_noise = _inputs(data, split, bn_data)
    task = task or data_task
    if task not in ("classification", "regression"):
        raise ValueError(f"task must be 'classification' or 'regression', got {task!r}")
    sigma = noise_std if noise_std is not None else (data_noise if data_noise is not None else 1.0)
    if x.dim() < 2:
        raise ValueError(f"data must have shape (N, *input_shape), one row per input, got {tuple(x.shape)}")
    first, second = [], []
    for j, model in zip(world.members(n_members), models_):
        if x.is_floating_point():
            _checks.parameters_match(model, x, f"members[{j}]")
        coeffs = member_points(model, n_points, seed, j)
        outputs = outputs_at(model, x, coeffs, bn_inputs=bn_inputs, batch_size=batch_size, seed=derive_seed(seed, j, 1))
        m1, m2 = _moments(_checked(outputs, x, batch_size, f"members[{j}]"), len(x), task)
        _check_width(m1, data, first, j)
        first.append(m1)
        second.append(m2)
    first = world.gather_members(first, n_members)
    if task == "classification":
        return first if per_member else first.mean(0)
    return _gaussian_mixture(first, world.gather_members(second, n_members), sigma, per_member)


def _members(members, world):
    """(this process's members as a list, checked; the number of members in all processes)."""
    models_ = list(members) if isinstance(members, (list, tuple)) else [members]
    n_members = world.total(len(models_))
    if not n_members:
        raise ValueError("members is empty")
    for i, m in enumerate(models_):
        if not isinstance(m, nn.Module):
            raise TypeError(f"members[{i}] must be a torch.nn.Module, got {type(m).__name__}")
    return models_, n_members


def _moments(batches, n, task):
    """(the mean over the points of the probabilities (classification) or of the outputs, (N, ...);
    for regression also the mean of the squared outputs, else None), on the CPU, from the
    ``batches`` (start row, outputs (S, B, ...)) of N inputs; (None, None) when there are none."""
    m1 = m2 = None
    for start, out in batches:
        out = out.float()
        if task == "classification":
            part = torch.softmax(out, -1).mean(0).cpu()
        else:
            part = out.mean(0).cpu()
            if m2 is None:
                m2 = torch.empty(n, *out.shape[2:])
            m2[start : start + len(part)] = out.pow(2).mean(0).cpu()
        if m1 is None:
            m1 = torch.empty(n, *part.shape[1:])
        m1[start : start + len(part)] = part
    return m1, m2


def _check_width(m1, data, first, j):
    """ValueError unless member ``j``'s outputs per input (``m1``) have the shape the data set
    needs, or member 0's (``first``: the members' so far)."""
    width = None if m1 is None else m1.shape[1:]
    expected = (data.n_outputs,) if isinstance(data, Dataset) else (first[0].shape[1:] if first else width)
    if width is not None and width != expected:
        need = "the data need" if isinstance(data, Dataset) else "members[0] gives"
        raise ValueError(f"members[{j}] gives outputs of shape {tuple(width)} per input, {need} {tuple(expected)}")


def _gaussian_mixture(first, second, sigma, per_member):
    """(mean, var) of the members' Gaussian mixture (each member's own with ``per_member``), from
    their first and second moments (J, N, 1) and the observation noise ``sigma``."""
    if per_member:
        return first, sigma**2 + (second - first.pow(2)).clamp_min(0)
    mean = first.mean(0)
    return mean, sigma**2 + (second.mean(0) - mean.pow(2)).clamp_min(0)


def point_probabilities(
    model: nn.Module,
    data: Dataset,
    *,
    split: str = "test",
    n_points: int = 25,
    seed: int = 0,
    member: int = 0,
    batch_size: int = 256,
) -> torch.Tensor:
    """(M, N, C) class probabilities at each of the M points ``predict`` evaluates member
    ``member`` of an ensemble at (the same points, BatchNorm statistics and dropout draws),
    on ``data``'s ``split``; (1, N, C) for a plain model."""
    _checks.count(n_points, "n_points")
    x, bn_inputs, task, _ = _inputs(data, split, None)
    if task != "classification":
        raise ValueError("point_probabilities needs a classification data set")
    coeffs = member_points(model, n_points, seed, member)
    parts = [
        torch.softmax(out.float(), -1).cpu()
        for _, out in outputs_at(
            model, x, coeffs, bn_inputs=bn_inputs, batch_size=batch_size, seed=derive_seed(seed, member, 1)
        )
    ]
    return torch.cat(parts, 1)


def point_metrics(
    model: nn.Module,
    coeffs: torch.Tensor | None,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    task: str = "classification",
    noise_std: float = 1.0,
    bn_inputs: torch.Tensor | None = None,
    batch_size: int = 256,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """Loss and error of each of the S points ``coeffs`` (S, k) of a simplex model (or of a
    plain model: S = 1) on (x, y): a dict of (S,) float64 tensors "loss" (the training
    objective: mean cross-entropy, or the Gaussian negative log likelihood with standard
    deviation ``noise_std`` for regression) and "error" (classification)."""
    return split_metrics(
        model,
        coeffs,
        {"": (x, y)},
        task=task,
        noise_std=noise_std,
        bn_inputs=bn_inputs,
        batch_size=batch_size,
        seed=seed,
    )[""]


def split_metrics(
    model: nn.Module,
    coeffs: torch.Tensor | None,
    splits: dict[str, tuple[torch.Tensor, torch.Tensor]],
    *,
    task: str = "classification",
    noise_std: float = 1.0,
    bn_inputs: torch.Tensor | None = None,
    batch_size: int = 256,
    seed: int = 0,
) -> dict[str, dict[str, torch.Tensor]]:
    """``point_metrics`` on each of several splits (name -> (x, y)), with the BatchNorm
    statistics of the points computed once for all of them."""
    with evaluated_at(model, coeffs, bn_inputs=bn_inputs, batch_size=batch_size, seed=seed) as forward:
        return {
            name: _losses(forward, x, y, task, noise_std, batch_size, model_device(model))
            for name, (x, y) in splits.items()
        }


def _losses(forward, x, y, task, noise_std, batch_size, device):
    _checks.tensor(x, "x")
    loss = err = None
    for start, out in _batches_of(forward, x, batch_size, device):
        yb = y[start : start + out.shape[1]].to(out.device)
        if task == "classification":
            logp = torch.log_softmax(out.double(), -1)
            nll = -logp.gather(-1, yb[None, :, None].expand(out.shape[0], -1, 1)).squeeze(-1).sum(1)
            wrong = (out.argmax(-1) != yb).double().sum(1)
        else:
            nll = gaussian_nll(yb.double(), out.double(), noise_std)
            nll = nll.reshape(out.shape[0], out.shape[1], -1).mean(-1).sum(1)
            wrong = torch.zeros_like(nll)
        loss = nll if loss is None else loss + nll
        err = wrong if err is None else err + wrong
    out = {"loss": (loss / len(x)).cpu()}
    if task == "classification":
        out["error"] = (err / len(x)).cpu()
    return out
