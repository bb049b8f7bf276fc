"""Batches over a data set's rows: the one rule for where batches start and end, and the
training batches that follow it.

A last batch of a single example after full batches of more than one cannot be normalised
by BatchNorm (one example has no batch statistics): training drops it, a statistics pass
joins it to the batch before.
"""

import torch

LONE_ROW = ("drop", "merge")


def batch_bounds(n: int, batch_size: int, lone_row: str = "drop") -> list[tuple[int, int]]:
    """(start, end) of each batch over ``n`` rows: full batches of ``batch_size``, then the
    rest; a lone last row after other batches is merged into the batch before
    (``lone_row="merge"``) or, unless every batch has one row, dropped ("drop")."""
    if lone_row not in LONE_ROW:
        raise ValueError(f"lone_row must be one of {LONE_ROW}, got {lone_row!r}")
    bounds = [(start, min(start + batch_size, n)) for start in range(0, n, batch_size)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] == 1:
        if lone_row == "merge":
            _, end = bounds.pop()
            bounds[-1] = (bounds[-1][0], end)
        elif batch_size > 1:  # batches of one example throughout are the caller's choice
            bounds.pop()
    return bounds


def epoch_batches(n: int, batch_size: int) -> tuple[int, int]:
    """(batches, examples) of a training epoch over ``n`` examples (``batch_bounds``)."""
    bounds = batch_bounds(n, batch_size)
    return len(bounds), (bounds[-1][1] if bounds else 0)


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Optimisation steps per epoch over ``n`` examples."""
    return epoch_batches(n, batch_size)[0]


class _Rows(torch.utils.data.Dataset):
    """Indexed by a tensor of rows: one fetch per batch, not per example."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, rows):
        return self.x[rows], self.y[rows]


def batches(x, y, batch_size, device, generator=None):
    """(x, y) training batches on ``device`` in an order drawn from ``generator`` (None: in
    order). Data in host memory reach a GPU through a pinned-memory DataLoader and
    non-blocking copies."""
    n = len(x)
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    rows = [order[start:end] for start, end in batch_bounds(n, batch_size)]
    if device.type == "cuda" and x.device.type == "cpu":
        loader = torch.utils.data.DataLoader(_Rows(x, y), sampler=rows, batch_size=None, pin_memory=True)
        for xb, yb in loader:
            yield xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
    else:
        for r in rows:
            yield x[r].to(device), y[r].to(device)
