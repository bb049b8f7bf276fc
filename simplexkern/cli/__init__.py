"""The ``simplexkern`` command (also ``python -m simplexkern``): every algorithm from the shell,
on a named data set or your own ``.npz``, with a report, checkpoints and plots in ``--out``.

Each subcommand is a thin shell over ``simplexkern.train`` / ``eval`` / ``data``
(``simplexkern.cli.jobs``); its flags are declared once in ``FLAGS`` and shared, with one
spelling, by every subcommand that takes them. Bad flags, files and combinations exit with
status 2 and one line naming the problem.
"""

import argparse
import errno
import functools
import math
import os
import sys
import tempfile
import traceback

from simplexkern import _checks
from simplexkern.cli import folder as run_folder
from simplexkern.cli import report as reports

DATA_HELP = (
    "a data set name (digits, mnist1d, spirals, cifar10, cifar100) or the path of a .npz file with x_train, "
    "y_train, x_test, y_test (features of any shape, integer labels)"
)


def _positive(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _at_least(minimum):
    def parse(text):
        value = _positive(text) if minimum >= 1 else int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return parse


def _between(low, high):
    def parse(text):
        value = _at_least(low)(text)
        if value > high:
            raise argparse.ArgumentTypeError(f"must be <= {high}, got {value}")
        return value

    return parse


MAX_GRID = 1000  # a plane of 1000 x 1000 points is a million evaluations of the model on the data


def _number(low, high=None, *, strict=True):
    """A finite float in (low, high) (or [low, ...) when not ``strict``)."""

    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
        if not (value > low if strict else value >= low) or (high is not None and not value < high):
            bounds = f"{'>' if strict else '>='} {low}" + (f" and < {high}" if high is not None else "")
            raise argparse.ArgumentTypeError(f"must be {bounds}, got {text}")
        return value

    return parse


def _regs(text):
    try:
        values = [float(r) for r in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if any(not v >= 0 or v == float("inf") for v in values):
        raise argparse.ArgumentTypeError(f"λ values must be finite and >= 0, got {text}")
    if len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"λ values must differ, got {text}")
    return values


def _seeds(text):
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if any(v < 0 for v in values) or len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"seeds must be different integers >= 0, got {text}")
    return values


def _three_indices(text):
    try:
        values = [int(i) for i in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected three comma-separated integers, got {text!r}") from None
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"expected three comma-separated integers, got {len(values)}: {text}")
    return values


def _device(text):
    from simplexkern.train.runs import device_of

    if text == "auto":
        return text
    try:
        return str(device_of(text))
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


# dest -> (flag, argparse keywords). Settings decide a run's result and are recorded in run.json.
FLAGS = {
    "source": ("source", dict(help="an earlier output folder (--out of any command) or a checkpoint file")),
    "data": ("--data", dict(default="digits", help=DATA_HELP)),
    "val_fraction": (
        "--val-fraction",
        dict(
            type=_number(0, 1, strict=False),
            default=0.2,
            help="part of the training split held out for validation (choosing λ, fitting a temperature)",
        ),
    ),
    "gaussian_noise": (
        "--gaussian-noise",
        dict(
            type=int,
            choices=range(1, 6),
            default=None,
            help="corrupt the test inputs with Gaussian noise of CIFAR-10-C severity 1-5",
        ),
    ),
    "model": (
        "--model",
        dict(
            default="mlp",
            help="architecture, sized for the data's input shape and classes: mlp, "
            "convnet, lenet5, vgg16, vgg16_bn, preresnet110, preresnet164, "
            "wrn28_10, transformer (signals and token ids) or "
            "torchvision.<name> (any torchvision classification model)",
        ),
    ),
    "modes": ("--modes", dict(type=_positive, default=3, help="J, the number of independently trained modes")),
    "vertices": ("--vertices", dict(type=_positive, default=2, help="vertices added to each mode's simplex")),
    "epochs": ("--epochs", dict(type=_positive, default=40, help="training epochs per mode")),
    "vertex_epochs": ("--vertex-epochs", dict(type=_positive, default=30, help="training epochs per added vertex")),
    "curve_epochs": ("--curve-epochs", dict(type=_positive, default=30, help="training epochs of the curve")),
    "lr": (
        "--lr",
        dict(
            type=_number(0), default=0.05, help="learning rate (SGD, momentum 0.9, weight decay 5e-4, cosine schedule)"
        ),
    ),
    "batch_size": ("--batch-size", dict(type=_positive, default=64, help="training batch size")),
    "samples": ("--samples", dict(type=_positive, default=5, help="H, points sampled per training step")),
    "eval_samples": (
        "--eval-samples",
        dict(type=_positive, default=25, help="M, points per simplex / complex / curve when predicting"),
    ),
    "reg": (
        "--reg",
        dict(
            type=_regs,
            default="0.1,0.3,1,3",
            help="λ >= 0 of the volume regulariser -λ log V; several comma-separated values: the one "
            "with the lowest validation NLL is used",
        ),
    ),
    "reg_scale": (
        "--reg-scale",
        dict(
            choices=("none", "random"),
            default="none",
            help="none: λ as given; random: λ / log V of a random-init simplex (the paper's rule)",
        ),
    ),
    "kind": ("--kind", dict(choices=("bezier", "polychain"), default="bezier", help="the curve's form")),
    "bends": ("--bends", dict(type=_at_least(3), default=3, help="control points of the curve, both ends included")),
    "cycles": ("--cycles", dict(type=_positive, default=4, help="FGE cycles (one snapshot each)")),
    "cycle_epochs": ("--cycle-epochs", dict(type=_positive, default=2, help="epochs per FGE cycle")),
    "lr_max": ("--lr-max", dict(type=_number(0), default=0.05, help="FGE's learning rate at a cycle's ends")),
    "lr_min": (
        "--lr-min",
        dict(
            type=_number(0), default=0.0005, help="FGE's learning rate at a cycle's middle, where the snapshot is taken"
        ),
    ),
    "points": (
        "--points",
        dict(
            type=_three_indices,
            default="0,1,2",
            help="the three vertices (of a simplex or complex) or members (of an ensemble) the "
            "plane passes through; a curve's plane passes through its ends and midpoint",
        ),
    ),
    "member": ("--member", dict(type=_at_least(0), default=0, help="which simplex of an ESPRO run")),
    "grid": ("--grid", dict(type=_between(2, MAX_GRID), default=21, help="grid points per side of the plane")),
    "margin": (
        "--margin",
        dict(
            type=_number(0, 100, strict=False),
            default=0.2,
            help="the plane's extent beyond the three points, as a fraction of theirs",
        ),
    ),
    "seed": (
        "--seed",
        dict(type=_at_least(0), default=0, help="seed of initialisations, data order, points and the validation split"),
    ),
    "seeds": (
        "--seeds",
        dict(
            type=_seeds,
            default="0,1,2",
            help="comma-separated seeds, each a replicate of the whole protocol (its own "
            "initialisations, data order and validation split)",
        ),
    ),
    "connectors": ("--connectors", dict(type=_positive, default=3, help="connectors of the SPRO complex")),
    "complex_reg": ("--complex-reg", dict(type=_number(0, strict=False), default=1.0, help="λ of the SPRO complex")),
    "equal_compute": (
        "--equal-compute",
        dict(
            action="store_true",
            help="also train the deep ensemble of as many modes as ESPRO's "
            "gradient evaluations buy (with and without the λ search)",
        ),
    ),
    "ood_data": (
        "--ood-data",
        dict(
            default=None,
            help="out-of-distribution detection against the test inputs of "
            "this data set (a name or .npz with inputs of the same shape)",
        ),
    ),
    "ood_gaussian_noise": (
        "--ood-gaussian-noise",
        dict(
            type=int,
            choices=range(1, 6),
            default=None,
            help="out-of-distribution detection against the test inputs with Gaussian noise of CIFAR-10-C severity 1-5",
        ),
    ),
}
RUNTIME = {  # how to run, not what: not recorded
    "device": ("--device", dict(type=_device, default="auto", help="cpu, cuda, cuda:N or auto (the GPU if any)")),
    "backend": (
        "--backend",
        dict(choices=("auto", "triton", "torch", "reference"), default="auto", help="backend of the fused simplex ops"),
    ),
    "quiet": ("--quiet", dict(action="store_true", help="no progress bars")),
    "compile": (
        "--compile",
        dict(
            action="store_true",
            help="run each training step's loss under torch.compile (pays off on long runs; compiling takes minutes)",
        ),
    ),
    "resume": (
        "--resume",
        dict(
            action="store_true",
            help="continue the run in --out with the settings recorded "
            "there (running the same command again does the same)",
        ),
    ),
    "data_parallel": (
        "--data-parallel",
        dict(
            action="store_true",
            help="under torchrun: train every model with all processes together, "
            "one after another (default: the independent members spread over "
            "the processes)",
        ),
    ),
    "timeout": (
        "--timeout",
        dict(
            type=_number(0),
            default=1440.0,
            help="under torchrun: minutes a process waits for the others (while they train "
            "more members or one model) before the job fails",
        ),
    ),
}
OOD = ["ood_data", "ood_gaussian_noise"]
MODE = ["data", "val_fraction", "model", "epochs", "lr", "batch_size", *OOD]
SIMPLEX = ["modes", "vertices", "vertex_epochs", "samples", "reg", "reg_scale", "eval_samples"]
FGE = ["cycles", "cycle_epochs", "lr_max", "lr_min"]
COMMANDS = {  # name -> (help, settings, default overrides)
    "demo": (
        "ESPRO against the deep ensemble of the same modes, on digits by default (espro with its own --out)",
        MODE + SIMPLEX + ["equal_compute"],
        {"out": "runs/demo"},
    ),
    "train": ("train one mode (an ordinary network)", MODE, {}),
    "ensemble": ("the deep-ensemble baseline: J independently trained modes", MODE + ["modes"], {}),
    "espro": (
        "ESPRO: a simplex grown around each of J modes, ensembled (λ chosen on validation NLL)",
        MODE + SIMPLEX + ["equal_compute"],
        {},
    ),
    "spro": (
        "SPRO: a simplicial complex of J modes and --vertices connectors, with the dimensionality sweep "
        "(J = 1: a simplex grown around one mode)",
        MODE + SIMPLEX,
        {"modes": 2, "vertices": 3, "reg": "1"},
    ),
    "curve": (
        "a Bezier or polygonal-chain curve of low loss between two modes, with its profile",
        MODE + ["kind", "bends", "curve_epochs", "samples", "eval_samples"],
        {},
    ),
    "fge": ("Fast Geometric Ensembling: snapshots of cyclic-learning-rate training from a mode", MODE + FGE, {}),
    "compare": (
        "deep ensembles, ESPRO, FGE and an SPRO complex at equal training cost, over several seeds: test "
        "metrics against gradient evaluations, and the best method at each budget",
        MODE + SIMPLEX + FGE + ["connectors", "complex_reg", "seeds"],
        {},
    ),
    "evaluate": (
        "evaluate an earlier output folder or checkpoint on any data (default: the data it was trained on)",
        ["source", "data", "val_fraction", "gaussian_noise", *OOD, "eval_samples"],
        {"data": None, "val_fraction": None},
    ),
    "surface": (
        "the loss plane through three points: vertices of a simplex, a curve's ends and midpoint, or three members",
        ["source", "data", "val_fraction", "points", "member", "grid", "margin"],
        {"data": None, "val_fraction": None},
    ),
}
USES_SIMPLEX_OPS = ("demo", "espro", "spro", "curve", "evaluate", "surface", "compare")


def setting_names(command):
    """The settings of ``command``: its flags', and the seed (or seeds) that decide its result."""
    names = COMMANDS[command][1]
    return names if "seeds" in names else names + ["seed"]


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    def _get_help_string(self, action):  # no "(default: None)" / "(default: False)"
        return action.help if action.default is None or action.default is False else super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage block
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser(suppress=False):
    """The parser; with ``suppress``, flags not on the command line are absent from the
    result (to tell which flags were given)."""
    import simplexkern

    parser = _Parser(prog="simplexkern", description=simplexkern.__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("info", help="versions, extension build and GPU")
    for name, (text, settings, overrides) in COMMANDS.items():
        p = sub.add_parser(name, help=text, description=text + ".", formatter_class=_Help)
        names = setting_names(name) + (
            ["device"]
            + (["backend"] if name in USES_SIMPLEX_OPS else [])
            + (["compile"] if "epochs" in settings else [])
            + (["data_parallel"] if "epochs" in settings and name != "compare" else [])
            + ["timeout"]
        )
        for dest in names:
            flag, kw = {**FLAGS, **RUNTIME}[dest]
            kw = dict(kw)
            if dest in overrides:
                kw["default"] = overrides[dest]
            if flag.startswith("--"):
                kw["dest"] = dest
                if suppress:
                    kw["default"] = argparse.SUPPRESS
            if dest == "data" and kw.get("default") is None:
                kw["help"] = DATA_HELP + "; default: the data the source was trained on"
            if dest == "val_fraction" and kw.get("default") is None:
                kw["help"] += "; default: the source's, else 0.2"
            if dest == "vertices" and name == "spro":
                kw["help"] = "connectors added to the complex (J = 1: vertices added to the simplex)"
            p.add_argument(flag, **kw)
        p.add_argument(
            "--out",
            default=argparse.SUPPRESS if suppress else overrides.get("out", f"runs/{name}"),
            help="output folder: report.json, checkpoints, plots (the same command again resumes there)",
        )
        for dest in ("quiet", "resume"):
            flag, kw = RUNTIME[dest]
            p.add_argument(flag, **({**kw, "default": argparse.SUPPRESS} if suppress else kw))
    k = sub.add_parser("kernels", help="show the compiled geometry core and fused ops at work")
    k.add_argument("--batch", type=_positive, default=10_000, help="simplexes in the batch (default 10000)")
    k.add_argument("--vertices", type=_at_least(2), default=11, help="vertices per simplex (default 11)")
    k.add_argument("--device", type=_device, default="auto", help="cpu, cuda or auto (default auto)")
    k.add_argument("--seed", type=int, default=0)
    return parser


def _settings(args, argv):
    """The run's settings: from the flags, or with --resume from the run recorded in --out
    (flags given that contradict the record are an error)."""
    names = setting_names(args.command)
    settings = {k: getattr(args, k) for k in names}
    if args.resume:
        command, recorded = run_folder.recorded_settings(args.out)
        if command != args.command:
            raise ValueError(f"--resume: --out {args.out} holds a '{command}' run, not '{args.command}'")
        given = vars(build_parser(suppress=True).parse_args(argv))
        if "source" in settings:  # compared as recorded: an absolute path
            settings["source"] = os.path.abspath(settings["source"])
        clash = [k for k in names if k in given and run_folder.plain(settings[k]) != recorded.get(k)]
        if clash:
            raise ValueError(
                "--resume continues with the settings recorded in --out; these flags differ from them: "
                + ", ".join(f"{FLAGS[k][0]} (recorded: {recorded.get(k)})" for k in clash)
            )
        settings = _checked_record(recorded, names, args.out)
    return settings


def _checked_record(recorded, names, out):
    """The settings recorded in ``out``'s run.json, each parsed again as its flag would be."""
    record = os.path.join(out, "run.json")
    settings = {}
    for name in names:
        flag, kw = FLAGS[name]
        if name not in recorded:
            raise ValueError(f"{record}: the recorded settings lack {flag}")
        value = recorded[name]
        if value is None and kw.get("default") is None and flag.startswith("--"):
            settings[name] = None
            continue
        if kw.get("action") == "store_true":
            if not isinstance(value, bool):
                raise ValueError(f"{record}: the recorded {flag} {value!r} is not true or false")
            settings[name] = value
            continue
        if isinstance(value, (dict, bool)) or (isinstance(value, list) and name not in ("reg", "points", "seeds")):
            raise ValueError(f"{record}: the recorded {flag} {value!r} is not a value of {flag}")
        text = ",".join(map(str, value)) if isinstance(value, list) else str(value)
        try:
            parsed = kw["type"](text) if "type" in kw else text
        except (argparse.ArgumentTypeError, ValueError) as err:
            raise ValueError(f"{record}: the recorded {flag} {value!r}: {err}") from None
        if "choices" in kw and parsed not in kw["choices"]:
            raise ValueError(f"{record}: the recorded {flag} {value!r} is not one of {list(kw['choices'])}")
        if parsed != value and not (
            isinstance(value, (int, float)) and not isinstance(value, bool) and parsed == value
        ):
            raise ValueError(f"{record}: the recorded {flag} {value!r} does not read back as {parsed!r}")
        settings[name] = value
    if "split_seed" in recorded:
        if (
            isinstance(recorded["split_seed"], bool)
            or not isinstance(recorded["split_seed"], int)
            or recorded["split_seed"] < 0
        ):
            raise ValueError(f"{record}: the recorded split seed {recorded['split_seed']!r} is not an int >= 0")
        settings["split_seed"] = recorded["split_seed"]
    return settings


def _source_members(settings, fill):
    """[(name, checkpoint path)] of evaluate's / surface's source, read once; with ``fill``,
    the data settings left unset are filled from the source run's."""
    from simplexkern.cli import jobs

    settings["source"] = os.path.abspath(settings["source"])
    _, members, theirs = jobs.read_source(settings["source"])
    if not fill:
        return members
    if settings["data"] is None:
        if "data" not in theirs:
            raise ValueError("--data is needed: the source is a checkpoint file, which does not record its data")
        settings["data"] = theirs["data"]
    if settings["val_fraction"] is None:
        settings["val_fraction"] = theirs.get("val_fraction", 0.2)
    settings["split_seed"] = theirs.get("seed", 0)  # the source's validation split, never its training rows
    return members


def run_command(argv, echo=True):
    """Runs the training / evaluation command ``argv`` (as typed after ``simplexkern``) and
    returns its report (a dict, as in report.json); prints the summary table when ``echo``.
    Bad flags exit (SystemExit 2); bad files and combinations raise ValueError."""
    return run(build_parser().parse_args(argv), argv, echo)


def run(args, argv, echo=True):
    """Runs a parsed training / evaluation command; returns its report."""
    from simplexkern import distributed, models
    from simplexkern.cli import compare, jobs
    from simplexkern.ops import dispatch
    from simplexkern.train.runs import data_fingerprint, device_of

    if not args.out:
        raise ValueError("--out must be the path of a folder, got ''")
    settings = _settings(args, argv)
    members = _source_members(settings, fill=not args.resume) if "source" in settings else None
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
    data_parallel = getattr(args, "data_parallel", False)
    if data_parallel and not distributed.launched():
        raise ValueError("--data-parallel trains with several processes: launch the command with torchrun")
    if "model" in settings:
        _flag("--model", models.check_name, settings["model"], True)
    device = device_of(None if args.device == "auto" else args.device)
    world, device = distributed.init(device, args.timeout)
    d = _flag("--data", jobs.load_data, settings)
    world.all_same(data_fingerprint(d, all_splits=True), "data sets")
    if settings.get("ood_data") is not None:  # a bad set is refused before anything is trained
        _flag("--ood-data", jobs.ood_inputs, settings, d)
    if "model" in settings:  # an architecture that does not fit the data fails here, not mid-run
        _flag("--model", models.for_data, settings["model"], d)
    backend = getattr(args, "backend", "auto")
    if backend != "auto":
        dispatch.resolve(device, backend)
    job = compare.run_compare if args.command == "compare" else jobs.JOBS[args.command]
    source = None
    if members is not None:  # evaluate, surface: rank 0 alone, the others are done
        if not world.is_main:
            return None
        world = distributed.World()
        # the models loaded and checked against the data before anything is written
        source = jobs.load_source(members, d, device)
        job = functools.partial(job, source=source)
    jobs.check_settings(args.command, settings, d, source)
    folder = run_folder.RunFolder(args.out, args.command, settings, world)
    report = folder.finished_report()
    if report is None:
        with dispatch.use_backend(backend):
            how = jobs.How(device, not args.quiet, getattr(args, "compile", False), world, data_parallel)
            part = job(folder.settings, d, folder, how)
        if not world.is_main:
            return None
        report = reports.build(args.command, settings, d, part, folder, device, backend, world.size, data_parallel)
        folder.write_report(report)
    if echo and world.is_main:
        try:
            table = reports.format_table(report, folder.report_path)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as err:  # a report edited by hand
            raise ValueError(
                f"{folder.report_path} is not a complete simplexkern report (at {err!r}); remove it and "
                "run the same command again to rebuild it"
            ) from None
        print(table)
    return report if world.is_main else None


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
    fd, path = tempfile.mkstemp(prefix=f"simplexkern-{command}-", suffix=".log")
    with os.fdopen(fd, "w") as f:
        f.write(f"simplexkern {' '.join(sys.argv[1:])}\n\n{traceback.format_exc()}")
    return path


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    if args.command == "info":
        from simplexkern.cli import kernels

        kernels.info()
        return 0
    if args.command == "kernels":
        from simplexkern.cli import kernels

        kernels.run(args)
        return 0
    try:
        run(args, argv)
        from simplexkern import distributed

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
        os_err = _os_error(err)
        if os_err is not None:
            print(
                f"simplexkern {args.command}: error: {_describe_os_error(os_err, getattr(args, 'out', None))}",
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


if __name__ == "__main__":
    sys.exit(main())
