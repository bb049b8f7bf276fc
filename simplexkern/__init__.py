"""simplexkern: simplexes, simplicial complexes and curves of neural-network weights."""

import torch  # noqa: F401  (libtorch must be loaded before the extension)

try:
    from simplexkern import _C  # noqa: F401  (loads the compiled ops)
except ImportError as err:  # pragma: no cover - depends on the installation
    raise ImportError(
        "simplexkern._C, the compiled extension, is missing or does not load; build it with "
        "`pip install --no-build-isolation -e .` from the repository root (or `make build`)"
    ) from err

from simplexkern import data, eval, geometry, models, nn, ops, train  # noqa: A004 (eval: the module, not the builtin)
from simplexkern.nn import SimplexModel, load_checkpoint, save_checkpoint, simplexify

__version__ = "0.1.0"
__all__ = [
    "geometry",
    "ops",
    "nn",
    "models",
    "data",
    "train",
    "eval",
    "simplexify",
    "SimplexModel",
    "save_checkpoint",
    "load_checkpoint",
    "__version__",
]
