"""Running the ``simplexkern`` command: its settings checked against each other and the data,
the job run in its folder, the report written and printed, and the exit status. Bad flags,
files and combinations exit with status 2 and one line naming the problem."""

import errno
import os
import sys
import tempfile
import traceback

from simplexkern import _checks, distributed, models
from simplexkern.cli import flags, jobs, kernels, run_data, sources
from simplexkern.cli import folder as run_folder
from simplexkern.cli import report as reports
from simplexkern.cli import settings as run_settings
from simplexkern.cli.runtime import Runtime
from simplexkern.ops import dispatch
from simplexkern.train.runs import data_fingerprint, device_of


def run_command(argv, echo=True):
    """Runs the training / evaluation command ``argv`` (as typed after ``simplexkern``) and
    returns its report (a dict, as in report.json); prints the summary table when ``echo``.
    Bad flags exit (SystemExit 2); bad files and combinations raise ValueError."""
    return run(flags.build_parser().parse_args(argv), argv, echo)


def run(args, argv, echo=True):
    """Runs a parsed training / evaluation command; returns its report (None off rank 0)."""
    if not args.out:
        raise ValueError("--out must be the path of a folder, got ''")
    settings = run_settings.settings_of(args, argv)
    members = run_settings.source_members(settings, fill=not args.resume) if "source" in settings else None
    _check_combinations(args, settings)
    device = device_of(None if args.device == "auto" else args.device)
    world, device = distributed.init(device, args.timeout)
    data = _checked_data(settings, world)
    backend = getattr(args, "backend", "auto")
    if backend != "auto":
        dispatch.resolve(device, backend)
    source = None
    if members is not None:  # evaluate, surface: rank 0 alone, the others are done
        if not world.is_main:
            return None
        world = distributed.World()
        # the models loaded and checked against the data before anything is written
        source = sources.load_source(members, data, device)
    run_settings.check_settings(args.command, settings, data, source)
    folder = run_folder.RunFolder(args.out, args.command, settings, world)
    runtime = Runtime(
        device, not args.quiet, getattr(args, "compile", False), world, getattr(args, "data_parallel", False)
    )
    report_json, report = folder.finished_report(), None
    if report_json is None:
        with dispatch.use_backend(backend):
            part = jobs.JOBS[args.command].run(jobs.Context(folder.settings, data, folder, runtime, source))
        if not world.is_main:
            return None
        report = reports.build(args.command, data, part, folder, device, backend, world.size, runtime.data_parallel)
        report_json = report.to_json()
        folder.write_report(report_json)
    if echo and world.is_main:
        print(_table(report, report_json, folder.report_path))
    return report_json if world.is_main else None


def _check_combinations(args, settings):
    """ValueError for flags that do not go together, or not with how the command was launched."""
    if args.command == "spro" and len(settings["reg"]) != 1:
        raise ValueError(f"--reg: spro trains one complex, give it one λ (got {len(settings['reg'])})")
    if len(settings.get("reg", ())) > 1 and not settings["val_fraction"] > 0:
        raise ValueError("--reg with several values chooses λ on a validation split: --val-fraction must be > 0")
    if settings.get("ood_data") is not None and settings.get("ood_gaussian_noise") is not None:
        raise ValueError("--ood-data and --ood-gaussian-noise: give one of them")
    if args.command == "compare" and distributed.launched():
        raise ValueError(
            "compare runs in one process: launch it without torchrun (espro, ensemble and the other "
            "training commands spread over processes)"
        )
    if getattr(args, "data_parallel", False) and not distributed.launched():
        raise ValueError("--data-parallel trains with several processes: launch the command with torchrun")
    if "model" in settings:
        _flag("--model", models.check_name, settings["model"], True)


def _checked_data(settings, world):
    """The run's data, the same on every process, with the OOD inputs and the model checked
    against it before anything is trained."""
    data = _flag("--data", run_data.load_data, settings)
    world.all_same(data_fingerprint(data, all_splits=True), "data sets")
    if settings.get("ood_data") is not None:
        _flag("--ood-data", run_data.ood_inputs, settings, data)
    if "model" in settings:  # an architecture that does not fit the data fails here, not mid-run
        _flag("--model", models.for_data, settings["model"], data)
    return data


def _table(report, report_json, path):
    """The table of ``report``, or of the finished run's ``report_json`` read back."""
    try:
        return reports.format_table(report or reports.Report.from_json(report_json), path)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as err:  # a report edited by hand
        raise ValueError(
            f"{path} is not a complete simplexkern report (at {err!r}); remove it and "
            "run the same command again to rebuild it"
        ) from None


def _flag(flag, check, *args):
    """``check(*args)``, its ValueError prefixed with ``flag``."""
    try:
        return check(*args)
    except ValueError as err:
        raise ValueError(str(err) if str(err).startswith(flag) else f"{flag}: {err}") from None


def _os_error(err):
    """The OSError that ``err`` is or was raised from (torch's serialisation wraps them), or None."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, OSError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def _describe_os_error(err, out):
    if err.errno == errno.ENOSPC:
        return f"no space left on the device holding --out {out}; free some and run the same command to resume"
    where = err.filename or out
    return f"{where}: {err.strerror or err}"


def _log_bug(command):
    """Writes the traceback being handled to a log file; returns its path."""
    descriptor, path = tempfile.mkstemp(prefix=f"simplexkern-{command}-", suffix=".log")
    with os.fdopen(descriptor, "w") as log:
        log.write(f"simplexkern {' '.join(sys.argv[1:])}\n\n{traceback.format_exc()}")
    return path


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = flags.build_parser().parse_args(argv)
    if args.command == "info":
        kernels.info()
        return 0
    if args.command == "kernels":
        kernels.run(args)
        return 0
    try:
        run(args, argv)
        distributed.shutdown()
    except ValueError as err:
        print(f"simplexkern {args.command}: error: {err}", file=sys.stderr)
        return 2
    except FloatingPointError as err:
        print(f"simplexkern {args.command}: training diverged: {err} (try a smaller --lr or --reg)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            f"\nsimplexkern {args.command}: interrupted; the same command resumes from the last checkpoint",
            file=sys.stderr,
        )
        return 130
    except Exception as err:
        os_error = _os_error(err)
        if os_error is not None:
            print(
                f"simplexkern {args.command}: error: {_describe_os_error(os_error, getattr(args, 'out', None))}",
                file=sys.stderr,
            )
            return 2
        print(
            f"simplexkern {args.command}: internal error, a bug in simplexkern ({type(err).__name__}: "
            f"{_checks.reason(err)}); "
            f"the traceback is in {_log_bug(args.command)}",
            file=sys.stderr,
        )
        return 1
    return 0
