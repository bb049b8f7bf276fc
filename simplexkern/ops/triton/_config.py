"""What the Triton kernels share: interpreter detection, dot precision, autotune lists."""

import importlib.util
import os

import torch

#: Whether Triton is installed: it is optional (``pip install simplexkern[triton]``; Linux
#: torch wheels bring it). Without it the ``triton`` backend is unavailable, all else works.
AVAILABLE = importlib.util.find_spec("triton") is not None

#: Kernels run on CPU tensors through Triton's interpreter when TRITON_INTERPRET=1 (tests).
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"

#: SIMPLEXKERN_AUTOTUNE=0 runs each kernel with one fixed configuration (quick compiles for tests).
AUTOTUNE = os.environ.get("SIMPLEXKERN_AUTOTUNE", "1") != "0"

#: Points handled by one program; larger S is split into chunks of this many.
MAX_POINTS_PER_PROGRAM = 8


def configs(gpu, interpret):
    """``gpu`` autotune configurations, or the one small ``interpret`` config under the interpreter."""
    import triton

    return [triton.Config(interpret, num_warps=1)] if INTERPRET else gpu


#: Shared memory a config may plan for (H100: 227 KiB per block), with room to spare.
SMEM_BUDGET = 200 * 1024


def smem_pruner(tile_words):
    """An ``early_config_prune`` for triton.autotune: drops configs whose pipelined operand
    tiles, ``tile_words(config kwargs, kernel args)`` words per stage, would not fit in shared
    memory, and keeps only the first survivor when autotuning is off. A config holds
    ``num_stages`` copies of its tiles (sm_90 allocates all of them; sm_80 one fewer)."""

    def prune(configs_, named_args, **kwargs):
        args = {**named_args, **kwargs}
        elem = next(v.element_size() for v in args.values() if hasattr(v, "element_size"))
        fits = [c for c in configs_ if tile_words(c.kwargs, args) * elem * max(c.num_stages, 1) <= SMEM_BUDGET]
        fits = fits or configs_[-1:]
        return fits if AUTOTUNE else fits[:1]

    return prune


def dot_precision(dtype, allow_tf32=None):
    """float32 dots follow torch's TF32 switch (``allow_tf32``, default the matmul one, as
    nn.Linear does); half types need none."""
    if allow_tf32 is None:
        allow_tf32 = torch.backends.cuda.matmul.allow_tf32
    if dtype == torch.float32 and not INTERPRET and allow_tf32:
        return "tf32"
    return "ieee"


def next_pow2(n):
    return 1 << (max(int(n), 1) - 1).bit_length()
