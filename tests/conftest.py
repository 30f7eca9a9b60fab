"""Shared fixtures: every test leaves no actor running, and the daemon's log lines reach pytest's log capture."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pykka
import pytest
from loguru import logger

from catalyst import stop_request

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


class _ToPytestLogCapture(logging.Handler):
    """loguru's recipe for pytest: each line becomes a stdlib record, which pytest captures per test phase and shows
    under "Captured log" when a test fails. Why not loguru's default stderr sink: an actor that logs while pytest
    is between two phases of a test (its capture suspended to print the progress dot) wrote straight into the
    terminal's progress line. Between phases a line now reaches only the root logger, which prints WARNING and
    above (logging's last resort) and drops the rest."""

    def emit(self, record: logging.LogRecord) -> None:
        logging.getLogger(record.name).handle(record)


@pytest.fixture(autouse=True)
def _daemon_logs_to_pytest():
    # Per test, not once: a test that calls catalyst.logs.setup_logging replaces every sink, and installs a
    # stdlib → loguru handler on the root logger that would send these records round in a loop.
    logger.remove()
    logging.getLogger().handlers = [h for h in logging.getLogger().handlers
                                    if type(h).__module__.startswith("_pytest")]
    logger.add(_ToPytestLogCapture(), format="{message}", level="DEBUG")
    yield


@pytest.fixture(autouse=True)
def _stop_all_actors(_daemon_logs_to_pytest):
    yield
    pykka.ActorRegistry.stop_all()


@pytest.fixture(autouse=True)
def _no_stop_asked_for_the_next_test():
    # A stop asked during start-up is remembered for the process (catalyst.stop_request): one test's is not the next's.
    # The hook put back is the one before the test (pytest's, which reports what Python discards), not Python's own.
    hook = sys.unraisablehook
    yield
    stop_request.forget()
    sys.unraisablehook = hook


@pytest.fixture
def shared_data() -> Path:
    """The real market data beside the checkout; tests that need it skip with a reason when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real market data not found at {SHARED_DATA} (it lives beside the checkout, not in it)")
    return SHARED_DATA
