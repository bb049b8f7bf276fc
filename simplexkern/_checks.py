"""Argument checks shared by the public functions: each error names the argument.

One policy: a value of the wrong type raises ``TypeError``, a value of the right type outside
what is allowed raises ``ValueError``. ``bool`` is never accepted as a number.
"""

import math
import numbers
import weakref

import torch

# Tensors known to be finite (a sampler's coefficients): ``finite`` does not read them again,
# so a training step needs no host synchronisation for its checks.
_KNOWN_FINITE = {}


def known_finite(x):
    """Marks ``x`` (while it lives) as finite by construction; returns it."""
    if torch.compiler.is_compiling():
        return x
    key = id(x)
    _KNOWN_FINITE[key] = weakref.ref(x, lambda _: _KNOWN_FINITE.pop(key, None))
    return x


def reason(err):
    """The first line of an exception's message (torch's run over several), or its type's name."""
    return (str(err).splitlines() or [""])[0] or type(err).__name__


def parameters_match(model, x, name, inputs="the inputs"):
    """ValueError unless ``model``'s floating-point parameters have ``x``'s dtype."""
    dtypes = {p.dtype for p in model.parameters() if p.is_floating_point()}
    if dtypes and dtypes != {x.dtype}:
        raise ValueError(
            f"{name} has {'/'.join(sorted(str(t).replace('torch.', '') for t in dtypes))} parameters, "
            f"{inputs} are {str(x.dtype).replace('torch.', '')}: convert the model (e.g. model.float())"
        )


def tensor(x, name):
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    return x


def floating(x, name):
    tensor(x, name)
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    return x


def finite(x, name):
    if torch.compiler.is_compiling():  # no data-dependent branch in a traced graph: check on the device
        torch._assert_async(torch.isfinite(x.detach()).all(), f"{name} must be finite, but it contains NaN or inf")
        return x
    known = _KNOWN_FINITE.get(id(x))
    if known is not None and known() is x:
        return x
    if not bool(torch.isfinite(x.detach()).all()):
        raise ValueError(f"{name} must be finite, but it contains NaN or inf")
    return x


def count(value, name, minimum=1):
    """An int (not a bool) >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def number(value, name, *, minimum=None, above=None, maximum=None, below=None):
    """A finite real number (not a bool) within the given bounds; returned as a Python int or
    float (a NumPy scalar too)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    for bound, holds, words in (
        (minimum, lambda b: value >= b, ">="),
        (above, lambda b: value > b, ">"),
        (maximum, lambda b: value <= b, "<="),
        (below, lambda b: value < b, "<"),
    ):
        if bound is not None and not holds(bound):
            raise ValueError(f"{name} must be {words} {bound}, got {value}")
    return int(value) if isinstance(value, numbers.Integral) else float(value)


def sequence(value, name, what):
    """A list or tuple (``what`` says of what, in the error)."""
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"{name} must be a list of {what}, got {type(value).__name__}")
    return value


def flag(value, name):
    """A bool (not 0 / 1)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__}")
    return value


def cuda_kernels(x, name):
    from simplexkern import _C

    if x.is_cuda and not _C.cuda_enabled():
        raise RuntimeError(
            f"{name} is on {x.device}, but simplexkern._C was built without CUDA kernels; "
            "rebuild on a GPU machine with `SIMPLEXKERN_CUDA=1 pip install --no-build-isolation -e .`"
        )
    return x
