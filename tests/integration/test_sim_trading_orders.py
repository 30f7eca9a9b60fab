"""Order lifecycles on the emulator through alpaca-py's real TradingClient."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from alpaca.common.exceptions import APIError
from alpaca.trading.enums import OrderSide, OrderStatus, QueryOrderStatus, TimeInForce
from alpaca.trading.requests import (
    GetOrderByIdRequest, GetOrdersRequest, LimitOrderRequest, MarketOrderRequest, ReplaceOrderRequest,
    StopLimitOrderRequest, StopOrderRequest,
)

from catalyst.sim.market import EXCHANGE_TZ


def market(symbol: str, qty: int, side: OrderSide, **extra: object) -> MarketOrderRequest:
    return MarketOrderRequest(symbol=symbol, qty=qty, side=side, time_in_force=TimeInForce.DAY, **extra)


def limit(symbol: str, qty: int, side: OrderSide, price: float, tif: TimeInForce = TimeInForce.DAY,
          **extra: object) -> LimitOrderRequest:
    return LimitOrderRequest(symbol=symbol, qty=qty, side=side, limit_price=price, time_in_force=tif, **extra)


def test_account_reports_money_as_strings_and_active_status(trading):
    account = trading.get_account()

    assert account.status == "ACTIVE"
    assert Decimal(account.cash) == Decimal(account.buying_power) == Decimal("100000")
    assert Decimal(account.equity) == Decimal(account.portfolio_value) == Decimal("100000")
    assert account.long_market_value == "0"


def test_market_order_fills_on_submit_at_the_last_trade(trading):
    answer = trading.submit_order(market("AAPL", 10, OrderSide.BUY, client_order_id="buy-1"))
    order = trading.get_order_by_id(answer.id)

    # Alpaca's answer is the order as accepted (its OpenAPI examples: `accepted`, filled_qty "0"); the fill is
    # reported by the stream and by REST afterwards.
    assert (answer.status, Decimal(str(answer.filled_qty)), answer.filled_avg_price) == (OrderStatus.ACCEPTED, 0, None)
    assert order.status == OrderStatus.FILLED
    assert Decimal(str(order.filled_qty)) == 10 and Decimal(str(order.filled_avg_price)) == 100
    position = trading.get_open_position("AAPL")
    assert position.qty == "10" and position.avg_entry_price == "100" and position.exchange == "NASDAQ"
    assert Decimal(trading.get_account().cash) == Decimal("99000")


def test_limit_order_partially_fills_against_bar_volume_then_fills(exchange, trading):
    order = trading.submit_order(limit("AAPL", 50, OrderSide.BUY, 99))
    assert order.status == OrderStatus.ACCEPTED
    assert trading.get_order_by_id(order.id).status == OrderStatus.NEW  # routed, resting below the market

    exchange.set_price("AAPL", "98", volume=100)  # participation 0.25 -> 25 shares this minute
    exchange.advance(timedelta(minutes=1))
    first = trading.get_order_by_id(order.id)
    exchange.set_price("AAPL", "98.5", volume=100)
    exchange.advance(timedelta(minutes=1))
    second = trading.get_order_by_id(order.id)

    assert (first.status, Decimal(str(first.filled_qty))) == (OrderStatus.PARTIALLY_FILLED, 25)
    assert (second.status, Decimal(str(second.filled_qty))) == (OrderStatus.FILLED, 50)
    # 25 at the limit, then 25 at 98.5: the second bar opened below the limit, a better price
    assert Decimal(str(second.filled_avg_price)) == Decimal("98.75")


def test_limit_order_does_not_fill_when_the_bar_only_touches_it(exchange, trading):
    order = trading.submit_order(limit("AAPL", 10, OrderSide.BUY, 99))

    exchange.set_price("AAPL", "99")
    exchange.advance(timedelta(minutes=1))

    assert trading.get_order_by_id(order.id).status == OrderStatus.NEW


def test_stop_order_triggers_when_the_bar_touches_the_stop(exchange, trading):
    trading.submit_order(market("AAPL", 10, OrderSide.BUY))
    stop = trading.submit_order(StopOrderRequest(symbol="AAPL", qty=10, side=OrderSide.SELL, stop_price=97,
                                                 time_in_force=TimeInForce.GTC))
    exchange.advance(timedelta(minutes=1))
    exchange.set_price("AAPL", "96.5")
    exchange.advance(timedelta(minutes=1))

    filled = trading.get_order_by_id(stop.id)
    assert filled.status == OrderStatus.FILLED
    assert Decimal(str(filled.filled_avg_price)) == Decimal("96.5")  # the bar opened below the stop


def test_stop_limit_rests_as_a_limit_after_triggering(exchange, trading):
    trading.submit_order(market("AAPL", 10, OrderSide.BUY))
    order = trading.submit_order(StopLimitOrderRequest(symbol="AAPL", qty=10, side=OrderSide.SELL, stop_price=97,
                                                       limit_price=96, time_in_force=TimeInForce.GTC))
    exchange.advance(timedelta(minutes=1))
    exchange.set_price("AAPL", "95")  # gaps below the limit: triggered, not fillable
    exchange.advance(timedelta(minutes=1))
    resting = trading.get_order_by_id(order.id)
    exchange.set_price("AAPL", "96.5")
    exchange.advance(timedelta(minutes=1))

    assert resting.status == OrderStatus.NEW
    assert trading.get_order_by_id(order.id).status == OrderStatus.FILLED


def test_ioc_fills_what_it_can_and_cancels_the_rest(exchange, trading):
    exchange.set_price("MSFT", "200", volume=40)  # 10 shares of liquidity

    answer = trading.submit_order(MarketOrderRequest(symbol="MSFT", qty=30, side=OrderSide.BUY,
                                                     time_in_force=TimeInForce.IOC))
    order = trading.get_order_by_id(answer.id)

    assert order.status == OrderStatus.CANCELED
    assert Decimal(str(order.filled_qty)) == 10


def test_fok_fills_nothing_when_it_cannot_fill_everything(exchange, trading):
    exchange.set_price("MSFT", "200", volume=40)

    order = trading.get_order_by_id(trading.submit_order(MarketOrderRequest(
        symbol="MSFT", qty=30, side=OrderSide.BUY, time_in_force=TimeInForce.FOK)).id)
    full = trading.get_order_by_id(trading.submit_order(MarketOrderRequest(
        symbol="MSFT", qty=5, side=OrderSide.BUY, time_in_force=TimeInForce.FOK)).id)

    assert (order.status, Decimal(str(order.filled_qty))) == (OrderStatus.CANCELED, 0)
    assert (full.status, Decimal(str(full.filled_qty))) == (OrderStatus.FILLED, 5)


def test_day_order_expires_at_the_close_and_gtc_survives(exchange, trading):
    day = trading.submit_order(limit("AAPL", 10, OrderSide.BUY, 90))
    gtc = trading.submit_order(limit("AAPL", 10, OrderSide.BUY, 90, TimeInForce.GTC))

    exchange.jump_to(datetime(2024, 3, 4, 16, 0, 30, tzinfo=EXCHANGE_TZ))

    expired = trading.get_order_by_id(day.id)
    assert expired.status == OrderStatus.EXPIRED and expired.expired_at is not None
    assert trading.get_order_by_id(gtc.id).status == OrderStatus.NEW


def test_market_order_after_hours_is_queued_and_fills_at_the_open(exchange, trading):
    exchange.jump_to(datetime(2024, 3, 4, 18, 0, tzinfo=EXCHANGE_TZ))
    order = trading.submit_order(market("AAPL", 5, OrderSide.BUY))
    assert order.status == OrderStatus.ACCEPTED

    exchange.jump_to(datetime(2024, 3, 5, 9, 30, tzinfo=EXCHANGE_TZ))
    exchange.set_price("AAPL", "101")
    exchange.advance(timedelta(minutes=1))

    filled = trading.get_order_by_id(order.id)
    assert filled.status == OrderStatus.FILLED and Decimal(str(filled.filled_avg_price)) == 101


def test_selling_without_a_position_opens_a_short(trading):
    order = trading.get_order_by_id(trading.submit_order(market("TSLA", 20, OrderSide.SELL)).id)

    position = trading.get_open_position("TSLA")
    account = trading.get_account()
    assert order.status == OrderStatus.FILLED
    assert (position.side, position.qty) == ("short", "-20")
    assert Decimal(account.short_market_value) == Decimal("-1000")
    # no leverage: the short ties up its whole market value
    assert Decimal(account.buying_power) == Decimal("99000")


def test_replace_creates_a_new_order_and_marks_the_old_replaced(trading):
    old = trading.submit_order(limit("AAPL", 10, OrderSide.BUY, 95, client_order_id="orig"))

    new = trading.replace_order_by_id(old.id, ReplaceOrderRequest(qty=12, limit_price=96, client_order_id="orig-2"))

    replaced = trading.get_order_by_id(old.id)
    assert new.id != old.id and new.replaces == old.id and new.client_order_id == "orig-2"
    assert (Decimal(str(new.qty)), Decimal(str(new.limit_price))) == (12, 96)
    assert replaced.status == OrderStatus.REPLACED and replaced.replaced_by == new.id


def test_cancel_one_and_cancel_all(trading):
    first = trading.submit_order(limit("AAPL", 1, OrderSide.BUY, 90))
    second = trading.submit_order(limit("MSFT", 1, OrderSide.BUY, 190))
    third = trading.submit_order(limit("TSLA", 1, OrderSide.BUY, 40))

    trading.cancel_order_by_id(first.id)
    responses = trading.cancel_orders()

    assert trading.get_order_by_id(first.id).status == OrderStatus.CANCELED
    assert {r.id for r in responses} == {second.id, third.id} and {r.status for r in responses} == {200}
    assert trading.get_orders() == []
    with pytest.raises(APIError) as error:
        trading.cancel_order_by_id(first.id)
    assert error.value.status_code == 422


def test_orders_list_filters_by_status_time_side_symbols_and_direction(exchange, trading):
    early = trading.submit_order(limit("AAPL", 1, OrderSide.BUY, 90))
    exchange.advance(timedelta(seconds=10))
    middle = trading.submit_order(market("MSFT", 1, OrderSide.BUY))
    exchange.advance(timedelta(seconds=10))
    late = trading.submit_order(limit("TSLA", 1, OrderSide.SELL, 60))

    open_ids = [o.id for o in trading.get_orders(GetOrdersRequest(status=QueryOrderStatus.OPEN))]
    closed_ids = [o.id for o in trading.get_orders(GetOrdersRequest(status=QueryOrderStatus.CLOSED))]
    ascending = [o.id for o in trading.get_orders(GetOrdersRequest(status=QueryOrderStatus.ALL, direction="asc"))]
    window = trading.get_orders(GetOrdersRequest(status=QueryOrderStatus.ALL, after=early.submitted_at,
                                                 until=late.submitted_at))
    by_symbol = trading.get_orders(GetOrdersRequest(status=QueryOrderStatus.ALL, symbols=["AAPL", "TSLA"]))
    sells = trading.get_orders(GetOrdersRequest(status=QueryOrderStatus.ALL, side=OrderSide.SELL))
    limited = trading.get_orders(GetOrdersRequest(status=QueryOrderStatus.ALL, limit=1))

    assert open_ids == [late.id, early.id] and closed_ids == [middle.id]
    assert ascending == [early.id, middle.id, late.id]
    assert [o.id for o in window] == [middle.id]  # after and until are exclusive
    assert {o.id for o in by_symbol} == {early.id, late.id}
    assert [o.id for o in sells] == [late.id] and [o.id for o in limited] == [late.id]


def test_order_is_found_by_id_and_by_client_order_id(trading):
    order = trading.submit_order(limit("AAPL", 3, OrderSide.BUY, 90, client_order_id="entry-42"))

    assert trading.get_order_by_client_id("entry-42").id == order.id
    assert trading.get_order_by_id(order.id, GetOrderByIdRequest(nested=True)).client_order_id == "entry-42"


def test_extended_hours_limit_fills_pre_market_and_a_regular_one_waits(exchange, trading):
    exchange.jump_to(datetime(2024, 3, 5, 8, 0, tzinfo=EXCHANGE_TZ))
    extended = trading.submit_order(limit("AAPL", 5, OrderSide.BUY, 99, extended_hours=True))
    regular = trading.submit_order(limit("AAPL", 5, OrderSide.BUY, 99))

    exchange.set_price("AAPL", "98")
    exchange.advance(timedelta(minutes=1))

    assert trading.get_order_by_id(extended.id).status == OrderStatus.FILLED
    assert trading.get_order_by_id(regular.id).status == OrderStatus.ACCEPTED


def test_extended_hours_market_order_is_an_invalid_combination(trading):
    with pytest.raises(APIError) as error:
        trading.submit_order(market("AAPL", 1, OrderSide.BUY, extended_hours=True))

    assert (error.value.status_code, error.value.code) == (422, 42210000)


def test_positions_can_be_made_to_lag_the_orders_as_alpacas_do(exchange_factory, poll):
    # ALPACA.md §7: the orders and positions endpoints can disagree for several seconds right after a fill. The
    # emulator's positions_lag_s lets tests meet that (a review found the daemon never had).
    from alpaca.trading.client import TradingClient

    exchange = exchange_factory(positions_lag_s=0.5)
    client = TradingClient("PKLAG", "secret", paper=True, url_override=exchange.base_url)
    order = client.submit_order(market("AAPL", 10, OrderSide.BUY))

    assert client.get_order_by_id(order.id).status == OrderStatus.FILLED
    assert client.get_all_positions() == []  # not yet: the list answers as of half a second ago
    with pytest.raises(APIError):
        client.get_open_position("AAPL")
    shown = poll(lambda: client.get_all_positions(), "the position to show", timeout=5)
    assert [(p.symbol, p.qty) for p in shown] == [("AAPL", "10")]
