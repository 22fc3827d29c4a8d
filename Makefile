# Two commands set up everything on a fresh machine (Python >= 3.11):
#   make smoke   installs what it needs, then runs the smoke replication DAG end to end
#   make test    installs what it needs, then runs the test suite
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Jobs and tests call `onecycle`, `snakemake` and `python` from the project's environment.
export PATH := $(abspath $(BIN)):$(PATH)
CORES ?= 2
FASHION_MNIST := /usr/share/datasets/fashion-mnist

.PHONY: setup data smoke test test-fast bench figures report gpu-check lint clean-smoke

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit("Python >= 3.11 is needed (Snakemake 9)" if sys.version_info < (3, 11) else 0)'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,slurm]'
	touch $@

# Real Fashion-MNIST from Debian's package when apt is available (no download at run time);
# otherwise onecycle falls back to torchvision's download, else says how to get the data.
data:
	@if [ ! -d $(FASHION_MNIST) ] && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		(apt-get install -y -qq dataset-fashion-mnist || \
		 (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist)) >/dev/null; \
	fi; \
	if [ -d $(FASHION_MNIST) ]; then echo "Fashion-MNIST: $(FASHION_MNIST)"; \
	else echo "Fashion-MNIST: not installed by apt; onecycle will try torchvision's download"; fi

smoke: setup data
	$(BIN)/snakemake --cores $(CORES) --configfile configs/smoke.yaml --rerun-incomplete --printshellcmds
	@echo "Tables: results/smoke/tables/   Figures: results/smoke/figures/"

test: setup data
	$(BIN)/python -m pytest

test-fast: setup
	$(BIN)/python -m pytest -m "not slow"

# pytest-benchmark: each benchmark reports a ratio against a bare loop measured in the same run.
bench: setup data
	$(BIN)/python -m pytest tests/benchmarks --benchmark-only --benchmark-columns=median,iqr,rounds --benchmark-autosave -p no:randomly

# Tables and figures again from the stored results: no training runs.
figures: setup
	$(BIN)/onecycle report --config configs/smoke.yaml
	$(BIN)/onecycle report --config configs/bounds_study.yaml

report: setup
	$(BIN)/snakemake --configfile configs/smoke.yaml --report results/smoke/report.html

gpu-check: setup
	$(BIN)/python scripts/gpu_check.py

lint: setup
	$(BIN)/snakemake --lint --configfile configs/smoke.yaml

clean-smoke:
	rm -rf results/smoke .snakemake
