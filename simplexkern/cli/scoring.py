"""The scoring step of each command's job: what its models predict on the test split, and
how well. Scoring runs on every process (the predictions are gathered with collectives);
each process scores its share of the members and gets the scores of the whole ensemble."""

import dataclasses
import time

import numpy as np
import torch

from simplexkern import distributed
from simplexkern import eval as evaluation
from simplexkern.cli.records import Metrics, OodDetection, Temperature, Uncertainty
from simplexkern.cli.run_data import ood_inputs
from simplexkern.cli.sources import plane_points
from simplexkern.nn.model import SimplexModel

PROFILE_POINTS = 21  # values of t in a curve's profile; odd, so t = 1/2 is one of them


@dataclasses.dataclass
class Scores:
    """What ``score`` finds for an ensemble."""

    probs: torch.Tensor  # the members' test probabilities (J, N, C)
    predict_s: float  # wall seconds of predicting the test split
    test: Metrics  # of the ensemble: the members' probabilities averaged
    per_member: list[Metrics]
    val: Metrics | None  # on the validation split (None without one, or not asked for)
    temperature: Temperature | None  # fitted on the validation split
    uncertainty: Uncertainty


def score(context, members, n_points=1, *, ood=None, validation=True, alone=False):
    """The scores of the ensemble of ``members`` at ``n_points`` points each: test metrics of
    the ensemble and of each member, the members' probabilities, prediction time,
    uncertainty (with ``ood`` inputs, how well it tells them from the test inputs) and, with
    a validation split and ``validation``, the validation metrics and the temperature fitted
    there. ``members`` is this process's share, unless ``alone`` (rank 0 scores them alone)."""
    data, seed = context.data, context.settings["seed"]
    world = distributed.World() if alone else context.runtime.world
    several_processes = world.size > 1
    probs, seconds = _timed(
        lambda: evaluation.predict(
            members, data, per_member=True, n_points=n_points, seed=seed, distributed=several_processes
        ),
        context.runtime.device,
    )
    if probs.shape[-1] != data.n_classes:
        raise ValueError(f"the models predict {probs.shape[-1]} classes, the data has {data.n_classes}")
    labels = data.y_test
    scores = Scores(
        probs=probs,
        predict_s=seconds,
        test=Metrics.of(probs.mean(0), labels),
        per_member=[Metrics.of(member_probs, labels) for member_probs in probs],
        val=None,
        temperature=None,
        uncertainty=Uncertainty(
            **evaluation.uncertainty.summary(probs, labels),
            ood=None,
            point_disagreement=_point_disagreement(members, data, n_points, seed, world),
        ),
    )
    if ood is not None:
        away = evaluation.predict(
            members, ood, n_points=n_points, seed=seed, bn_data=data.x_train, distributed=several_processes
        )
        scores.uncertainty.ood = {
            name: OodDetection.from_json(evaluation.uncertainty.ood_detection(probs.mean(0), away, name))
            for name in evaluation.uncertainty.SCORES
        }
    if validation and data.x_val is not None:
        val_probs = evaluation.predict(
            members, data, split="val", n_points=n_points, seed=seed, distributed=several_processes
        )
        scores.val = Metrics.of(val_probs, data.y_val)
        scores.temperature = _temperature(val_probs, data, probs, scores.test)
    return scores


def _temperature(val_probs, data, probs, test):
    fitted, problem = evaluation.temperature_fit(val_probs, data.y_val)
    if problem:  # a degenerate fit: T = 1, and the report says why
        return Temperature(value=1.0, test=test, note=problem)
    scaled = evaluation.apply_temperature(probs.mean(0), fitted)
    return Temperature(value=fitted, test=Metrics.of(scaled, data.y_test), note=None)


def _timed(predict, device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    out = predict()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return out, time.perf_counter() - start


def _point_disagreement(members, data, n_points, seed, world):
    """The mean over simplex members (of several vertices, at ``n_points`` >= 2 points) of
    their points' disagreement on the test split, or None when there is none; ``members``
    is this process's share."""
    n_members = world.total(len(members)) if world.size > 1 else len(members)
    values = [
        (
            index,
            evaluation.uncertainty.disagreement(
                evaluation.point_probabilities(model, data, n_points=n_points, seed=seed, member=index)
            ),
        )
        for index, model in zip(world.members(n_members), members)
        if isinstance(model, SimplexModel) and model.n_vertices > 1 and n_points > 1
    ]
    if world.size > 1:  # in member order, as one process sums them
        values = sorted(value for part in world.objects(values) for value in part)
    return float(np.mean([value for _, value in values])) if values else None


def score_modes(context, modes):
    """``train``, ``ensemble``: the modes."""
    return score(context, context.runtime.share(modes), ood=ood_inputs(context.settings, context.data))


@dataclasses.dataclass
class EsproScores:
    deep_ensemble: Scores  # of the J modes
    espro: Scores
    equal_compute: Scores  # of the equal-compute modes (without validation scores)
    log_volumes: list[float | None]  # of each simplex at the end of its training


def score_espro(context, trained):
    """``espro``, ``demo``: the deep ensemble of the modes, ESPRO, the equal-compute modes."""
    runtime, settings = context.runtime, context.settings
    with context.folder.phase("predict"):
        ood = ood_inputs(settings, context.data)
        deep_ensemble = score(context, runtime.share(trained.modes), ood=ood)
        espro = score(context, runtime.share(trained.espro.simplexes), settings["eval_samples"], ood=ood)
        equal_compute = (
            deep_ensemble
            if trained.equal_compute_ensemble is trained.modes
            else score(context, runtime.share(trained.equal_compute_ensemble), validation=False)
        )  # its test probabilities alone are used
    histories = [simplex.metadata["history"] for simplex in trained.espro.simplexes]
    log_volumes = runtime.in_member_order([history[-1]["log_volume"] if history else None for history in histories])
    return EsproScores(deep_ensemble, espro, equal_compute, log_volumes)


@dataclasses.dataclass
class ModesAndModel:
    modes: Scores  # the deep ensemble of the modes (spro), the curve's ends, FGE's start
    model: Scores | None  # the complex, the curve, FGE's snapshots (None where a process has not their scores)
    profile: dict | None = None  # curve: simplexkern.eval.curve_profile (on rank 0)


def _modes_and_model(context, modes, model):
    """The scores of the modes (this process's share) and of one model of --eval-samples
    points (rank 0's)."""
    modes_scores = score(context, modes.share)
    model_scores = score(
        context,
        context.runtime.model_share(model),
        context.settings["eval_samples"],
        ood=ood_inputs(context.settings, context.data),
    )
    return modes_scores, model_scores


def score_spro(context, trained):
    """``spro``: the deep ensemble of the modes, and the complex on rank 0."""
    with context.folder.phase("predict"):
        return ModesAndModel(*_modes_and_model(context, trained.modes, trained.model))


def score_curve(context, trained):
    """``curve``: the ends, the curve on rank 0 and its profile."""
    is_main = context.runtime.world.is_main
    with context.folder.phase("predict"):
        ends, curve = _modes_and_model(context, trained.modes, trained.curve)
        profile = evaluation.curve_profile(trained.curve, context.data, PROFILE_POINTS) if is_main else None
    return ModesAndModel(ends, curve, profile)


def score_fge(context, trained):
    """``fge``: the mode FGE starts from, and its snapshots."""
    runtime = context.runtime
    snapshots = None
    with context.folder.phase("predict"):
        ood = ood_inputs(context.settings, context.data)
        start = score(context, trained.modes.share)
        if runtime.ensemble_mode != "members":
            snapshots = score(context, runtime.share(trained.snapshots), ood=ood)
        elif runtime.world.is_main:  # rank 0 alone took the snapshots
            snapshots = score(context, trained.snapshots, ood=ood, alone=True)
    return ModesAndModel(start, snapshots)


def score_evaluate(context, trained):
    """``evaluate``: the source's models, on rank 0 alone."""
    with context.folder.phase("predict"):
        models = [member.model for member in context.source]
        return score(context, models, context.settings["eval_samples"], ood=ood_inputs(context.settings, context.data))


@dataclasses.dataclass
class LossPlane:
    """``surface``'s plane."""

    model: SimplexModel | None  # the simplex, complex or curve it passes through; None: plain members
    names: list[str]  # of its three points
    grids: dict  # simplexkern.eval.loss_plane's


def score_surface(context, trained):
    """``surface``: the loss plane through three points of the source, on rank 0 alone."""
    settings = context.settings
    model, points, names = plane_points(context.source, settings)
    with context.folder.phase("plane"):
        grids = evaluation.loss_plane(
            points, context.data, model=model, grid=settings["grid"], margin=settings["margin"]
        )
    return LossPlane(model, names, grids)
