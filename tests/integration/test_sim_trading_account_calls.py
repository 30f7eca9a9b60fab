"""Positions, clock, calendar, assets, fill activities and the /sim/v1 control routes of the emulator."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal

import requests
from alpaca.trading.enums import OrderSide, OrderStatus, TimeInForce
from alpaca.trading.requests import ClosePositionRequest, GetCalendarRequest, LimitOrderRequest, MarketOrderRequest

from catalyst.sim.market import EXCHANGE_TZ


def buy(symbol: str, qty: int) -> MarketOrderRequest:
    return MarketOrderRequest(symbol=symbol, qty=qty, side=OrderSide.BUY, time_in_force=TimeInForce.DAY)


def test_position_values_follow_the_market(exchange, trading):
    trading.submit_order(buy("AAPL", 10))

    exchange.set_price("AAPL", "104")
    position = trading.get_open_position("AAPL")
    account = trading.get_account()

    assert (position.market_value, position.cost_basis, position.unrealized_pl) == ("1040", "1000", "40")
    assert position.current_price == "104"
    assert Decimal(account.long_market_value) == 1040 and Decimal(account.equity) == Decimal("100040")


def test_qty_available_leaves_out_the_shares_open_orders_would_close(exchange, trading):
    # As Alpaca's: "qty_available: total number of shares available minus open orders". The daemon protects no more
    # than this when its OCO is refused for want of shares (a hand limit sell still working holds some).
    trading.submit_order(buy("AAPL", 100))
    assert trading.get_open_position("AAPL").qty_available == "100"
    trading.submit_order(LimitOrderRequest(symbol="AAPL", qty=40, side=OrderSide.SELL, limit_price=500,
                                           time_in_force=TimeInForce.DAY))
    assert (trading.get_open_position("AAPL").qty, trading.get_open_position("AAPL").qty_available) == ("100", "60")
    assert [p.qty_available for p in trading.get_all_positions()] == ["60"]

    trading.submit_order(MarketOrderRequest(symbol="MSFT", qty=50, side=OrderSide.SELL, time_in_force=TimeInForce.DAY))
    trading.submit_order(LimitOrderRequest(symbol="MSFT", qty=20, side=OrderSide.BUY, limit_price=1,
                                           time_in_force=TimeInForce.DAY))
    assert (trading.get_open_position("MSFT").qty, trading.get_open_position("MSFT").qty_available) == ("-50", "-30")


def test_close_position_by_qty_and_by_percentage_answers_orders(trading):
    trading.submit_order(buy("AAPL", 10))

    by_qty = trading.close_position("AAPL", ClosePositionRequest(qty="4"))
    by_percentage = trading.close_position("AAPL", ClosePositionRequest(percentage="50"))

    assert (by_qty.side, by_qty.status, Decimal(str(by_qty.qty))) == (OrderSide.SELL, OrderStatus.ACCEPTED, 4)
    assert trading.get_order_by_id(by_qty.id).status == OrderStatus.FILLED  # the answer is the order as accepted
    assert Decimal(str(by_percentage.qty)) == 3
    assert trading.get_open_position("AAPL").qty == "3"


def test_close_all_positions_cancels_orders_first(trading):
    trading.submit_order(buy("AAPL", 10))
    trading.submit_order(MarketOrderRequest(symbol="TSLA", qty=5, side=OrderSide.SELL, time_in_force=TimeInForce.DAY))
    resting = trading.submit_order(LimitOrderRequest(symbol="AAPL", qty=10, side=OrderSide.SELL, limit_price=120,
                                                     time_in_force=TimeInForce.GTC))

    results = trading.close_all_positions(cancel_orders=True)

    assert {r.symbol for r in results} == {"AAPL", "TSLA"} and {r.status for r in results} == {200}
    assert trading.get_order_by_id(resting.id).status == OrderStatus.CANCELED
    assert trading.get_all_positions() == []


def test_clock_tells_the_truth_about_the_virtual_time(exchange, trading):
    during = trading.get_clock()
    exchange.jump_to(datetime(2024, 3, 8, 17, 0, tzinfo=EXCHANGE_TZ))  # Friday evening
    weekend = trading.get_clock()

    assert during.is_open and during.timestamp == datetime(2024, 3, 4, 9, 35, tzinfo=EXCHANGE_TZ)
    assert during.next_close == datetime(2024, 3, 4, 16, 0, tzinfo=EXCHANGE_TZ)
    assert not weekend.is_open
    assert weekend.next_open == datetime(2024, 3, 11, 9, 30, tzinfo=EXCHANGE_TZ)


def test_calendar_lists_sessions_with_hour_minute_times(trading):
    days = trading.get_calendar(GetCalendarRequest(start=date(2024, 3, 1), end=date(2024, 3, 5)))

    assert [d.date for d in days] == [date(2024, 3, 1), date(2024, 3, 4), date(2024, 3, 5)]
    assert (days[0].open.hour, days[0].open.minute, days[0].close.hour) == (9, 30, 16)


def test_calendar_gives_an_early_close_as_alpaca_does(trading):
    days = trading.get_calendar(GetCalendarRequest(start=date(2026, 12, 23), end=date(2026, 12, 28)))

    assert [(d.date, d.close.hour, d.close.minute) for d in days] == [
        (date(2026, 12, 23), 16, 0), (date(2026, 12, 24), 13, 0), (date(2026, 12, 28), 16, 0)]


def test_assets_list_and_lookup(trading):
    assets = trading.get_all_assets()
    one = trading.get_asset("MSFT")

    assert {a.symbol for a in assets} == {"AAPL", "MSFT", "TSLA"}
    assert (one.symbol, one.tradable, one.shortable, one.exchange) == ("MSFT", True, True, "NASDAQ")


def test_fill_activities_recover_fills_with_paging_and_time_filters(exchange, trading):
    exchange.set_price("AAPL", "100", volume=40)  # 10 shares a minute
    order = trading.submit_order(buy("AAPL", 25))
    for _ in range(2):
        exchange.advance(timedelta(minutes=1))
        exchange.set_price("AAPL", "100", volume=40)
    exchange.advance(timedelta(minutes=1))

    everything = trading.get("/account/activities/FILL", {"direction": "asc"})
    first_page = trading.get("/account/activities/FILL", {"direction": "asc", "page_size": 2})
    second_page = trading.get("/account/activities/FILL", {"direction": "asc", "page_size": 2,
                                                           "page_token": first_page[-1]["id"]})
    later = trading.get("/account/activities/FILL", {"after": everything[0]["transaction_time"]})

    assert [a["qty"] for a in everything] == ["10", "10", "5"]
    assert [a["type"] for a in everything] == ["partial_fill", "partial_fill", "fill"]
    assert everything[-1]["order_status"] == "filled" and everything[-1]["cum_qty"] == "25"
    assert {a["order_id"] for a in everything} == {str(order.id)}
    assert [a["id"] for a in first_page + second_page] == [a["id"] for a in everything]
    assert len(later) == 2


def test_control_routes_expose_clock_faults_and_snapshot(exchange, trading):
    trading.submit_order(buy("AAPL", 3))
    base = f"{exchange.base_url}/sim/v1"

    clock = requests.get(f"{base}/clock", timeout=5).json()
    advanced = requests.post(f"{base}/clock/advance", json={"seconds": 90}, timeout=5).json()
    bad_faults = requests.put(f"{base}/faults", json={"spec": "drop=2"}, timeout=5)
    faults = requests.put(f"{base}/faults", json={"spec": "drop=0.5"}, timeout=5).json()
    snapshot = requests.get(f"{base}/accounts/PKTESTKEY/snapshot", timeout=5).json()

    assert clock["speed"] == 0 and datetime.fromisoformat(clock["timestamp"]).minute == 35
    assert datetime.fromisoformat(advanced["timestamp"]) == datetime(2024, 3, 4, 9, 36, 30, tzinfo=EXCHANGE_TZ)
    assert bad_faults.status_code == 400 and "drop=2" in bad_faults.json()["message"]
    assert faults["rates"] == {"drop": 0.5}
    assert snapshot["cash"] == "99700" and [p["qty"] for p in snapshot["positions"]] == ["3"]
    assert len(snapshot["orders"]) == 1 and len(snapshot["fills"]) == 1
    assert exchange.account_snapshot("PKTESTKEY") == snapshot
