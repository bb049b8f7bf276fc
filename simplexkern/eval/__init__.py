"""Evaluation: ensemble predictions (probabilities averaged over M points per simplex and
over members), metrics (accuracy, NLL, ECE, Brier), temperature scaling, metrics against
ensemble size, curve profiles and loss planes; ``uncertainty``: adaptive ECE, selective
classification, out-of-distribution detection and ensemble diversity."""

from simplexkern.eval import uncertainty
from simplexkern.eval.metrics import (
    TEMPERATURE_BOUNDS,
    apply_temperature,
    ensemble_size_curve,
    fit_temperature,
    metrics,
    regression_metrics,
    temperature_fit,
)
from simplexkern.eval.predict import outputs_at, point_metrics, point_probabilities, predict
from simplexkern.eval.surfaces import curve_profile, loss_plane, metrics_at

__all__ = [
    "predict",
    "metrics",
    "regression_metrics",
    "fit_temperature",
    "temperature_fit",
    "TEMPERATURE_BOUNDS",
    "apply_temperature",
    "ensemble_size_curve",
    "curve_profile",
    "loss_plane",
    "metrics_at",
    "point_metrics",
    "point_probabilities",
    "outputs_at",
    "uncertainty",
]
