"""Checkpoints of simplex models: one file per model, written atomically, read without
executing code (``torch.load(weights_only=True)``).

A checkpoint records the architecture and its arguments, the vertex count, which vertices
are fixed, the sampler (and so the complex), the shared modules, the store layout, training
metadata and a format version; ``load`` checks all of it. A plain PyTorch state dict (e.g.
a trained torchvision model) loads as vertex 0. Plain modules are saved the same way
(``kind: "plain"``) and read back with ``load_module``. A checkpoint may also carry a
training state (optimizer state and other tensors) for resuming: ``read_training_state``.
"""

import itertools
import json
import os
import pathlib
import pickle
from typing import Any

import torch

from simplexkern import _checks
from simplexkern._atomic import atomic_write
from simplexkern._types import Path
from simplexkern.nn import samplers
from simplexkern.nn.convert import simplexify
from simplexkern.nn.model import SimplexModel

FORMAT = "simplexkern.checkpoint"
FORMAT_VERSION = 1


def _path(path: Path) -> pathlib.Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    return pathlib.Path(path)


def _detached(obj):
    """A training state with every tensor detached and on the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _detached(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_detached(v) for v in obj)
    return obj


def save(
    model: torch.nn.Module,
    path: Path,
    metadata: dict[str, Any] | None = None,
    training_state: dict[str, Any] | None = None,
) -> None:
    """Writes ``model`` (a SimplexModel or a plain ``nn.Module``) to ``path`` atomically (a
    temporary file in the same folder, then a rename): the file is either the old one or
    the complete new one. ``metadata``: a JSON-serialisable dict (epochs, learning rates,
    ...), merged over ``model.metadata``. ``training_state``: a dict of tensors, numbers,
    strings and containers of them (e.g. an optimizer's ``state_dict()``), for resuming."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a SimplexModel or a torch.nn.Module, got {type(model).__name__}")
    if training_state is not None and not isinstance(training_state, dict):
        raise TypeError(f"training_state must be a dict or None, got {type(training_state).__name__}")
    file = _path(path)
    meta = {**(model.metadata if isinstance(model, SimplexModel) else {}), **(metadata or {})}
    try:
        meta_json = json.dumps(meta)
    except (TypeError, ValueError) as err:
        raise ValueError(f"metadata must be JSON-serialisable: {err}") from None
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "metadata": meta_json,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "training_state": _detached(training_state),
    }
    if isinstance(model, SimplexModel):
        sampler = model.sampler.config()
        payload.update(
            {
                "kind": "simplex",
                "architecture": model.architecture,
                "n_vertices": model.n_vertices,
                "fixed": model.fixed_mask(),
                "sampler": sampler,
                "complex": sampler.get("simplices"),
                "shared": list(model.shared),
                "slots": [[name, list(shape)] for name, (_, shape) in model.store.slots.items()],
                "dtype": str(model.dtype).replace("torch.", ""),
            }
        )
    else:
        payload.update({"kind": "plain", "architecture": getattr(model, "simplexkern_architecture", None)})
    if not file.parent.is_dir():
        raise ValueError(f"path: the folder {file.parent} does not exist")
    if file.is_dir():
        raise ValueError(f"path: {file} is a folder; give the path of a file in it")
    with atomic_write(file) as f:
        torch.save(payload, f)


def _plain_model(model, architecture):
    from simplexkern import models

    if model is None:
        if architecture is None:
            raise ValueError(
                "the checkpoint records no architecture (the model was simplexified from a module "
                "built outside simplexkern.models); pass model= with a fresh instance of it"
            )
        try:
            return models.create(architecture["name"], **architecture["kwargs"])
        except (TypeError, ValueError) as err:
            raise ValueError(
                f"the checkpoint's architecture {architecture['name']!r} with arguments "
                f"{architecture['kwargs']} cannot be built: {err}"
            ) from None
    if isinstance(model, str):
        return models.create(model)
    if isinstance(model, SimplexModel) or not isinstance(model, torch.nn.Module):
        raise TypeError(
            f"model must be a plain torch.nn.Module, an architecture name or None, got {type(model).__name__}"
        )
    own = getattr(model, "simplexkern_architecture", None)
    if architecture is not None and own is not None and own != architecture:
        raise ValueError(f"the checkpoint's architecture is {architecture}, the model given is {own}")
    return model


_FIELDS: dict[
    str, dict[str, type | tuple[type, ...]]
] = {  # kind -> fields a checkpoint of that kind must have, with their types
    "simplex": {
        "architecture": (dict, type(None)),
        "n_vertices": int,
        "fixed": list,
        "sampler": dict,
        "complex": (list, type(None)),
        "shared": list,
        "slots": list,
        "dtype": str,
        "metadata": str,
        "state_dict": dict,
    },
    "plain": {"architecture": (dict, type(None)), "metadata": str, "state_dict": dict},
}


def _read(path: Path, map_location: torch.device | str = "cpu") -> dict[str, Any]:
    """The checked payload of a checkpoint, or a plain state dict (a dict of tensors)."""
    file = _path(path)
    if not file.is_file():
        raise ValueError(f"path: no file at {file}")
    try:
        obj = torch.load(file, map_location=map_location, weights_only=True)
    except Exception as err:  # a file torch cannot read safely
        raise ValueError(f"{file} is not a simplexkern checkpoint or state dict ({_unreadable(err)})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{file} holds a {type(obj).__name__}, not a checkpoint or a state dict")
    if obj.get("format") != FORMAT:
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj
        raise ValueError(f"{file} is neither a simplexkern checkpoint nor a plain state dict")
    _check_payload(obj, file)
    return obj


def _unreadable(err: Exception) -> str:
    """Why ``torch.load`` could not read a file safely, from its error."""
    if isinstance(err, pickle.UnpicklingError) and "Unsupported global" in str(err):
        return "it holds Python objects (e.g. a pickled module) that load only by executing code"
    if isinstance(err, pickle.UnpicklingError):
        return "its bytes are not a torch file"
    if isinstance(err, EOFError):
        return "the file is empty or cut short"
    return _checks.reason(err).rstrip(".:") or type(err).__name__


def _check_payload(obj: dict[str, Any], path: pathlib.Path) -> None:
    """Checks a checkpoint's version and fields, and parses its metadata (in place)."""
    version = obj.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(
            f"{path} has checkpoint format version {version}; this simplexkern reads version "
            f"{FORMAT_VERSION}"
            + (
                " (it was written by a newer simplexkern)"
                if isinstance(version, int) and version > FORMAT_VERSION
                else ""
            )
        )
    kind = obj.setdefault("kind", "simplex")
    if kind not in _FIELDS:
        raise ValueError(f"{path} is a checkpoint of unknown kind {kind!r}")
    for field, types in _FIELDS[kind].items():
        if field not in obj:
            raise ValueError(f"{path} is incomplete: the checkpoint has no {field!r} field")
        if not isinstance(obj[field], types):
            raise ValueError(f"{path} is corrupt: its {field!r} field is a {type(obj[field]).__name__}")
    arch = obj["architecture"]
    if arch is not None and not (isinstance(arch.get("name"), str) and isinstance(arch.get("kwargs"), dict)):
        raise ValueError(f"{path} is corrupt: its architecture is not {{'name': str, 'kwargs': dict}}")
    try:
        obj["metadata"] = json.loads(obj["metadata"])
    except ValueError as err:
        raise ValueError(f"{path} is corrupt: its metadata is not JSON ({err})") from None


def read_training_state(path: Path) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(metadata, training_state) of the checkpoint at ``path``; the training state is None
    when it has none. Reads without executing code and without building the model."""
    obj = _read(path)
    if obj.get("format") != FORMAT:
        return {}, None
    return obj["metadata"], obj.get("training_state")


def load_module(
    path: Path, model: torch.nn.Module | str | None = None, *, map_location: torch.device | str = "cpu"
) -> torch.nn.Module:
    """Reads a plain ``nn.Module`` saved by ``save`` (or a plain state dict file) from
    ``path``. ``model``: None (rebuild the recorded architecture), an architecture name, or
    a fresh instance of the architecture, into which the weights are loaded."""
    obj = _read(path, map_location)
    if obj.get("format") == FORMAT and obj["kind"] != "plain":
        raise ValueError(f"{path} holds a simplex model; read it with load()")
    return _module(obj, path, model)


def _module(obj, path, model):
    """The plain module of a read plain checkpoint or state dict ``obj``."""
    state_dict_file = obj.get("format") != FORMAT
    state = obj if state_dict_file else obj["state_dict"]
    architecture = None if state_dict_file else obj["architecture"]
    if model is None and architecture is None:
        what = "a plain state dict, which" if state_dict_file else "a module that"
        raise ValueError(
            f"{path} is {what} records no architecture; pass model= (a fresh instance of the "
            "architecture or its simplexkern.models name)"
        )
    plain = _plain_model(model, architecture)
    own = plain.state_dict()  # checked in full first: a mismatch leaves the model given untouched
    missing, unexpected = [k for k in own if k not in state], [k for k in state if k not in own]
    shapes = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or unexpected or shapes:
        raise ValueError(
            f"the state in {path} does not match the model: missing {missing[:5]}, unexpected "
            f"{unexpected[:5]}, other shapes {shapes[:5]}"
        )
    plain.load_state_dict(state)
    return plain


def load(
    path: Path, model: torch.nn.Module | str | None = None, *, map_location: torch.device | str = "cpu"
) -> SimplexModel:
    """Reads a SimplexModel from ``path``.

    ``model``: None (rebuild the recorded architecture), an architecture name, or a fresh
    plain module of the same architecture (needed for modules built outside
    ``simplexkern.models``, and for plain state dicts, which load as vertex 0).
    """
    obj = _read(path, map_location)
    if obj.get("format") != FORMAT or obj["kind"] == "plain":
        return simplexify(_module(obj, path, model))
    return _simplex(obj, path, model)


def load_model(path: Path, *, map_location: torch.device | str = "cpu") -> torch.nn.Module:
    """The model saved at ``path`` as it was saved: a SimplexModel, or a plain module of a
    recorded architecture (``simplexkern.models``)."""
    obj = _read(path, map_location)
    if obj.get("format") == FORMAT and obj["kind"] == "simplex":
        return _simplex(obj, path, None)
    return _module(obj, path, None)


def _simplex(obj, path, model):
    """The SimplexModel of a read simplex checkpoint ``obj``."""
    plain = _plain_model(model, obj["architecture"])
    dtype = next(plain.parameters()).dtype
    if str(dtype).replace("torch.", "") != obj["dtype"]:
        raise ValueError(f"the checkpoint holds {obj['dtype']} vertices, the model given is {dtype}")
    sm = simplexify(plain, shared=obj["shared"], architecture=obj["architecture"])
    mine = [[name, list(shape)] for name, (_, shape) in sm.store.slots.items()]
    if mine != obj["slots"]:
        diff = next((a, b) for a, b in itertools.zip_longest(obj["slots"], mine) if a != b)
        raise ValueError(
            f"the checkpoint's layers do not match the model's: the checkpoint has {diff[0]}, the "
            f"model {diff[1]} (layer name and shape)"
        )
    missing, unexpected = sm.load_state_dict(obj["state_dict"], strict=False)
    if missing or unexpected:
        raise ValueError(
            f"the checkpoint's state does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    if sm.n_vertices != obj["n_vertices"] or sm.fixed_mask() != obj["fixed"]:
        raise ValueError(
            f"{path} is inconsistent: it records {obj['n_vertices']} vertices with fixed mask "
            f"{obj['fixed']}, its store holds {sm.n_vertices} with {sm.fixed_mask()}"
        )
    sm.sampler = samplers.from_config(obj["sampler"])
    if obj["complex"] is not None and max(max(s) for s in obj["complex"]) >= sm.n_vertices:
        raise ValueError(f"{path}: the complex names vertices beyond the {sm.n_vertices} stored")
    sm.metadata = obj["metadata"]
    return sm
