# Set-up on a fresh machine is `make demo` (the main job) or `make test` (the whole suite):
# each builds .venv first when it is missing. `make venv` only builds the environment.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo demo-quick test test-kernels test-fast lint bench clean

venv: $(STAMP)

# torch/torchvision are pinned through constraints.txt (pip takes them from this machine's disk);
# the package itself declares only ranges (pyproject.toml).
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -c constraints.txt torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: venv
	$(BIN)/noisesearch demo --out demo-out

demo-quick: venv
	$(BIN)/noisesearch demo --quick --out demo-out-quick

# Lint, formatting, types and the import layers (pyproject.toml's [tool.importlinter]) first (seconds), then the suite in a random order (pytest-randomly
# prints the seed: rerun one order with `make test PYTEST_ARGS=--randomly-seed=N`), then the tests marked
# `numerics` (they compare floats recomputed in other batches, with or without the cache) again under
# other CPU kernels: MKL limited to AVX2, then to SSE4.2 (Intel CPUs; MKL ignores these elsewhere), then
# everything generic on one thread (ATen's default kernels, MKL's compatible code path: any CPU).
# Rounding differs between those; the tests' tolerances must not (docs/TESTING.md).
lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

NUMERICS := $(BIN)/python -m pytest -q -p no:randomly -m numerics

test: lint
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)
	$(MAKE) --no-print-directory test-kernels

test-kernels: venv
	MKL_ENABLE_INSTRUCTIONS=AVX2 $(NUMERICS)
	MKL_ENABLE_INSTRUCTIONS=SSE4_2 $(NUMERICS)
	ATEN_CPU_CAPABILITY=default MKL_CBWR=COMPATIBLE OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(NUMERICS)

test-fast: venv
	$(BIN)/python -m pytest -q -m "not slow"

bench: venv
	$(BIN)/python bench/bench_driver.py
	$(BIN)/python bench/bench_algorithms.py
	$(BIN)/python bench/bench_sweep.py

clean:
	rm -rf $(VENV) demo-out demo-out-quick .pytest_cache
