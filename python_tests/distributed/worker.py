"""Run by ``torchrun`` from test_distributed.py: data-parallel training of one simplex on
several processes against the same training in one process (rank 0 computes both)."""
import copy
import sys

import torch

from simplexkern import data as datasets
from simplexkern import distributed, models, train
from simplexkern.nn.model import simplexify
from simplexkern.train import loop


def gradients_match(d, world):
    """One step's gradient of the trainable vertex, data-parallel, against the whole batch's
    in this process."""
    torch.manual_seed(0)
    model = simplexify(models.for_data("mlp", d))
    model.add_vertex("mean", noise=0.05)
    model.fix(0)
    phase = train.Phase(epochs=1, lr=0.1, n_samples=3, reg=0.5, batch_size=63)
    coeffs = model.sampler.sample(3, model, torch.Generator().manual_seed(1))
    x, y = d.x_train[:63], d.y_train[:63]
    loss_fn = loop.loss_function(d)

    reference = copy.deepcopy(model)
    loop.step_loss(reference, loss_fn, phase, x, y, coeffs).backward()

    _, ddp = loop._data_parallel(model, d, phase, torch.device("cpu"))
    assert [p is model.store.free for p in ddp.parameters() if p.requires_grad] == [True]
    share = distributed.batch_share(len(x), world)
    (loop.step_loss(model, loss_fn, phase, x[share], y[share], coeffs, ddp) * (len(x[share]) * world.size / len(x))
     ).backward()
    torch.testing.assert_close(model.store.free.grad, reference.store.free.grad, rtol=1e-5, atol=1e-7)
    assert model.store.fixed.grad is None


def training_matches(d, world):
    """grow_simplex data-parallel against grow_simplex in one process: the same vertices."""
    torch.manual_seed(0)
    mode = models.for_data("mlp", d)
    settings = dict(vertex_epochs=2, n_samples=3, batch_size=63, reg=1.0, progress=False, device="cpu")
    parallel = train.grow_simplex(mode, d, 3, distributed="data", **settings)
    if world.is_main:
        alone = train.grow_simplex(mode, d, 3, **settings)
        torch.testing.assert_close(parallel.store.vertices(), alone.store.vertices(), rtol=1e-4, atol=1e-6)
        assert torch.equal(parallel.store.vertices()[0], alone.store.vertices()[0])  # the fixed mode
        moved = (alone.store.vertices()[1:] - alone.store.vertices()[0]).abs().max()
        assert moved > 1e-2, moved  # the vertices trained: the comparison is not between two copies of the start


def main():
    world, _ = distributed.init(torch.device("cpu"), timeout_minutes=2)
    assert world.size > 1
    d = datasets.load("digits", val_fraction=0.2)
    gradients_match(d, world)
    training_matches(d, world)
    distributed.shutdown()
    print(f"rank {world.rank}: ok")


if __name__ == "__main__":
    sys.exit(main())
