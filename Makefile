# Every target sets itself up from nothing: a .venv with the pinned dependencies, then the
# compiled extension. `make test` is what CI runs.
PYTHON_BOOT ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DEPS := $(VENV)/.deps-installed
EXT := build/.extension-built
CSRC := $(shell find csrc -name '*.cpp' -o -name '*.h' -o -name '*.cu')
ASV := cd benchmarks && ../$(VENV)/bin/asv

.PHONY: setup build test lint ctest pytest demo bench clean cuda-check gpu-check

$(PY):
	$(PYTHON_BOOT) -m venv $(VENV)

$(DEPS): requirements.txt | $(PY)
	$(PY) -m pip install --upgrade pip setuptools wheel
	$(PY) -m pip install -r requirements.txt
	touch $@

setup: $(DEPS)

# The editable install compiles simplexkern._C in place (CPU kernels; CUDA ones where a GPU
# and a CUDA toolkit are found, or SIMPLEXKERN_CUDA=1).
$(EXT): $(DEPS) setup.py $(CSRC)
	MAX_JOBS=$${MAX_JOBS:-2} $(PY) -m pip install --no-build-isolation --no-deps -e .
	mkdir -p build && touch $@

build: $(EXT)

ctest: $(DEPS)
	$(VENV)/bin/cmake -S . -B build/cmake -DPython3_EXECUTABLE=$(abspath $(PY))
	$(VENV)/bin/cmake --build build/cmake -j2
	$(VENV)/bin/ctest --test-dir build/cmake --output-on-failure --no-tests=error

# nvcc from NVIDIA's pip wheels, into the venv: the CUDA 13.0 toolchain torch's cu130 wheels
# were built with (nvcc, its nvvm, crt and cccl headers), so no system CUDA toolkit is needed.
NVCC_WHEELS := nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-cuda-cccl==13.0.85
NVCC_STAMP := $(VENV)/.nvcc-installed

$(NVCC_STAMP): $(DEPS)
	$(PY) -m pip install $(NVCC_WHEELS)
	touch $@

# The CUDA kernels (csrc/geometry/cuda) compiled for sm_80 and sm_90, compile only: no GPU needed.
cuda-check: $(NVCC_STAMP)
	$(PY) python_tests/test_cuda_compile.py

# pytest exits 5 when it collects no test, which fails this target. nvcc is installed first so
# that python_tests/test_cuda_compile.py compiles the CUDA kernels instead of skipping.
pytest: $(EXT) $(NVCC_STAMP)
	TRITON_INTERPRET=1 $(PY) -m pytest python_tests

# Configured in pyproject.toml: ruff's checks (pyflakes, pycodestyle, import order, complexity
# at most 12), its formatter, and mypy on ops/, nn/, geometry.py and train/.
lint: $(DEPS)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: lint ctest pytest

demo: $(EXT)
	$(VENV)/bin/simplexkern demo

# On a machine with a GPU: the CUDA build, the CUDA and Triton tests and the GPU benchmarks,
# written to benchmarks/results/DATE-GPU.md. GPU_PY=python3 uses that host's own torch.
GPU_PY ?= $(PY)
gpu-check: $(if $(filter $(PY),$(GPU_PY)),$(DEPS))
	SIMPLEXKERN_CUDA=1 MAX_JOBS=$${MAX_JOBS:-8} $(GPU_PY) setup.py build_ext --inplace
	$(GPU_PY) benchmarks/gpu_check.py

bench: $(EXT)
	$(ASV) machine --yes
	$(ASV) run --python=same --set-commit-hash=$$(git rev-parse HEAD) --show-stderr
	$(PY) benchmarks/report.py

clean:
	rm -rf build simplexkern/_C*.so benchmarks/.asv *.egg-info
