"""A review of the doctor's HEAL of POSITION_QTY_MISMATCH (hand orders written as a position's exits) and of the
passes positions ask for: end to end against the emulator, the database and the broker's view asserted both."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import pytest
from alpaca.common.exceptions import APIError
from alpaca.trading.enums import OrderSide, TimeInForce
from alpaca.trading.requests import MarketOrderRequest

from catalyst.domain.reconcile import FindingType as T
from tests.actors.test_doctor_heals import (broker_working_stop_qty, by_hand, doctor, open_protected,  # noqa: F401
                                            position_of, protected, sell_part_by_hand, trading, working_stop_ids)


def broker_qty(trading, symbol="AAPL") -> Decimal:
    return sum((Decimal(p["qty"]) * (1 if p.get("side", "long") == "long" else -1)
                for p in trading.broker_view()["positions"] if p["symbol"] == symbol), Decimal(0))


def hand_market(trading, by_hand, side: OrderSide, qty: int, symbol="AAPL") -> Any:
    """A market order by hand; the daemon's OCO in the way (wash trade, shares held) is cancelled and it clicked again."""
    for _ in range(50):
        for stop in working_stop_ids(trading, symbol)[:1]:
            by_hand.cancel_order_by_id(stop)
        try:
            return by_hand.submit_order(MarketOrderRequest(symbol=symbol, qty=qty, side=side,
                                                           time_in_force=TimeInForce.DAY))
        except APIError:
            continue
    pytest.fail("the hand order never went through")


def test_shares_bought_by_hand_on_top_of_a_position_halt_and_are_never_its_exit(trading, doctor, by_hand):
    open_protected(trading)
    hand_market(trading, by_hand, OrderSide.BUY, 40)
    trading.wait_for(lambda: broker_qty(trading) == 140, "140 held")
    report = doctor.run_pass(reason="test").get()
    mismatch = next(f for f in report.findings if f.type is T.POSITION_QTY_MISMATCH)
    assert mismatch.policy == "halt" and not doctor.entries_allowed().get()
    assert [o for o in trading.all_orders() if o.role == "exit"] == []
    assert position_of(trading).quantity == 100 and position_of(trading).status == "open"


def test_a_hand_buy_then_a_larger_hand_sale_is_not_written_as_two_exits(trading, doctor, by_hand, monkeypatch):
    # Net, the two hand orders reduce the position by 40 (+40 - 80): the buy is no exit of a long position.
    from actors import position as position_module
    monkeypatch.setattr(position_module, "NO_SHARES_WINDOW_S", 0.5)
    open_protected(trading)
    trading.exchange.set_price("AAPL", "151.00")
    hand_market(trading, by_hand, OrderSide.BUY, 40)
    trading.wait_for(lambda: broker_qty(trading) == 140, "140 held")
    sell_part_by_hand(trading, by_hand, 80)
    trading.wait_for(lambda: broker_qty(trading) == 60, "60 left")
    time.sleep(1.0)
    report = doctor.run_pass(reason="test").get()
    mismatch = next(f for f in report.findings if f.type is T.POSITION_QTY_MISMATCH)
    assert mismatch.policy == "halt" and not doctor.entries_allowed().get()
    time.sleep(1.0)  # before the fix: the buy's fill applied as a sale crashed the position actor at every rebuild
    assert [(o.side, o.quantity) for o in trading.all_orders() if o.role == "exit"] == []
    position = position_of(trading)
    assert (position.status, position.quantity, position.realized_pnl) == ("open", 100, 0)
    assert broker_qty(trading) == 60
