"""OCO, bracket and OTO orders on the emulator through alpaca-py's real TradingClient."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from alpaca.common.exceptions import APIError
from alpaca.trading.enums import OrderClass, OrderSide, OrderStatus, OrderType, QueryOrderStatus, TimeInForce
from alpaca.trading.requests import (
    GetOrderByIdRequest, GetOrdersRequest, LimitOrderRequest, MarketOrderRequest, StopLossRequest,
    StopOrderRequest, TakeProfitRequest,
)


def oco_exit(qty: int, take_profit: float, stop: float) -> LimitOrderRequest:
    return LimitOrderRequest(symbol="AAPL", qty=qty, side=OrderSide.SELL, time_in_force=TimeInForce.GTC,
                             order_class=OrderClass.OCO, take_profit=TakeProfitRequest(limit_price=take_profit),
                             stop_loss=StopLossRequest(stop_price=stop))


def bracket_entry(qty: int, entry: float, take_profit: float, stop: float,
                  tif: TimeInForce = TimeInForce.DAY) -> LimitOrderRequest:
    return LimitOrderRequest(symbol="AAPL", qty=qty, side=OrderSide.BUY, limit_price=entry, time_in_force=tif,
                             order_class=OrderClass.BRACKET, take_profit=TakeProfitRequest(limit_price=take_profit),
                             stop_loss=StopLossRequest(stop_price=stop))


def buy_now(trading, qty: int) -> None:
    trading.submit_order(MarketOrderRequest(symbol="AAPL", qty=qty, side=OrderSide.BUY, time_in_force=TimeInForce.DAY))


def nested(trading, order_id):
    return trading.get_order_by_id(order_id, GetOrderByIdRequest(nested=True))


def test_oco_take_profit_is_the_parent_and_the_stop_its_leg(trading):
    buy_now(trading, 10)

    oco = trading.submit_order(oco_exit(10, 110, 95))

    assert (oco.order_class, oco.type, Decimal(str(oco.limit_price))) == (OrderClass.OCO, OrderType.LIMIT, 110)
    assert len(oco.legs) == 1
    assert (oco.legs[0].type, Decimal(str(oco.legs[0].stop_price))) == (OrderType.STOP, 95)


def test_oco_stop_fill_cancels_the_take_profit(exchange, trading):
    buy_now(trading, 10)
    oco = trading.submit_order(oco_exit(10, 110, 95))

    exchange.advance(timedelta(minutes=1))
    exchange.set_price("AAPL", "94")
    exchange.advance(timedelta(minutes=1))

    after = nested(trading, oco.id)
    assert after.status == OrderStatus.CANCELED
    assert after.legs[0].status == OrderStatus.FILLED
    assert trading.get_all_positions() == []


def test_oco_take_profit_fill_cancels_the_stop(exchange, trading):
    buy_now(trading, 10)
    oco = trading.submit_order(oco_exit(10, 110, 95))

    exchange.advance(timedelta(minutes=1))
    exchange.set_price("AAPL", "111")
    exchange.advance(timedelta(minutes=1))

    after = nested(trading, oco.id)
    assert (after.status, after.legs[0].status) == (OrderStatus.FILLED, OrderStatus.CANCELED)


def test_oco_that_is_not_a_limit_order_is_refused(trading):
    buy_now(trading, 10)
    request = StopOrderRequest(symbol="AAPL", qty=10, side=OrderSide.SELL, stop_price=95,
                               time_in_force=TimeInForce.GTC, order_class=OrderClass.OCO,
                               take_profit=TakeProfitRequest(limit_price=110), stop_loss=StopLossRequest(stop_price=95))

    with pytest.raises(APIError) as error:
        trading.submit_order(request)

    assert (error.value.status_code, error.value.code) == (422, 42210000)


@pytest.mark.parametrize(("take_profit", "stop"), [
    (110, 100.00),  # the market's 100: a stop already at (or through) it
    (110, 99.995),  # less than a cent below it
    (99, 98.995),  # a take-profit below the market is the base then
])
def test_an_oco_whose_stop_is_not_a_cent_clear_of_its_base_price_is_refused_as_alpaca_does(trading, take_profit, stop):
    # Alpaca: "The stop price input has to be at least $0.01 below (for stop-loss sell) the base price": the
    # take-profit's limit for an OCO, and also the current market price.
    buy_now(trading, 10)

    with pytest.raises(APIError) as error:
        trading.submit_order(oco_exit(10, take_profit, stop))

    assert (error.value.status_code, error.value.code) == (422, 42210000)
    assert error.value.message == "stop_loss.stop_price must be <= base_price - 0.01"
    assert trading.submit_order(oco_exit(10, 110, 99.99)).status is not None  # a cent clear: taken


def test_oco_for_more_shares_than_held_is_refused(trading):
    buy_now(trading, 5)

    with pytest.raises(APIError) as error:
        trading.submit_order(oco_exit(10, 110, 95))

    assert (error.value.status_code, error.value.code) == (403, 40310000)


def test_bracket_legs_are_held_until_the_entry_fills_then_activate(exchange, trading):
    bracket = trading.submit_order(bracket_entry(10, 99, 110, 95))
    before = nested(trading, bracket.id)
    exchange.set_price("AAPL", "94")  # would trigger the stop, but the entry has not filled: legs inactive
    exchange.advance(timedelta(minutes=1))
    after_entry = nested(trading, bracket.id)

    assert [leg.status for leg in before.legs] == [OrderStatus.HELD, OrderStatus.HELD]
    assert after_entry.status == OrderStatus.FILLED  # the 94 bar traded through the 99 entry
    take_profit, stop = after_entry.legs
    assert (take_profit.type, take_profit.status) == (OrderType.LIMIT, OrderStatus.NEW)
    assert (stop.type, stop.status) == (OrderType.STOP, OrderStatus.HELD)

    exchange.set_price("AAPL", "94.5")
    exchange.advance(timedelta(minutes=1))

    done = nested(trading, bracket.id)
    assert [leg.status for leg in done.legs] == [OrderStatus.CANCELED, OrderStatus.FILLED]
    assert trading.get_all_positions() == []


def test_partial_take_profit_fill_shrinks_the_stop_to_the_rest(exchange, trading):
    trading.submit_order(bracket_entry(40, 101, 110, 95))  # marketable: fills on submit at 100
    exchange.advance(timedelta(minutes=1))

    exchange.set_price("AAPL", "111", volume=40)  # 10 shares of liquidity for the take-profit
    exchange.advance(timedelta(minutes=1))

    parent = trading.get_orders(GetOrdersRequest(status=QueryOrderStatus.ALL, nested=True))[0]
    take_profit, stop = parent.legs
    assert (take_profit.status, Decimal(str(take_profit.filled_qty))) == (OrderStatus.PARTIALLY_FILLED, 10)
    assert Decimal(str(stop.qty)) == 30
    assert trading.get_open_position("AAPL").qty == "30"


def test_bracket_with_ioc_is_an_invalid_combination(trading):
    with pytest.raises(APIError) as error:
        trading.submit_order(bracket_entry(10, 99, 110, 95, TimeInForce.IOC))

    assert (error.value.status_code, error.value.code) == (422, 42210000)


def test_oto_exit_activates_when_the_entry_fills(exchange, trading):
    oto = trading.submit_order(MarketOrderRequest(symbol="AAPL", qty=5, side=OrderSide.BUY,
                                                  time_in_force=TimeInForce.DAY, order_class=OrderClass.OTO,
                                                  stop_loss=StopLossRequest(stop_price=95)))

    exit_leg = nested(trading, oto.id).legs[0]
    assert (exit_leg.side, exit_leg.status) == (OrderSide.SELL, OrderStatus.NEW)
    with pytest.raises(APIError) as error:
        trading.replace_order_by_id(exit_leg.id)
    assert error.value.status_code == 422
