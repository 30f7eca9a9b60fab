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
    daemon.cycle = SimpleNamespace(proxy=lambda: SimpleNamespace(state=lambda: done({"phase": "done"})))
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
