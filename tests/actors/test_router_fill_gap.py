"""One piece's fill event lost while a later piece's event of the same order arrives: the router asks the broker for
the missing execution once the grace period is over, instead of leaving it to the doctor's next pass (300 s).

Found by a review and reproduced end to end (alpaca-py against the emulator, the database on disk): the later
event's cumulative quantity counted the lost piece as recorded, so nothing asked for it. An entry's lost piece
stayed without a stop and out of the position; a take-profit's lost piece left the position open with the broker
flat and its realized P&L short of the fills.
"""

from __future__ import annotations

import time
from decimal import Decimal

import pytest

from catalyst.domain.positions import PositionSide
from tests.actors.conftest import wait_for
from tests.actors.test_trade_scenarios import broker_working_stop_qty, position_of, protected_qty

LIMIT, CROSS = Decimal("50.00"), {PositionSide.LONG: "49.90", PositionSide.SHORT: "50.10"}
# Well inside the doctor's 300 s, well past the router's 2 s grace for a fill event behind another.
SETTLE_S = 15


def lose_the_next_fill_event(trading, symbol, price, volume):
    """A minute whose fill events the stream drops (the fill itself happens at the broker)."""
    trading.exchange.set_faults("drop=1.0")
    trading.trade(symbol, price, volume=volume)
    time.sleep(0.3)
    trading.exchange.set_faults("")


def fills_recorded(trading, order):
    return sum((f.qty for f in trading.writer.fills_for_order(order.order_id).get()), Decimal(0))


@pytest.mark.parametrize("side", [PositionSide.LONG, PositionSide.SHORT])
def test_an_entry_piece_whose_event_is_lost_is_recorded_and_protected_once_the_next_piece_arrives(trading, side):
    trading.exchange.set_price("AAPL", "50.10" if side is PositionSide.LONG else "49.90")
    stop, target = ("48.00", "55.00") if side is PositionSide.LONG else ("52.00", "45.00")
    trading.open(trading.plan(side=side, qty="500", stop=stop, target=target, order_type="limit", limit_price=LIMIT))
    wait_for(lambda: [o for o in trading.all_orders() if o.role == "entry" and o.alpaca_order_id], "the entry sent")

    lose_the_next_fill_event(trading, "AAPL", CROSS[side], volume=800)  # 200 of 500 fill, their event lost
    trading.trade("AAPL", CROSS[side], volume=800)  # 200 more: their event says cum 400
    trading.trade("AAPL", CROSS[side], volume=800)  # the last 100: cum 500, filled

    wait_for(lambda: (p := position_of(trading)) is not None and p.quantity == 500 and protected_qty(trading) == 500,
             "the lost piece recorded and protected", timeout=SETTLE_S)
    (entry,) = [o for o in trading.all_orders() if o.role == "entry"]
    assert fills_recorded(trading, entry) == 500  # every piece once: 200 + 200 + 100
    held = trading.broker_view()["positions"]
    assert [abs(Decimal(p["qty"])) for p in held] == [Decimal(500)]
    assert broker_working_stop_qty(trading) == 500  # a short's stop is a buy stop: the same sum


def test_a_take_profit_piece_whose_event_is_lost_closes_the_position_once_the_rest_arrives(trading):
    trading.exchange.set_price("AAPL", "149.95")
    trading.open(trading.plan())  # 100 long, take-profit 155.00
    wait_for(lambda: protected_qty(trading) == 100, "protection")

    lose_the_next_fill_event(trading, "AAPL", "155.05", volume=160)  # 40 of the take-profit, event lost
    trading.trade("AAPL", "155.05", volume=1000)  # the other 60: their event says cum 100, filled

    wait_for(lambda: (p := position_of(trading)) is not None and p.status == "closed", "the position closed",
             timeout=SETTLE_S)
    position = position_of(trading)
    (take_profit,) = [o for o in trading.all_orders() if o.role == "take_profit"]
    assert fills_recorded(trading, take_profit) == 100
    assert trading.broker_view()["positions"] == []
    broker_fills = [f for f in trading.broker_view()["fills"] if f["symbol"] == "AAPL"]
    proceeds = sum((Decimal(f["qty"]) * Decimal(f["price"]) * (1 if f["side"] == "sell" else -1)
                    for f in broker_fills), Decimal(0))
    assert position.realized_pnl == proceeds  # from the actual fills, both pieces of the exit
