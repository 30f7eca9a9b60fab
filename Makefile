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

# The everyday tests mostly wait on sockets and timers (about 4 minutes of CPU in 14 of wall one at a time), so they
# run on TEST_WORKERS processes (pytest-xdist; a module sharing a costly fixture stays on one: xdist_group). The slow
# process-level suites (crash, chaos, supervisord, bench harness) kill and time processes: one at a time, after.
TEST_WORKERS ?= 4
EVERYDAY := -m "not slow" -n $(TEST_WORKERS) --dist loadgroup

test: setup
	$(BIN)/python -m pytest -q $(EVERYDAY)
	$(BIN)/python -m pytest -q -m slow

# The everyday run: everything but the slow process-level suites.
test-quick: setup
	$(BIN)/python -m pytest -q $(EVERYDAY)

bench: setup
	$(BIN)/python -m bench

chaos: setup
	$(BIN)/python -m chaos

clean:
	rm -rf $(VENV) build *.egg-info
