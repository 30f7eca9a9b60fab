# The two commands in the README. Both build the virtualenv first, from nothing but Python 3.11.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: setup sim test test-quick bench chaos clean

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

# The everyday run: everything but the slow process-level suites (crash, chaos, supervisord, bench harness).
test-quick: setup
	$(BIN)/python -m pytest -q -m "not slow"

bench: setup
	$(BIN)/python -m bench

chaos: setup
	$(BIN)/python -m chaos

clean:
	rm -rf $(VENV) build *.egg-info
