"""``Dataset``: the train / test (and optional validation) tensors of one task, with what a
model needs to be built for it, and the checks every source of data goes through."""

import dataclasses
import math
from typing import Optional

import numpy as np
import torch
from numpy.typing import ArrayLike

from simplexkern import _checks

TASKS = ("classification", "regression")
# Gaussian-noise corruption levels 1-5 of CIFAR-10-C (Hendrycks & Dietterich, 2019): the noise's
# standard deviation as a fraction of the pixel range.
GAUSSIAN_NOISE = (0.04, 0.06, 0.08, 0.09, 0.10)
# What ``check_arrays`` (and so every source) returns: x_train, y_train, x_test, y_test, n_classes (None for
# regression).
Arrays = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int | None]


@dataclasses.dataclass
class Dataset:
    """Features ``x_*`` (float32, (N, *input_shape)) and targets ``y_*`` (int64 labels
    0..n_classes-1, or float32 (N, 1) for regression) of one task.

    ``x_val`` / ``y_val`` are a held-out part of the training data (``load(...,
    val_fraction=)``), for choosing settings such as the regularisation strength or a
    temperature; never choose them on the test split. ``noise_std`` is the regression
    task's observation noise. ``augment`` names the training-batch augmentation ("crop_flip"
    for CIFAR, else None). ``vocab_size``: when the features are token ids (whole numbers
    0..vocab_size-1, stored as float32), how many ids there are, else None.
    """

    name: str
    task: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    n_classes: Optional[int] = None
    x_val: Optional[torch.Tensor] = None
    y_val: Optional[torch.Tensor] = None
    noise_std: Optional[float] = None
    augment: Optional[str] = None
    vocab_size: Optional[int] = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def n_outputs(self) -> int | None:
        """Width of a model's output: the number of classes, or 1 for regression."""
        return self.n_classes if self.task == "classification" else 1

    @property
    def observation_noise(self) -> float:
        """Regression: the standard deviation of the Gaussian likelihood, in training and in
        prediction alike (``noise_std``, or 1 when the data set gives none)."""
        return self.noise_std if self.noise_std is not None else 1.0

    @property
    def is_image(self) -> bool:
        return len(self.input_shape) == 3

    def splits(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """name -> (x, y) of the splits present."""
        out = {"train": (self.x_train, self.y_train)}
        if self.x_val is not None:
            out["val"] = (self.x_val, self.y_val)
        out["test"] = (self.x_test, self.y_test)
        return out

    def describe(self) -> str:
        val = f", {len(self.x_val)} validation" if self.x_val is not None else ""
        kind = f"{self.n_classes} classes" if self.task == "classification" else "regression"
        return (
            f"{self.name}: {len(self.x_train)} train{val}, {len(self.x_test)} test; input "
            f"{'x'.join(map(str, self.input_shape))}, {kind}"
        )


def check_dataset(data: object, name: str = "data") -> Dataset:
    """Raises TypeError unless ``data`` is a ``Dataset``; returns it."""
    if not isinstance(data, Dataset):
        raise TypeError(
            f"{name} must be a simplexkern.data.Dataset (from simplexkern.data.load), got {type(data).__name__}"
        )
    return data


def check_arrays(
    source: str,
    x_train: ArrayLike,
    y_train: ArrayLike,
    x_test: ArrayLike,
    y_test: ArrayLike,
    task: str = "classification",
) -> Arrays:
    """Checks raw arrays and returns them as (float32 x, int64 or float32 y) tensors, and
    the number of classes. ``source`` names the file or data set in every error."""
    out = [
        _checked_split(source, split, x, y, task)
        for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test))
    ]
    if out[0][0].shape[1:] != out[1][0].shape[1:]:
        raise ValueError(f"{source}: x_train has features of shape {out[0][0].shape[1:]}, x_test {out[1][0].shape[1:]}")
    if task == "regression":
        return _regression_targets(source, out)
    return _class_labels(source, out)


def _checked_split(source, split, x, y, task):
    """(x as float32, y) of one split, checked."""
    x, y = np.asarray(x), np.asarray(y)
    if x.dtype.kind not in "fiu":
        raise ValueError(f"{source}: x_{split} must hold numbers, got dtype {x.dtype}")
    if x.ndim < 2:
        raise ValueError(f"{source}: x_{split} must have shape (N, features...), got {x.shape}")
    if len(x) == 0:
        raise ValueError(f"{source}: the {split} split is empty")
    if y.ndim != 1 and not (task == "regression" and y.ndim == 2 and y.shape[1] == 1):
        raise ValueError(f"{source}: y_{split} must have shape (N,), got {y.shape}")
    if len(y) != len(x):
        raise ValueError(f"{source}: x_{split} has {len(x)} rows but y_{split} has {len(y)}")
    if math.prod(x.shape[1:]) == 0:
        raise ValueError(f"{source}: x_{split} has no features (shape {x.shape})")
    if not np.isfinite(x).all():
        raise ValueError(f"{source}: x_{split} contains NaN or inf")
    with np.errstate(over="ignore"):  # checked on the next line
        x32 = x.astype(np.float32)
    if not np.isfinite(x32).all():
        raise ValueError(f"{source}: x_{split} has values beyond float32's range (|x| > 3.4e38); rescale them")
    return x32, y


def _regression_targets(source, out):
    tensors = []
    for split, (x, y) in zip(("train", "test"), out):
        if y.dtype.kind not in "fiu" or not np.isfinite(y.astype(np.float64)).all():
            raise ValueError(f"{source}: y_{split} must hold finite numbers")
        tensors += [torch.from_numpy(x), torch.from_numpy(y.astype(np.float32).reshape(-1, 1))]
    return (*tensors, None)


def _class_labels(source, out):
    for split, (x, y) in zip(("train", "test"), out):
        if y.dtype.kind == "f":
            if not np.isfinite(y).all() or (y != np.round(y)).any():
                raise ValueError(f"{source}: y_{split} must hold integer class labels, got non-integer values")
        elif y.dtype.kind not in "iu":
            raise ValueError(f"{source}: y_{split} must hold integer class labels, got dtype {y.dtype}")
        if y.min() < 0:
            raise ValueError(f"{source}: y_{split} has label {int(y.min())}; labels must be 0..C-1")
    n_classes = int(max(out[0][1].max(), out[1][1].max())) + 1
    present = np.unique(out[0][1]).astype(np.int64)
    if n_classes > len(present):
        missing = sorted(set(range(min(n_classes, len(present) + 10))) - set(present.tolist()))
        if not missing:
            missing = [int(present.max()) + 1]
        raise ValueError(
            f"{source}: labels must be 0..C-1 with every class in y_train; y_train lacks "
            f"{missing[:10]} (C={n_classes} from the largest label)"
        )
    if n_classes < 2:
        raise ValueError(f"{source}: a classification task needs at least 2 classes, got {n_classes}")
    tensors = []
    for x, y in out:
        tensors += [torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))]
    return (*tensors, n_classes)


def corrupt(
    x: torch.Tensor, level: int, value_range: tuple[float, float], generator: torch.Generator | None = None
) -> torch.Tensor:
    """Gaussian-noise corruption at ``level`` 1-5 (the CIFAR-10-C severities): noise of
    standard deviation ``GAUSSIAN_NOISE[level - 1] * (hi - lo)`` added to raw features in
    ``value_range = (lo, hi)``, then clipped to that range."""
    if _checks.count(level, "gaussian_noise") > 5:
        raise ValueError(f"gaussian_noise must be a corruption level 1..5, got {level!r}")
    lo, hi = value_range
    noise = torch.randn(x.shape, generator=generator, dtype=torch.float64) * GAUSSIAN_NOISE[level - 1] * (hi - lo)
    return (x.double() + noise).clamp(lo, hi).to(x.dtype)


def standardize(data: Dataset) -> Dataset:
    """Features scaled by the training split's mean and standard deviation: per channel for
    images and signals (N, C, ...), per feature otherwise. Constant features keep scale 1."""
    scale = scaler(data.x_train)
    return dataclasses.replace(data, x_train=scale(data.x_train), x_val=scale(data.x_val), x_test=scale(data.x_test))


def scaler(x_train: torch.Tensor):
    """The function ``standardize`` applies to every split, with the statistics of ``x_train``."""
    x = x_train.double()
    dims = (0, *range(2, x.dim())) if x.dim() >= 3 else (0,)
    count = math.prod(x.shape[d] for d in dims)  # values per statistic; one has no spread (and no warning)
    mean, std = x.mean(dims, keepdim=True), x.std(dims, keepdim=True, correction=1 if count > 1 else 0)
    std = torch.where(std > 0, std, torch.ones_like(std))

    def scale(t):
        return None if t is None else ((t.double() - mean[0]) / std[0]).float()

    return scale


def hold_out(data: Dataset, fraction: float, seed: int = 0) -> Dataset:
    """Moves a random ``fraction`` of the training split into the validation split."""
    _checks.number(fraction, "val_fraction", minimum=0, below=1)
    if fraction == 0:
        return data
    n = len(data.x_train)
    n_val = math.ceil(fraction * n)
    if n - n_val < 1:
        raise ValueError(f"val_fraction={fraction} leaves no training data out of {n} rows")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    val, train = perm[:n_val].sort().values, perm[n_val:].sort().values
    return dataclasses.replace(
        data, x_train=data.x_train[train], y_train=data.y_train[train], x_val=data.x_train[val], y_val=data.y_train[val]
    )
