"""The dimensionality of the low-loss region (Benton et al. 2021, §4.3): a complex grown
connector by connector, each sub-complex evaluated."""

from collections.abc import Sequence
from typing import cast

import torch

from simplexkern import _checks
from simplexkern._seeds import derive_seed
from simplexkern._types import ModelOrPath
from simplexkern.data import Dataset
from simplexkern.eval.metrics import metrics
from simplexkern.eval.predict import outputs_at
from simplexkern.eval.surfaces import metrics_at
from simplexkern.nn.model import SimplexModel
from simplexkern.nn.samplers import ComplexSampler
from simplexkern.train.loop import log_volume
from simplexkern.train.spro import grow_simplex, spro_complex


def dimensionality_sweep(
    modes: ModelOrPath | Sequence[ModelOrPath],
    data: Dataset,
    max_connectors: int = 4,
    *,
    n_points: int = 25,
    **settings,
) -> tuple[SimplexModel, list[dict]]:
    """The dimensionality of the low-loss region (paper §4.3): trains ``spro_complex(modes,
    data, max_connectors, **settings)`` (for one mode: a simplex grown vertex by vertex)
    and, for each number of connectors c = 1..max_connectors, evaluates the sub-complex of
    the first c connectors: its log V and ``n_points`` points sampled from it (drawn from
    the settings' seed). Returns (model, rows), each row a dict: "connectors", "vertices", "log_volume",
    "train_loss" / "train_error" / "test_error" (mean over the points), "train_error_max"
    (the worst point) and "test_error_ensemble" (the points' averaged prediction)."""
    given = list(modes) if isinstance(modes, (list, tuple)) else [cast(ModelOrPath, modes)]
    _checks.count(max_connectors, "max_connectors")
    if len(given) == 1:
        model = grow_simplex(given[0], data, 1 + max_connectors, **settings)
    else:
        model = spro_complex(given, data, max_connectors, **settings)
    execution = settings.get("execution")
    seed = settings.get("seed", 0 if execution is None else execution.seed)
    m = len(given)
    rows = []
    with torch.no_grad():
        for c in range(1, max_connectors + 1):
            simplices = [(j, *range(m, m + c)) for j in range(m)]
            generator = torch.Generator(model.device).manual_seed(derive_seed(seed, c))
            points = ComplexSampler(simplices).sample(n_points, model, generator)
            values = metrics_at(model, points, data)
            probs = torch.cat(
                [
                    torch.softmax(out.float(), -1).mean(0).cpu()
                    for _, out in outputs_at(model, data.x_test, points, bn_inputs=data.x_train)
                ]
            )
            rows.append(
                {
                    "connectors": c,
                    "vertices": m + c,
                    "log_volume": float(log_volume(model, simplices)),
                    "train_loss": float(values["train_loss"].mean()),
                    "train_error": float(values["train_error"].mean()),
                    "train_error_max": float(values["train_error"].max()),
                    "test_error": float(values["test_error"].mean()),
                    "test_error_ensemble": 1 - metrics(probs, data.y_test)["accuracy"],
                }
            )
    return model, rows


__all__ = ["dimensionality_sweep"]
