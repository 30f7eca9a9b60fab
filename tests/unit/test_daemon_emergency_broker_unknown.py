"""An emergency stop is done only once the broker has said it holds nothing: a read that fails (a 429, a 5xx) is
"unknown", not "flat" (a review: one 429 on that read ended the stop, exit 0 and its marker gone, with an order still
working at the broker)."""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

import pykka

from catalyst.broker.errors import RateLimited
from catalyst.daemon import Daemon


def done(value: Any) -> pykka.ThreadingFuture:
    future = pykka.ThreadingFuture()
    future.set(value)
    return future


class Broker:
    def __init__(self) -> None:
        self.failing = True

    def positions(self) -> list[Any]:
        if self.failing:
            raise RateLimited("rate limited HTTP 429 code 42910000 (positions)")
        return []

    def list_orders(self, status: str) -> list[Any]:
        return []


def a_flat_daemon_waiting_on(broker: Broker) -> tuple[Daemon, Any]:
    daemon = Daemon(SimpleNamespace(), SimpleNamespace(), "sqlite+aiosqlite:///unused.db",  # type: ignore[arg-type]
                    stop_event=threading.Event())
    daemon.broker = broker
    daemon.emergency_flatten = done(None)  # the cycle has asked every position to flatten
    daemon.cycle = SimpleNamespace(proxy=lambda: SimpleNamespace(state=lambda: done({"phase": "completed"})))
    system = SimpleNamespace(supervisor=SimpleNamespace(live_count=lambda: done(0)))  # no position actor left
    return daemon, system


def test_an_emergency_stop_whose_broker_read_fails_waits_and_is_done_once_the_broker_says_flat():
    broker = Broker()
    daemon, system = a_flat_daemon_waiting_on(broker)

    daemon._stop_once_flat(system)
    assert not daemon.stop_event.is_set() and not daemon.emergency_done
    assert "could not be asked what it holds" in daemon.emergency_said

    broker.failing = False
    daemon.emergency_broker_asked = 0.0  # the next ask is due
    daemon._stop_once_flat(system)
    assert daemon.stop_event.is_set() and daemon.emergency_done


class Cycle(pykka.ThreadingActor):
    """Stands in for the cycle actor: a day begun after the stop was asked, `evaluating` until told EmergencyStop,
    which closes it (as CycleActor._emergency does for an active day); its report then completes it."""

    def __init__(self) -> None:
        super().__init__()
        self.phase, self.told = "evaluating", []

    def state(self) -> dict[str, Any]:
        return {"phase": self.phase}

    def on_receive(self, message: Any) -> None:
        self.told.append(message)
        self.phase = "closed"

    def report_written(self) -> None:
        self.phase = "completed"


def test_a_day_begun_after_an_emergency_stop_asked_at_night_is_closed_with_its_report_before_the_stop_ends():
    """From a review: asked at night with a position kept overnight, the stop sold it at the next open and exited at
    once, leaving that day `evaluating` for good, with no report and the stop on no cycle row."""
    from actors.cycle import EmergencyStop

    broker = Broker()
    broker.failing = False
    daemon, system = a_flat_daemon_waiting_on(broker)
    daemon.emergency_reason = "operator: catalyst stop --emergency"
    cycle = Cycle.start()
    daemon.cycle = cycle
    try:
        daemon._stop_once_flat(system)
        assert not daemon.stop_event.is_set()
        told = cycle.proxy().told.get()
        assert [type(m) for m in told] == [EmergencyStop] and told[0].reason == "operator: catalyst stop --emergency"

        daemon._stop_once_flat(system)  # closed, its report not written yet: waited for, not told again
        assert not daemon.stop_event.is_set() and len(cycle.proxy().told.get()) == 1
        assert daemon.emergency_said == "system emergency stop: flat; waiting for the day's report before stopping"

        cycle.proxy().report_written().get()
        daemon._stop_once_flat(system)
        assert daemon.stop_event.is_set() and daemon.emergency_done
    finally:
        cycle.stop()


class LaggingBroker(Broker):
    """A positions list still showing shares the last exit has just sold, as Alpaca's can for several seconds."""

    def __init__(self) -> None:
        super().__init__()
        self.failing, self.held = False, [SimpleNamespace(symbol="IRMT", qty=256)]

    def positions(self) -> list[Any]:
        return self.held


def test_shares_a_lagging_positions_list_still_shows_are_asked_again_soon_not_said_to_be_closed_by_hand(monkeypatch):
    # From a review (an emulator whose positions lag 3 s): "the broker holds IRMT 256, TINW 5555, LUMT 2083; … (close
    # them at the broker …)" over shares already sold, where selling them by hand would have gone short; done 10 s late.
    broker = LaggingBroker()
    daemon, system = a_flat_daemon_waiting_on(broker)
    clock = [1000.0]
    monkeypatch.setattr("catalyst.daemon.time.monotonic", lambda: clock[0])

    daemon._stop_once_flat(system)
    assert daemon.emergency_said == "" and not daemon.stop_event.is_set()  # not said at the first read
    clock[0] += 2.0  # asked again 2 s later, not 10
    broker.held = []
    daemon._stop_once_flat(system)
    assert daemon.stop_event.is_set() and daemon.emergency_said == ""


def test_shares_the_broker_still_holds_past_the_lag_are_said(monkeypatch):
    broker = LaggingBroker()
    daemon, system = a_flat_daemon_waiting_on(broker)
    clock = [1000.0]
    monkeypatch.setattr("catalyst.daemon.time.monotonic", lambda: clock[0])

    for _ in range(6):  # 12 s of reads every 2 s
        daemon._stop_once_flat(system)
        clock[0] += 2.0
    assert "no position actor is left, but the broker holds IRMT 256" in daemon.emergency_said
    assert not daemon.stop_event.is_set()
