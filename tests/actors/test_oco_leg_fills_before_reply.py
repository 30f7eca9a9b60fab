"""An OCO's stop leg whose events come before the OCO's submit answer names it (the answer slow or lost while the
price runs through the stop). Its client_order_id is one Alpaca made up, so the router cannot know it for ours until
a report names it: it must not call the daemon's own stop an order placed by hand (found this stop: a WARNING from
the router and from the position, even when the report naming the leg came in the same commit)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal

import pytest
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderClass, OrderSide, TimeInForce
from alpaca.trading.requests import LimitOrderRequest, MarketOrderRequest, StopLossRequest, TakeProfitRequest
from loguru import logger

from catalyst.broker.adapter import AlpacaBroker
from catalyst.router_settings import RouterSettings
from tests.actors.conftest import Trading
from tests.actors.test_trade_scenarios import legs, position_of

# The OCO's own `new` events (its take-profit's names the stop leg) are set aside while its submit is in flight
# (_park_routine); waiting this long for them, the leg is unnamed until the test lets the answer through.
ROUTINE_HELD = RouterSettings(routine_update_wait_s=30.0)


@pytest.fixture
def held_routine(exchange, tmp_path) -> Iterator[Trading]:
    harness = Trading(exchange, f"sqlite+aiosqlite:///{tmp_path / 'catalyst.db'}", router_settings=ROUTINE_HELD).start()
    yield harness
    harness.stop()


@contextmanager
def oco_answer_held(monkeypatch) -> Iterator[tuple[threading.Event, threading.Event]]:
    """The OCO is placed at the exchange; its answer reaches the protection worker only once `release` is set."""
    placed, release = threading.Event(), threading.Event()
    real_submit = AlpacaBroker.submit_order

    def submit_then_hold(self, order, *args, **kwargs):
        report = real_submit(self, order, *args, **kwargs)
        if order.order_class == "oco":
            placed.set()
            release.wait(30)
        return report

    monkeypatch.setattr(AlpacaBroker, "submit_order", submit_then_hold)
    try:
        yield placed, release
    finally:
        release.set()


@contextmanager
def lines_at(level: str) -> Iterator[list[tuple[str, str, str]]]:
    """(logger name, level, message) of every line at `level` or above."""
    lines: list[tuple[str, str, str]] = []
    sink = logger.add(lambda m: lines.append((m.record["name"], m.record["level"].name, m.record["message"])),
                      level=level)
    try:
        yield lines
    finally:
        logger.remove(sink)


def trader_holding_50_more(trading) -> TradingClient:
    """AAPL at 149.95, and a trader (the same key, by hand) who has bought 50 shares of it beside the daemon's."""
    by_hand = TradingClient(trading.key, "secret", paper=True, url_override=trading.exchange.base_url)
    trading.exchange.set_price("AAPL", "149.95")
    by_hand.submit_order(MarketOrderRequest(symbol="AAPL", qty=50, side=OrderSide.BUY, time_in_force=TimeInForce.DAY))
    return by_hand


def traders_oco_with_stop_at_148_50(by_hand: TradingClient):
    """The trader's own OCO on those 50: its stop (148.50) above the daemon's (147)."""
    return by_hand.submit_order(LimitOrderRequest(
        symbol="AAPL", qty=50, side=OrderSide.SELL, time_in_force=TimeInForce.DAY, order_class=OrderClass.OCO,
        take_profit=TakeProfitRequest(limit_price=160), stop_loss=StopLossRequest(stop_price=148.50)))


def test_our_stop_leg_filling_before_the_ocos_answer_is_applied_as_ours_not_said_placed_by_hand(held_routine,
                                                                                              monkeypatch):
    trading = held_routine
    trading.exchange.set_price("AAPL", "149.95")
    with oco_answer_held(monkeypatch) as (placed, release), lines_at("INFO") as lines:
        trading.open(trading.plan())
        trading.wait_for(placed.is_set, "the OCO placed at the exchange, its answer held")
        trading.trade("AAPL", "146.50")  # through the stop at 147 while the router has no id for the leg
        trading.wait_for(lambda: any("router update fill" in text or ("AAPL#o-3" in text and "→ filled" in text)
                                     for _, _, text in lines), "the stop leg's fill at the router")
        release.set()
        closed = trading.wait_for(lambda: (p := position_of(trading)) and p.status == "closed" and p,
                                  "the stop's fill recorded and the position closed", timeout=15)
    assert closed.realized_pnl == Decimal("-295.00")  # 100 bought at 149.95, sold at the stop's 147.00
    stop = next(o for o in legs(trading) if o.role == "stop_loss")
    broker_stop = next(o for o in trading.broker_view()["orders"] if o["type"] == "stop")
    assert stop.alpaca_order_id == broker_stop["id"] and stop.status == "filled"
    assert [f.qty for f in trading.writer.fills_for_order(stop.order_id).get()] == [Decimal("100")]
    assert broker_stop["status"] == "filled"
    assert not any(p["symbol"] == "AAPL" and Decimal(p["qty"]) for p in trading.broker_view()["positions"])
    said = [(name, level, text) for name, level, text in lines if name.startswith("actors.")]
    assert not [line for line in said if line[1] in ("WARNING", "ERROR")], said
    assert not [text for _, _, text in said if "placed by hand" in text or "unknown order" in text]


def test_an_oco_stop_placed_by_hand_is_said_so_once_our_own_leg_is_named(held_routine, monkeypatch):
    # A trader's own OCO on the same shares' symbol: its stop fills while our OCO's answer is held, so it could be our
    # leg and is said to be probably ours; once our answer names our leg (another order), it is said placed by hand.
    trading = held_routine
    by_hand = trader_holding_50_more(trading)
    with oco_answer_held(monkeypatch) as (placed, release), lines_at("INFO") as lines:
        trading.open(trading.plan())
        trading.wait_for(placed.is_set, "the OCO placed at the exchange, its answer held")
        hand_oco = traders_oco_with_stop_at_148_50(by_hand)
        trading.trade("AAPL", "148.00")  # through the trader's stop at 148.50, not ours at 147
        trading.wait_for(lambda: any("probably AAPL#o-3's" in text for _, _, text in lines),
                         "the trader's stop fill held as probably our leg's")
        # The position hears of it from the router a moment after the router's line (a fresh-clone CI once took the
        # snapshot between the two).
        trading.wait_for(lambda: any(n == "actors.position" and "probably our own AAPL#o-3" in text
                                     for n, _, text in lines), "the position told of it")
        before_release = list(lines)
        release.set()
        trading.wait_for(lambda: any("placed by hand" in text for _, _, text in lines),
                         "the trader's stop said placed by hand once our leg is named", timeout=15)
    hand_stop = next(o for o in trading.broker_view()["orders"] if o["type"] == "stop" and o["status"] == "filled")
    assert hand_stop["id"] != next(o for o in legs(trading) if o.role == "stop_loss").alpaca_order_id
    assert str(hand_oco.id) != hand_stop["id"]  # the stop is the OCO's leg, its id Alpaca's
    assert not [t for n, level, t in before_release if n.startswith("actors.") and "placed by hand" in t]
    assert any(n == "actors.position" and level == "INFO" and "probably our own AAPL#o-3 (an OCO leg not named yet, or its replacement), filled sell 50 AAPL" in t
               for n, level, t in before_release)
    position = position_of(trading)
    assert position.status == "open" and position.quantity == Decimal("100")  # ours untouched, its OCO working
    stop = next(o for o in legs(trading) if o.role == "stop_loss")
    assert stop.status in ("submitted", "accepted") and stop.alpaca_order_id
    after = [(n, level, t) for n, level, t in lines if (n, level, t) not in before_release]
    assert any(n == "actors.order_router" and level == "WARNING" and f"unknown order AAPL id={hand_stop['id']}" in t
               for n, level, t in after)
    assert any(n == "actors.position" and level == "WARNING" and "placed by hand" in t for n, level, t in after)


def test_a_stop_held_as_probably_ours_is_said_placed_by_hand_once_our_oco_is_rejected(held_routine, monkeypatch):
    # Our OCO's submit waits (a slow connection); meanwhile a trader's own OCO stop fills (probably ours, then), and the
    # price runs through our stop too, so the broker rejects our OCO: no leg of ours will ever be named, and the
    # trader's stop is said placed by hand.
    trading = held_routine
    by_hand = trader_holding_50_more(trading)
    about_to_send, release = threading.Event(), threading.Event()
    real_submit = AlpacaBroker.submit_order

    def hold_then_submit(self, order, *args, **kwargs):
        if order.order_class == "oco":
            about_to_send.set()
            release.wait(30)
        return real_submit(self, order, *args, **kwargs)

    monkeypatch.setattr(AlpacaBroker, "submit_order", hold_then_submit)
    with lines_at("INFO") as lines:
        trading.open(trading.plan())
        trading.wait_for(about_to_send.is_set, "our OCO about to be sent, held")
        traders_oco_with_stop_at_148_50(by_hand)
        trading.trade("AAPL", "146.90")  # through the trader's stop (148.50), and through ours (147) before it is sent
        trading.wait_for(lambda: any("probably AAPL#o-3's" in text for _, _, text in lines),
                         "the trader's stop fill held as probably our leg's")
        assert not [t for n, _, t in lines if n.startswith("actors.") and "placed by hand" in t]
        release.set()
        trading.wait_for(lambda: any(o.role == "stop_loss" and o.status == "rejected" for o in legs(trading)),
                         "our OCO rejected (its stop through the market)")
        trading.wait_for(lambda: any(n == "actors.position" and level == "WARNING" and "placed by hand" in t
                                     for n, level, t in lines), "the trader's stop said placed by hand", timeout=15)
    hand_stop = next(o for o in trading.broker_view()["orders"] if o["type"] == "stop" and o["status"] == "filled")
    assert any(n == "actors.order_router" and level == "WARNING" and f"unknown order AAPL id={hand_stop['id']}" in t
               for n, level, t in lines)
