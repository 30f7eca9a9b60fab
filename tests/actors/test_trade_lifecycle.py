"""The spec's §1.3 walk-through and its variants, end to end: actors, alpaca-py, the emulator, SQLite on disk."""

from __future__ import annotations

from decimal import Decimal



def test_spec_walk_through_ends_exactly_as_the_complete_block(trading):
    trading.exchange.set_price("AAPL", "149.95")
    trading.open(trading.plan())

    def protected():
        rows = trading.all_orders()
        legs = [r for r in rows if r.role in ("stop_loss", "take_profit")]
        # Spec §2.4 maps Alpaca's `new` to submitted and `held`/`accepted` to accepted: both are working.
        return len(legs) == 2 and all(r.alpaca_order_id and r.status in ("submitted", "accepted") for r in legs) and rows
    rows = trading.wait_for(protected, "the OCO to be acknowledged")
    entry = rows[0]
    assert entry.role == "entry" and entry.status == "filled" and entry.filled_avg_price == Decimal("149.95")
    position = trading.writer.get_position(entry.position_id).get()
    assert position.status == "open" and position.quantity == Decimal("100")

    trading.trade("AAPL", "155.05")  # limits fill when the market trades through them, at the limit

    def closed():
        p = trading.writer.get_position(entry.position_id).get()
        legs = {r.role: r for r in trading.all_orders()}
        return p.status == "closed" and legs["stop_loss"].status == "cancelled" and (p, legs)
    position, legs = trading.wait_for(closed, "the take-profit to close the position")

    final = trading.all_orders()
    assert [(o.role, o.side, o.quantity, o.status) for o in final] == [
        ("entry", "buy", Decimal("100"), "filled"),
        ("take_profit", "sell", Decimal("100"), "filled"),
        ("stop_loss", "sell", Decimal("100"), "cancelled"),
    ]
    assert legs["take_profit"].filled_avg_price == Decimal("155.00")
    assert legs["stop_loss"].cancel_reason == "OCO" and legs["stop_loss"].stop_price == Decimal("147.00")
    assert all(o.position_id == position.position_id for o in final)
    assert legs["stop_loss"].parent_order_id == entry.order_id == legs["take_profit"].parent_order_id
    assert position.quantity == 0 and position.realized_pnl == Decimal("505.00")
    assert position.exit_price == Decimal("155.00")

    broker = trading.broker_view()
    assert broker["positions"] == [] or all(Decimal(p["qty"]) == 0 for p in broker["positions"])
    assert len(broker["orders"]) == 3
