# One door for setup, the demo and the tests. Every target installs what it needs first into .venv.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# The CIFAR-10 arrays (see docs/training.md); override with `make demo CONVIT_DATA_ROOT=/path/to/cifar10_jpeg`.
CONVIT_DATA_ROOT ?= $(abspath ../shared/data/cifar10_jpeg)
export CONVIT_DATA_ROOT

.PHONY: setup demo test test-fast slurm-up slurm-down clean

setup: $(STAMP)

# pyproject.toml declares compatible ranges; constraints.txt pins the exact tested set (torch 2.14.1 and
# torchvision 0.29.1 are the only builds that install on this platform). torch first, then the rest.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt torch torchvision
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

## demo: the quickstart sweep on the local backend with the embedded MLflow store, then the comparison.
## A SMOKE TEST of the whole path (one seed, 200 steps), not a result: see README "Results".
demo: setup
	@echo "== SMOKE TEST (sweeps/quickstart.yaml): 2 trials, 1 seed, 200 steps each, about 4 min on 2 cores =="
	$(BIN)/convit-sweep submit sweeps/quickstart.yaml
	$(BIN)/convit-sweep compare quickstart
	@echo "== SMOKE TEST done: one seed is not evidence either way; sweeps/sample_efficiency_cpu.yaml tests the claim =="
	@echo "Browse every run in MLflow: $(BIN)/convit-sweep server   (a real mlflow server on 127.0.0.1)"

## test: the whole suite (SLURM tests run when slurm/start.sh has started the local cluster, else they skip).
test: setup
	$(BIN)/python -m pytest -q --durations=15

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow and not slurm and not ray"

slurm-up:  ## the two-node local cluster the multi-node tests need (one node: bash slurm/start.sh)
	bash slurm/install.sh && bash slurm/start.sh --nodes 2

slurm-down:
	bash slurm/stop.sh

clean:
	rm -rf runs build *.egg-info .pytest_cache
