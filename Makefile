# Set-up on a fresh machine is `make demo` (the main job) or `make test` (the whole suite):
# each builds .venv first when it is missing. `make venv` only builds the environment.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo demo-quick test test-fast lint bench clean

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

# Lint, formatting and types first (seconds), then the suite in a random order (pytest-randomly
# prints the seed: rerun one order with `make test PYTEST_ARGS=--randomly-seed=N`).
lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-fast: venv
	$(BIN)/python -m pytest -q -m "not slow"

bench: venv
	$(BIN)/python bench/bench_driver.py
	$(BIN)/python bench/bench_algorithms.py
	$(BIN)/python bench/bench_sweep.py

clean:
	rm -rf $(VENV) demo-out demo-out-quick .pytest_cache
