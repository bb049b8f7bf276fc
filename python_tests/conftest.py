import os

import pytest
import torch

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture
def rng():
    """A generator with a fresh seed from the OS: every run draws new data. The seed is
    printed (pytest shows it for a failing test) and is ``rng.initial_seed()``."""
    seed = int.from_bytes(os.urandom(6), "little")
    print(f"rng seed: {seed}")
    return torch.Generator().manual_seed(seed)
