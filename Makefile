# One-command set-up: each target creates .venv when missing and installs the project into it
# (once: a stamp file remembers, and pyproject.toml changing triggers a reinstall).
# Every target runs `python -m helpers <command>`, which works without make too (Windows).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: help install run test lint format lab bench strip floors

help:
	@echo "make run     execute every notebook in order (headless), figures to images/"
	@echo "make test    the lint step, unit tests and every notebook in quick mode (nbval)"
	@echo "make lint    ruff check, ruff format --check, the workflows' schema, the notebooks' layout"
	@echo "make format  ruff format the code and the notebooks, then strip the notebooks"
	@echo "make lab     open JupyterLab in the project's environment"
	@echo "make bench   measure the feature-cache fast path against the capstone's training loop"
	@echo "make strip   remove outputs from the notebooks before committing"
	@echo "make floors  run the unit tests with the oldest versions pyproject.toml allows (maintainers)"

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "Python 3.10 or newer is needed; found " + sys.version.split()[0] + ". Run make PYTHON=/path/to/python3.x")'
	@$(PYTHON) scripts/check_space.py $(VENV)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	@touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/python -m helpers run

test: $(STAMP)
	$(BIN)/python -m helpers test

lint: $(STAMP)
	$(BIN)/python -m helpers lint

format: $(STAMP)
	$(BIN)/python -m helpers format

lab: $(STAMP)
	$(BIN)/python -m helpers lab

bench: $(STAMP)
	$(BIN)/python -m helpers bench

strip: $(STAMP)
	$(BIN)/python -m helpers strip

floors:
	$(PYTHON) scripts/check_floors.py
