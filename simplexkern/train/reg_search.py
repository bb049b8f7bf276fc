"""Choosing λ of ESPRO on the validation split (``choose_reg``): every λ grows simplex 0, the
better half by its validation NLL grow the rest, and the ensemble with the lowest validation
NLL wins."""

import inspect
import math
import pathlib
import time
from collections.abc import Sequence

import torch

from simplexkern import _checks
from simplexkern import distributed as dist
from simplexkern._types import ModelOrPath, Path
from simplexkern.data import Dataset
from simplexkern.eval.metrics import metrics
from simplexkern.eval.predict import predict
from simplexkern.nn.model import SimplexModel
from simplexkern.train.runs import as_plain
from simplexkern.train.settings import VERTEX
from simplexkern.train.settings import settings as resolve_settings
from simplexkern.train.spro import espro


def choose_reg(
    modes: Sequence[ModelOrPath],
    data: Dataset,
    regs: Sequence[float] = (0.1, 0.3, 1.0, 3.0),
    *,
    n_points: int = 25,
    out: Path | None = None,
    stop_early: bool = True,
    **settings,
) -> tuple[float, list[SimplexModel], list[dict]]:
    """ESPRO with each λ in ``regs`` (other settings as ``espro``'s ``settings``), scored by
    the NLL of the ensemble's prediction on ``data``'s validation split (never the test
    split; load the data with ``val_fraction=``). Returns (best λ, its simplexes, rows).

    ``stop_early`` (default), in two rounds when there are several λ:

    1. Each λ grows simplex 0 (with ``distributed="members"``, each process its first
       simplex, so the search's cost depends on the number of processes). It stops after
       the first epoch of its first added vertex when simplex 0's validation NLL there has
       lost more than half of what its mode knew: it is above the mode's validation NLL plus
       half the way from there to log C, the NLL of a uniform guess over C classes (not with
       "members", where the processes train at once).
    2. The better half of the λ left (by simplex 0's validation NLL) grow the other
       simplexes and are scored as ensembles; the others stop there. Where one diverges,
       the next in line takes its place.

    A λ that wrecks the model costs one vertex epoch and one in the worse half one simplex,
    instead of J. Without ``stop_early``, every λ grows every simplex.

    Each row: "reg", "val_nll" and "val_accuracy" (of the ensemble; inf and NaN for a λ that
    stopped or diverged), "simplex0_val_nll", "log_volume" (of simplex 0), "train_s",
    "gradient_evaluations" (the λ's training cost: examples x points over its steps),
    "stopped" / "diverged" (None, or why), "saturated" (every validation probability at
    least 1 - 1e-6: hard 0/1 outputs, whose NLL cannot rank λ), "near_hard" (at least 95%
    of them at least 0.999) and "zero_val_error". A saturated λ is chosen only when every λ
    is. With ``out``, λ's run is checkpointed in ``out/reg_{λ}``, and a second call resumes.

    ``distributed`` as ``espro``'s. Every process returns the same λ and rows (rank 0's;
    with "members" the ensemble's validation prediction is gathered from all processes,
    with "data" rank 0 scores the simplexes all hold) and its simplexes (with "members" its
    own share). A λ diverged when any process diverged; the row names the lowest simplex's
    error."""
    _check_search(data, regs, n_points, stop_early)
    search = _RegSearch(modes, data, n_points, settings, out)
    mode = search.execution.distributed
    halving = stop_early and search.cost.n_modes > 1 and len(regs) > 1
    wreck = search.wreck_check(modes[0]) if stop_early and len(regs) > 1 and mode != "members" else None
    rows = {reg: search.run(reg, modes[:1] if halving else modes, wreck, score=not halving) for reg in regs}
    if halving:
        search.halve(rows, regs, modes)
    reg = _best(rows, regs)
    return reg, search.simplexes[reg], [rows[r] for r in regs]


def _check_search(data, regs, n_points, stop_early):
    if data.x_val is None:
        raise ValueError("choose_reg scores λ on a validation split: load the data with val_fraction= (e.g. 0.2)")
    if not _checks.sequence(regs, "regs", "λ values"):
        raise ValueError(f"regs must be a non-empty list of λ values, got {regs!r}")
    _checks.count(n_points, "n_points")
    _checks.flag(stop_early, "stop_early")
    for i, reg in enumerate(regs):
        _checks.number(reg, f"regs[{i}]", minimum=0)
    if len(set(regs)) != len(regs):
        raise ValueError(f"regs lists a λ more than once: {list(regs)}")
    if data.task != "classification":
        raise ValueError(
            "choose_reg ranks λ by the validation NLL of class probabilities: it needs a classification data set"
        )


def _best(rows, regs):
    """The λ of the lowest validation NLL among the finished, the saturated kept apart: one
    is chosen only when every finished λ is."""
    best = {}
    for reg in regs:
        row = rows[reg]
        if _finished(row):
            kind = row["saturated"]
            if kind not in best or row["val_nll"] < best[kind][0]:
                best[kind] = (row["val_nll"], reg)
    if not best:
        raise FloatingPointError(
            f"every λ in {list(regs)} diverged or wrecked the model in its first vertex epoch; try smaller values"
        )
    return best.get(False, best.get(True))[1]


def _finished(row):
    return row["diverged"] is None and row["stopped"] is None


def _nan_last(value):
    return math.inf if math.isnan(value) else value


SATURATED = 1 - 1e-6  # a validation prediction this sure of its class is a hard 0/1 (its NLL says nothing)
NEAR_HARD = 0.999  # a top probability this high, on nearly every example, leaves NLL little to rank λ by


class _Stopped(Exception):
    """choose_reg's early stop of one λ after the first vertex epoch."""


class _RegSearch:
    """ESPRO runs of one λ at a time for ``choose_reg``, with their rows."""

    def __init__(self, modes, data, n_points, settings, out):
        self.data, self.n_points, self.settings = data, n_points, settings
        own, optimisation, self.execution = _espro_settings(settings)
        self.out = out if out is not None else self.execution.out
        self.mode, self.seed = self.execution.distributed, self.execution.seed
        self.world = dist.check_mode(self.mode)
        self.together = self.mode is not None and self.world.size > 1  # collectives only when training together
        phase = optimisation.phase(n_samples=own["n_samples"])
        world = self.world if self.mode == "members" else dist.World()
        self.cost = _EsproCost(modes, data, phase, own["n_vertices"] - 1, world)
        self.simplexes = {}

    def halve(self, rows, regs, modes):
        """Round 2: the better half of the λ left by simplex 0's validation NLL grow every
        simplex, the next in line taking over from one that diverges; the others stop."""
        alive = sorted((r for r in regs if _finished(rows[r])), key=lambda r: _nan_last(rows[r]["simplex0_val_nll"]))
        wanted, done = math.ceil(len(alive) / 2), 0
        for reg in alive:
            if done < wanted:
                rows[reg] = self.run(
                    reg,
                    modes,
                    None,
                    rows[reg]["train_s"],
                    grown=self.simplexes.pop(reg),
                    simplex0_nll=rows[reg]["simplex0_val_nll"],
                )
                done += _finished(rows[reg])
            else:
                why = (
                    f"stopped after simplex 0: its validation NLL {rows[reg]['simplex0_val_nll']:.4f} is in the "
                    "worse half of the λ"
                )
                rows[reg] = {**rows[reg], **self.stopped(why, self.cost.first_simplexes())}

    def _val_nll(self, members):
        """The validation NLL of ``members``, computed on rank 0 when the processes train
        together, and known to every process."""
        nll = None
        if not self.together or self.world.is_main:
            nll = metrics(
                predict(members, self.data, split="val", n_points=self.n_points, seed=self.seed), self.data.y_val
            )["nll"]
        return self.world.from_main(nll) if self.together else nll

    def wreck_check(self, mode):
        """The ``espro`` screen of round 1: stops simplex 0 after its first vertex epoch when
        its validation NLL is above the mode's plus half the way to log C."""
        reference, uniform = self._val_nll([as_plain(mode, "modes[0]")]), math.log(self.data.n_classes)
        if not reference < uniform:  # a mode no better than a uniform guess: nothing to lose
            return None
        limit = reference + (uniform - reference) / 2

        def screen(model):
            nll = self._val_nll([model])
            if not nll <= limit:  # NaN included
                raise _Stopped(
                    f"stopped after the first vertex epoch: simplex 0's validation NLL {nll:.4f} is above "
                    f"{limit:.4f}, half the way from its mode's {reference:.4f} to a uniform guess's "
                    f"{uniform:.4f}"
                )

        return screen

    def stopped(self, why, evaluations):
        return {
            "val_nll": math.inf,
            "val_accuracy": math.nan,
            "stopped": why,
            "gradient_evaluations": evaluations,
            "saturated": False,
            "near_hard": False,
            "zero_val_error": False,
        }

    def run(self, reg, modes, screen, seconds=0.0, grown=(), simplex0_nll=None, score=True):
        """The row of λ ``reg`` after ``espro`` on ``modes`` (a prefix of choose_reg's, or all
        of them), with this process's first simplexes ``grown`` in an earlier round; ``seconds``
        of earlier rounds are added to its time, and simplex 0's validation NLL is
        ``simplex0_nll`` when an earlier round measured it. ``score``: the ensemble's
        validation metrics too (round 1 of the halving needs simplex 0's alone)."""
        sub = None if self.out is None else pathlib.Path(self.out) / f"reg_{reg:g}"
        started = time.perf_counter()
        simplexes, diverged, stopped = [], None, None
        try:
            simplexes = espro(modes, self.data, reg=reg, out=sub, _screen=screen, _grown=grown, **self.settings)
        except FloatingPointError as err:  # too strong a push: the loss diverged
            diverged = (getattr(err, "member", 0), str(err), self.cost.until(err))
        except _Stopped as err:
            stopped = str(err)
        if self.together:  # every process learns whether any diverged, and the lowest simplex's error
            diverged = min((d for d in self.world.objects(diverged) if d is not None), default=None)
        row = {"reg": reg, "simplex0_val_nll": math.nan, "log_volume": math.nan, "stopped": None, "diverged": None}
        if diverged is not None:
            row.update(self.stopped(None, diverged[2]), diverged=diverged[1])
        elif stopped is not None:
            row.update(self.stopped(stopped, self.cost.epochs(1)))
        else:
            for device in {s.device for s in simplexes if s.device.type == "cuda"}:
                torch.cuda.synchronize(device)
            if self.together:
                self.world.barrier()
            whole = self.cost.n_modes == (
                self.world.total(len(modes), "modes") if self.mode == "members" else len(modes)
            )
            main = self.mode != "data" or self.world.is_main  # data-parallel processes hold the same simplexes
            if score and main:
                val = predict(
                    simplexes,
                    self.data,
                    split="val",
                    n_points=self.n_points,
                    seed=self.seed,
                    distributed=self.together and self.mode == "members",
                )
                m, top = metrics(val, self.data.y_val), val.max(1).values
                row.update(
                    val_nll=m["nll"],
                    val_accuracy=m["accuracy"],
                    saturated=bool((top >= SATURATED).all()),
                    near_hard=bool((top >= NEAR_HARD).double().mean() >= 0.95),
                    zero_val_error=m["accuracy"] == 1.0,
                )
            if simplex0_nll is None:  # one simplex in all: the ensemble's (rank 0's row is the one kept)
                simplex0_nll = row.get("val_nll") if score and self.cost.n_modes == 1 else self._val_nll(simplexes[:1])
            row.update(simplex0_val_nll=simplex0_nll, log_volume=_last_log_volume(simplexes))
            row["gradient_evaluations"] = self.cost.whole() if whole else self.cost.first_simplexes()
            self.simplexes[reg] = simplexes
        row["train_s"] = seconds + time.perf_counter() - started
        return self.world.from_main(row) if self.together else row  # rank 0's, so that all pick the same λ


class _EsproCost:
    """Gradient evaluations of ESPRO's training, each simplex adding ``n_added`` vertices
    trained for ``phase``, on this process's ``modes`` (all J, or with a ``world`` of
    "members" processes the whole ensemble's)."""

    def __init__(self, modes, data, phase, n_added, world):
        self.phase, self.n_added = phase, n_added
        self.n_modes = world.total(len(modes), "modes") if world.size > 1 else len(modes)
        self.n_train, self.processes = len(data.x_train), world.size

    def epochs(self, n):
        return self.phase.gradient_evaluations(self.n_train, epochs=n)

    def simplex(self):
        return self.n_added * self.epochs(self.phase.epochs)

    def whole(self):
        return self.n_modes * self.simplex()

    def first_simplexes(self):
        """Round 1's: one simplex, or with "members" processes one per process (so the
        search's cost depends on their number)."""
        return min(self.processes, self.n_modes) * self.simplex()

    def until(self, err):
        """The work before a FloatingPointError of ``espro``, the epoch that diverged counted whole."""
        vertices = getattr(err, "member", 0) * self.n_added + getattr(err, "vertex", 1) - 1
        return vertices * self.epochs(self.phase.epochs) + self.epochs(getattr(err, "epoch", 0) + 1)


def _last_log_volume(simplexes):
    """log V of simplex 0 when this process holds it (rank 0 does), else NaN."""
    history = simplexes[0].metadata["history"] if simplexes else []
    return history[-1]["log_volume"] if history else math.nan


_ESPRO_OWN = {
    k: p.default
    for k, p in inspect.signature(espro).parameters.items()
    if p.default is not inspect.Parameter.empty and not k.startswith("_") and k not in ("optimisation", "execution")
}


def _espro_settings(settings):
    """(espro's own arguments, its Optimisation, its Execution) of choose_reg's ``settings``."""
    own = {k: settings.get(k, default) for k, default in _ESPRO_OWN.items()}
    keywords = {k: v for k, v in settings.items() if k not in _ESPRO_OWN and k not in ("optimisation", "execution")}
    optimisation, execution = resolve_settings(
        "espro", keywords, settings.get("optimisation"), settings.get("execution"), VERTEX, epochs="vertex_epochs"
    )
    return own, optimisation, execution


__all__ = ["choose_reg"]
