# gen_research: `make quickstart` trains the quickstart VAE; `make test` runs the test suite;
# `make test-slurm` runs the real-SLURM requeue test (root + apt-get: installs SLURM, a one-node cluster).
# Both create .venv (pip install -e ".[dev]") when it is missing or pyproject.toml changed.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
VENV_PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
BENCH_ARGS ?=

.PHONY: venv quickstart test test-fast test-slurm bench clean-runs

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(VENV_PYTHON) || $(PYTHON) -m venv $(VENV)
	$(VENV_PYTHON) -m pip install --quiet --upgrade pip
	$(VENV_PYTHON) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

quickstart: $(STAMP)
	$(VENV_PYTHON) -m gen_research fit --config experiments/quickstart.yaml

test: $(STAMP)
	$(VENV_PYTHON) -m pytest $(PYTEST_ARGS)

# Unit tests only (skips the end-to-end CLI runs marked `integration`).
test-fast: $(STAMP)
	$(VENV_PYTHON) -m pytest -m "not integration" $(PYTEST_ARGS)

# A 2-task DDP job on a one-node SLURM cluster is sent USR1 mid-training, requeues and resumes, then is requeued
# without USR1 (scontrol requeue) and resumes from its newest checkpoint; two fits in one job get two run folders
# (tests/slurm/). Needs root and apt-get: elsewhere it prints SKIP, but fails under CI=true.
test-slurm: $(STAMP)
	PYTHON=$(abspath $(VENV_PYTHON)) tests/slurm/run_requeue_test.sh

# Every speed figure of docs/results.md, measured side by side (benchmarks/run.py; under 30 minutes on 2 CPU cores):
# JSON in benchmarks/out/bench-cpu.json, tables refreshed in docs/results.md. On a GPU machine: benchmarks/gpu_suite.sh.
bench: $(STAMP)
	$(VENV_PYTHON) benchmarks/run.py $(BENCH_ARGS)

clean-runs:
	rm -rf runs
