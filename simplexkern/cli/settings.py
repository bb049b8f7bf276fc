"""The settings of a run of the ``simplexkern`` command: from its flags, or with ``--resume``
from the run recorded in ``--out``; those ``evaluate`` and ``surface`` take from their
source; and their checks against the data."""

import argparse
import os

from simplexkern.cli import flags, sources
from simplexkern.cli import folder as run_folder
from simplexkern.data.batches import steps_per_epoch
from simplexkern.eval.surfaces import plane_basis, three_point_model
from simplexkern.train.settings import Optimisation


def settings_of(args, argv):
    """The run's settings: from the flags, or with --resume from the run recorded in --out
    (flags given that contradict the record are an error)."""
    names = flags.setting_names(args.command)
    settings = {name: getattr(args, name) for name in names}
    if args.resume:
        command, recorded = run_folder.recorded_settings(args.out)
        if command != args.command:
            raise ValueError(f"--resume: --out {args.out} holds a '{command}' run, not '{args.command}'")
        given = vars(flags.build_parser(suppress=True).parse_args(argv))
        if "source" in settings:  # compared as recorded: an absolute path
            settings["source"] = os.path.abspath(settings["source"])
        clash = [name for name in names if name in given and run_folder.plain(settings[name]) != recorded.get(name)]
        if clash:
            raise ValueError(
                "--resume continues with the settings recorded in --out; these flags differ from them: "
                + ", ".join(f"{flags.FLAGS[name][0]} (recorded: {recorded.get(name)})" for name in clash)
            )
        settings = checked_record(recorded, names, args.out)
    return settings


def checked_record(recorded, names, out):
    """The settings recorded in ``out``'s run.json, each parsed again as its flag would be."""
    record = os.path.join(out, "run.json")
    settings = {}
    for name in names:
        if name not in recorded:
            raise ValueError(f"{record}: the recorded settings lack {flags.FLAGS[name][0]}")
        settings[name] = _recorded_value(name, recorded[name], record)
    if "split_seed" in recorded:
        split_seed = recorded["split_seed"]
        if isinstance(split_seed, bool) or not isinstance(split_seed, int) or split_seed < 0:
            raise ValueError(f"{record}: the recorded split seed {split_seed!r} is not an int >= 0")
        settings["split_seed"] = split_seed
    return settings


def _recorded_value(name, value, record):
    """``value``, recorded in ``record`` for the setting ``name``, if its flag reads it back."""
    flag, keywords = flags.FLAGS[name]
    if value is None and keywords.get("default") is None and flag.startswith("--"):
        return None
    if keywords.get("action") == "store_true":
        if not isinstance(value, bool):
            raise ValueError(f"{record}: the recorded {flag} {value!r} is not true or false")
        return value
    if isinstance(value, (dict, bool)) or (isinstance(value, list) and name not in ("reg", "points", "seeds")):
        raise ValueError(f"{record}: the recorded {flag} {value!r} is not a value of {flag}")
    text = ",".join(map(str, value)) if isinstance(value, list) else str(value)
    try:
        parsed = keywords["type"](text) if "type" in keywords else text
    except (argparse.ArgumentTypeError, ValueError) as err:
        raise ValueError(f"{record}: the recorded {flag} {value!r}: {err}") from None
    if "choices" in keywords and parsed not in keywords["choices"]:
        raise ValueError(f"{record}: the recorded {flag} {value!r} is not one of {list(keywords['choices'])}")
    if parsed != value:
        raise ValueError(f"{record}: the recorded {flag} {value!r} does not read back as {parsed!r}")
    return value


def source_members(settings, fill):
    """[(name, checkpoint path)] of evaluate's / surface's source, read once; with ``fill``,
    the data settings left unset are filled from the source run's."""
    settings["source"] = os.path.abspath(settings["source"])
    _, members, theirs = sources.read_source(settings["source"])
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


def check_settings(command, settings, data, source=None):
    """ValueError for settings that cannot run on ``data`` (and the loaded ``source`` of
    evaluate / surface), found before anything is written."""
    if command in ("fge", "compare"):
        _check_fge(settings, data)
    if "epochs" in settings and len(data.x_train) < 2:
        raise ValueError(
            f"--val-fraction {settings['val_fraction']:g} leaves {len(data.x_train)} training example of "
            f"{data.name}; training needs at least 2"
        )
    if command == "surface":
        model, points, _ = sources.plane_points(source, settings)
        try:  # three points that span no plane are refused here, not after --out is made
            plane_basis(*((model, points) if model is not None else three_point_model(points)))
        except ValueError as err:
            raise ValueError(
                f"{settings['source']}, --points {','.join(map(str, settings['points']))}: {err}"
            ) from None


def _check_fge(settings, data):
    if not settings["lr_min"] < settings["lr_max"]:
        raise ValueError(f"--lr-min ({settings['lr_min']:g}) must be below --lr-max ({settings['lr_max']:g})")
    steps = steps_per_epoch(len(data.x_train), settings["batch_size"])
    if settings["cycle_epochs"] * steps // 2 < 1:
        raise ValueError(
            f"--cycle-epochs {settings['cycle_epochs']} of {steps} step(s) (--batch-size {settings['batch_size']}, "
            f"{len(data.x_train)} training examples) leave a cycle no middle step to snapshot; use "
            "more --cycle-epochs or a smaller --batch-size"
        )


def optimisation(settings, epochs="epochs"):
    """The trainers' ``Optimisation`` of a command's ``settings``; ``epochs`` names the setting
    of the epoch count ("epochs", "vertex_epochs", "curve_epochs")."""
    return Optimisation(epochs=settings[epochs], lr=settings["lr"], batch_size=settings["batch_size"])
