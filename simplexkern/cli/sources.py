"""The source of ``evaluate`` and ``surface``: the models of an earlier output folder or a
checkpoint file, loaded and checked to fit the data, and the three points of ``surface``'s
plane among them."""

import pathlib
import typing

import torch

from simplexkern import _checks
from simplexkern.cli.folder import read_report
from simplexkern.eval.predict import member_points, outputs_at
from simplexkern.nn import checkpoint
from simplexkern.nn.model import SimplexModel
from simplexkern.nn.samplers import CurveSampler


class SourceMember(typing.NamedTuple):
    """A member of the source, loaded."""

    name: str
    model: torch.nn.Module
    path: pathlib.Path


def read_source(source):
    """(command that made it, [(name, checkpoint path)], its recorded settings) of an earlier
    output folder or checkpoint file ``source``."""
    path = pathlib.Path(source)
    if path.is_file():
        return None, [(path.stem, path)], {}
    if not path.is_dir():
        raise ValueError(f"source {source}: no such file or folder")
    report_path = path / "report.json"
    if not report_path.is_file():
        if (path / "run.json").is_file():
            raise ValueError(
                f"source {source} holds an unfinished run (no report.json yet): run its command again to finish it"
            )
        raise ValueError(f"source {source} holds no checkpoints of a simplexkern run (no report.json)")
    report = read_report(report_path)
    members = [(member["name"], path / member["checkpoint"]) for member in report["members"] if member["checkpoint"]]
    if not members:
        raise ValueError(f"source {source} is a '{report['command']}' run, which has no checkpoints to evaluate")
    return report["command"], members, report["settings"]


def _load(members, device):
    loaded = []
    for _, path in members:
        if not path.is_file():
            raise ValueError(f"the checkpoint {path} is missing")
        loaded.append(checkpoint.load_model(path).to(device).eval())
    return loaded


def check_fits(models, names, data):
    """ValueError unless each model takes ``data``'s inputs and predicts its classes (one test
    input through one point of each; for token ids, also the inputs holding the largest id)."""
    inputs = data.x_test[:1]
    if data.vocab_size is not None:
        largest_train, largest_test = (int(split.flatten(1).amax(1).argmax()) for split in (data.x_train, data.x_test))
        inputs = torch.cat(
            [inputs, data.x_train[largest_train : largest_train + 1], data.x_test[largest_test : largest_test + 1]]
        )
    for member, (model, name) in enumerate(zip(models, names)):
        try:
            with torch.no_grad():
                _, outputs = next(
                    outputs_at(model, inputs, member_points(model, 1, 0, member), bn_inputs=data.x_train[:8])
                )
        except (RuntimeError, ValueError, IndexError, TypeError) as err:
            raise ValueError(f"{name} does not take the inputs of {data.describe()}: {_checks.reason(err)}") from None
        if outputs.shape[-1] != data.n_classes:
            raise ValueError(f"{name} predicts {outputs.shape[-1]} classes; {data.name} has {data.n_classes}")


def load_source(members, data, device):
    """[SourceMember] of the source's ``members`` (from ``read_source``), each loaded and
    checked to fit ``data``."""
    loaded = _load(members, device)
    check_fits(loaded, [name for name, _ in members], data)
    return [SourceMember(name, model, path) for (name, path), model in zip(members, loaded)]


def _three_indices(indices, limit, what):
    if len(indices) != 3 or len(set(indices)) != 3 or min(indices) < 0 or max(indices) >= limit:
        raise ValueError(
            f"--points must be three different {what} indices in 0..{limit - 1}, got {','.join(map(str, indices))}"
        )
    return list(indices)


def plane_points(source, settings):
    """(SimplexModel or None, three coefficient vectors or three plain models, their names)
    of the plane ``surface`` draws: a curve's endpoints and midpoint, three vertices of a
    simplex or complex (``--points``, of ESPRO's simplex ``--member``), or three plain
    members (``--points``)."""
    names, models = [member.name for member in source], [member.model for member in source]
    if all(not isinstance(model, SimplexModel) for model in models):
        if len(models) < 3:
            raise ValueError(
                f"the source has {len(models)} plain model(s); a plane needs three points (a simplex, a "
                "curve, or an ensemble of at least three members)"
            )
        indices = _three_indices(settings["points"], len(models), "member")
        return None, [models[index] for index in indices], [names[index] for index in indices]
    chosen = settings["member"]
    if not 0 <= chosen < len(models):
        raise ValueError(f"--member must be in 0..{len(models) - 1}, got {chosen}")
    model = models[chosen]
    if not isinstance(model, SimplexModel):
        raise ValueError(
            f"--member {chosen}: {names[chosen]} is a plain model; a plane through vertices "
            "needs a simplex, complex or curve member"
        )
    if isinstance(model.sampler, CurveSampler):
        ends_and_middle = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64, device=model.device)
        return model, model.sampler.coefficients(ends_and_middle, model).double(), ["t = 0", "t = 1/2", "t = 1"]
    indices = _three_indices(settings["points"], model.n_vertices, "vertex")
    return model, torch.eye(model.n_vertices, dtype=torch.float64)[indices], [f"vertex {index}" for index in indices]
