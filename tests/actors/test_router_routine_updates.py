"""Acknowledgement-only updates (new, accepted) wait while shares are being protected, and are never lost."""

from __future__ import annotations

import dataclasses
import sqlite3
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

from actors import messages as m
from actors.broker_worker import SubmitOco
from catalyst.broker.reports import TradeUpdateReport
from catalyst.store.records import NewOrder
from tests.actors.test_write_path_router import T0, Rig, enter, order_report, wait_for


def recorded_events(rig: Rig) -> list[tuple[str, str | None, str]]:
    with sqlite3.connect(rig.path) as connection:
        return connection.execute(
            "SELECT event, client_order_id, received_at FROM trade_updates ORDER BY id").fetchall()


def handled(rig: Rig) -> None:
    rig.router.proxy().by_order.get()  # answered once every message told before it is handled


def oco_in_flight(rig: Rig) -> SubmitOco:
    entry = enter(rig)
    common = dict(cycle_id=rig.cycle_id, symbol="AAPL", side="sell", quantity=Decimal(100),
                  parent_order_id=entry.order_id, order_class="oco")
    _, (take_profit, stop_loss) = rig.writer.open_position_with_orders(
        entry.order_id, Decimal(100), Decimal(10), T0, Decimal("9"), Decimal("11"), [
            NewOrder(role="take_profit", order_type="limit", limit_price=Decimal("11"), **common),
            NewOrder(role="stop_loss", order_type="stop", stop_price=Decimal("9"), **common),
        ]).get()
    rig.router.tell(m.SubmitProtection(owner=rig.owner, take_profit=take_profit, stop_loss=stop_loss))
    return rig.told(rig.protect, SubmitOco)[0]


def new_event(row: Any, broker_id: str) -> m.TradeUpdateReceived:
    return m.TradeUpdateReceived(update=TradeUpdateReport(event="new", order=order_report(row, "new", broker_id=broker_id),
                                                          at=T0))


def acknowledged(oco: SubmitOco) -> m.SubmitResult:
    stop_leg = order_report(oco.stop_loss, "held", broker_id="b-sl")
    report = order_report(oco.take_profit, "accepted", broker_id="b-tp", legs=(stop_leg,))
    return m.SubmitResult(order_ids=(oco.take_profit.order_id, oco.stop_loss.order_id), report=report)


def test_a_new_event_waits_while_its_oco_is_in_flight_and_is_recorded_once_the_router_is_idle(
        tmp_path: Path, recording_actor: Any) -> None:
    rig = Rig(tmp_path, grace_s=60, recording_actor=recording_actor, routine_wait_s=30)
    try:
        oco = oco_in_flight(rig)
        rig.router.tell(new_event(oco.take_profit, "b-tp"))  # the stream's "new" overtakes the submit reply
        handled(rig)
        waiting = [event for event, *_ in recorded_events(rig)]

        rig.router.tell(acknowledged(oco))
        recorded = wait_for(lambda: [r for r in recorded_events(rig) if r[1] == oco.take_profit.client_order_id],
                            "the new event recorded once the reply is in")

        assert "new" not in waiting[1:] and waiting.count("new") <= 1  # at most the entry's, never the OCO's
        assert recorded == [("new", oco.take_profit.client_order_id, "2024-03-04 14:45:00.000000")]
        take_profit = rig.writer.get_order(oco.take_profit.order_id).get()
        assert (take_profit.alpaca_order_id, take_profit.status) == ("b-tp", "accepted")  # not moved back by it
    finally:
        rig.stop()


def test_with_no_wait_configured_a_new_event_is_recorded_at_once(tmp_path: Path, recording_actor: Any) -> None:
    rig = Rig(tmp_path, grace_s=60, recording_actor=recording_actor, routine_wait_s=0)
    try:
        oco = oco_in_flight(rig)
        rig.router.tell(new_event(oco.take_profit, "b-tp"))
        handled(rig)

        assert [r[0] for r in recorded_events(rig) if r[1] == oco.take_profit.client_order_id] == ["new"]
        assert rig.writer.get_order(oco.take_profit.order_id).get().alpaca_order_id == "b-tp"  # learned from it
    finally:
        rig.stop()


def test_a_new_event_waits_no_longer_than_routine_update_wait_s(tmp_path: Path, recording_actor: Any) -> None:
    rig = Rig(tmp_path, grace_s=60, recording_actor=recording_actor, routine_wait_s=0.5)
    try:
        oco = oco_in_flight(rig)  # its reply never comes: the router stays busy protecting
        told = time.monotonic()
        rig.router.tell(new_event(oco.take_profit, "b-tp"))
        handled(rig)
        at_first = [r for r in recorded_events(rig) if r[1] == oco.take_profit.client_order_id]

        wait_for(lambda: [r for r in recorded_events(rig) if r[1] == oco.take_profit.client_order_id],
                 "the new event recorded after the longest wait")

        assert at_first == []
        assert time.monotonic() - told >= 0.5
        assert rig.writer.get_order(oco.take_profit.order_id).get().alpaca_order_id == "b-tp"
    finally:
        rig.stop()


def test_new_events_still_waiting_are_recorded_when_the_router_stops(tmp_path: Path, recording_actor: Any) -> None:
    rig = Rig(tmp_path, grace_s=60, recording_actor=recording_actor, routine_wait_s=60)
    try:
        oco = oco_in_flight(rig)
        rig.router.tell(new_event(oco.take_profit, "b-tp"))
        handled(rig)
        waiting = [r for r in recorded_events(rig) if r[1] == oco.take_profit.client_order_id]

        rig.router.stop()

        assert waiting == []
        assert [r[0] for r in recorded_events(rig) if r[1] == oco.take_profit.client_order_id] == ["new"]
    finally:
        rig.stop()


def test_an_update_of_an_order_the_router_does_not_track_never_waits(tmp_path: Path, recording_actor: Any) -> None:
    rig = Rig(tmp_path, grace_s=60, recording_actor=recording_actor, routine_wait_s=60)
    try:
        oco = oco_in_flight(rig)  # busy protecting
        stranger = dataclasses.replace(oco.take_profit, client_order_id="placed-by-hand-1")
        rig.router.tell(new_event(stranger, "b-by-hand"))
        handled(rig)

        assert [r[0] for r in recorded_events(rig) if r[1] == "placed-by-hand-1"] == ["new"]
    finally:
        rig.stop()
