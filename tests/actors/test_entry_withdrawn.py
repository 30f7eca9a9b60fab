"""A flatten asked of a pending position: an entry still waiting for a broker worker is never sent, and shares of an
entry that fills all the same are protected, then sold (alpaca-py against the emulator, the database on disk)."""

from __future__ import annotations

from decimal import Decimal

from actors import messages as m
from tests.actors.conftest import Trading
from tests.actors.test_trade_scenarios import position_of


def broker_orders(trading, client_order_id):
    return [o for o in trading.broker_view()["orders"] if o["client_order_id"] == client_order_id]


def test_an_entry_waiting_for_a_busy_worker_is_withdrawn_by_a_flatten_and_never_sent(exchange, tmp_path,
                                                                                      router_lines):
    # One general worker, held by a first entry whose submit hangs (the broker says nothing until the client gives
    # up): the second entry waits in the pool's line, where the flatten finds it.
    trading = Trading(exchange, f"sqlite+aiosqlite:///{tmp_path / 'catalyst.db'}", general_workers=1).start()
    try:
        exchange.set_price("AAPL", "149.95")
        exchange.set_price("MSFT", "399.95")
        exchange.set_faults("timeout=1.0,hang_s=30")
        trading.open(trading.plan("AAPL"))
        first = trading.wait_for(lambda: trading.all_orders("AAPL"), "the first entry's row")[0]
        second_actor = trading.open(trading.plan("MSFT", stop="390.00", target="420.00"))
        second = trading.wait_for(lambda: trading.all_orders("MSFT"), "the second entry's row")[0]
        trading.wait_for(lambda: second.order_id in (second_actor.proxy().state().get()["orders"] or {}),
                         "the second position to know its entry")

        second_actor.tell(m.Flatten(reason="emergency: daily loss limit"))
        withdrawn = trading.wait_for(lambda: (row := trading.writer.get_order(second.order_id).get())
                                     and row.status == "cancelled" and row, "the second entry to be withdrawn")
        exchange.set_faults("")

        assert withdrawn.alpaca_order_id is None and withdrawn.submit_attempts == 0
        assert withdrawn.cancel_reason == "emergency: daily loss limit; withdrawn before it was sent"
        trading.wait_for(lambda: not second_actor.is_alive() or second_actor.proxy().state().get()["status"]
                         == "cancelled", "the second position to end cancelled")
        # The first entry, sent once its worker is free again, fills once; the second never reached the broker.
        trading.wait_for(lambda: (p := position_of(trading, "AAPL")) and p.status == "open", "the first to fill",
                         timeout=60)
        assert len(broker_orders(trading, first.client_order_id)) == 1
        assert broker_orders(trading, second.client_order_id) == []
        assert position_of(trading, "MSFT") is None
        assert any(line == f"order MSFT#o-{second.order_id} created → cancelled (emergency: daily loss limit; "
                           "withdrawn before it was sent)" for line in router_lines), router_lines
    finally:
        trading.stop()


def test_an_entry_that_fills_after_its_pending_position_was_told_to_flatten_is_protected_then_sold(trading):
    # The entry's fill event is lost, so the position is still pending when the flatten comes; its cancel then finds
    # the entry filled at the broker. The shares must not be left open (nor merely protected): they are sold.
    trading.exchange.set_price("AAPL", "149.95")
    trading.exchange.set_faults("drop=1.0")
    actor = trading.open(trading.plan())
    entry = trading.wait_for(lambda: (rows := trading.all_orders()) and rows[0].alpaca_order_id and rows[0],
                             "the entry to be acknowledged")
    trading.wait_for(lambda: trading.broker_view()["positions"], "the entry to fill at the broker")
    assert actor.proxy().state().get()["status"] == "pending"

    actor.tell(m.Flatten(reason="emergency: daily loss limit"))
    trading.exchange.set_faults("")

    position = trading.wait_for(lambda: (p := position_of(trading)) and p.status == "closed" and p,
                                "the position to open, then be flattened", timeout=60)
    assert position.quantity == Decimal(0)
    roles = {o.role: o.status for o in trading.all_orders()}
    assert roles["entry"] == "filled" and roles["flatten"] == "filled", roles
    assert [o.status for o in trading.all_orders() if o.role in ("take_profit", "stop_loss")] == ["cancelled"] * 2
    assert trading.broker_view()["positions"] == []
    assert not [o for o in trading.broker_view()["orders"] if o["status"] in ("new", "accepted", "held")]
    assert entry.client_order_id in {o["client_order_id"] for o in trading.broker_view()["orders"]}
