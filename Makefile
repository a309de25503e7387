# One command to set up and run each thing; every target creates the virtual environment first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# the exact versions CI tested (ci/lock.sh writes them); `make setup CONSTRAINTS=` takes the newest the ranges allow
CONSTRAINTS ?= ci/constraints.txt

.PHONY: setup demo smoke test test-nightly bench-tune

$(STAMP): pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# the CPU build of torch first, so the project's torch range installs nothing more
	$(BIN)/pip install --quiet "torch==2.13.0"
	$(BIN)/pip install --quiet $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) -e ".[test,hf,export,postgres,bench]"
	touch $(STAMP)

setup: $(STAMP)

# the main job on the embedded default: a 12-trial study of gpt-tiny on 2 CPU ranks (a few minutes)
demo: $(STAMP)
	$(BIN)/autoscale tune --model gpt-tiny --trials 12

# the main job as a user runs it: the installed console script, from a folder outside the repository
smoke: $(STAMP)
	ci/smoke.sh $(BIN)

# the tests CI runs: the fast tier, then one multi-rank test of every kind; prints each tier's time
test: $(STAMP)
	ci/test-tiers.sh $(BIN)/python fast multi-rank

# the rest of the multi-rank tests (the scheduled workflow ci/nightly-deps.yml runs them)
test-nightly: $(STAMP)
	ci/test-tiers.sh $(BIN)/python nightly

bench-tune: $(STAMP)
	$(BIN)/python benchmarks/tune_vs_sweep.py
