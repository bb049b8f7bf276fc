"""Where data comes from: the embedded and generated sets, a user's ``.npz``, CIFAR from a
local folder. Each returns raw arrays (before standardisation) through ``check_arrays``."""

import os
import pathlib
import pickle
import zipfile
from typing import Any

import numpy as np

from simplexkern._types import Path
from simplexkern.data.dataset import Arrays, check_arrays

SPLIT_SEED = 0  # the train / test split of the built-in sets never depends on a training seed


def digits() -> Arrays:
    """scikit-learn's 8x8 digits (1797 images, 10 classes) as (1, 8, 8) in [0, 1]: 1200 train,
    597 test."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.data / 16.0).reshape(-1, 1, 8, 8)
    perm = np.random.RandomState(SPLIT_SEED).permutation(len(x))
    tr, te = perm[:1200], perm[1200:]
    return check_arrays("digits", x[tr], d.target[tr], x[te], d.target[te])


def mnist1d() -> Arrays:
    """MNIST-1D (Greydanus, 2020) generated locally with the package's default settings
    (seed 42): 4000 train and 1000 test signals of shape (1, 40), 10 classes."""
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError:
        raise ValueError("the mnist1d data set needs the mnist1d package: pip install mnist1d") from None
    state = np.random.get_state()  # make_dataset seeds NumPy's global generator
    try:
        d = make_dataset(get_dataset_args())
    finally:
        np.random.set_state(state)
    return check_arrays("mnist1d", d["x"][:, None], d["y"], d["x_test"][:, None], d["y_test"])


def spirals(n_train: int = 1000, n_test: int = 1000, noise: float = 0.05) -> Arrays:
    """Two interleaved spirals in the plane (two turns each), 2 classes."""
    rng = np.random.RandomState(SPLIT_SEED)

    def draw(n):
        label = rng.randint(0, 2, n)
        t = np.sqrt(rng.uniform(0.02, 1, n))
        angle = 4 * np.pi * t + np.pi * label
        x = np.stack([t * np.cos(angle), t * np.sin(angle)], 1) + noise * rng.randn(n, 2)
        return x, label

    return check_arrays("spirals", *draw(n_train), *draw(n_test))


REGRESSION_NOISE = 0.1


def regression(n_per_interval: int = 40, n_test: int = 400) -> Arrays:
    """The 1-D regression toy of Benton et al. (2021, section 6.1), after Izmailov et al. (2019):
    the outputs of a randomly initialised two-layer network (1 -> 50 tanh -> 1, fixed seed,
    scaled to unit spread on [-8, 8]) at inputs drawn from three disjoint intervals
    [-6, -4], [-1, 1] and [4, 6], plus Gaussian noise of standard deviation 0.1. The test
    inputs are a grid over [-8, 8], gaps included, with the same noise."""
    rng = np.random.RandomState(SPLIT_SEED)
    w1, b1 = rng.randn(1, 50), rng.randn(50)
    w2 = rng.randn(50, 1) / np.sqrt(50)

    def f(x):
        return np.tanh(x / 4 @ w1 * 2 + b1) @ w2

    grid = np.linspace(-8, 8, n_test)[:, None]
    scale = f(grid).std()
    x = np.concatenate([rng.uniform(lo, lo + 2, (n_per_interval, 1)) for lo in (-6, -1, 4)])
    y = f(x) / scale + REGRESSION_NOISE * rng.randn(len(x), 1)
    y_test = f(grid) / scale + REGRESSION_NOISE * rng.randn(n_test, 1)
    return check_arrays("regression", x, y, grid, y_test, task="regression")


NPZ_ARRAYS = ("x_train", "y_train", "x_test", "y_test")
MAX_TOKEN_ID = 2**24  # integer features below it are token ids (exact in float32); larger ones are numbers


def npz(path: Path, task: str = "classification") -> tuple[Arrays, int | None]:
    """A user's ``.npz`` holding ``x_train``, ``y_train``, ``x_test``, ``y_test``: features of
    any shape (N, ...), integer labels 0..C-1 (or numbers, for regression). Returns the arrays
    and, when the features are integers in [0, 2**24) (token ids), their vocabulary size."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic not in (b"PK\x03\x04", b"PK\x05\x06"):
        what = "an empty file" if not magic else ("a single .npy array" if magic == b"\x93NUM" else "not a zip archive")
        raise ValueError(
            f"{path}: not an .npz file ({what}); an .npz data set is a zip of .npy arrays "
            f"{', '.join(NPZ_ARRAYS)} (numpy.savez)"
        )
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise ValueError(f"{path}: a single .npy array, not an .npz archive of {', '.join(NPZ_ARRAYS)}")
        with loaded as f:
            missing = [a for a in NPZ_ARRAYS if a not in f.files]
            if missing:
                raise ValueError(
                    f"{path}: missing array(s) {', '.join(missing)}; an .npz data set holds "
                    f"{', '.join(NPZ_ARRAYS)} (found: {', '.join(f.files) or 'none'})"
                )
            arrays = [f[a] for a in NPZ_ARRAYS]
    except ValueError as err:
        if str(err).startswith(str(path)):
            raise
        raise ValueError(f"{path}: not a readable .npz of plain arrays ({err})") from None
    except (OSError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError) as err:
        raise ValueError(f"{path}: not a readable .npz file ({err})") from None
    checked = check_arrays(str(path), *arrays, task=task)
    x_train, x_test = arrays[0], arrays[2]
    tokens = (
        x_train.dtype.kind in "iu"
        and x_test.dtype.kind in "iu"
        and min(x_train.min(), x_test.min()) >= 0
        and max(x_train.max(), x_test.max()) < MAX_TOKEN_ID
    )
    return checked, int(max(x_train.max(), x_test.max())) + 1 if tokens else None


CIFAR = {  # name -> (folder, train files, test file, label key, classes)
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], "test_batch", "labels", 10),
    "cifar100": ("cifar-100-python", ["train"], "test", "fine_labels", 100),
}


class _ArraysOnly(pickle.Unpickler):
    """Reads CIFAR's pickled batches without executing code: only NumPy arrays, dtypes and
    builtin containers may be rebuilt."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("builtins", "bytes"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _batch(path, label_key):
    with open(path, "rb") as f:
        d = _ArraysOnly(f, encoding="latin1").load()
    if not isinstance(d, dict) or "data" not in d or label_key not in d:
        raise ValueError(f"{path}: not a CIFAR batch (a dict with 'data' and '{label_key}')")
    data = np.asarray(d["data"])
    if data.ndim != 2 or data.shape[1] != 3072:
        raise ValueError(f"{path}: 'data' must be (N, 3072) uint8 images, got {data.shape}")
    return data.reshape(-1, 3, 32, 32) / 255.0, np.asarray(d[label_key])


def cifar(name: str, root: Path | None) -> Arrays:
    """CIFAR-10 / CIFAR-100 from the python version's batches (as torchvision downloads them),
    read from ``root`` or ``root/cifar-10-batches-py`` (``cifar-100-python``)."""
    folder, train_files, test_file, label_key, _ = CIFAR[name]
    if root is None:
        root = os.environ.get("SIMPLEXKERN_DATA")
    elif not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"root must be the path of a folder, got {type(root).__name__}")
    if root is None:
        raise ValueError(
            f"{name} is read from a local folder: pass root= (or set $SIMPLEXKERN_DATA) to the folder "
            f"holding {folder}/ with {', '.join(train_files)} and {test_file}"
        )
    root = pathlib.Path(root)
    base = root / folder if (root / folder).is_dir() else root
    expected = train_files + [test_file]
    missing = [f for f in expected if not (base / f).is_file()]
    if missing:
        raise ValueError(
            f"{name}: {base} does not hold the CIFAR python batches: missing {', '.join(missing)} "
            f"(expected {folder}/ with {', '.join(expected)}; no download is attempted)"
        )
    try:
        parts = [_batch(base / f, label_key) for f in train_files]
        x_test, y_test = _batch(base / test_file, label_key)
    except (pickle.UnpicklingError, EOFError, OSError) as err:
        raise ValueError(f"{name}: cannot read the batches in {base}: {err}") from None
    x_train = np.concatenate([p[0] for p in parts])
    y_train = np.concatenate([p[1] for p in parts])
    return check_arrays(f"{name} ({base})", x_train, y_train, x_test, y_test)
