# Two entry points for users: `make demo` (the main job) and `make test` (the test suite).
# Each creates the virtual environment it needs first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The data root: ../shared/data beside the project when it exists, else the user's cache (see README).
ifneq ($(wildcard ../shared/data),)
export METAGAIT_DATA ?= $(abspath ../shared/data)
endif

.PHONY: venv demo eval-quick test test-fast clean

$(BIN)/metagait-edge: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

venv: $(BIN)/metagait-edge

demo: venv
	$(BIN)/metagait-edge demo --json demo_summary.json

eval-quick: venv
	$(BIN)/metagait-edge eval-personalization --quick --json personalization_quick.json

test: venv
	$(BIN)/python -m pytest -q

test-fast: venv
	$(BIN)/python -m pytest -q -m "not slow"

clean:
	rm -rf $(VENV) .pytest_cache
