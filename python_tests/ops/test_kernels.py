"""The store-wide Triton kernels against float64 references (interpreter on the CPU)."""

import pytest
import torch

from simplexkern.ops.triton import _config
from simplexkern.ops.triton.combine import combine
from simplexkern.ops.triton.pairwise_sqdist import pairwise_sqdist

from conftest import cuda

DEVICES = [
    pytest.param("cpu", marks=pytest.mark.skipif(not _config.INTERPRET, reason="needs TRITON_INTERPRET=1")),
    pytest.param("cuda", marks=cuda),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("S, k, P", [(1, 1, 37), (5, 4, 1000), (11, 3, 129)])
def test_combine(device, S, k, P, rng):
    c = torch.randn(S, k, generator=rng, dtype=torch.float64)
    v = torch.randn(k, P, generator=rng, dtype=torch.float64)
    got = combine(c.float().to(device), v.float().to(device)).cpu()
    ref = c @ v
    assert ((got.double() - ref).norm() / ref.norm()).item() < 1e-6


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("k, P", [(1, 10), (2, 333), (5, 2049), (9, 100)])
def test_pairwise_sqdist_kernel(device, k, P, rng):
    centre = 100 * torch.randn(1, P, generator=rng)
    v = centre + 1e-3 * torch.randn(k, P, generator=rng)  # close, far from the origin
    got = pairwise_sqdist(v.to(device)).cpu()
    ref = ((v.double()[:, None] - v.double()[None]) ** 2).sum(-1)
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-300)
