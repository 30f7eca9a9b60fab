"""The cycle opens no position while the trade stream is not logged in (refused, or a first login not yet done)."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import pytest

from actors.db_writer import StorageHealth
from actors.order_router import TradeStreamState
from catalyst import hooks as hooks_module
from catalyst.hooks import CycleHooks


def answer(value: Any) -> SimpleNamespace:
    return SimpleNamespace(get=lambda timeout=None: value)


def hooks_with(doctor_allows: bool, states: list[TradeStreamState]) -> tuple[CycleHooks, list[float]]:
    """Hooks over a doctor that answers `doctor_allows` and a router whose trade stream goes through `states` (the
    last one repeats); returns the times the router was asked."""
    asked: list[float] = []

    def trade_stream() -> SimpleNamespace:
        asked.append(time.monotonic())
        return answer(states[min(len(asked), len(states)) - 1])

    hooks = object.__new__(CycleHooks)  # only the doctor and the router are needed here
    hooks.doctor = SimpleNamespace(entries_allowed=lambda: answer(doctor_allows),
                                   why_halted=lambda: answer(None if doctor_allows else "ORDER_STATUS_CONFLICT o-3"))
    router = SimpleNamespace(trade_stream=trade_stream)
    hooks.daemon = SimpleNamespace(system=SimpleNamespace(router=SimpleNamespace(proxy=lambda: router),
                                                          storage=StorageHealth()),
                                   emergency_flatten=None, emergency_requested=False)
    return hooks, asked


LOGGED_IN = TradeStreamState(True, "logged in, connection #1")
REFUSED = TradeStreamState(False, "its login was refused: connection limit exceeded")
NOT_YET = TradeStreamState(False, "it has not logged in yet")


def test_a_logged_in_stream_allows_entries() -> None:
    hooks, _ = hooks_with(True, [LOGGED_IN])
    assert hooks.entries_allowed() == (True, "the trade stream is logged in, connection #1")


def test_a_login_refused_until_the_wait_ends_stops_entries_and_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hooks_module, "STREAM_LOGIN_WAIT_S", 0.5)
    hooks, asked = hooks_with(True, [REFUSED])
    allowed, why = hooks.entries_allowed()

    assert not allowed and asked[-1] - asked[0] >= 0.4
    assert why == ("the trade stream is not logged in after 0 s (its login was refused: connection limit exceeded): a "
                   "fill would be learned only at the doctor's next REST pass, its stop placed late")


def test_a_refused_login_retried_in_time_allows_entries() -> None:
    hooks, asked = hooks_with(True, [REFUSED, REFUSED, LOGGED_IN])
    assert hooks.entries_allowed()[0] and len(asked) == 3


def test_a_first_login_under_way_is_waited_for() -> None:
    hooks, asked = hooks_with(True, [NOT_YET, NOT_YET, LOGGED_IN])
    assert hooks.entries_allowed()[0] and len(asked) == 3


def test_a_stream_that_never_logs_in_stops_entries_after_the_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hooks_module, "STREAM_LOGIN_WAIT_S", 0.5)
    hooks, asked = hooks_with(True, [NOT_YET])
    allowed, why = hooks.entries_allowed()

    assert not allowed and "it has not logged in yet" in why
    assert asked[-1] - asked[0] >= 0.4


def test_no_entry_while_an_operators_emergency_stop_is_under_way() -> None:
    # Not only on the day it was asked: a daemon still waiting to be flat must not let the next morning's cycle trade.
    hooks, asked = hooks_with(True, [LOGGED_IN])
    hooks.daemon.emergency_requested = True  # asked, the main loop not yet at it
    assert hooks.entries_allowed() == (False, "the operator's emergency stop: the daemon stops once flat")
    hooks.daemon.emergency_requested, hooks.daemon.emergency_flatten = False, object()  # under way
    assert hooks.entries_allowed() == (False, "the operator's emergency stop: the daemon stops once flat")
    assert asked == []


def test_a_doctor_halt_refuses_entries_with_the_doctors_reason() -> None:
    """From a review: the cycle's line said only "the doctor halted new entries", every day, with no reason."""
    hooks, asked = hooks_with(False, [LOGGED_IN])
    assert hooks.entries_allowed() == (False, "the doctor halted new entries: ORDER_STATUS_CONFLICT o-3")
    assert asked == []  # the stream is not asked once the doctor refuses
