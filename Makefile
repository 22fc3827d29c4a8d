# Two commands set up everything on a fresh machine (Python >= 3.11):
#   make smoke   installs what it needs, runs the smoke replication DAG end to end into
#                results/smoke-run/ (untracked), then compares it with the reference results/smoke/
#   make test    installs what it needs, then runs the test suite
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Jobs and tests call `onecycle`, `snakemake` and `python` from the project's environment.
export PATH := $(abspath $(BIN)):$(PATH)
CORES ?= 2
FASHION_MNIST := /usr/share/datasets/fashion-mnist
# The committed smoke results are the reference; `make smoke` runs into SMOKE_RUN (ignored by git).
SMOKE_REFERENCE := results/smoke
SMOKE_RUN := results/smoke-run

.PHONY: setup data test-tools smoke smoke-reference tiny test test-threads test-fast bench figures report gpu-check lint clean-smoke

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit("Python >= 3.11 is needed (Snakemake 9)" if sys.version_info < (3, 11) else 0)'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[all]'
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

# The report tests render the static report in headless Chromium and compile the LaTeX tables
# with pdflatex: Debian's packages when apt is available (root), else those tests skip, saying why.
test-tools:
	@if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		for pkg in chromium texlive-latex-base texlive-latex-recommended; do \
			dpkg -s $$pkg >/dev/null 2>&1 || missing="$$missing $$pkg"; \
		done; \
		if [ -n "$$missing" ]; then \
			(apt-get install -y -qq --no-install-recommends $$missing || \
			 (apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing)) >/dev/null; \
		fi; \
	fi; \
	echo "chromium: $$(command -v chromium || echo 'not installed: the browser test skips')"; \
	echo "pdflatex: $$(command -v pdflatex || echo 'not installed: the LaTeX test skips')"

# Float32 training is not bit-identical across CPUs and thread counts, so a fresh run is checked
# against the reference at the level that holds on any machine (onecycle.report.reference): status,
# accuracy means within a tolerance from the seed spread, verdicts. Exit status 1 on disagreement.
smoke: setup data
	$(BIN)/snakemake --cores $(CORES) --configfile configs/smoke.yaml --config results_dir=$(SMOKE_RUN) \
		--rerun-incomplete --printshellcmds
	@echo "Tables: $(SMOKE_RUN)/tables/   Figures: $(SMOKE_RUN)/figures/"
	$(BIN)/onecycle compare-reference --config configs/smoke.yaml --reference $(SMOKE_REFERENCE) --run $(SMOKE_RUN)

# Regenerate the committed reference from scratch (no stale runs of groups since removed), at a
# clean, committed revision: every result records it. Then commit results/smoke/.
smoke-reference: setup data
	rm -rf $(SMOKE_REFERENCE)
	$(BIN)/snakemake --cores $(CORES) --configfile configs/smoke.yaml --config results_dir=$(SMOKE_REFERENCE) \
		--printshellcmds

# Every job of configs/paper.yaml, then of configs/paper_imagenet.yaml (the full-ILSVRC rows), for a
# few iterations on this machine's CPU (onecycle.experiments.scale), on small copies of every dataset
# in the real formats written under TINY_DATA (tests/data_fixtures.py), into $(TINY_RESULTS)-tiny.
# The same check on your own copies of the data: docs/replication.md, "Before the real run".
TINY_DATA := build/tiny/data
TINY_RESULTS := build/tiny/paper
TINY_FLAGS := --cores $(CORES) --keep-going --rerun-incomplete --config scale=tiny gpus_per_job=0 \
	results_dir=$(TINY_RESULTS) 'skip_checksums=[mnist,cifar10,cifar100]'
tiny: setup
	test -d $(TINY_DATA) || $(BIN)/python tests/data_fixtures.py $(TINY_DATA)
	ONECYCLE_DATA=$(abspath $(TINY_DATA)) $(BIN)/snakemake $(TINY_FLAGS)
	ONECYCLE_DATA=$(abspath $(TINY_DATA)) $(BIN)/snakemake $(TINY_FLAGS) --configfile configs/paper_imagenet.yaml

test: setup data test-tools
	$(BIN)/python -m pytest

# The tests marked `numerics` (they compare floats from training or float kernels) again, at
# another torch thread count than `make test` ran them with (torch's default is the machine's
# cores): the order of float sums changes with it, so a tolerance that holds at one order only
# fails here. .ci/run calls it after `make test`.
test-threads: setup data
	@other=$$($(BIN)/python -c 'import torch; print(1 if torch.get_num_threads() > 1 else 2)'); \
	echo "numerics tests at $$other torch threads"; \
	OMP_NUM_THREADS=$$other $(BIN)/python -m pytest -m numerics

test-fast: setup
	$(BIN)/python -m pytest -m "not slow"

# pytest-benchmark: each benchmark reports a ratio against a bare loop measured in the same run.
bench: setup data
	$(BIN)/python -m pytest tests/benchmarks --benchmark-only --benchmark-columns=median,iqr,rounds --benchmark-autosave -p no:randomly

# Tables, figures and the static report page (<results_dir>/report.html) again from the stored
# results of every committed config: no training runs, and the same bytes as committed. Then
# the SC confounds' summary (scripts/sc_confounds_summary.py: two folders' tables side by side)
# and results/index.html, every folder's answers on one page (from their tables/answers.csv).
FIGURE_CONFIGS ?= configs/smoke.yaml configs/fmnist_mirror.yaml configs/sc_mirror.yaml configs/bounds_study.yaml \
	configs/precision_agreement.yaml configs/clr_mirror.yaml configs/sc_confounds.yaml
figures: setup
	@for config in $(FIGURE_CONFIGS); do $(BIN)/onecycle report --config $$config || exit 1; done
	$(BIN)/python scripts/sc_confounds_summary.py
	$(BIN)/onecycle index --out results/index.html $(FIGURE_CONFIGS)

# Snakemake's report of the smoke results, outside the tracked results: build/report/smoke.html.
# The report jobs (the rules of workflow/rules/aggregate.smk) run again here first, from the
# stored results, so Snakemake has a record of each job it reports on: a fresh clone has none of
# the training runs (Snakemake keeps them in .snakemake/, which git does not carry), and asking
# for a report of those would only print a "Missing metadata" warning per file.
REPORT_RULES := $(shell sed -n 's/^rule \([a-z_]*\):/\1/p' workflow/rules/aggregate.smk)
REPORT_FLAGS := --report-stylesheet src/onecycle/report/report.css --report-metadata workflow/report/metadata.yaml
report: setup
	mkdir -p build/report
	$(BIN)/snakemake --configfile configs/smoke.yaml --cores 1 --allowed-rules $(REPORT_RULES) --forcerun $(REPORT_RULES)
	$(BIN)/snakemake --configfile configs/smoke.yaml --allowed-rules $(REPORT_RULES) --report build/report/smoke.html $(REPORT_FLAGS)
	@echo "Snakemake's report: build/report/smoke.html   The static page: results/smoke/report.html"

gpu-check: setup
	$(BIN)/python scripts/gpu_check.py

lint: setup
	$(BIN)/snakemake --lint --configfile configs/smoke.yaml

clean-smoke:
	rm -rf $(SMOKE_RUN) .snakemake
