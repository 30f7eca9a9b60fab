"""An OCO answered `new` (or `pending_new`) tells its position it is acknowledged.

The router moves the row created → submitted as it records the broker id, and a report of `new` (submitted) then
moves nothing further, so its owner was never told: the position saw the take-profit `created`, an OCO on its way,
and held the entry's next piece for the whole coalescing wait instead of protecting it at once (found by a review;
the emulator answers `accepted`, which hid it)."""

from __future__ import annotations

import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from actors import messages as m
from actors.broker_worker import Cancel, SubmitOrder
from actors.order_router import RouterSettings
from actors.position import PROTECTION_COALESCE_S
from catalyst.broker.reports import TradeUpdateReport
from tests.actors.conftest import logged_lines
from tests.actors.test_rebuild_stale_book import RouterRig, report
from tests.actors.test_write_path_router import T0, wait_for


def test_an_oco_answered_new_is_acknowledged_for_its_position_and_holds_no_piece(
        tmp_path: Path, recording_actor: Any) -> None:
    live = RouterRig(tmp_path, recording_actor, RouterSettings(routine_update_wait_s=0))
    try:
        position = live.position(live.plan)
        entry = live.entry_acknowledged()
        live.fill(entry, 40, 40, "x1")
        first = wait_for(live.ocos, "the first piece's OCO")[0]
        tp, sl = first.take_profit, first.stop_loss
        live.router.tell(m.SubmitResult(order_ids=(tp.order_id, sl.order_id), report=report(
            tp, "b-tp", "new", 0, "limit", legs=(report(sl, "b-sl", "held", 0, "stop"),))))
        wait_for(lambda: position.proxy().state().get()["orders"][tp.order_id] == "take_profit:submitted",
                 "the position to see its take-profit submitted")
        started = time.monotonic()
        live.fill(entry, 70, 30, "x2")
        wait_for(lambda: live.ocos()[1:], "the second piece's OCO", timeout=5)
        assert time.monotonic() - started < PROTECTION_COALESCE_S / 2
        assert [o.stop_loss.quantity for o in live.ocos()] == [Decimal(40), Decimal(30)]
    finally:
        live.stop()


@pytest.mark.parametrize("unanswered", [True, False])
def test_an_oco_the_stream_named_before_its_submit_ended_unknown_is_placed_not_unknown(
        tmp_path: Path, recording_actor: Any, unanswered: bool) -> None:
    # A reply lost after the broker acted: the stream's `new` names the OCO, then the submit ends with no answer (its
    # look-up failing too, or finding nothing yet). Before, both rows were flagged `outcome_unknown` for good, and a
    # resend was planned for an order already in hand (a review).
    live = RouterRig(tmp_path, recording_actor, RouterSettings(routine_update_wait_s=0))
    try:
        live.position(live.plan)
        live.fill(live.entry_acknowledged(), 100, 100, "x1")
        oco = wait_for(live.ocos, "the fill's OCO")[0]
        tp, sl = oco.take_profit, oco.stop_loss
        live.router.tell(m.TradeUpdateReceived(update=TradeUpdateReport(event="new", at=T0, order=report(
            tp, "b-tp", "new", 0, "limit", legs=(report(sl, "b-sl", "held", 0, "stop"),)))))
        wait_for(lambda: live.writer.get_order(sl.order_id).get().alpaca_order_id == "b-sl",
                 "the stream's event to name both legs")
        with logged_lines("actors.order_router", "INFO") as lines:
            live.router.tell(m.SubmitResult(order_ids=(tp.order_id, sl.order_id), unanswered=unanswered,
                                            unknown="submit AAPL: 503; lookup failed too: 503"))
            wait_for(lambda: any("but the stream had named it id=b-tp: placed" in line for line in lines),
                     "the router to say the OCO was placed")
            time.sleep(1.5)  # past the first resend's wait
        rows = [live.writer.get_order(o.order_id).get() for o in (tp, sl)]
        assert [(r.alpaca_order_id, r.outcome_unknown) for r in rows] == [("b-tp", False), ("b-sl", False)]
        assert live.writer.orders_with_unknown_outcome().get() == []
        assert len(live.ocos()) == 1
        assert not any("outcome unknown" in line for line in lines)
    finally:
        live.stop()


@pytest.mark.parametrize("named_first", [True, False], ids=["named-then-unknown", "unknown-then-named"])
def test_a_cancel_asked_while_the_submit_was_in_flight_goes_once_the_broker_names_the_order(
        tmp_path: Path, recording_actor: Any, named_first: bool) -> None:
    # A cancel of a limit entry whose submit is in flight (an emergency stop's flatten) is held until the broker names
    # it. named-then-unknown: the stream names it, then the submit ends with no answer (an outage); taken as placed,
    # it was not taken as acknowledged, so the cancel held for the acknowledgement never went. unknown-then-named:
    # the submit ends with no answer first (the entry left to the doctor), and the stream names the order after the
    # outage; its broker id learned, the held cancel never went, and the doctor found nothing to settle (the id
    # clears the flag). Either way the entry stayed working at the broker, free to buy after its position stood down.
    live = RouterRig(tmp_path, recording_actor, RouterSettings(routine_update_wait_s=0))
    try:
        live.position(live.plan.model_copy(update={"order_type": "limit", "limit_price": Decimal("50")}))
        entry = wait_for(lambda: [x for x in live.general.proxy().received().get() if isinstance(x, SubmitOrder)],
                         "the entry's submit")[0].row
        # Asked of the router as its position's flatten asks it: the router's own promise, not the position's rechecks
        live.router.tell(m.CancelOrders(order_ids=(entry.order_id,), reason="emergency: daily loss limit"))
        wait_for(lambda: live.router.proxy().by_order.get()[entry.order_id].pending_cancel,
                 "the router to hold the cancel until the broker names the entry")

        def named() -> None:
            live.router.tell(m.TradeUpdateReceived(update=TradeUpdateReport(event="new", at=T0, order=report(
                entry, "b-e", "new", 0, "limit"))))
            wait_for(lambda: live.writer.get_order(entry.order_id).get().alpaca_order_id == "b-e",
                     "the stream's event to name the entry")

        def ended_unknown() -> None:
            live.router.tell(m.SubmitResult(order_ids=(entry.order_id,), unanswered=True,
                                            unknown="submit AAPL: 503; lookup failed too: 503"))

        if named_first:
            named()
            ended_unknown()
        else:
            ended_unknown()
            wait_for(lambda: live.writer.get_order(entry.order_id).get().outcome_unknown, "the entry flagged")
            named()
        cancels = wait_for(lambda: [x for x in live.protect.proxy().received().get() if isinstance(x, Cancel)],
                           "the entry's cancel sent", timeout=1)
        assert [(c.order_id, c.broker_id) for c in cancels] == [(entry.order_id, "b-e")]
    finally:
        live.stop()
