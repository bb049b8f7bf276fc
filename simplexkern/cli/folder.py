"""The output folder of one ``simplexkern`` command: ``run.json`` (the command, its settings
and the wall time of each phase), the checkpoints, ``report.json`` and the plots.

Running a command again with the same folder and settings resumes it (a finished run is
not redone); a folder holding another run, or files that are not a run, is refused. In a
run of several processes, rank 0 creates and writes the folder's records; the others open
it after rank 0 and write their own checkpoints only."""

import contextlib
import json
import math
import os
import pathlib
import time

import numpy as np
import torch

from simplexkern import distributed
from simplexkern._atomic import atomic_write, remove_leftovers


def plain(obj):
    """``obj`` as JSON values: tuples as lists, NumPy / torch scalars as numbers, and
    non-finite floats as None (JSON has no NaN or infinity)."""
    if isinstance(obj, dict):
        return {str(key): plain(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(item) for item in obj]
    if isinstance(obj, (np.ndarray, torch.Tensor)):
        return plain(obj.tolist())
    if isinstance(obj, (np.floating, np.integer, np.bool_)):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json(path, obj):
    """Writes ``obj`` to ``path`` atomically: the file is the old one or the whole new one."""
    with atomic_write(path, "w") as file:
        json.dump(plain(obj), file, indent=1, allow_nan=False)
        file.write("\n")


_JSON_TYPES = {
    dict: "an object",
    list: "an array",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "true or false",
    type(None): "null",
}
RUN_FIELDS = {"command": str, "settings": dict, "phases": dict}
REPORT_FIELDS = {
    "schema": str,
    "command": str,
    "settings": dict,
    "data": dict,
    "members": list,
    "methods": list,
    "details": dict,
    "times": dict,
    "environment": dict,
    "plots": list,
    "resumed": bool,
}


def read_json(path, what, fields=None):
    """The JSON object in ``path``, with ``fields`` (name -> type) present and of their types;
    ValueError naming the file otherwise."""
    try:
        obj = json.loads(pathlib.Path(path).read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{path} is not a readable {what}: {err}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path} is not a {what}: it holds {_JSON_TYPES.get(type(obj), 'a value')}, not an object")
    for key, kind in (fields or {}).items():
        if key not in obj:
            raise ValueError(f"{path} is not a {what}: it has no {key!r}")
        if not isinstance(obj[key], kind) or (kind is int and isinstance(obj[key], bool)):
            raise ValueError(
                f"{path} is not a {what}: its {key!r} is {_JSON_TYPES.get(type(obj[key]), 'a value')}, "
                f"not {_JSON_TYPES[kind]}"
            )
    return obj


def read_run(path):
    """The checked run record ``path`` (run.json)."""
    run = read_json(path, "simplexkern run record", RUN_FIELDS)
    for name, phase in run["phases"].items():
        if not (
            isinstance(phase, dict)
            and isinstance(phase.get("seconds"), (int, float))
            and isinstance(phase.get("done"), bool)
        ):
            raise ValueError(
                f"{path} is not a simplexkern run record: its phase {name!r} is not "
                '{"seconds": number, "done": true or false}'
            )
    return run


def read_report(path):
    """The checked report ``path`` (report.json): the fields every command writes, and
    members with a name and a checkpoint path."""
    report = read_json(path, "simplexkern report", REPORT_FIELDS)
    for member in report["members"]:
        if not (
            isinstance(member, dict)
            and isinstance(member.get("name"), str)
            and isinstance(member.get("checkpoint"), (str, type(None)))
        ):
            raise ValueError(
                f'{path} is not a simplexkern report: a member is not {{"name": string, "checkpoint": string, ...}}'
            )
    return report


def recorded_settings(path):
    """(command, settings) recorded in the run folder ``path``; ValueError when it holds none."""
    record = pathlib.Path(path) / "run.json"
    if not record.is_file():
        raise ValueError(f"--out {path}: nothing to resume there (no run.json)")
    run = read_run(record)
    return run["command"], run["settings"]


class RunFolder:
    """The folder ``path`` of a run of ``command`` with ``settings`` (a JSON dict), by the
    processes of ``world``."""

    def __init__(self, path, command, settings, world=distributed.World()):
        self.path = pathlib.Path(path)
        self.command, self.settings = command, plain(settings)
        self.world, self.writes = world, world.is_main
        if not self.writes:
            world.barrier()  # rank 0 has checked or created the folder
        self._open()
        if self.writes:
            world.barrier()

    def _open(self):
        if self.path.exists() and not self.path.is_dir():
            raise ValueError(f"--out {self.path} exists and is not a folder")
        if self.path.is_dir() and self.writes:  # what a killed writer left
            remove_leftovers(self.path)
        record = self.path / "run.json"
        self.resumed = record.exists()
        if self.resumed:
            run = read_run(record)
            theirs = run["settings"]
            if run["command"] != self.command or theirs != self.settings:
                differ = sorted(
                    name for name in set(theirs) | set(self.settings) if theirs.get(name) != self.settings.get(name)
                )
                what = (
                    f"a '{run['command']}' run"
                    if run["command"] != self.command
                    else "a run with other settings: "
                    + ", ".join(
                        f"--{name.replace('_', '-')} {theirs.get(name)} (now {self.settings.get(name)})"
                        for name in differ
                    )
                )
                raise ValueError(
                    f"--out {self.path} holds {what}; use another --out, or remove the folder to start over"
                )
            self.phases = run["phases"]
        else:
            if self.path.exists() and any(self.path.iterdir()):
                raise ValueError(
                    f"--out {self.path} is a folder of other files (no run.json); use an empty or new folder"
                )
            self.phases = {}
            try:
                self.path.mkdir(parents=True, exist_ok=True)
                self._write_record()
            except OSError as err:
                raise ValueError(f"--out {self.path}: cannot write there ({err.strerror or err})") from None

    def _write_record(self):
        if not self.writes:
            return
        write_json(self.path / "run.json", {"command": self.command, "settings": self.settings, "phases": self.phases})

    def sub(self, name):
        """The path of ``name`` inside the folder, as a string."""
        return str(self.path / name)

    @contextlib.contextmanager
    def phase(self, name):
        """Times the block as phase ``name``. Wall seconds add up over the invocations that
        worked on it (an interrupted one included) until one finishes it; a phase already
        finished costs only the loading of its results, which is not counted."""
        record = self.phases.setdefault(name, {"seconds": 0.0, "done": False})
        already = record["done"]
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        finished = False
        try:
            yield
            self.world.barrier()  # the phase lasts until every process has finished its part
            finished = True
        finally:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            if not already:
                record["seconds"] += time.perf_counter() - start
                record["done"] = finished
                self._write_record()

    def seconds(self, name):
        return self.phases[name]["seconds"]

    @property
    def report_path(self):
        return self.path / "report.json"

    def finished_report(self):
        """The report of a finished run, or None."""
        if not self.report_path.exists():
            return None
        try:
            return read_report(self.report_path)
        except ValueError as err:
            raise ValueError(f"{err}; remove it and run the same command again to rebuild it") from None

    def write_report(self, report):
        if self.writes:
            write_json(self.report_path, report)

    def relative(self, path):
        return os.path.relpath(path, self.path)
