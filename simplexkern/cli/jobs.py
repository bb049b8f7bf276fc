"""What each ``simplexkern`` subcommand computes, on top of ``simplexkern.train`` / ``eval`` /
``data``: a ``Job`` of three steps, training (``simplexkern.cli.training``), scoring
(``scoring``) and describing (``describing``: the report part, table rows and plots).

Launched as several processes (``torchrun``), every process trains its part and scores (the
scores are gathered with collectives); rank 0 alone describes, writes the report and the
plots, and on the other processes a job returns None.
"""

import dataclasses
from collections.abc import Callable

from simplexkern.cli import compare, describing, scoring, training
from simplexkern.cli.folder import RunFolder
from simplexkern.cli.runtime import Runtime
from simplexkern.data.dataset import Dataset


@dataclasses.dataclass(frozen=True)
class Context:
    """What a job works with."""

    settings: dict  # the command's settings: its flags, and the seed (or seeds)
    data: Dataset
    folder: RunFolder  # or a part of it (compare's SeedFolder)
    runtime: Runtime
    source: list | None = None  # evaluate's and surface's [SourceMember], loaded and checked


@dataclasses.dataclass(frozen=True)
class Job:
    """A command's work: ``train(context)`` on every process, each its part;
    ``score(context, trained)`` on every process; ``describe(context, trained, scores)``, the
    report part (a ``ReportPart``), on rank 0."""

    train: Callable
    score: Callable
    describe: Callable

    def run(self, context):
        """The report part on rank 0; None on the other processes."""
        trained = self.train(context)
        scores = self.score(context, trained)
        if not context.runtime.world.is_main:
            return None
        return self.describe(context, trained, scores)


JOBS = {
    "train": Job(training.train_one_mode, scoring.score_modes, describing.describe_train),
    "ensemble": Job(training.train_ensemble, scoring.score_modes, describing.describe_ensemble),
    "espro": Job(training.train_espro_command, scoring.score_espro, describing.describe_espro),
    "demo": Job(training.train_espro_command, scoring.score_espro, describing.describe_espro),
    "spro": Job(training.train_spro, scoring.score_spro, describing.describe_spro),
    "curve": Job(training.train_curve, scoring.score_curve, describing.describe_curve),
    "fge": Job(training.train_fge, scoring.score_fge, describing.describe_fge),
    "compare": Job(compare.train_compare, compare.score_compare, compare.describe_compare),
    "evaluate": Job(training.nothing, scoring.score_evaluate, describing.describe_evaluate),
    "surface": Job(training.nothing, scoring.score_surface, describing.describe_surface),
}
