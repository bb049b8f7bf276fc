"""The flags of the ``simplexkern`` command, declared once in ``FLAGS`` (what decides a run's
result) and ``RUNTIME`` (how it runs) and shared, with one spelling, by every subcommand
that takes them (``COMMANDS``), and the parser built from them."""

import argparse

from simplexkern.cli import flag_types

DATA_HELP = (
    "a data set name (digits, mnist1d, spirals, cifar10, cifar100) or the path of a .npz file with x_train, "
    "y_train, x_test, y_test (features of any shape, integer labels)"
)
MAX_GRID = 1000  # a plane of 1000 x 1000 points is a million evaluations of the model on the data

# dest -> (flag, argparse keywords). Settings decide a run's result and are recorded in run.json.
FLAGS = {
    "source": ("source", dict(help="an earlier output folder (--out of any command) or a checkpoint file")),
    "data": ("--data", dict(default="digits", help=DATA_HELP)),
    "val_fraction": (
        "--val-fraction",
        dict(
            type=flag_types.number(0, 1, strict=False),
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
    "modes": (
        "--modes",
        dict(type=flag_types.positive, default=3, help="J, the number of independently trained modes"),
    ),
    "vertices": ("--vertices", dict(type=flag_types.positive, default=2, help="vertices added to each mode's simplex")),
    "epochs": ("--epochs", dict(type=flag_types.positive, default=40, help="training epochs per mode")),
    "vertex_epochs": (
        "--vertex-epochs",
        dict(type=flag_types.positive, default=30, help="training epochs per added vertex"),
    ),
    "curve_epochs": ("--curve-epochs", dict(type=flag_types.positive, default=30, help="training epochs of the curve")),
    "lr": (
        "--lr",
        dict(
            type=flag_types.number(0),
            default=0.05,
            help="learning rate (SGD, momentum 0.9, weight decay 5e-4, cosine schedule)",
        ),
    ),
    "batch_size": ("--batch-size", dict(type=flag_types.positive, default=64, help="training batch size")),
    "samples": ("--samples", dict(type=flag_types.positive, default=5, help="H, points sampled per training step")),
    "eval_samples": (
        "--eval-samples",
        dict(type=flag_types.positive, default=25, help="M, points per simplex / complex / curve when predicting"),
    ),
    "reg": (
        "--reg",
        dict(
            type=flag_types.regs,
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
    "bends": (
        "--bends",
        dict(type=flag_types.at_least(3), default=3, help="control points of the curve, both ends included"),
    ),
    "cycles": ("--cycles", dict(type=flag_types.positive, default=4, help="FGE cycles (one snapshot each)")),
    "cycle_epochs": ("--cycle-epochs", dict(type=flag_types.positive, default=2, help="epochs per FGE cycle")),
    "lr_max": ("--lr-max", dict(type=flag_types.number(0), default=0.05, help="FGE's learning rate at a cycle's ends")),
    "lr_min": (
        "--lr-min",
        dict(
            type=flag_types.number(0),
            default=0.0005,
            help="FGE's learning rate at a cycle's middle, where the snapshot is taken",
        ),
    ),
    "points": (
        "--points",
        dict(
            type=flag_types.three_indices,
            default="0,1,2",
            help="the three vertices (of a simplex or complex) or members (of an ensemble) the "
            "plane passes through; a curve's plane passes through its ends and midpoint",
        ),
    ),
    "member": ("--member", dict(type=flag_types.at_least(0), default=0, help="which simplex of an ESPRO run")),
    "grid": (
        "--grid",
        dict(type=flag_types.between(2, MAX_GRID), default=21, help="grid points per side of the plane"),
    ),
    "margin": (
        "--margin",
        dict(
            type=flag_types.number(0, 100, strict=False),
            default=0.2,
            help="the plane's extent beyond the three points, as a fraction of theirs",
        ),
    ),
    "seed": (
        "--seed",
        dict(
            type=flag_types.at_least(0),
            default=0,
            help="seed of initialisations, data order, points and the validation split",
        ),
    ),
    "seeds": (
        "--seeds",
        dict(
            type=flag_types.seeds,
            default="0,1,2",
            help="comma-separated seeds, each a replicate of the whole protocol (its own "
            "initialisations, data order and validation split)",
        ),
    ),
    "connectors": ("--connectors", dict(type=flag_types.positive, default=3, help="connectors of the SPRO complex")),
    "complex_reg": (
        "--complex-reg",
        dict(type=flag_types.number(0, strict=False), default=1.0, help="λ of the SPRO complex"),
    ),
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
    "device": (
        "--device",
        dict(type=flag_types.device, default="auto", help="cpu, cuda, cuda:N or auto (the GPU if any)"),
    ),
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
            type=flag_types.number(0),
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
    subcommands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    subcommands.add_parser("info", help="versions, extension build and GPU")
    for name, (text, settings, overrides) in COMMANDS.items():
        command_parser = subcommands.add_parser(name, help=text, description=text + ".", formatter_class=_Help)
        names = setting_names(name) + (
            ["device"]
            + (["backend"] if name in USES_SIMPLEX_OPS else [])
            + (["compile"] if "epochs" in settings else [])
            + (["data_parallel"] if "epochs" in settings and name != "compare" else [])
            + ["timeout"]
        )
        for dest in names:
            flag, keywords = {**FLAGS, **RUNTIME}[dest]
            keywords = dict(keywords)
            if dest in overrides:
                keywords["default"] = overrides[dest]
            if flag.startswith("--"):
                keywords["dest"] = dest
                if suppress:
                    keywords["default"] = argparse.SUPPRESS
            if dest == "data" and keywords.get("default") is None:
                keywords["help"] = DATA_HELP + "; default: the data the source was trained on"
            if dest == "val_fraction" and keywords.get("default") is None:
                keywords["help"] += "; default: the source's, else 0.2"
            if dest == "vertices" and name == "spro":
                keywords["help"] = "connectors added to the complex (J = 1: vertices added to the simplex)"
            command_parser.add_argument(flag, **keywords)
        command_parser.add_argument(
            "--out",
            default=argparse.SUPPRESS if suppress else overrides.get("out", f"runs/{name}"),
            help="output folder: report.json, checkpoints, plots (the same command again resumes there)",
        )
        for dest in ("quiet", "resume"):
            flag, keywords = RUNTIME[dest]
            command_parser.add_argument(flag, **({**keywords, "default": argparse.SUPPRESS} if suppress else keywords))
    kernels_parser = subcommands.add_parser("kernels", help="show the compiled geometry core and fused ops at work")
    kernels_parser.add_argument(
        "--batch", type=flag_types.positive, default=10_000, help="simplexes in the batch (default 10000)"
    )
    kernels_parser.add_argument(
        "--vertices", type=flag_types.at_least(2), default=11, help="vertices per simplex (default 11)"
    )
    kernels_parser.add_argument(
        "--device", type=flag_types.device, default="auto", help="cpu, cuda or auto (default auto)"
    )
    kernels_parser.add_argument("--seed", type=int, default=0)
    return parser
