"""The ``simplexkern`` command (also ``python -m simplexkern``): every algorithm from the shell,
on a named data set or your own ``.npz``, with a report, checkpoints and plots in ``--out``.

Each subcommand is a thin shell over ``simplexkern.train`` / ``eval`` / ``data``: its flags
are declared in ``flags``, its settings merged in ``settings``, its work done by a job
(``jobs``) and reported in ``report``; ``command`` runs it.
"""

from simplexkern.cli.command import main, run, run_command
from simplexkern.cli.flags import COMMANDS, FLAGS, RUNTIME, build_parser, setting_names

__all__ = ["COMMANDS", "FLAGS", "RUNTIME", "build_parser", "main", "run", "run_command", "setting_names"]
