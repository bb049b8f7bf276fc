"""The command with the models users bring: the transformer on signals and on token ids through
espro, curve and fge, torchvision classification models sized for the data's images, and a
model that cannot take the data refused before anything is written."""

import json

import numpy as np
import pytest
import torch
from test_cli import TINY, check_report

import simplexkern as sk
from simplexkern import cli

FAST = [
    "--modes",
    "2",
    "--vertices",
    "1",
    "--vertex-epochs",
    "1",
    "--eval-samples",
    "3",
    "--samples",
    "2",
    "--reg",
    "0",
]


def _signals(path, rng):
    """Two classes of noisy (2, 24) signals: a sine or a square wave, random phase."""
    n = 160
    t = np.linspace(0, 4 * np.pi, 24)
    y = rng.integers(0, 2, n)
    phase = rng.uniform(0, 2 * np.pi, (n, 1))
    wave = np.where(y[:, None] == 0, np.sin(t + phase), np.sign(np.sin(t + phase)))
    x = np.stack([wave, np.cos(t + phase)], 1) + 0.3 * rng.standard_normal((n, 2, 24))
    np.savez(
        path, x_train=x[:120].astype(np.float32), y_train=y[:120], x_test=x[120:].astype(np.float32), y_test=y[120:]
    )
    return path


def _tokens(path, rng):
    """Sequences of 10 token ids from 0..7: class 1 when token 3 comes before token 5."""
    x = np.stack([rng.permutation(8)[:6] for _ in range(160)])
    x = np.concatenate([x, rng.integers(0, 8, (160, 4))], 1)
    y = np.array([int(list(row).index(3) < list(row).index(5)) if 3 in row[:6] and 5 in row[:6] else 0 for row in x])
    np.savez(path, x_train=x[:120], y_train=y[:120], x_test=x[120:], y_test=y[120:])
    return path


def _run(*args):
    assert cli.main(list(args)) == 0
    return json.loads(open(f"{args[args.index('--out') + 1]}/report.json").read())


@pytest.mark.parametrize("command", ["espro", "curve", "fge"])
def test_the_transformer_on_signals_through_every_ensemble_command(command, tmp_path):
    data = _signals(tmp_path / "signals.npz", np.random.default_rng(0))
    extra = {
        "espro": FAST,
        "curve": ["--curve-epochs", "1", "--eval-samples", "3", "--samples", "2"],
        "fge": ["--cycles", "2"],
    }[command]
    out = tmp_path / "run"
    report = _run(command, "--data", str(data), "--model", "transformer", *TINY, *extra, "--out", str(out))
    check_report(report, out, command)
    member = sk.nn.checkpoint.load_model(out / report["members"][-1]["checkpoint"])
    model = member.module if isinstance(member, sk.nn.SimplexModel) else member
    assert isinstance(model, sk.models.Transformer)
    assert model.simplexkern_architecture["kwargs"] == {"num_classes": 2, "in_channels": 2, "length": 24, "patch": 1}


def test_the_transformer_on_token_ids(tmp_path):
    data = _tokens(tmp_path / "tokens.npz", np.random.default_rng(0))
    report = _run("espro", "--data", str(data), "--model", "transformer", *TINY, *FAST, "--out", str(tmp_path / "r"))
    check_report(report, tmp_path / "r", "espro")
    simplex = sk.nn.checkpoint.load(tmp_path / "r" / report["members"][0]["checkpoint"])
    assert simplex.architecture["kwargs"] == {"num_classes": 2, "vocab_size": 8, "length": 10}
    assert isinstance(simplex.module.embed, sk.nn.SimplexEmbedding) and simplex.n_vertices == 2


def test_torchvision_models_sized_for_the_images(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.random((48, 3, 32, 32), dtype=np.float32), np.arange(48) % 3
    np.savez(tmp_path / "images.npz", x_train=x[:32], y_train=y[:32], x_test=x[32:], y_test=y[32:])
    report = _run(
        "espro",
        "--data",
        str(tmp_path / "images.npz"),
        "--model",
        "torchvision.shufflenet_v2_x0_5",
        *TINY,
        *FAST,
        "--batch-size",
        "16",
        "--out",
        str(tmp_path / "r"),
    )
    check_report(report, tmp_path / "r", "espro")
    simplex = sk.nn.checkpoint.load(tmp_path / "r" / report["members"][0]["checkpoint"])
    assert simplex.architecture == {"name": "torchvision.shufflenet_v2_x0_5", "kwargs": {"num_classes": 3}}
    data = sk.data.load(tmp_path / "images.npz")
    vit = sk.models.for_data("torchvision.vit_b_32", data)  # position embeddings for 32 x 32 images
    assert vit.simplexkern_architecture["kwargs"] == {"num_classes": 3, "image_size": 32}
    assert vit.encoder.pos_embedding.shape == (1, 2, 768)


def test_a_model_that_cannot_take_the_images_is_refused_before_anything_is_written(tmp_path, capsys):
    x = np.zeros((8, 3, 16, 16), dtype=np.float32)
    np.savez(tmp_path / "small.npz", x_train=x, y_train=np.arange(8) % 2, x_test=x, y_test=np.arange(8) % 2)
    out = tmp_path / "never"
    code = cli.main(
        ["espro", "--data", str(tmp_path / "small.npz"), "--model", "torchvision.alexnet", *TINY, "--out", str(out)]
    )
    err = capsys.readouterr().err
    assert code == 2 and "torchvision.alexnet cannot take the data's inputs of shape (3, 16, 16)" in err
    assert not out.exists()
    with pytest.raises(ValueError, match=r"transformer takes \(C, L\) signals or \(L,\) token ids"):
        sk.models.for_data("transformer", sk.data.load("digits"))
    assert torch.is_tensor(sk.models.for_data("transformer", sk.data.load("mnist1d")).pos.weight)
