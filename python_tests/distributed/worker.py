"""Run by ``torchrun`` from test_distributed.py: data-parallel training of one simplex on
several processes against the same training in one process (rank 0 computes both), and
what data-parallel processes must not share or must agree on."""

import copy
import sys
import tempfile

import torch

from simplexkern import data as datasets
from simplexkern import distributed, models, train
from simplexkern.nn import simplexify
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
    assert [p is model.store.trainable for p in ddp.parameters() if p.requires_grad] == [True]
    share = distributed.batch_share(len(x), world)
    (
        loop.step_loss(model, loss_fn, phase, x[share], y[share], coeffs, ddp) * (len(x[share]) * world.size / len(x))
    ).backward()
    torch.testing.assert_close(model.store.trainable.grad, reference.store.trainable.grad, rtol=1e-5, atol=1e-7)
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


def dropout_masks_differ(d, world):
    """Each process draws its own dropout masks: the same draw on every share would apply
    one mask to rows 0.., B/W.., ... of each batch."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Dropout(0.5), models.for_data("mlp", d))
    masks = []  # (dropped, input non-zero) of each forward: a zero input shows no mask
    model[0].register_forward_hook(
        lambda m, inputs, out: masks.append((out == 0, inputs[0] != 0)) if m.training else None
    )  # training forwards only (not the check that the model fits the data)
    train.train_mode(model, d, epochs=1, batch_size=64, progress=False, device="cpu", distributed="data")
    (drop0, seen0), (drop1, seen1) = world.objects(masks[0])
    assert drop0.shape == drop1.shape == (32, *d.x_train.shape[1:])
    both = seen0 & seen1
    assert both.sum() > 100 and not torch.equal(drop0[both], drop1[both])
    assert 0.4 < drop0[seen0].float().mean() < 0.6  # about half the inputs dropped: the masks were applied


def batch_norm_needs_two_rows_per_process(d, world):
    phase = train.Phase(epochs=1, lr=0.1, batch_size=2 * world.size - 1)
    plain = torch.nn.Sequential(torch.nn.Linear(64, 8), torch.nn.ReLU(), torch.nn.Linear(8, 10))
    loop._data_parallel(plain, d, phase, torch.device("cpu"))  # one row per process is enough without BatchNorm
    for model in (torch.nn.Sequential(torch.nn.Linear(64, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 10)),):
        for candidate in (model, simplexify(model)):
            try:
                loop._data_parallel(candidate, d, phase, torch.device("cpu"))
            except ValueError as err:
                assert f"at least {2 * world.size} rows (2 per process with BatchNorm)" in str(err), err
            else:
                raise AssertionError("a BatchNorm model trained data-parallel on one row per process")


def resume_points_must_agree(d, world):
    """Processes that see different checkpoints (a folder not shared between nodes) refuse
    to resume instead of training from different points."""
    mode = models.for_data("mlp", d)
    with tempfile.TemporaryDirectory() as folder:
        if world.is_main:
            train.train_mode(mode, d, epochs=1, out=folder, progress=False, device="cpu")
        world.barrier()
        try:
            train.train_mode(mode, d, epochs=1, out=folder, progress=False, device="cpu", distributed="data")
        except ValueError as err:
            assert "differ between processes" in str(err) and "checkpoints of mode" in str(err), err
        else:
            raise AssertionError("processes resumed from different checkpoints")
        world.barrier()


def choose_reg_alone_and_together(d, world):
    """choose_reg without ``distributed`` runs on one process without waiting for the others;
    data-parallel, every process gets rank 0's rows, and a diverged λ's error is the
    one-process error (no rank in it)."""
    torch.manual_seed(0)
    mode = models.for_data("mlp", d)
    settings = dict(
        vertex_epochs=1,
        n_vertices=2,
        n_samples=2,
        batch_size=128,
        progress=False,
        device="cpu",
        n_points=3,
        regs=[1.0, 1e12],
    )
    if world.is_main:  # the others are already waiting at the barrier below: a collective here would hang
        reg, _, alone = train.choose_reg([mode], d, **settings)
    world.barrier()
    reg, _, rows = train.choose_reg([mode], d, distributed="data", **settings)
    assert reg == 1.0 and world.all_same(repr(rows), "choose_reg rows") is None
    assert rows[1]["diverged"] is not None and "rank" not in rows[1]["diverged"]
    if world.is_main:
        assert rows[1]["diverged"] == alone[1]["diverged"]
        assert abs(rows[0]["val_nll"] - alone[0]["val_nll"]) < 1e-3


def main():
    world, _ = distributed.init(torch.device("cpu"), timeout_minutes=2)
    assert world.size > 1
    d = datasets.load("digits", val_fraction=0.2)
    gradients_match(d, world)
    training_matches(d, world)
    dropout_masks_differ(d, world)
    batch_norm_needs_two_rows_per_process(d, world)
    resume_points_must_agree(d, world)
    choose_reg_alone_and_together(d, world)
    distributed.shutdown()
    print(f"rank {world.rank}: ok")


if __name__ == "__main__":
    sys.exit(main())
