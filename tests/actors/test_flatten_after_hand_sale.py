"""A flatten after shares were sold outside Catalyst never sells them again (a short). A trader cancels a position's
OCO in the dashboard and sells by hand while the daemon runs: the daemon learns of that sale only at the doctor's next
pass. Its market exit, sized from the database alone, sold 100 shares the account no longer held, and Alpaca took
it as a short sale (seen: the account ended short 100, the position closed with a P&L of 0.00). The broker's position
is now read before every market exit, which sells no more than the broker holds of the position's shares. Real
actors, alpaca-py against the emulator on loopback, SQLite on disk."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from alpaca.common.exceptions import APIError
from alpaca.trading.enums import OrderSide, TimeInForce
from alpaca.trading.requests import MarketOrderRequest

from actors import messages as m
from actors import position as position_module
from tests.actors.conftest import logged_lines
from tests.actors import test_doctor_heals as doctor_heals
from tests.actors.test_doctor_heals import open_protected, position_of, working_stop_ids


@pytest.fixture(autouse=True)
def entry_long_ago(monkeypatch: pytest.MonkeyPatch) -> None:
    """A broker position short of the shares within this long of the entry's fill is read again (Alpaca's positions
    can lag a fill); these trades are minutes old when sold by hand, not seconds."""
    monkeypatch.setattr(position_module, "NO_SHARES_WINDOW_S", 0.5)


HAND_SALE_TRIES = 10
doctor, by_hand = doctor_heals.doctor, doctor_heals.by_hand  # fixtures: a doctor over `trading`, the dashboard


def sold_by_hand(trading: Any, by_hand: Any, qty: int) -> None:
    """The OCO cancelled in the dashboard, then `qty` sold at market by hand: the daemon's new OCO for its 100 is
    refused for want of shares (the broker holds 100 - qty, none of them free once it is). The daemon puts its stop
    back the moment it hears of the cancel; where that OCO took the shares first (a busy machine: seen in CI), the sale
    is refused, and the trader cancels and sells again."""
    for _ in range(HAND_SALE_TRIES):
        for stop_id in working_stop_ids(trading):
            by_hand.cancel_order_by_id(stop_id)  # an OCO's legs go together
        try:
            by_hand.submit_order(MarketOrderRequest(symbol="AAPL", qty=qty, side=OrderSide.SELL,
                                                    time_in_force=TimeInForce.DAY))
            break
        except APIError as refused:
            assert refused.status_code == 403, refused  # insufficient qty: the daemon's new OCO holds them
    else:
        raise AssertionError(f"the hand sale was refused {HAND_SALE_TRIES} times")
    trading.wait_for(lambda: broker_qty(trading) == Decimal(100 - qty), "the hand sale filled")


def broker_qty(trading: Any) -> Decimal:
    return sum((Decimal(p["qty"]) for p in trading.broker_view()["positions"] if p["symbol"] == "AAPL"), Decimal(0))


def flatten(trading: Any) -> None:
    (actor,) = trading.system.supervisor.live_refs().get()
    actor.tell(m.Flatten(reason="end of day", scheduled=True))


def closed_by_the_doctor(trading: Any, doctor: Any) -> Any:
    doctor.run_pass(reason="test").get()
    return trading.wait_for(lambda: (p := position_of(trading)) and p.status == "closed" and p, "the position closed")


def test_shares_sold_by_hand_are_not_sold_again_by_a_flatten(trading, doctor, by_hand):
    open_protected(trading)
    trading.exchange.set_price("AAPL", "151.00")
    with logged_lines("actors.position", "ERROR") as errors:
        sold_by_hand(trading, by_hand, 100)
        flatten(trading)
        said = trading.wait_for(lambda: errors, "the position's ERROR")
    assert said == ["position AAPL#p-1 the broker holds none of its 100 shares (it holds 0 AAPL): no market exit, "
                    "which would open a short position; sold outside Catalyst? The doctor's pass compares the broker "
                    "with the database and records such a sale as this position's exit; asking the broker again "
                    "every 30 s"]
    assert not [o for o in trading.all_orders() if o.role == "flatten"]
    assert broker_qty(trading) == 0  # not short

    closed = closed_by_the_doctor(trading, doctor)  # the hand sale attached as the position's exit
    assert closed.quantity == 0 and closed.realized_pnl == (closed.exit_price - Decimal("149.95")) * 100
    assert closed.exit_price == Decimal("151.00")
    assert broker_qty(trading) == 0 and not working_stop_ids(trading)


def test_a_flatten_after_part_was_sold_by_hand_sells_only_what_the_broker_holds(trading, doctor, by_hand):
    open_protected(trading)
    trading.exchange.set_price("AAPL", "151.00")
    with logged_lines("actors.position", "WARNING") as warnings:
        sold_by_hand(trading, by_hand, 40)
        flatten(trading)
        trading.wait_for(lambda: [o for o in trading.all_orders() if o.role == "flatten" and o.status == "filled"],
                         "the market exit of the 60 filled")
        trading.wait_for(lambda: (p := position_of(trading)) and p.quantity == 40, "its execution recorded")
    assert [o.quantity for o in trading.all_orders() if o.role == "flatten"] == [Decimal(60)]
    assert broker_qty(trading) == 0  # not short
    assert ("position AAPL#p-1 the broker holds only 60 of its 100 shares (it holds 60 AAPL): a market exit of those "
            "60; the other 40 were sold outside Catalyst? asked about again 30 s after that exit fills" in warnings)

    closed = closed_by_the_doctor(trading, doctor)
    assert closed.quantity == 0 and closed.realized_pnl == (Decimal("151.00") - Decimal("149.95")) * 100
    assert broker_qty(trading) == 0 and not working_stop_ids(trading)


def test_a_flatten_with_the_shares_at_the_broker_sells_them_all(trading):
    open_protected(trading)
    flatten(trading)
    trading.wait_for(lambda: (p := position_of(trading)) and p.status == "closed", "the flatten")
    assert [(o.quantity, o.status) for o in trading.all_orders() if o.role == "flatten"] == [(Decimal(100), "filled")]
    assert broker_qty(trading) == 0
