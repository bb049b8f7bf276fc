"""Seeds derived from keys of non-negative ints (seed, algorithm, member, stage, epoch, ...):
every random choice of a run comes from its own key, so a member's result does not depend
on what else ran before it."""

import contextlib

import numpy as np
import torch


def derive_seed(*key):
    """A 63-bit seed from non-negative ints; keys of different lengths never collide."""
    return int(np.random.SeedSequence([len(key), *key]).generate_state(1, np.uint64)[0] >> np.uint64(1))


@contextlib.contextmanager
def seeded(seed):
    """Inside: torch's global generators (CPU and every CUDA device, as dropout and
    ``reset_parameters`` use them) seeded with ``seed``; outside, they are as they were."""
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
