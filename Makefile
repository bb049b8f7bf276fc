# Every target sets itself up from nothing: a .venv with the pinned dependencies, then the
# compiled extension. `make test` is what CI runs.
PYTHON_BOOT ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DEPS := $(VENV)/.deps-installed
EXT := build/.extension-built
CSRC := $(shell find csrc -name '*.cpp' -o -name '*.h' -o -name '*.cu')
ASV := cd benchmarks && ../$(VENV)/bin/asv

.PHONY: setup build test lint ctest pytest demo bench clean

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

# pytest exits 5 when it collects no test, which fails this target.
pytest: $(EXT)
	TRITON_INTERPRET=1 $(PY) -m pytest python_tests

# ruff (configured in pyproject.toml): pyflakes, pycodestyle and import order.
lint: $(DEPS)
	$(VENV)/bin/ruff check .

test: lint ctest pytest

demo: $(EXT)
	$(VENV)/bin/simplexkern demo

bench: $(EXT)
	$(ASV) machine --yes
	$(ASV) run --python=same --set-commit-hash=$$(git rev-parse HEAD) --show-stderr
	$(PY) benchmarks/report.py

clean:
	rm -rf build simplexkern/_C*.so benchmarks/.asv *.egg-info
