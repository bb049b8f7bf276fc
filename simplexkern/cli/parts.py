"""What the describing steps build a report part from: the rows of the printed table, the
members, the part itself, and the plots that several commands draw."""

import dataclasses

import numpy as np

from simplexkern import eval as evaluation
from simplexkern.cli import plots
from simplexkern.cli.details import Details
from simplexkern.cli.records import Member, MethodRow, Metrics
from simplexkern.cli.report import ReportPart


def method_row(name, test, train_s, predict_s, cost=None):
    return MethodRow(name=name, test=test, train_s=train_s, predict_s=predict_s, gradient_evaluations=cost)


def method_rows(name, scores, train_s, cost=None):
    """The rows of one method: as it is, and temperature-scaled where there was a validation split."""
    rows = [method_row(name, scores.test, train_s, scores.predict_s, cost)]
    temperature = scores.temperature
    if temperature is not None and temperature.note is None:
        scaled = f"{name}, temperature {temperature.value:.2f}"
        rows.append(method_row(scaled, temperature.test, train_s, scores.predict_s, cost))
    return rows


def in_table_order(first, *methods):
    """Rows ``first``, then each method's (``method_rows``) plain row, then their
    temperature-scaled rows."""
    return [*first, *(rows[0] for rows in methods), *(row for rows in methods for row in rows[1:])]


def single_mode_row(scores, n_modes, train_s, cost=None):
    """The mean of the modes of ``scores``, one at a time."""
    mean = Metrics(
        **{
            field.name: float(np.mean([getattr(metrics, field.name) for metrics in scores.per_member]))
            for field in dataclasses.fields(Metrics)
        }
    )
    name = f"single mode (mean of the {n_modes})" if n_modes > 1 else "single mode"
    return method_row(name, mean, train_s / n_modes, scores.predict_s / n_modes, cost)


def members_of(folder, names, paths, scores):
    """The members of ``scores``, their checkpoints relative to ``folder``."""
    return [
        Member(name=name, checkpoint=folder.relative(path), test=metrics)
        for name, path, metrics in zip(names, paths, scores.per_member)
    ]


def report_part(scores, members, methods, details=None, plot_files=()):
    """The report part of a command whose result ``scores`` found."""
    return ReportPart(
        test=scores.test,
        val=scores.val,
        uncertainty=scores.uncertainty,
        temperature=scores.temperature,
        members=members,
        methods=methods,
        details=details or Details(),
        plots=list(plot_files),
    )


def size_curves(probs, data):
    """{method: metrics against the number of members} of ``probs`` ({method: (J, N, C)})."""
    return {name: evaluation.ensemble_size_curve(method_probs, data.y_test) for name, method_probs in probs.items()}


def uncertainty_plot(folder, data, probs, title):
    """The reliability diagram and risk-coverage curves of each method's ensemble in
    ``probs`` ({label: member probabilities (J, N, C)})."""
    means = {label: method_probs.mean(0) for label, method_probs in probs.items()}
    return plots.uncertainty(
        {label: evaluation.uncertainty.reliability(mean, data.y_test) for label, mean in means.items()},
        {label: evaluation.uncertainty.risk_coverage(mean, data.y_test) for label, mean in means.items()},
        folder.sub("uncertainty.png"),
        title,
    )
