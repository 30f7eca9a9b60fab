"""Acknowledgement-only updates (new, accepted) wait while shares are being protected, and are never lost."""

from __future__ import annotations

import dataclasses
import sqlite3
import time
from pathlib import Path
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from actors import messages as m
from actors.broker_worker import SubmitOco
from catalyst.broker.reports import TradeUpdateReport
from tests.actors.test_write_path_router import T0, Rig, oco_in_flight, order_report, wait_for


@pytest.fixture
def router_waiting(tmp_path: Path, recording_actor: Any) -> Iterator[Callable[[float], Rig]]:
    """A router rig whose acknowledgement-only updates wait up to the given seconds; stopped afterwards."""
    made: list[Rig] = []

    def start(routine_wait_s: float) -> Rig:
        made.append(Rig(tmp_path, grace_s=60, recording_actor=recording_actor, routine_wait_s=routine_wait_s))
        return made[-1]

    yield start
    for rig in made:
        rig.stop()


def recorded_events(rig: Rig) -> list[tuple[str, str | None, str]]:
    with sqlite3.connect(rig.path) as connection:
        return connection.execute(
            "SELECT event, client_order_id, received_at FROM trade_updates ORDER BY id").fetchall()


def handled(rig: Rig) -> None:
    rig.router.proxy().by_order.get()  # answered once every message told before it is handled


def recorded_for(rig: Rig, oco: SubmitOco) -> list[tuple[str, str | None, str]]:
    return [row for row in recorded_events(rig) if row[1] == oco.take_profit.client_order_id]


def tell_new_event(rig: Rig, oco: SubmitOco) -> list[tuple[str, str | None, str]]:
    """The stream's "new" for the OCO, handled: what trade_updates holds of it right then."""
    rig.router.tell(new_event(oco.take_profit, "b-tp"))
    handled(rig)
    return recorded_for(rig, oco)


def new_event(row: Any, broker_id: str) -> m.TradeUpdateReceived:
    order = order_report(row, "new", broker_id=broker_id)
    return m.TradeUpdateReceived(update=TradeUpdateReport(event="new", order=order, at=T0))


def acknowledged(oco: SubmitOco) -> m.SubmitResult:
    stop_leg = order_report(oco.stop_loss, "held", broker_id="b-sl")
    report = order_report(oco.take_profit, "accepted", broker_id="b-tp", legs=(stop_leg,))
    return m.SubmitResult(order_ids=(oco.take_profit.order_id, oco.stop_loss.order_id), report=report)


def test_a_new_event_waits_while_its_oco_is_in_flight_and_is_recorded_once_the_router_is_idle(
        router_waiting: Callable[[float], Rig]) -> None:
    rig = router_waiting(30)
    oco = oco_in_flight(rig)
    waiting = tell_new_event(rig, oco)  # the stream's "new" overtakes the submit reply

    rig.router.tell(acknowledged(oco))
    recorded = wait_for(lambda: recorded_for(rig, oco), "the new event recorded once the reply is in")

    assert waiting == []
    assert recorded == [("new", oco.take_profit.client_order_id, "2024-03-04 14:45:00.000000")]
    take_profit = rig.writer.get_order(oco.take_profit.order_id).get()
    assert (take_profit.alpaca_order_id, take_profit.status) == ("b-tp", "accepted")  # not moved back by it


def test_with_no_wait_configured_a_new_event_is_recorded_at_once(router_waiting: Callable[[float], Rig]) -> None:
    rig = router_waiting(0)
    oco = oco_in_flight(rig)

    assert [event for event, *_ in tell_new_event(rig, oco)] == ["new"]
    assert rig.writer.get_order(oco.take_profit.order_id).get().alpaca_order_id == "b-tp"  # learned from it


def test_a_new_event_waits_no_longer_than_routine_update_wait_s(router_waiting: Callable[[float], Rig]) -> None:
    rig = router_waiting(0.5)
    before_sending = time.monotonic()
    oco = oco_in_flight(rig)  # its reply never comes: the router stays busy protecting
    at_first = tell_new_event(rig, oco)

    wait_for(lambda: recorded_for(rig, oco), "the new event recorded after the longest wait")

    assert at_first == []
    assert time.monotonic() - before_sending >= 0.5
    assert rig.writer.get_order(oco.take_profit.order_id).get().alpaca_order_id == "b-tp"


def test_a_submit_whose_result_never_comes_holds_later_updates_only_for_routine_update_wait_s(
        router_waiting: Callable[[float], Rig]) -> None:
    rig = router_waiting(1.0)
    oco = oco_in_flight(rig)  # its reply never comes (a worker that died with it)
    time.sleep(1.1)  # longer than routine_update_wait_s since it was sent
    told = time.monotonic()
    tell_new_event(rig, oco)

    wait_for(lambda: recorded_for(rig, oco), "the new event recorded", timeout=5)

    assert time.monotonic() - told < 0.5  # recorded once the router is idle, not after another full second


def test_new_events_still_waiting_are_recorded_when_the_router_stops(router_waiting: Callable[[float], Rig]) -> None:
    rig = router_waiting(60)
    oco = oco_in_flight(rig)
    waiting = tell_new_event(rig, oco)

    rig.router.stop()

    assert waiting == []
    assert [event for event, *_ in recorded_for(rig, oco)] == ["new"]


def test_an_update_of_an_order_the_router_does_not_track_never_waits(router_waiting: Callable[[float], Rig]) -> None:
    rig = router_waiting(60)
    oco = oco_in_flight(rig)  # busy protecting
    stranger = dataclasses.replace(oco.take_profit, client_order_id="placed-by-hand-1")
    rig.router.tell(new_event(stranger, "b-by-hand"))
    handled(rig)

    assert [r[0] for r in recorded_events(rig) if r[1] == "placed-by-hand-1"] == ["new"]
