"""Training costs in gradient evaluations (training examples x points over the steps,
``Phase.gradient_evaluations``): the same on any machine, so methods compare at equal cost."""

from simplexkern.cli.settings import optimisation
from simplexkern.train.loop import Phase


def mode_cost(settings, data):
    """Gradient evaluations of training one mode with ``settings``."""
    return optimisation(settings).phase().gradient_evaluations(len(data.x_train))


def simplex_cost(settings, data, added):
    """Gradient evaluations of training ``added`` vertices with ``settings``."""
    phase = optimisation(settings, "vertex_epochs").phase(n_samples=settings["samples"])
    return added * phase.gradient_evaluations(len(data.x_train))


def curve_cost(settings, data):
    """Gradient evaluations of training a curve with ``settings`` (its ends not included)."""
    phase = optimisation(settings, "curve_epochs").phase(n_samples=settings["samples"])
    return phase.gradient_evaluations(len(data.x_train))


def fge_cost(settings, data, cycles=None):
    """Gradient evaluations of FGE's ``cycles`` (default: all) cycles with ``settings``."""
    phase = Phase(epochs=settings["cycle_epochs"], lr=settings["lr_max"], batch_size=settings["batch_size"])
    return (settings["cycles"] if cycles is None else cycles) * phase.gradient_evaluations(len(data.x_train))


def espro_costs(settings, data, reg_rows):
    """ESPRO's training cost: one mode's, the chosen λ's (modes and simplexes) and with the
    λ search of choose_reg's ``reg_rows`` ([] for one λ)."""
    one_mode, n_modes = mode_cost(settings, data), settings["modes"]
    espro = n_modes * one_mode + n_modes * simplex_cost(settings, data, settings["vertices"])
    return {
        "mode": one_mode,
        "espro": espro,
        "with_search": n_modes * one_mode + sum(row["gradient_evaluations"] for row in reg_rows) if reg_rows else espro,
    }
