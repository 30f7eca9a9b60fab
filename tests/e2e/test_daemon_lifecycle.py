"""`catalyst run` as a supervisor sees it: signals, graceful stop, restart and recovery, against `catalyst exchange`."""

from __future__ import annotations


def test_sigterm_stops_gracefully_with_exit_0(trading_day):
    assert trading_day.facts["run1_rc"] == 0, trading_day.runs[0].stderr()[-3000:]
