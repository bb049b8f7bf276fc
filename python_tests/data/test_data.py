"""Data sets: the built-in sets, a user's .npz with every bad case, CIFAR read from a local
folder without executing code, corruption levels, and models sized for the data."""

import pickle

import numpy as np
import pytest
import torch

import simplexkern as sk
from simplexkern.data import sources


@pytest.mark.parametrize(
    "name, shape, classes, n_train, n_test",
    [
        ("digits", (1, 8, 8), 10, 1200, 597),
        ("mnist1d", (1, 40), 10, 4000, 1000),
        ("spirals", (2,), 2, 1000, 1000),
    ],
)
def test_built_in_sets(name, shape, classes, n_train, n_test):
    d = sk.data.load(name)
    assert d.input_shape == shape and d.n_classes == classes and d.n_outputs == classes
    assert (len(d.x_train), len(d.x_test)) == (n_train, n_test)
    assert d.x_train.dtype == torch.float32 and d.y_train.dtype == torch.int64
    assert set(d.y_train.unique().tolist()) == set(range(classes))
    # standardised with the training split's own statistics: per channel, or per feature for vectors
    x = d.x_train.double()
    dims = (0, 2, 3) if x.dim() == 4 else (0, 2) if x.dim() == 3 else (0,)
    torch.testing.assert_close(x.mean(dims), torch.zeros_like(x.mean(dims)), atol=1e-6, rtol=0)
    torch.testing.assert_close(x.std(dims), torch.ones_like(x.std(dims)), atol=1e-6, rtol=0)
    again = sk.data.load(name)  # the split never depends on anything but the name
    assert torch.equal(again.x_test, d.x_test) and torch.equal(again.y_train, d.y_train)


def test_digits_are_scikit_learns_images():
    from sklearn.datasets import load_digits

    raw = sk.data.load("digits", standardize_features=False)
    ref = load_digits()
    images = np.concatenate([raw.x_train.numpy(), raw.x_test.numpy()]).reshape(-1, 64) * 16
    labels = np.concatenate([raw.y_train.numpy(), raw.y_test.numpy()])
    order = np.lexsort(np.column_stack([images, labels]).T)
    ref_order = np.lexsort(np.column_stack([ref.data, ref.target]).T)
    np.testing.assert_allclose(images[order], ref.data[ref_order], atol=1e-5)
    assert np.array_equal(labels[order], ref.target[ref_order])


def test_regression_toy():
    d = sk.data.load("regression", standardize_features=False)
    assert d.task == "regression" and d.n_classes is None and d.n_outputs == 1 and d.noise_std == 0.1
    x = d.x_train[:, 0]
    inside = ((x >= -6) & (x <= -4)) | ((x >= -1) & (x <= 1)) | ((x >= 4) & (x <= 6))
    assert bool(inside.all()) and len(x) == 120
    assert d.x_test[:, 0].min() == -8 and d.x_test[:, 0].max() == 8  # the test grid covers the gaps
    assert d.y_train.shape == (120, 1) and d.y_train.dtype == torch.float32


def test_validation_split_is_held_out_of_training(rng):
    seed = rng.initial_seed() % 1000
    full = sk.data.load("digits", standardize_features=False)
    d = sk.data.load("digits", val_fraction=0.25, split_seed=seed, standardize_features=False)
    assert len(d.x_val) == 300 and len(d.x_train) == 900
    rows = torch.cat([d.x_train, d.x_val]).reshape(1200, -1).tolist()
    # train and validation together are exactly the full training split
    assert sorted(map(tuple, rows)) == sorted(map(tuple, full.x_train.reshape(1200, -1).tolist()))
    assert torch.equal(d.x_test, full.x_test)
    with pytest.raises(ValueError, match="val_fraction"):
        sk.data.load("digits", val_fraction=1.0)


def test_gaussian_noise_levels(rng):
    clean = sk.data.load("digits", standardize_features=False)
    previous = 0.0
    for level in range(1, 6):
        noisy = sk.data.load(
            "digits", gaussian_noise=level, split_seed=rng.initial_seed() % 2**31, standardize_features=False
        )
        diff = noisy.x_test - clean.x_test
        assert float(noisy.x_test.min()) >= 0 and float(noisy.x_test.max()) <= 1  # clipped to the value range
        free = (clean.x_test > 0.3) & (clean.x_test < 0.7)  # far from the clip: the full noise
        std = float(diff[free].std())
        expected = sk.data.GAUSSIAN_NOISE[level - 1]
        assert abs(std - expected) < 0.1 * expected
        assert std > previous
        previous = std
        assert torch.equal(noisy.x_train, clean.x_train)  # only the test split is corrupted
    for bad, error in ((0, ValueError), (6, ValueError), (2.5, TypeError), (True, TypeError)):
        with pytest.raises(error, match="gaussian_noise"):
            sk.data.load("digits", gaussian_noise=bad)


def _save(path, **arrays):
    np.savez(path, **arrays)
    return path


def _good(rng):
    g = np.random.default_rng(rng.initial_seed())
    return dict(
        x_train=g.normal(size=(20, 3, 4)).astype(np.float32),
        y_train=np.arange(20) % 3,
        x_test=g.normal(size=(6, 3, 4)),
        y_test=np.array([0, 1, 2, 2, 1, 0]),
    )


def test_npz_of_any_shape(tmp_path, rng):
    arrays = _good(rng)
    d = sk.data.load(_save(tmp_path / "mine.npz", **arrays), standardize_features=False)
    assert d.input_shape == (3, 4) and d.n_classes == 3 and d.task == "classification"
    np.testing.assert_array_equal(d.x_train.numpy(), arrays["x_train"])
    np.testing.assert_array_equal(d.y_test.numpy(), arrays["y_test"])
    model = sk.models.for_data("mlp", d)
    assert model(d.x_train[:5]).shape == (5, 3)
    reg = sk.data.load(tmp_path / "mine.npz", task="regression")
    assert reg.task == "regression" and reg.y_train.shape == (20, 1)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda a: a.pop("y_test"), "missing array.*y_test"),
        (lambda a: a.update(y_train=a["y_train"][:-1]), "20 rows but y_train has 19"),
        (lambda a: a.update(y_test=np.array([0, 1, 2, 3, 1, 0])), "lacks \\[3\\]"),
        (lambda a: a.update(y_train=a["y_train"] - 1), "label -1"),
        (lambda a: a.update(y_train=a["y_train"] + 0.5), "integer class labels"),
        (lambda a: a.update(y_train=np.array(["a"] * 20)), "integer class labels"),
        (lambda a: a["x_train"].__setitem__((3, 1, 1), np.nan), "x_train contains NaN or inf"),
        (lambda a: a["x_test"].__setitem__((0, 0, 0), np.inf), "x_test contains NaN or inf"),
        (lambda a: a.update(x_test=a["x_test"][:0], y_test=a["y_test"][:0]), "test split is empty"),
        (lambda a: a.update(x_test=a["x_test"][:, :2]), "features of shape"),
        (lambda a: a.update(y_train=np.zeros(20, dtype=int)), "lacks"),
        (lambda a: a.update(x_train=np.array(["x"] * 20)), "must hold numbers"),
        (lambda a: a.update(y_train=a["y_train"][:, None]), "shape \\(N,\\)"),
    ],
)
def test_bad_npz_names_the_file_and_the_problem(tmp_path, rng, change, message):
    arrays = _good(rng)
    change(arrays)
    path = _save(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match=message) as err:
        sk.data.load(path)
    assert "bad.npz" in str(err.value)


def test_unreadable_npz_files(tmp_path):
    (tmp_path / "text.npz").write_text("not a zip")
    with pytest.raises(ValueError, match="text.npz"):
        sk.data.load(tmp_path / "text.npz")
    np.savez(
        tmp_path / "objects.npz",
        x_train=np.array([{"a": 1}], dtype=object),
        y_train=np.zeros(1),
        x_test=np.zeros((1, 1)),
        y_test=np.zeros(1),
    )
    with pytest.raises(ValueError, match="objects.npz"):  # pickled objects are never loaded
        sk.data.load(tmp_path / "objects.npz")
    with pytest.raises(ValueError, match="no such file"):
        sk.data.load(tmp_path / "missing.npz")
    with pytest.raises(ValueError, match="unknown data set"):
        sk.data.load("imagenet")
    with pytest.raises(TypeError):
        sk.data.load(3)


def _cifar_folder(root, rng, name="cifar10"):
    folder, train_files, test_file, label_key, classes = sources.CIFAR[name]
    base = root / folder
    base.mkdir(parents=True)
    g = np.random.default_rng(rng.initial_seed())
    labels_seen = []
    for f in train_files + [test_file]:
        n = 2 * classes if f != test_file else classes
        labels = (np.arange(n) % classes).tolist()
        labels_seen.append(labels)
        batch = {"data": g.integers(0, 256, (n, 3072), dtype=np.uint8), label_key: labels}
        with open(base / f, "wb") as fh:
            pickle.dump(batch, fh)
    return base


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_from_a_local_folder(tmp_path, rng, name):
    base = _cifar_folder(tmp_path, rng, name)
    classes = sources.CIFAR[name][4]
    d = sk.data.load(name, root=tmp_path, standardize_features=False)
    n_files = len(sources.CIFAR[name][1])
    assert d.input_shape == (3, 32, 32) and d.n_classes == classes and len(d.x_train) == 2 * classes * n_files
    with open(base / sources.CIFAR[name][2], "rb") as fh:
        raw = pickle.load(fh)
    np.testing.assert_allclose(d.x_test.numpy(), raw["data"].reshape(-1, 3, 32, 32) / 255.0, atol=1e-6)
    assert d.augment == "crop_flip"
    assert sk.models.for_data("vgg16", d)(d.x_test[:2]).shape == (2, classes)


def test_cifar_errors_name_the_folder_and_files(tmp_path, rng):
    with pytest.raises(ValueError, match="data_batch_1.*test_batch"):
        sk.data.load("cifar10", root=tmp_path)
    base = _cifar_folder(tmp_path, rng)
    (base / "data_batch_3").unlink()
    with pytest.raises(ValueError, match=f"{base}.*missing data_batch_3"):
        sk.data.load("cifar10", root=tmp_path)


class _Boom:
    def __reduce__(self):
        return (exec, ("import pathlib; pathlib.Path('pwned').write_text('x')",))


def test_cifar_batches_never_execute_code(tmp_path, rng, monkeypatch):
    base = _cifar_folder(tmp_path, rng)
    with open(base / "test_batch", "wb") as fh:
        pickle.dump({"data": _Boom(), "labels": [0]}, fh)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="refusing to load builtins.exec"):
        sk.data.load("cifar10", root=tmp_path)
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("name", ["digits", "mnist1d", "spirals", "regression"])
@pytest.mark.parametrize("arch", ["mlp", "convnet"])
def test_models_sized_for_the_data(name, arch):
    d = sk.data.load(name)
    if arch == "convnet" and len(d.input_shape) < 2:
        with pytest.raises(ValueError, match="mlp"):
            sk.models.for_data(arch, d)
        return
    model = sk.models.for_data(arch, d)
    assert model(d.x_train[:4]).shape == (4, d.n_outputs)
    assert model.simplexkern_architecture["name"] in ("mlp", "convnet1d", "convnet2d")
    rebuilt = sk.models.create(
        **{"name": model.simplexkern_architecture["name"]}, **model.simplexkern_architecture["kwargs"]
    )
    assert [p.shape for p in rebuilt.parameters()] == [p.shape for p in model.parameters()]


def test_models_refuse_data_they_cannot_take():
    digits = sk.data.load("digits")
    with pytest.raises(ValueError, match="32x32"):
        sk.models.for_data("vgg16", digits)
    with pytest.raises(ValueError, match="unknown architecture"):
        sk.models.for_data("resnet9", digits)
    assert sk.models.for_data("digits_convnet", digits)(digits.x_test[:2]).shape == (2, 10)


def test_integer_features_are_token_ids_kept_as_they_are(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 7, (30, 5))
    np.savez(tmp_path / "t.npz", x_train=x[:20], y_train=np.arange(20) % 2, x_test=x[20:], y_test=np.arange(10) % 2)
    d = sk.data.load(tmp_path / "t.npz", val_fraction=0.25)
    assert d.vocab_size == int(x.max()) + 1
    kept = torch.cat([d.x_train, d.x_val]).sort(0).values
    assert torch.equal(kept, torch.tensor(x[:20], dtype=torch.float32).sort(0).values)
    assert sk.data.load(tmp_path / "t.npz", standardize_features=True).x_test.eq(torch.tensor(x[20:])).all()
    np.savez(tmp_path / "f.npz", x_train=x[:20] - 1, y_train=np.arange(20) % 2, x_test=x[20:], y_test=np.arange(10) % 2)
    assert sk.data.load(tmp_path / "f.npz").vocab_size is None  # a negative value: features, standardized


def test_out_of_distribution_inputs_are_standardised_like_the_data(tmp_path, rng):
    """Another set's test inputs scaled by the data's own training mean and std (float64 by
    hand); noisy inputs equal the corrupted test split; other shapes are refused."""
    n = int(torch.randint(40, 80, (), generator=rng))
    arrays = {
        f"{x}_{split}": (torch.rand(n, 3, 5, generator=rng) * 7 + 2).numpy()
        if x == "x"
        else torch.randint(0, 3, (n,), generator=rng).numpy()
        for x in "xy"
        for split in ("train", "test")
    }
    np.savez(tmp_path / "own.npz", **arrays)
    other = {**arrays, "x_test": (torch.randn(n, 3, 5, generator=rng) * 4).numpy()}
    np.savez(tmp_path / "other.npz", **other)
    seed = int(torch.randint(0, 100, (), generator=rng))
    got = sk.data.load_ood(tmp_path / "own.npz", ood_data=tmp_path / "other.npz", val_fraction=0.25, split_seed=seed)
    rows = np.sort(torch.randperm(n, generator=torch.Generator().manual_seed(seed))[int(np.ceil(0.25 * n)) :].numpy())
    x = arrays["x_train"][rows].astype(np.float64)  # per channel: over examples and positions
    mean, std = x.mean((0, 2), keepdims=True), x.std((0, 2), ddof=1, keepdims=True)
    np.testing.assert_allclose(got.numpy(), (other["x_test"] - mean[0]) / std[0], rtol=1e-5, atol=1e-5)
    noisy = sk.data.load_ood("digits", gaussian_noise=3, val_fraction=0.2, split_seed=seed)
    assert torch.equal(noisy, sk.data.load("digits", gaussian_noise=3, val_fraction=0.2, split_seed=seed).x_test)
    with pytest.raises(ValueError, match="shape"):
        sk.data.load_ood("digits", ood_data="mnist1d")
    with pytest.raises(ValueError, match="exactly one"):
        sk.data.load_ood("digits")
