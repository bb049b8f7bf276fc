"""``report.json``, the one result file of every ``simplexkern`` command (schema
``simplexkern.report/1``), and the table printed at the end of a run.

A ``Report`` is written as one JSON object: its header, the fields of the command's
``ReportPart`` (``simplexkern.cli.records``, ``simplexkern.cli.details``), the times and the
environment. ``Report.from_json`` reads the reports of every command, those of earlier
versions included.
"""

import dataclasses
import datetime
import platform
import sys

import numpy as np
import torch

import simplexkern
from simplexkern.cli.details import DETAILS, Details, number
from simplexkern.cli.records import Member, MethodRow, Metrics, Record, Temperature, Uncertainty

SCHEMA = "simplexkern.report/1"


@dataclasses.dataclass
class ReportPart(Record):
    """What a command's job finds: its result, the models it averages and the table of methods."""

    # the command's result: the ESPRO ensemble, the deep ensemble, the complex, the curve,
    # the FGE ensemble, the evaluated models (null for surface and compare)
    test: Metrics | None
    val: Metrics | None  # the same on the validation split (null without one)
    uncertainty: Uncertainty | None  # of the result (null for surface and compare)
    temperature: Temperature | None  # null without a validation split
    members: list[Member]  # the models the result averages
    methods: list[MethodRow]  # the printed table: the result and its baselines
    details: Details  # per command
    plots: list[str]  # the PNG files written beside the report

    @classmethod
    def from_json(cls, obj, command):
        return cls(**cls.read_fields(obj, skip=("details",)), details=DETAILS[command].from_json(obj["details"]))


@dataclasses.dataclass
class DataSummary(Record):
    name: str
    description: str
    n_train: int
    n_val: int
    n_test: int
    n_classes: int
    input_shape: list[int]

    @classmethod
    def of(cls, data):
        return cls(
            name=data.name,
            description=data.describe(),
            n_train=len(data.x_train),
            n_val=0 if data.x_val is None else len(data.x_val),
            n_test=len(data.x_test),
            n_classes=data.n_classes,
            input_shape=list(data.input_shape),
        )


@dataclasses.dataclass
class Environment(Record):
    simplexkern: str  # versions
    torch: str
    python: str
    numpy: str
    device: str
    cuda_kernels: bool  # whether the CUDA kernels were built
    backend: str  # the fused-op backend asked for
    processes: int | None
    data_parallel: bool | None  # whether the processes trained each model together

    @classmethod
    def of(cls, device, backend, processes=1, data_parallel=False):
        name = (
            torch.cuda.get_device_name(device)
            if device.type == "cuda"
            else f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)"
        )
        return cls(
            simplexkern=simplexkern.__version__,
            torch=torch.__version__,
            python=sys.version.split()[0],
            numpy=np.__version__,
            device=name,
            cuda_kernels=bool(simplexkern._C.cuda_enabled()),
            backend=backend,
            processes=processes,
            data_parallel=data_parallel,
        )


@dataclasses.dataclass
class Report(Record):
    schema: str
    command: str
    created: str  # UTC, ISO 8601
    resumed: bool  # whether an earlier invocation did part of the work
    # every setting that decides the result: the flags, without --out, --device, --backend,
    # --quiet (and evaluate's and surface's "split_seed", their source's)
    settings: dict
    data: DataSummary
    part: ReportPart  # written as its fields, between data and times
    # seconds per phase ("modes", "vertices", "connectors", "curve", "fge", "predict",
    # "plane", ...) and "total"
    times: dict[str, float]
    environment: Environment

    def to_json(self):
        fields = super().to_json()
        part, times, environment = fields.pop("part"), fields.pop("times"), fields.pop("environment")
        return {**fields, **part, "times": times, "environment": environment}

    @classmethod
    def from_json(cls, obj):
        return cls(**cls.read_fields(obj, skip=("part",)), part=ReportPart.from_json(obj, obj["command"]))


def build(command, data, part, folder, device, backend, processes=1, data_parallel=False):
    """The report of ``part``, the work of ``command`` on ``data`` in ``folder``."""
    times = {name: phase["seconds"] for name, phase in folder.phases.items()}
    times["total"] = sum(times.values())
    return Report(
        schema=SCHEMA,
        command=command,
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        resumed=folder.resumed,
        settings=folder.settings,
        data=DataSummary.of(data),
        part=part,
        times=times,
        environment=Environment.of(device, backend, processes, data_parallel),
    )


def _count(value):
    return "-" if value is None else f"{value / 1e6:.2f}M" if value >= 1e6 else f"{value / 1e3:.1f}k"


def format_table(report, path):
    """The summary printed at the end of a run."""
    part = report.part
    lines = [f"data: {report.data.description}; device {report.environment.device}", *part.details.lines(part.methods)]
    if part.methods and not part.details.prints_methods:
        lines += ["", *_method_lines(part.methods), *_uncertainty_lines(part.uncertainty)]
        if part.temperature is not None and part.temperature.note:
            lines.append(f"temperature not fitted (T = 1 kept): {part.temperature.note}")
    folder = path.parent
    lines += [
        "",
        f"report: {path}" + (f"; plots: {', '.join(str(folder / plot) for plot in part.plots)}" if part.plots else ""),
    ]
    if report.resumed:
        lines.append("(resumed: times add up the invocations that did the work)")
    return "\n".join(lines)


def _method_lines(methods):
    width = max(len(row.name) for row in methods)
    lines = [
        f"{'test split':{width}s} {'accuracy':>8s} {'NLL':>7s} {'ECE':>7s} {'Brier':>7s} {'train':>8s} "
        f"{'grad evals':>10s} {'predict':>10s}"
    ]
    for row in methods:
        test = row.test
        train = "-" if row.train_s is None else format(row.train_s, "7.1f") + "s"
        lines.append(
            f"{row.name:{width}s} {test.accuracy:8.4f} {test.nll:7.4f} {test.ece:7.4f} {test.brier:7.4f} "
            f"{train:>8s} {_count(row.gradient_evaluations):>10s} "
            f"{number(1e3 * row.predict_s, '7.1f')} ms"
        )
    lines.append(
        "train: wall seconds, the modes included; grad evals: training examples x points over the "
        "steps; predict: the test split; temperatures fitted on the validation split"
    )
    return lines


def _uncertainty_lines(uncertainty):
    if not uncertainty:
        return []
    members = (
        ""
        if uncertainty.disagreement is None
        else (
            f", members' disagreement {uncertainty.disagreement:.4f}, mutual information "
            f"{uncertainty.mutual_information:.4f}"
        )
    )
    if uncertainty.point_disagreement is not None:
        members += f", points' disagreement within a member {uncertainty.point_disagreement:.4f}"
    lines = [
        f"the result on the test split: adaptive ECE {uncertainty.adaptive_ece:.4f}, AURC {uncertainty.aurc:.4f}"
        + members
    ]
    if uncertainty.ood:
        lines.append(
            "out-of-distribution inputs told from the test inputs: "
            + "; ".join(
                f"by {name.replace('_', ' ')}: AUROC {detection.auroc:.4f}, AUPR {detection.aupr:.4f}, "
                f"FPR at 95% TPR {detection.fpr95:.4f}"
                for name, detection in uncertainty.ood.items()
            )
        )
    return lines
