# One command to set up and run each thing; every target creates the virtual environment first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-fast bench-tune

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# the CPU build of torch first, so the project's torch range installs nothing more
	$(BIN)/pip install --quiet "torch==2.13.0"
	$(BIN)/pip install --quiet -e ".[test,hf,export,postgres,bench]"
	touch $(STAMP)

setup: $(STAMP)

# the main job on the embedded default: a 12-trial study of gpt-tiny on 2 CPU ranks (a few minutes)
demo: $(STAMP)
	$(BIN)/autoscale tune --model gpt-tiny --trials 12

# every test, the slow multi-rank ones included
test: $(STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

bench-tune: $(STAMP)
	$(BIN)/python benchmarks/tune_vs_sweep.py
