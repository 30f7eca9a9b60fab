"""One daemon per database: a second `catalyst run` on the same database exits 5 naming the running one."""

from __future__ import annotations

import pytest

# Under xdist (`make test`), on one worker: the shared `trading_day` runs once, not once per worker.
pytestmark = pytest.mark.xdist_group("trading_day")


def test_a_second_daemon_on_the_same_database_exits_5_naming_the_running_one(trading_day):
    facts = trading_day.facts
    lock = trading_day.folder / "var" / "catalyst.db.lock"

    assert facts["second_rc"] == 5
    errors = [line for line in facts["second_stderr"].splitlines() if line.startswith("catalyst:")]
    assert errors == [f"catalyst: error: another catalyst daemon holds {lock} (pid {facts['run1_pid']}, catalyst run); "
                      "stop it first (`catalyst stop`)"]
    assert "Traceback" not in facts["second_stderr"]
    assert facts["run1_rc"] == 0  # the running one was not disturbed
