"""The parts ``report.json`` is made of: metrics, uncertainty, temperatures, members and
the rows of the printed table, each a dataclass written as a JSON object of its fields.

Metrics are on the test split unless a field says otherwise; times are wall seconds; JSON
null stands for a value that does not apply or is not finite.
"""

import dataclasses
import types
import typing

from simplexkern import eval as evaluation
from simplexkern.cli.folder import plain

# field metadata: the JSON leaves the field out while it is None
OMITTED_IF_NONE = {"omitted_if_none": True}


class Record:
    """A dataclass written as a JSON object of its fields, in their order, and read back
    from one. A field that the JSON lacks (a report of an earlier version) reads as None; a
    field's metadata may name its JSON key ("json") or leave it out while it is None
    (``OMITTED_IF_NONE``)."""

    def to_json(self):
        return {
            _key(field): _encode(getattr(self, field.name))
            for field in dataclasses.fields(self)
            if not (field.metadata.get("omitted_if_none") and getattr(self, field.name) is None)
        }

    @classmethod
    def from_json(cls, obj):
        return cls(**cls.read_fields(obj))

    @classmethod
    def read_fields(cls, obj, skip=()):
        """{field name: value} of the JSON object ``obj``, ``skip``'s fields left out."""
        kinds = typing.get_type_hints(cls)
        return {
            field.name: _decode(kinds[field.name], obj.get(_key(field)))
            for field in dataclasses.fields(cls)
            if field.name not in skip
        }


def _key(field):
    return field.metadata.get("json", field.name)


def _encode(value):
    if isinstance(value, Record):
        return value.to_json()
    if isinstance(value, dict):
        return {str(key): _encode(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode(item) for item in value]
    return plain(value)


def _decode(kind, value):
    """The JSON ``value`` as ``kind``: a Record, a list or dict of them, ``X | None``, or any
    JSON value as it is."""
    if value is None:
        return None
    origin, arguments = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        return _decode(next(argument for argument in arguments if argument is not type(None)), value)
    if origin is list:
        return [_decode(arguments[0], item) for item in value]
    if origin is dict:
        return {key: _decode(arguments[1], item) for key, item in value.items()}
    if isinstance(kind, type) and issubclass(kind, Record):
        return kind.from_json(value)
    return value


@dataclasses.dataclass
class Metrics(Record):
    """Metrics of probabilities against labels (``simplexkern.eval.metrics``)."""

    accuracy: float | None
    nll: float | None  # mean of -log p(y)
    ece: float | None  # expected calibration error, 15 equal-width bins
    brier: float | None  # mean over examples of the squared distance to the one-hot label

    @classmethod
    def of(cls, probs, labels):
        return cls.from_json(evaluation.metrics(probs, labels))


@dataclasses.dataclass
class OodDetection(Record):
    """How well one uncertainty score tells out-of-distribution inputs from the test split."""

    auroc: float | None
    aupr: float | None
    fpr95: float | None  # the false-positive rate at 95% true positives


@dataclasses.dataclass
class Uncertainty(Record):
    """The uncertainty of a result on the test split (``simplexkern.eval.uncertainty``)."""

    adaptive_ece: float | None
    aurc: float | None  # the area under the risk-coverage curve
    disagreement: float | None  # over the members (null for one member)
    mutual_information: float | None  # over the members (null for one member)
    # {"max_prob", "entropy"}: telling the --ood-data / --ood-gaussian-noise inputs from the
    # test split by that score (null without them)
    ood: dict[str, OodDetection] | None
    # the disagreement of a simplex's, complex's or curve's M points, averaged over such
    # members (null without them)
    point_disagreement: float | None


@dataclasses.dataclass
class Temperature(Record):
    """A temperature fitted on the validation split, and the test metrics after it."""

    value: float  # 1 when the fit is degenerate
    test: Metrics
    # why the fit is degenerate (no validation error, or the minimum at a bound of the
    # search); null when it is not
    note: str | None


@dataclasses.dataclass
class Member(Record):
    """One of the models a result averages."""

    name: str
    checkpoint: str | None  # relative to the output folder (evaluate: as the source gave it)
    test: Metrics


@dataclasses.dataclass
class VersusDeepEnsemble(Record):
    """``compare``: a method against the deep ensemble of the same cost in the same seed."""

    nll_vs_de: float  # the NLL minus the deep ensemble's, mean over seeds
    nll_vs_de_std: float  # its standard deviation over seeds
    error_vs_de: float  # the error minus the deep ensemble's, mean over seeds
    error_vs_de_std: float
    seeds_below_de: int  # in how many seeds the NLL was lower


@dataclasses.dataclass
class MethodRow(Record):
    """A row of the printed table: the result, or one of its baselines (single modes, the
    deep ensemble of the same modes, curve endpoints)."""

    name: str
    test: Metrics
    test_std: Metrics | None = dataclasses.field(default=None, metadata=OMITTED_IF_NONE)  # compare: over seeds
    train_s: float | None = None  # its training time, the modes included (null for evaluate)
    predict_s: float | None = None  # its prediction time on the test split
    # its training cost: training examples x points over the steps, the same on any machine
    # (null for evaluate)
    gradient_evaluations: int | None = None
    forward_passes: int | None = dataclasses.field(default=None, metadata=OMITTED_IF_NONE)  # compare: per example
    vs_deep_ensemble: VersusDeepEnsemble | None = dataclasses.field(default=None, metadata=OMITTED_IF_NONE)
