# Two entry points for a fresh machine: `make demo` and `make test` (alias `make test-all`;
# `make test-fast` is the inner loop).
# Each creates .venv if missing, installs the package (editable) with the extras they need
# (demo and dev pull in [simulate], i.e. msprime) and runs.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.mambadna-installed
# A CPU build of torch for machines without an NVIDIA GPU; an unpinned torch would pull a
# multi-GB CUDA build. Override, e.g. `make test TORCH_CPU="torch==2.13.0 --index-url URL"`.
TORCH_CPU ?= torch==2.13.0
DEMO_DIR ?= demo_out

.PHONY: demo test test-all test-fast test-gpu lint clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): $(PY) pyproject.toml setup.py kernels/selective_scan/_cpu_scan.c \
		kernels/conv1d/_cpu_conv.c mambadna/io/_fastq.c
	@if nvidia-smi -L >/dev/null 2>&1; then \
		echo "NVIDIA GPU found: installing torch from the package index"; \
	else \
		echo "no GPU found: installing the CPU build $(TORCH_CPU)"; \
		$(PY) -m pip install --quiet $(TORCH_CPU); \
	fi
	$(PY) -m pip install --quiet -e ".[dev,workflows,demo]"
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/mambadna demo -o $(DEMO_DIR)

# The full suite (what CI runs), after lint.
test: $(STAMP)
	$(VENV)/bin/ruff check mambadna kernels tests benchmarks
	$(PY) -m pytest -q

# The same: lint and the full suite, slow tests included (the gpu ones: make test-gpu).
test-all: test

# The inner loop: everything but the tests marked slow or gpu (under ~90 s on 2 cores).
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow and not gpu"

test-gpu: $(STAMP)
	$(PY) -m pytest -q -m gpu

lint: $(STAMP)
	$(VENV)/bin/ruff check mambadna kernels tests benchmarks

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache .hypothesis build *.egg-info kernels/selective_scan/_cpu_scan*.so \
		kernels/conv1d/_cpu_conv*.so mambadna/io/_fastq*.so
