"""Training: ordinary modes and the deep-ensemble baseline, SPRO simplexes and complexes,
ESPRO, curves and FGE, all on one training loop (``simplexkern.train.loop``). Every
algorithm is deterministic under its ``seed``, shows a progress bar (``progress=False``
hides it), checkpoints into ``out`` after every epoch and resumes from there."""

from simplexkern.train.curves import curve_model, fge, train_curve
from simplexkern.train.dimensionality import dimensionality_sweep
from simplexkern.train.loop import Phase, run_phase
from simplexkern.train.modes import deep_ensemble, train_mode
from simplexkern.train.reg_search import choose_reg
from simplexkern.train.settings import Execution, Optimisation
from simplexkern.train.spro import espro, grow_simplex, spro_complex

__all__ = [
    "train_mode",
    "deep_ensemble",
    "grow_simplex",
    "espro",
    "choose_reg",
    "spro_complex",
    "dimensionality_sweep",
    "train_curve",
    "curve_model",
    "fge",
    "Optimisation",
    "Execution",
    "Phase",
    "run_phase",
]
