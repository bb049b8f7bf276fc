"""Geometry core: batched log-volumes and pairwise distances against the reference style.

Each benchmark is parametrised by ``implementation``; ``reference`` is how the published
research code computes the same quantity (simplexkern.geometry_reference), and
benchmarks/report.py prints every other implementation as a ratio against it.
"""

import torch

from simplexkern import geometry, geometry_reference


def _device(name):
    if name == "cuda" and not torch.cuda.is_available():
        raise NotImplementedError("no CUDA device")  # asv skips the combination
    return torch.device(name)


def _sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class LogVolume:
    """log V of 10,000 simplexes of 11 vertices (10-simplexes)."""

    params = (["reference", "simplexkern"], ["cpu", "cuda"])
    param_names = ["implementation", "device"]
    timeout = 300

    def setup(self, implementation, device):
        if implementation == "reference" and device != "cpu":
            raise NotImplementedError("the reference loop runs on the CPU")
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(10_000, 11, 22, generator=gen, dtype=torch.float64)
        self.sqdist = geometry.pairwise_sqdist(x).to(_device(device))
        self.sqdist_np = self.sqdist.cpu().numpy()

    def time_log_volume(self, implementation, device):
        if implementation == "reference":
            geometry_reference.log_volume(self.sqdist_np)
        else:
            geometry.log_volume(self.sqdist)
            _sync()


class PairwiseSqdist:
    """Squared distances between 5 vertices of 15M float32 parameters each."""

    params = (["reference", "simplexkern"], ["cpu", "cuda"])
    param_names = ["implementation", "device"]
    timeout = 300

    def setup(self, implementation, device):
        gen = torch.Generator().manual_seed(0)
        self.vertices = torch.randn(5, 15_000_000, generator=gen).to(_device(device))

    def time_pairwise_sqdist(self, implementation, device):
        if implementation == "reference":
            geometry_reference.pairwise_sqdist(self.vertices)
        else:
            geometry.pairwise_sqdist(self.vertices)
        _sync()
