"""Short positions end to end: the real actor system, alpaca-py against the embedded emulator, SQLite on disk.

A short sells to open and buys to cover; its OCO's stop sits ABOVE the entry and its take-profit BELOW. Each test
asserts the database AND the emulator's own view of the account: protection equals the shares short, a cover never
buys more than the account is short (which would leave it long), and realized P&L has the short's sign."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import pytest
from alpaca.common.exceptions import APIError
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderSide, TimeInForce
from alpaca.trading.requests import MarketOrderRequest

from actors import messages as m
from actors import position as position_module
from catalyst.domain.positions import PositionSide
from tests.actors import test_doctor_heals as doctor_heals
from tests.actors.conftest import logged_lines
from tests.actors.test_trade_scenarios import broker_working_stop_qty, legs, position_of, protected_qty, wait_closed

SYM = "TSLA"
doctor = doctor_heals.doctor  # fixture: a doctor over `trading`, its passes the tests' own


@pytest.fixture(autouse=True)
def entry_long_ago(monkeypatch: pytest.MonkeyPatch) -> None:
    """A broker position short of the shares within this long of the entry's fill is read again (Alpaca's positions
    can lag a fill); these trades are minutes old when covered by hand."""
    monkeypatch.setattr(position_module, "NO_SHARES_WINDOW_S", 0.5)


@pytest.fixture
def by_hand(trading) -> TradingClient:
    return TradingClient(trading.key, "secret", paper=True, url_override=trading.exchange.base_url)


def broker_qty(trading: Any, symbol: str = SYM) -> Decimal:
    return sum((Decimal(p["qty"]) for p in trading.broker_view()["positions"] if p["symbol"] == symbol), Decimal(0))


def broker_working(trading: Any, symbol: str = SYM) -> list[dict[str, Any]]:
    return [o for o in trading.broker_view()["orders"]
            if o["symbol"] == symbol and o["status"] in ("new", "held", "accepted", "partially_filled")]


def working_stop_ids(trading: Any, symbol: str = SYM) -> list[str]:
    return [o["id"] for o in broker_working(trading, symbol) if o["type"] == "stop"]


def open_short(trading: Any, qty: str = "100", price: str = "50.00", stop: str = "52.00", target: str = "48.00") -> Any:
    trading.exchange.set_price(SYM, price)
    trading.open(trading.plan(symbol=SYM, side=PositionSide.SHORT, qty=qty, stop=stop, target=target))
    trading.wait_for(lambda: (p := position_of(trading, SYM)) and p.quantity == Decimal(qty), "the short's entry")
    trading.wait_for(lambda: protected_qty(trading, SYM) == Decimal(qty), "the short protected")
    trading.wait_for(lambda: broker_working_stop_qty(trading, SYM) == Decimal(qty), "its stop at the broker")
    return position_of(trading, SYM)


def flatten(trading: Any) -> None:
    (actor,) = trading.system.supervisor.live_refs().get()
    actor.tell(m.Flatten(reason="end of day", scheduled=True))


# --- 1. a short entry filled in pieces ----------------------------------------------------------------------------

def test_a_short_entry_filled_in_pieces_is_protected_above_and_below_piece_by_piece(trading):
    trading.exchange.set_price(SYM, "50.00", volume=800)  # 25% participation: 200 shares a minute
    trading.open(trading.plan(symbol=SYM, side=PositionSide.SHORT, qty="500", stop="52.00", target="48.00"))
    trading.wait_for(lambda: (p := position_of(trading, SYM)) and p.quantity == Decimal("200"), "the first piece")
    trading.wait_for(lambda: protected_qty(trading, SYM) == Decimal("200"), "the first piece protected")
    assert broker_qty(trading) == Decimal("-200")
    for _ in range(3):
        trading.trade(SYM, "50.00", volume=800)
    position = trading.wait_for(lambda: (p := position_of(trading, SYM)) and p.quantity == Decimal("500") and p,
                                "the entry to fill completely")
    trading.wait_for(lambda: protected_qty(trading, SYM) == Decimal("500"), "protection for all 500")
    trading.wait_for(lambda: broker_working_stop_qty(trading, SYM) == Decimal("500"), "the broker's stops for 500")
    assert position.side == "short" and position.entry_price == Decimal("50.00")
    assert broker_qty(trading) == Decimal("-500")
    rows = legs(trading, SYM)
    assert rows and all(o.side == "buy" for o in rows)
    assert all(o.stop_price > Decimal("50.00") for o in rows if o.role == "stop_loss")
    assert all(o.limit_price < Decimal("50.00") for o in rows if o.role == "take_profit")
    at_broker = broker_working(trading)
    assert {o["side"] for o in at_broker} == {"buy"}
    limit_qty = sum((Decimal(o["qty"]) for o in at_broker if o["type"] == "limit"), Decimal(0))
    assert limit_qty == Decimal("500")  # the take-profits cover the same 500, no more


# --- 2. the stop, the take-profit, a partial take-profit then the stop -----------------------------------------

def test_a_shorts_stop_covers_it_at_a_loss(trading):
    open_short(trading)
    trading.trade(SYM, "52.50")  # through the buy stop at 52
    position = wait_closed(trading, SYM)
    stop = next(o for o in legs(trading, SYM) if o.role == "stop_loss")
    take_profit = next(o for o in legs(trading, SYM) if o.role == "take_profit")
    assert stop.status == "filled" and take_profit.status == "cancelled"
    assert stop.filled_avg_price >= Decimal("52.00")
    assert position.realized_pnl == (Decimal("50.00") - stop.filled_avg_price) * 100 < 0
    assert broker_qty(trading) == 0 and broker_working(trading) == []


def test_a_shorts_take_profit_filled_in_part_then_its_stop_realizes_both_with_the_shorts_sign(trading):
    open_short(trading)
    trading.trade(SYM, "47.90", volume=160)  # 25% of 160: the take-profit (buy limit 48) covers 40
    trading.wait_for(lambda: (p := position_of(trading, SYM)) and p.quantity == Decimal("60"), "40 covered")
    trading.wait_for(lambda: broker_working_stop_qty(trading, SYM) == Decimal("60"), "the stop left on 60")
    assert broker_qty(trading) == Decimal("-60")
    trading.trade(SYM, "52.50", volume=100_000)  # through the stop
    position = wait_closed(trading, SYM)
    covers = [o for o in legs(trading, SYM) if o.filled_qty > 0]
    assert sum((o.filled_qty for o in covers), Decimal(0)) == Decimal("100")
    covered_at = sum((o.filled_qty * o.filled_avg_price for o in covers), Decimal(0))
    assert position.realized_pnl == Decimal("50.00") * 100 - covered_at
    tp = next(o for o in covers if o.role == "take_profit")
    sl = next(o for o in covers if o.role == "stop_loss")
    assert (tp.filled_qty, sl.filled_qty) == (Decimal("40"), Decimal("60"))
    assert position.realized_pnl == 40 * (Decimal("50.00") - tp.filled_avg_price) + \
        60 * (Decimal("50.00") - sl.filled_avg_price)
    assert broker_qty(trading) == 0 and broker_working(trading) == []


# --- 3. a flatten of a short --------------------------------------------------------------------------------------

def test_a_flatten_of_a_short_buys_exactly_the_shares_short(trading):
    open_short(trading)
    trading.exchange.set_price(SYM, "49.00")
    flatten(trading)
    position = wait_closed(trading, SYM)
    exits = [o for o in trading.all_orders(SYM) if o.role == "flatten"]
    assert [(o.side, o.quantity, o.status) for o in exits] == [("buy", Decimal("100"), "filled")]
    assert position.realized_pnl == (Decimal("50.00") - exits[0].filled_avg_price) * 100
    assert broker_qty(trading) == 0 and broker_working(trading) == []


# --- 4. covered by hand, then a flatten ---------------------------------------------------------------------------

def covered_by_hand(trading: Any, by_hand: TradingClient, qty: int) -> None:
    for _ in range(10):
        for stop_id in working_stop_ids(trading):
            by_hand.cancel_order_by_id(stop_id)  # an OCO's legs go together
        try:
            by_hand.submit_order(MarketOrderRequest(symbol=SYM, qty=qty, side=OrderSide.BUY,
                                                    time_in_force=TimeInForce.DAY))
            break
        except APIError as refused:
            assert refused.status_code == 403, refused  # the daemon's new OCO holds the shares
    else:
        raise AssertionError("the hand cover was refused 10 times")
    trading.wait_for(lambda: broker_qty(trading) == Decimal(qty - 100), "the hand cover filled")


def test_a_short_covered_by_hand_is_not_bought_again_by_a_flatten(trading, by_hand):
    open_short(trading)
    trading.exchange.set_price(SYM, "49.00")
    with logged_lines("actors.position", "ERROR") as errors:
        covered_by_hand(trading, by_hand, 100)
        flatten(trading)
        said = trading.wait_for(lambda: errors, "the position's ERROR")
    assert "the broker holds none of its 100 shares" in said[0] and "would open a long position" in said[0]
    assert not [o for o in trading.all_orders(SYM) if o.role == "flatten"]
    assert broker_qty(trading) == 0  # not long


def test_a_short_covered_by_hand_is_closed_by_the_doctor_with_the_shorts_sign(trading, doctor, by_hand):
    open_short(trading)
    trading.exchange.set_price(SYM, "49.00")
    covered_by_hand(trading, by_hand, 100)
    doctor.run_pass(reason="test").get()
    closed = trading.wait_for(lambda: (p := position_of(trading, SYM)) and p.status == "closed" and p, "closed")
    assert closed.exit_price == Decimal("49.00") and closed.realized_pnl == Decimal("100.00")  # sold 50, bought 49
    assert broker_qty(trading) == 0 and broker_working(trading) == []
    assert doctor.run_pass(reason="after").get().findings == ()


def test_a_short_sold_by_hand_is_adopted_as_a_short_and_protected_above(trading, doctor, by_hand):
    trading.exchange.set_price(SYM, "50.00")
    by_hand.submit_order(MarketOrderRequest(symbol=SYM, qty=30, side=OrderSide.SELL, time_in_force=TimeInForce.DAY))
    trading.wait_for(lambda: broker_qty(trading) == Decimal(-30), "the hand short sale")
    doctor.run_pass(reason="test").get()
    adopted = trading.wait_for(lambda: position_of(trading, SYM), "the adopted position")
    assert (adopted.side, adopted.status, adopted.quantity) == ("short", "open", Decimal(30))
    trading.wait_for(lambda: broker_working_stop_qty(trading, SYM) == Decimal(30), "its stop")
    stops = [o for o in broker_working(trading) if o["type"] == "stop"]
    assert all(o["side"] == "buy" and Decimal(o["stop_price"]) > Decimal("50.00") for o in stops)
    assert doctor.run_pass(reason="after").get().findings == ()
    trading.trade(SYM, "56.00")  # through the stop
    closed = trading.wait_for(lambda: (p := position_of(trading, SYM)) and p.status == "closed" and p, "stopped out")
    assert closed.realized_pnl < 0 and broker_qty(trading) == 0


def test_a_flatten_after_part_of_a_short_was_covered_by_hand_buys_only_what_is_still_short(trading, by_hand):
    open_short(trading)
    trading.exchange.set_price(SYM, "49.00")
    covered_by_hand(trading, by_hand, 40)
    flatten(trading)
    trading.wait_for(lambda: [o for o in trading.all_orders(SYM) if o.role == "flatten" and o.status == "filled"],
                     "the market exit filled")
    exits = [o for o in trading.all_orders(SYM) if o.role == "flatten"]
    assert [(o.side, o.quantity) for o in exits] == [("buy", Decimal("60"))]
    assert broker_qty(trading) == 0  # not long
    assert broker_working(trading) == []


# --- 5. a restart with a short open ---------------------------------------------------------------------------------

def test_a_short_open_and_protected_across_a_restart_keeps_one_oco_and_closes_with_the_shorts_sign(trading):
    open_short(trading)
    trading.stop()
    trading.start()
    trading.wait_for(lambda: trading.system.supervisor.live_refs().get(), "the short's actor rebuilt")
    assert broker_working_stop_qty(trading, SYM) == Decimal("100") and broker_qty(trading) == Decimal("-100")
    trading.trade(SYM, "47.90")  # through the take-profit (buy limit 48)
    position = wait_closed(trading, SYM)
    assert position.side == "short" and position.realized_pnl == Decimal("200.00")
    assert len([o for o in trading.broker_view()["orders"] if o["symbol"] == SYM]) == 3  # entry + one OCO
    assert broker_qty(trading) == 0 and broker_working(trading) == []


def test_a_short_whose_oco_was_never_acknowledged_is_protected_once_after_a_restart(trading):
    trading.exchange.set_price(SYM, "49.90")
    trading.open(trading.plan(symbol=SYM, side=PositionSide.SHORT, stop="52.00", target="48.00",
                              order_type="limit", limit_price=Decimal("50.00")))
    trading.wait_for(lambda: (o := trading.all_orders(SYM)) and o[0].status == "accepted", "the limit entry working")
    trading.exchange.set_faults("submit_5xx=1")  # the OCO's submit fails before the broker acts on it
    trading.trade(SYM, "50.10")
    trading.wait_for(lambda: (p := position_of(trading, SYM)) and p.quantity == Decimal("100"), "the entry filled")
    trading.wait_for(lambda: len(legs(trading, SYM)) == 2, "the OCO rows")
    assert [(o.status, o.alpaca_order_id) for o in legs(trading, SYM)] == [("created", None), ("created", None)]
    trading.stop()
    trading.exchange.set_faults("")
    assert broker_working_stop_qty(trading, SYM) == 0 and broker_qty(trading) == Decimal("-100")
    trading.start()
    trading.wait_for(lambda: broker_working_stop_qty(trading, SYM) == Decimal("100"), "the short protected", timeout=30)
    trading.wait_for(lambda: protected_qty(trading, SYM) == Decimal("100"), "the database says so")
    at_broker = broker_working(trading)
    assert sorted((o["type"], o["side"], Decimal(o["qty"])) for o in at_broker) == [
        ("limit", "buy", Decimal("100")), ("stop", "buy", Decimal("100"))]
    trading.trade(SYM, "52.50")
    position = wait_closed(trading, SYM)
    stop = next(o for o in legs(trading, SYM) if o.role == "stop_loss" and o.status == "filled")
    assert position.realized_pnl == (Decimal("50.00") - stop.filled_avg_price) * 100 < 0
    assert broker_qty(trading) == 0 and broker_working(trading) == []


# --- 6. late entry shares of a short ----------------------------------------------------------------------------

def test_short_entry_shares_recorded_after_the_stop_closed_the_position_are_covered(trading):
    trading.exchange.set_price(SYM, "50.00", volume=800)  # 200 shares a minute
    trading.open(trading.plan(symbol=SYM, side=PositionSide.SHORT, qty="500", stop="52.00", target="48.00"))
    trading.wait_for(lambda: (p := position_of(trading, SYM)) is not None and p.quantity == Decimal("200"),
                     "the entry's first 200")
    trading.wait_for(lambda: protected_qty(trading, SYM) == Decimal("200"), "their OCO")
    trading.exchange.set_faults("drop=1.0")
    trading.trade(SYM, "50.00", volume=2000)  # the entry's other 300 fill; their event is lost
    trading.exchange.set_faults("")
    trading.trade(SYM, "52.50", volume=2000)  # through the stop: it covers the 200 recorded
    trading.wait_for(lambda: (p := position_of(trading, SYM)) is not None and p.status == "closed", "the stop's close")
    deadline = time.monotonic() + 25
    while time.monotonic() < deadline and broker_qty(trading) != 0:
        trading.trade(SYM, "52.50", volume=2000)  # minutes go by: the market exit can fill
        time.sleep(0.3)
    assert broker_qty(trading) == 0  # neither short nor long
    position = position_of(trading, SYM)
    assert (position.status, position.quantity) == ("closed", Decimal(0))
    orders = trading.all_orders(SYM)
    entry = next(o for o in orders if o.role == "entry")
    stop = next(o for o in orders if o.role == "stop_loss")
    exits = [o for o in orders if o.role == "flatten"]
    assert (entry.filled_qty, stop.filled_qty) == (Decimal(500), Decimal(200))
    assert [(o.side, o.quantity, o.filled_qty) for o in exits] == [("buy", Decimal(300), Decimal(300))]
    sold = entry.filled_qty * entry.filled_avg_price
    bought = sum((o.filled_qty * o.filled_avg_price for o in (stop, *exits)), Decimal(0))
    assert position.realized_pnl == sold - bought < 0
    assert broker_working(trading) == []


# --- probes beyond the brief's list ---------------------------------------------------------------------------------

@pytest.fixture
def strict_trading(tmp_path):
    from tests.actors.conftest import START, Trading, exchange_at

    with exchange_at(START, wash_trade_check="strict") as exchange:
        harness = Trading(exchange, f"sqlite+aiosqlite:///{tmp_path / 'catalyst.db'}").start()
        yield harness
        harness.stop()


def test_a_partly_filled_short_entry_whose_oco_is_refused_as_a_wash_trade_keeps_its_shares_protected(strict_trading):
    trading = strict_trading
    trading.exchange.set_price(SYM, "50.00", volume=800)
    trading.open(trading.plan(symbol=SYM, side=PositionSide.SHORT, qty="500", stop="52.00", target="48.00"))
    trading.wait_for(lambda: protected_qty(trading, SYM) == Decimal("200"), "the 200 sold short protected")
    for _ in range(2):
        trading.trade(SYM, "50.00", volume=800)
    entry = next(o for o in trading.all_orders(SYM) if o.role == "entry")
    position = position_of(trading, SYM)
    assert entry.status == "cancelled" and entry.filled_qty == Decimal("200")
    assert position.status == "open" and position.quantity == Decimal("200")
    assert broker_working_stop_qty(trading, SYM) == Decimal("200") and broker_qty(trading) == Decimal("-200")
    assert not [o for o in trading.all_orders(SYM) if o.role == "flatten"]


def test_a_short_entry_filled_below_its_planned_price_moves_its_exits_down_by_the_slippage(trading):
    trading.exchange.set_price(SYM, "49.00")  # planned at 50: a short sold a dollar lower is a dollar worse
    trading.open(trading.plan(symbol=SYM, side=PositionSide.SHORT, stop="52.00", target="48.00",
                              entry_price=Decimal("50.00")))
    trading.wait_for(lambda: protected_qty(trading, SYM) == Decimal("100"), "the short protected")
    trading.wait_for(lambda: broker_working_stop_qty(trading, SYM) == Decimal("100"), "its stop at the broker")
    entry = next(o for o in trading.all_orders(SYM) if o.role == "entry")
    moved = entry.filled_avg_price - Decimal("50.00")
    assert moved < 0
    stop = next(o for o in legs(trading, SYM) if o.role == "stop_loss")
    target = next(o for o in legs(trading, SYM) if o.role == "take_profit")
    assert (stop.stop_price, target.limit_price) == (Decimal("52.00") + moved, Decimal("48.00") + moved)
    at_broker = {o["type"]: o for o in broker_working(trading)}
    assert Decimal(at_broker["stop"]["stop_price"]) == stop.stop_price > entry.filled_avg_price
    assert Decimal(at_broker["limit"]["limit_price"]) == target.limit_price < entry.filled_avg_price


def test_a_short_restarted_while_its_market_exit_works_buys_once(trading):
    open_short(trading)
    trading.exchange.set_price(SYM, "49.00", volume=80)  # the exit covers 20 a minute
    flatten(trading)
    trading.wait_for(lambda: [o for o in trading.all_orders(SYM) if o.role == "flatten" and o.alpaca_order_id],
                     "the market exit working")
    trading.trade(SYM, "49.00", volume=80)
    trading.wait_for(lambda: [o for o in trading.all_orders(SYM) if o.role == "flatten" and o.status == "partial_fill"],
                     "part of the exit filled, the rest working across the restart")
    assert Decimal(-100) < broker_qty(trading) < 0
    trading.stop()
    trading.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (broker_qty(trading) != 0 or position_of(trading, SYM).status != "closed"):
        trading.trade(SYM, "49.00", volume=80)
        time.sleep(0.3)
    position = wait_closed(trading, SYM)
    exits = [o for o in trading.all_orders(SYM) if o.role == "flatten"]
    assert sum((o.filled_qty for o in exits), Decimal(0)) == Decimal(100) and all(o.side == "buy" for o in exits)
    assert broker_qty(trading) == 0 and broker_working(trading) == []
    assert position.realized_pnl == Decimal("100.00")


def test_a_shorts_take_profit_filled_on_submit_closes_it_without_a_second_oco(trading):
    trading.exchange.set_price(SYM, "47.50")  # sold short below its target: the buy limit at 48 is marketable
    trading.open(trading.plan(symbol=SYM, side=PositionSide.SHORT, stop="52.00", target="48.00"))
    position = wait_closed(trading, SYM)
    rows = trading.all_orders(SYM)
    assert sorted(o.role for o in rows) == ["entry", "stop_loss", "take_profit"], [(o.role, o.status) for o in rows]
    assert len([o for o in trading.broker_view()["orders"] if o["symbol"] == SYM]) == 3
    tp = next(o for o in rows if o.role == "take_profit")
    entry = next(o for o in rows if o.role == "entry")
    assert position.realized_pnl == (entry.filled_avg_price - tp.filled_avg_price) * 100
    assert broker_qty(trading) == 0 and broker_working(trading) == []


def test_a_shorts_stop_already_through_the_market_is_refused_and_it_is_covered_at_market_once(trading):
    trading.exchange.set_price(SYM, "52.50")  # sold short above its stop: the buy stop at 52 is refused
    trading.open(trading.plan(symbol=SYM, side=PositionSide.SHORT, stop="52.00", target="48.00"))
    position = wait_closed(trading, SYM)
    exits = [o for o in trading.all_orders(SYM) if o.role == "flatten"]
    assert [(o.side, o.quantity, o.status) for o in exits] == [("buy", Decimal(100), "filled")]
    entry = next(o for o in trading.all_orders(SYM) if o.role == "entry")
    assert position.realized_pnl == (entry.filled_avg_price - exits[0].filled_avg_price) * 100
    assert broker_qty(trading) == 0 and broker_working(trading) == []

