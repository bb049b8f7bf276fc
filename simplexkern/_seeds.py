"""Seeds derived from keys of non-negative ints (seed, algorithm, member, stage, epoch, ...):
every random choice of a run comes from its own key, so a member's result does not depend
on what else ran before it."""
import numpy as np


def derive_seed(*key):
    """A 63-bit seed from non-negative ints."""
    return int(np.random.SeedSequence(list(key)).generate_state(1, np.uint64)[0] >> np.uint64(1))
