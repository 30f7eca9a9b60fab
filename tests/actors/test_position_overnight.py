"""A flatten the close overtakes: the shares go back under stops for the night, and a restart never fights its exit.

Found by chaos (seed 51): the daemon restarted at 15:59:59, flattened, and its market exit went in after the close,
queued for the next open, the stops already cancelled; killed, the next start rebuilt the position with no stop and
protected it, which the broker refused (the exit held the shares), which flattened it once more: another exit
queued, no stop all night. The position actor is driven as the router would drive it, with the real DbWriter on a
SQLite file; the router is a recorder here (tests/actors/test_position_flatten.py's rig)."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

from actors import messages as m
from actors.position import PositionActor
from actors.system import Restored
from catalyst.domain.orders import OrderStatus
from catalyst.sim.clock import SimClock
from tests.actors.test_position_flatten import T0, Rig, killed_with_the_entry_filled, wait_for

FLATTEN_ID = 90  # the market exit's order id, as the router would create it


def an_exit_queued_after_the_close(rig: Rig) -> None:
    """A protected position flattened: its stops cancelled, its market exit accepted after the close (queued for the
    next open)."""
    tp, sl = rig.open_and_protect()
    rig.position.tell(m.Flatten(reason="end of day", scheduled=True))
    rig.update(tp.order_id, "take_profit", OrderStatus.CANCELLED)
    rig.update(sl.order_id, "stop_loss", OrderStatus.CANCELLED)
    wait_for(lambda: rig.told(m.PlaceExit), "the market exit")
    rig.position.tell(m.OrdersCreated(roles={"flatten": FLATTEN_ID}))
    rig.update(FLATTEN_ID, "flatten", OrderStatus.ACCEPTED)


def test_a_flatten_whose_exit_has_not_filled_at_the_close_cancels_it_and_protects_the_shares(rig: Rig) -> None:
    an_exit_queued_after_the_close(rig)
    assert len(rig.told(m.SubmitProtection)) == 1

    rig.position.tell(m.KeepOvernight())
    cancel = wait_for(lambda: [c for c in rig.told(m.CancelOrders) if FLATTEN_ID in c.order_ids], "the exit's cancel")
    assert cancel[0].order_ids == (FLATTEN_ID,)
    assert rig.settled()["flattening"] == "end of day"  # until the exit has ended: it may still fill

    rig.update(FLATTEN_ID, "flatten", OrderStatus.CANCELLED)
    again = wait_for(lambda: rig.told(m.SubmitProtection)[1:], "the shares protected again")
    assert again[0].take_profit.quantity == Decimal(100) and again[0].stop_loss.stop_price == Decimal("48")
    state = rig.settled()
    assert state["flattening"] is None and state["status"] == "open"


def test_a_flatten_still_cancelling_its_stops_at_the_close_keeps_them_and_sends_no_exit(rig: Rig) -> None:
    tp, sl = rig.open_and_protect()
    rig.position.tell(m.Flatten(reason="end of day", scheduled=True))
    rig.position.tell(m.KeepOvernight())
    assert rig.settled()["flattening"] is None
    rig.update(tp.order_id, "take_profit", OrderStatus.CANCELLED)
    rig.update(sl.order_id, "stop_loss", OrderStatus.CANCELLED)
    wait_for(lambda: rig.told(m.SubmitProtection)[1:], "the shares protected again")
    assert not rig.told(m.PlaceExit)


def killed_while_its_market_exit_works(rig: Rig) -> tuple[Any, Any]:
    """What a restart finds after a kill while the position's market exit worked (queued for the next open, say): its
    OCO cancelled, its exit accepted. (position row, exit row)"""
    writer, entry = rig.writer, rig.entry
    position, tp, sl = killed_with_the_entry_filled(rig)
    for leg in (tp, sl):
        writer.update_order_status(leg.order_id, "cancelled", "canceled", Decimal(0), None).get()
    exit_row = writer.create_order(cycle_id=entry.cycle_id, symbol="AAPL", role="flatten", side="sell",
                                   order_type="market", time_in_force="day", quantity=Decimal(100),
                                   position_id=position.position_id).get()
    writer.mark_submitted(exit_row.order_id, "b-exit", "accepted").get()
    writer.update_order_status(exit_row.order_id, "accepted", "accepted", Decimal(0), None).get()
    return position, exit_row


def test_a_restart_while_the_market_exit_works_waits_for_it_instead_of_protecting(rig: Rig) -> None:
    writer, entry = rig.writer, rig.entry
    position, exit_row = killed_while_its_market_exit_works(rig)

    restored = Restored.from_book(writer.position_book(entry.order_id).get())
    actor = PositionActor.start(rig.plan, rig.router, writer, rig.system, SimClock(T0, 0), restored=restored)
    rig.position = actor  # stopped by the rig
    state = actor.proxy().state().get()
    time.sleep(0.2)
    assert not rig.told(m.SubmitProtection)  # the exit holds the shares: a new OCO would be refused
    assert state["status"] == "open" and state["flattening"].startswith("resumed after a restart")

    actor.tell(m.OrderUpdated(order_id=exit_row.order_id, role="flatten", status=OrderStatus.FILLED,
                              filled_qty=Decimal(100), execution=m.Execution(key="b-exit:100", qty=Decimal(100),
                                                                             price=Decimal("51"), at=T0)))
    closed = wait_for(lambda: (p := writer.get_position(position.position_id).get()).status == "closed" and p,
                      "the exit's fill to close the position")
    assert closed.realized_pnl == Decimal("100")
    assert not rig.told(m.SubmitProtection) and not rig.told(m.PlaceExit)


def test_a_close_time_cancel_of_the_exit_that_goes_unanswered_is_asked_again_and_the_next_flatten_is_its_own(
        rig: Rig) -> None:
    an_exit_queued_after_the_close(rig)

    rig.position.tell(m.KeepOvernight())  # its cancel's outcome unknown: no update comes
    again = wait_for(lambda: [c for c in rig.told(m.CancelOrders) if FLATTEN_ID in c.order_ids][1:],
                     "the exit's cancel asked again", timeout=5)
    assert again[0].order_ids == (FLATTEN_ID,)
    assert [v.order_ids for v in rig.told(m.VerifyOrders)] == [(FLATTEN_ID,)]

    rig.update(FLATTEN_ID, "flatten", OrderStatus.CANCELLED)
    protection = wait_for(lambda: rig.told(m.SubmitProtection)[1:], "the shares protected again")[0]
    rig.update(protection.take_profit.order_id, "take_profit", OrderStatus.ACCEPTED)
    rig.update(protection.stop_loss.order_id, "stop_loss", OrderStatus.ACCEPTED)
    # The next open's flatten cancels the new stops, and its own backstop asks about them, not about the old exit.
    rig.position.tell(m.Flatten(reason="carried over from an earlier day", scheduled=True))
    legs = {protection.take_profit.order_id, protection.stop_loss.order_id}
    wait_for(lambda: [v for v in rig.told(m.VerifyOrders) if set(v.order_ids) == legs], "the next flatten's backstop",
             timeout=5)
