# The two commands in the README. Both build the virtualenv first, from nothing but Python 3.11.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: setup sim test bench chaos clean

$(BIN)/catalyst: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

setup: $(BIN)/catalyst

sim: setup
	$(BIN)/catalyst sim --days 1

test: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python -m bench

chaos: setup
	$(BIN)/python -m chaos

clean:
	rm -rf $(VENV) build *.egg-info
