"""Builds simplexkern and its compiled extension simplexkern._C.

CUDA kernels are compiled when SIMPLEXKERN_CUDA=1, or by default (SIMPLEXKERN_CUDA unset
or "auto") when torch sees a GPU and a CUDA toolkit is found; SIMPLEXKERN_CUDA=0 never
compiles them. The CPU build needs no GPU and no CUDA toolkit.
"""

import glob
import os

from setuptools import find_packages, setup
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension


def want_cuda():
    choice = os.environ.get("SIMPLEXKERN_CUDA", "auto").lower()
    if choice not in ("0", "1", "auto"):
        raise ValueError(f"SIMPLEXKERN_CUDA must be 0, 1 or auto, got {choice!r}")
    if choice == "1" and CUDA_HOME is None:
        raise RuntimeError("SIMPLEXKERN_CUDA=1 but no CUDA toolkit was found (set CUDA_HOME)")
    if choice == "auto":
        import torch

        return CUDA_HOME is not None and torch.cuda.is_available()
    return choice == "1"


def extension():
    sources = ["csrc/extension.cpp"]
    for part in ("geometry", "geometry/cpu", "geometry/autograd"):
        sources += sorted(glob.glob(f"csrc/{part}/*.cpp"))
    cxx = ["-O3", "-fopenmp"]  # the C++ standard is the one torch asks for
    if want_cuda():
        sources += sorted(glob.glob("csrc/geometry/cuda/*.cu"))
        return CUDAExtension(
            "simplexkern._C",
            sources,
            define_macros=[("WITH_CUDA", None)],
            extra_compile_args={"cxx": cxx, "nvcc": ["-O3"]},
            extra_link_args=["-fopenmp"],
        )
    return CppExtension("simplexkern._C", sources, extra_compile_args={"cxx": cxx}, extra_link_args=["-fopenmp"])


setup(
    name="simplexkern",
    version="0.1.0",
    description="Simplexes, simplicial complexes and curves of neural-network weights, on compiled kernels",
    packages=find_packages(include=["simplexkern", "simplexkern.*"]),
    python_requires=">=3.10",
    install_requires=["torch>=2.11", "numpy", "scipy", "tqdm", "matplotlib", "scikit-learn", "mnist1d"],
    extras_require={"triton": ["triton"]},  # the triton backend; Linux torch wheels bring it
    ext_modules=[extension()],
    cmdclass={"build_ext": BuildExtension},
    entry_points={"console_scripts": ["simplexkern = simplexkern.cli:main"]},
)
