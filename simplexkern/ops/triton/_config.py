"""What the Triton kernels share: interpreter detection, dot precision, autotune lists."""
import os

import torch
import triton

#: Kernels run on CPU tensors through Triton's interpreter when TRITON_INTERPRET=1 (tests).
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"

#: SIMPLEXKERN_AUTOTUNE=0 runs each kernel with one fixed configuration (quick compiles for tests).
AUTOTUNE = os.environ.get("SIMPLEXKERN_AUTOTUNE", "1") != "0"

#: Points handled by one program; larger S is split into chunks of this many.
MAX_POINTS_PER_PROGRAM = 8


def configs(gpu, interpret):
    """``gpu`` autotune configurations (only the first without autotuning), or the one small
    ``interpret`` config under the interpreter."""
    if INTERPRET:
        return [triton.Config(interpret, num_warps=1)]
    return gpu if AUTOTUNE else gpu[:1]


def dot_precision(dtype):
    """float32 dots follow torch's TF32 switch, as nn.Linear does; half types need none."""
    if dtype == torch.float32 and not INTERPRET and torch.backends.cuda.matmul.allow_tf32:
        return "tf32"
    return "ieee"


def next_pow2(n):
    return triton.next_power_of_2(max(int(n), 1))
