"""A limit entry replaced at the broker (Alpaca's PATCH: a trader moving the limit in the dashboard) is followed as its
OCO legs are (spec §2.2: `replaced` → track the new order): the new order is the position's entry, and its fills are
protected at once.

Before: the router left the new order to the doctor, as one placed by hand. Its fill bought 100 shares that no stop
covered until the doctor's next pass (up to 5 minutes), and the position stayed `pending` for good.

The whole actor system through alpaca-py against the emulator on loopback, SQLite on disk; the replace is made
through alpaca-py on the same account, as the dashboard would be."""

from __future__ import annotations

import time
from decimal import Decimal

from alpaca.trading.requests import ReplaceOrderRequest

from catalyst.broker.adapter import AlpacaBroker
from catalyst.broker.errors import NotFound
from tests.actors.conftest import logged_lines
from tests.actors.test_order_replaced_at_broker import by_hand, reads_of_new_orders_fail
from tests.actors.test_protection_cancelled_elsewhere import legs
from tests.actors.test_trade_scenarios import position_of, protected_qty

FOLLOWING = "its entry o-1 was replaced at the broker by o-2"


def resting_entry(trading, limit: str = "148.00"):
    """A limit buy of 100 resting below the market (149.95): the position pending. Its entry's row."""
    trading.exchange.set_price("AAPL", "149.95")
    trading.open(trading.plan(order_type="limit", limit_price=Decimal(limit)))
    return trading.wait_for(lambda: (o := trading.all_orders()) and o[0].status in ("new", "accepted") and o[0],
                            "the entry working at the broker")


def entries(trading) -> list[tuple]:
    return [(o.order_id, o.status, o.filled_qty, o.position_id, o.parent_order_id, o.replaced_by_order_id)
            for o in trading.all_orders() if o.role == "entry"]


def stops_at_broker(trading) -> list[str]:
    return [o["qty"] for o in trading.broker_view()["orders"]
            if o["type"] == "stop" and o["status"] in ("held", "new", "accepted")]


def test_a_limit_entry_moved_by_hand_is_followed_and_its_fill_protected(trading):
    entry = resting_entry(trading)
    with logged_lines("actors.position", "WARNING") as warnings:
        by_hand(trading).replace_order_by_id(entry.alpaca_order_id, ReplaceOrderRequest(limit_price=149.50))
        trading.wait_for(lambda: len(entries(trading)) == 2, "the new entry's row")
        trading.trade("AAPL", "149.40")  # through the new limit (149.50), not the old one (148)
        trading.wait_for(lambda: protected_qty(trading) == Decimal("100"), "the new entry's fill protected")

    position = position_of(trading)
    assert (position.status, position.quantity, position.entry_price) == ("open", Decimal("100"), Decimal("149.5"))
    # The first entry `replaced`, pointing to its replacement; the replacement names it as its parent; both are the
    # position's.
    assert entries(trading) == [(1, "replaced", Decimal("0"), 1, None, 2), (2, "filled", Decimal("100"), 1, 1, None)]
    assert [(o.role, o.parent_order_id, o.position_id) for o in legs(trading)] == [
        ("take_profit", 1, 1), ("stop_loss", 1, 1)]
    assert stops_at_broker(trading) == ["100"]
    assert trading.broker_view()["positions"][0]["qty"] == "100"
    (said,) = [w for w in warnings if FOLLOWING in w]
    assert said == (f"position AAPL#o-1 {FOLLOWING} (limit 148 → 149.5; 0 filled before): following it, its fills "
                    "are this position's")


def test_an_entry_partly_filled_then_moved_by_hand_protects_every_share(trading):
    entry = resting_entry(trading)
    trading.trade("AAPL", "147.90", volume=160)  # a quarter of the minute's volume: 40 of 100 at 148
    trading.wait_for(lambda: protected_qty(trading) == Decimal("40"), "the first 40 protected")
    trading.exchange.set_price("AAPL", "149.95")  # back above both limits: the new one rests too

    by_hand(trading).replace_order_by_id(entry.alpaca_order_id, ReplaceOrderRequest(limit_price=149.50))
    trading.wait_for(lambda: len(entries(trading)) == 2, "the new entry's row")
    trading.trade("AAPL", "149.40")  # the other 60, at the new limit
    trading.wait_for(lambda: protected_qty(trading) == Decimal("100"), "all 100 protected")

    position = position_of(trading)
    assert (position.status, position.quantity) == ("open", Decimal("100"))
    assert position.entry_price == (40 * Decimal("148") + 60 * Decimal("149.5")) / 100
    # The new order's row comes after the first OCO's two.
    assert entries(trading) == [(1, "replaced", Decimal("40"), 1, None, 4), (4, "filled", Decimal("60"), 1, 1, None)]
    assert sorted(stops_at_broker(trading)) == ["40", "60"]
    assert trading.broker_view()["positions"][0]["qty"] == "100"


def test_an_entry_moved_while_the_daemon_was_down_is_followed_after_the_restart(trading):
    """Moved while no daemon ran: the restart rebuilds the pending position from its first entry, the catch-up reads
    it `replaced` and follows the new order, whose fill is protected. One position, one actor."""
    entry = resting_entry(trading)
    trading.stop()
    by_hand(trading).replace_order_by_id(entry.alpaca_order_id, ReplaceOrderRequest(limit_price=149.50))
    with logged_lines("actors", "WARNING") as warnings:
        trading.start()
        trading.wait_for(lambda: len(entries(trading)) == 2, "the new entry's row, from the restart's catch-up")
        trading.trade("AAPL", "149.40")
        trading.wait_for(lambda: protected_qty(trading) == Decimal("100"), "the new entry's fill protected")
    assert len(trading.system.supervisor.live_refs().get()) == 1
    assert entries(trading) == [(1, "replaced", Decimal("0"), 1, None, 2), (2, "filled", Decimal("100"), 1, 1, None)]
    assert stops_at_broker(trading) == ["100"]
    assert not [w for w in warnings if "live position actor" in w]


def test_a_restart_after_a_moved_entry_filled_rebuilds_one_position_from_both_entries(trading):
    """Restarted once the new entry filled and was protected: one actor, rebuilt from its first entry, with the new
    entry's fill among its own; nothing is sent again, and its stop's fill closes it."""
    entry = resting_entry(trading)
    by_hand(trading).replace_order_by_id(entry.alpaca_order_id, ReplaceOrderRequest(limit_price=149.50))
    trading.wait_for(lambda: len(entries(trading)) == 2, "the new entry's row")
    trading.trade("AAPL", "149.40")
    trading.wait_for(lambda: protected_qty(trading) == Decimal("100"), "the new entry's fill protected")
    trading.stop()

    with logged_lines("actors.position", "INFO") as lines:
        trading.start()
        (actor,) = trading.wait_for(lambda: trading.system.supervisor.live_refs().get(), "the position rebuilt")
        time.sleep(0.5)
    assert actor.proxy().entries.get() == [1, 2]
    handed_out = trading.system.supervisor.by_entry.get()  # a late fill of either entry finds this actor
    assert {order_id: ref.actor_urn for order_id, ref in handed_out.items()} == {1: actor.actor_urn, 2: actor.actor_urn}
    assert [line for line in lines if "restored" in line] == [
        "position AAPL#p-1 restored open qty=100 protected=100"]
    assert len(trading.all_orders()) == 4 and stops_at_broker(trading) == ["100"]

    trading.trade("AAPL", "146.50")  # through the stop (147)
    position = trading.wait_for(lambda: (p := position_of(trading)) and p.status == "closed" and p,
                                "the stop's fill closing the position")
    assert position.realized_pnl == Decimal("-300.00")  # (146.50 - 149.50) x 100: the stop sells at the print
    assert trading.broker_view()["positions"] == []


def test_a_moved_entry_that_cannot_be_followed_cancels_its_pending_position(trading, monkeypatch):
    """The new order cannot be read (gone by the time it is asked for): the position is no longer left `pending` for
    good with nothing working; it is cancelled, and the new order is the doctor's, as one placed by hand."""
    entry = resting_entry(trading)
    reads_of_new_orders_fail(trading, monkeypatch, lambda broker_id: NotFound(f"order {broker_id} not found"))
    with logged_lines("actors.position", "INFO") as lines:
        by_hand(trading).replace_order_by_id(entry.alpaca_order_id, ReplaceOrderRequest(limit_price=149.50))
        trading.wait_for(lambda: [line for line in lines if "pending → cancelled" in line], "the position cancelled")
    assert [line for line in lines if "pending → cancelled" in line] == [
        "position AAPL#o-1 pending → cancelled: entry replaced unfilled, by an order not followed (the doctor's pass "
        "looks at it)"]
    assert entries(trading) == [(1, "replaced", Decimal("0"), None, None, None)]
    monkeypatch.setattr(AlpacaBroker, "get_order", AlpacaBroker.get_order)
