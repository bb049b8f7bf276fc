"""Type aliases of the public API's signatures."""

import os
from typing import Literal

import torch

Device = torch.device | str | None  # None: the GPU when there is one
Path = str | os.PathLike
ModelOrPath = torch.nn.Module | Path  # a plain model, or the path of its checkpoint
Distributed = Literal["members", "data"] | None  # see simplexkern.distributed
