"""The settings every trainer shares, declared once: how it optimises (``Optimisation``) and
how it runs (``Execution``).

A trainer takes either object (``optimisation=``, ``execution=``) or their fields as
keywords (``lr=0.1, seed=3``), which override the object's; its own defaults are an
``Optimisation`` of its own epoch count. ``settings`` splits the keywords.
"""

import dataclasses

from simplexkern._types import Device, Distributed, Path
from simplexkern.train.loop import Phase


@dataclasses.dataclass(frozen=True)
class Optimisation:
    """SGD with momentum and weight decay on a cosine schedule from ``lr`` to 0 (SPEC
    defaults), over ``epochs`` epochs of batches of ``batch_size``. ``Phase`` checks the values."""

    epochs: int = 100  # of each training phase: a mode, a vertex, a curve
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 64

    def phase(self, **fields) -> Phase:
        """The training loop's ``Phase`` of these settings and the given other fields."""
        return Phase(**dataclasses.asdict(self), **fields)


@dataclasses.dataclass(frozen=True)
class Execution:
    """How a trainer runs, and from which seed.

    ``seed`` (initialisations, data order, points), ``device`` (None: the GPU when there is
    one), ``out`` (a folder of checkpoints to resume from; None writes nothing),
    ``progress`` (progress bars), ``compile`` (each step's loss under ``torch.compile``),
    ``distributed`` ("members" or "data" across the processes of a process group; see
    ``simplexkern.distributed``)."""

    seed: int = 0
    device: Device = None
    out: Path | None = None
    progress: bool = True
    compile: bool = False
    distributed: Distributed = None

    @property
    def data_parallel(self) -> bool:
        """Whether all processes train each model together (``distributed="data"``)."""
        return self.distributed == "data"


MODE = Optimisation()  # a mode: 100 epochs
VERTEX = Optimisation(epochs=30)  # each vertex SPRO adds
CURVE = Optimisation(epochs=50)  # a curve's bends

_OPTIMISATION = frozenset(f.name for f in dataclasses.fields(Optimisation))
_EXECUTION = frozenset(f.name for f in dataclasses.fields(Execution))


def settings(
    trainer: str,
    keywords: dict,
    optimisation: Optimisation | None,
    execution: Execution | None,
    defaults: Optimisation,
    epochs: str | None = "epochs",
) -> tuple[Optimisation, Execution]:
    """(Optimisation, Execution) of a call of ``trainer``: ``optimisation`` (else
    ``defaults``) and ``execution`` with the fields given as ``keywords`` replaced. The epoch
    count's keyword is ``epochs`` (e.g. "vertex_epochs"; None: the trainer sets the epochs and
    the learning rate itself). An unknown keyword is a TypeError, as Python's own."""
    if optimisation is not None and not isinstance(optimisation, Optimisation):
        raise TypeError(f"optimisation must be an Optimisation, got {type(optimisation).__name__}")
    if execution is not None and not isinstance(execution, Execution):
        raise TypeError(f"execution must be an Execution, got {type(execution).__name__}")
    own = _OPTIMISATION - {"epochs"} if epochs is not None else _OPTIMISATION - {"epochs", "lr"}
    unknown = [k for k in keywords if k != epochs and k not in own | _EXECUTION]
    if unknown:
        raise TypeError(f"{trainer}() got an unexpected keyword argument {unknown[0]!r}")
    fields = {("epochs" if k == epochs else k): v for k, v in keywords.items()}
    return (
        dataclasses.replace(optimisation or defaults, **{k: v for k, v in fields.items() if k in _OPTIMISATION}),
        dataclasses.replace(execution or Execution(), **{k: v for k, v in fields.items() if k in _EXECUTION}),
    )
