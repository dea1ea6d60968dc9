# One-command set-up: each target creates .venv when missing and installs the project into it
# (once: a stamp file remembers, and pyproject.toml changing triggers a reinstall).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))

.PHONY: help install run test lab bench strip

help:
	@echo "make run    execute every notebook in order (headless), figures to images/"
	@echo "make test   unit tests and every notebook in quick mode (nbval)"
	@echo "make lab    open JupyterLab in the project's environment"
	@echo "make bench  measure the feature-cache fast path against the capstone's training loop"
	@echo "make strip  remove outputs from the notebooks before committing"

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "Python 3.10 or newer is needed; found " + sys.version.split()[0] + ". Run make PYTHON=/path/to/python3.x")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	@touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/python scripts/run_workbook.py $(NOTEBOOKS)

test: $(STAMP)
	WORKBOOK_QUICK=1 $(BIN)/python -m pytest tests $(NOTEBOOKS) \
		--nbval-lax --nbval-current-env --nbval-cell-timeout=900 -p no:cacheprovider

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_training.py

strip: $(STAMP)
	$(BIN)/python scripts/strip_notebooks.py $(NOTEBOOKS)
