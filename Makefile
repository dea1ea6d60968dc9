# One-command set-up: each target creates .venv when missing and installs the project into it
# (once: a stamp file remembers, and pyproject.toml changing triggers a reinstall).
# Every target runs `python -m helpers <command>`, which works without make too (Windows).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEACH := $(VENV)/.installed-teach
FLOORS := build/floors-venv

.PHONY: help install run test lint format lab bench strip floors

help:
	@echo "make run     execute every notebook in order (headless), figures to images/"
	@echo "make test    the lint step, unit tests and every notebook in quick mode (nbval)"
	@echo "make lint    ruff check, ruff format --check, nbstripout --verify, the workflows' schema"
	@echo "make format  ruff format the code and the notebooks, then strip the notebooks"
	@echo "make lab     open JupyterLab in the project's environment"
	@echo "make bench   measure the feature-cache fast path against the capstone's training loop"
	@echo "make strip   remove outputs from the notebooks before committing"
	@echo "make floors  the unit tests with the oldest versions pyproject.toml allows (maintainers; needs uv)"

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "Python 3.10 or newer is needed; found " + sys.version.split()[0] + ". Run make PYTHON=/path/to/python3.x")'
	@$(PYTHON) scripts/check_space.py $(VENV)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[lab,test]"
	@touch $(STAMP)

# nbgrader, for tests/test_grading.py: only `make test` installs it (it adds its menus to JupyterLab).
$(TEACH): $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[teach]"
	@touch $(TEACH)

install: $(STAMP)
test: $(TEACH)

run test lint format lab bench strip: $(STAMP)
	$(BIN)/python -m helpers $@

# uv's lowest-direct resolution installs the oldest version of every package pyproject.toml names;
# the PyTorch packages come as CPU-only builds (PyPI's bring several GB of CUDA libraries).
floors:
	@command -v uv >/dev/null || { echo "make floors needs uv: run $(PYTHON) -m pip install uv" >&2; exit 1; }
	uv venv --quiet --clear --python $(PYTHON) $(FLOORS)
	uv pip install --python $(FLOORS) --resolution lowest-direct --torch-backend cpu -e ".[lab,teach,test]"
	WORKBOOK_QUICK=1 $(FLOORS)/bin/python -m pytest tests -m "not browser" -p no:cacheprovider -q
