"""The emulator's trade_updates stream: alpaca-py's TradingStream and a raw websocket against it."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal

import pytest
from alpaca.common.exceptions import APIError
from alpaca.trading.enums import OrderSide, OrderStatus, TimeInForce
from alpaca.trading.requests import LimitOrderRequest, MarketOrderRequest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

KEY, SECRET = "PKTESTKEY", "test-secret"


def buy(qty: int) -> MarketOrderRequest:
    return MarketOrderRequest(symbol="AAPL", qty=qty, side=OrderSide.BUY, time_in_force=TimeInForce.DAY)


def login(socket, key: str = KEY, secret: str = SECRET) -> dict:
    socket.send(json.dumps({"action": "authenticate", "data": {"key_id": key, "secret_key": secret}}))
    return json.loads(socket.recv(timeout=5))


def test_login_answers_exactly_one_authorization_then_listening(exchange):
    with connect(exchange.stream_url, open_timeout=5) as socket:
        reply = login(socket)
        socket.send(json.dumps({"action": "listen", "data": {"streams": ["trade_updates"]}}))
        listening = json.loads(socket.recv(timeout=5))

    assert reply == {"stream": "authorization", "data": {"status": "authorized", "action": "authenticate"}}
    assert listening == {"stream": "listening", "data": {"streams": ["trade_updates"]}}


def test_bad_keys_are_unauthorized_on_the_stream(exchange_factory):
    exchange = exchange_factory(keys={"PKGOOD": "right"})

    with connect(exchange.stream_url, open_timeout=5) as socket:
        reply = login(socket, "PKGOOD", "wrong")

    assert reply["stream"] == "authorization" and reply["data"]["status"] == "unauthorized"


def test_a_second_connection_for_the_same_key_is_refused(exchange, stream_recorder):
    stream_recorder()

    with connect(exchange.stream_url, open_timeout=5) as socket:
        reply = login(socket)

    assert reply["data"]["status"] == "unauthorized"
    assert reply["data"]["message"] == "connection limit exceeded"
    assert exchange.stream_connected(KEY)  # the first connection is untouched


def test_fill_event_carries_execution_price_qty_and_position_qty(trading, stream_recorder):
    recorder = stream_recorder()

    order = trading.submit_order(buy(10))

    fill = recorder.wait_for("fill", order.id)
    assert recorder.events(order.id) == ["new", "fill"]
    assert fill.execution_id is not None and fill.timestamp is not None
    assert (fill.price, fill.qty, fill.position_qty) == (100.0, 10.0, 10.0)
    assert Decimal(str(fill.order.filled_qty)) == 10


def test_partial_fill_events_report_this_execution_not_the_total(exchange, trading, stream_recorder):
    recorder = stream_recorder()
    exchange.set_price("AAPL", "100", volume=40)  # 10 shares a minute

    order = trading.submit_order(buy(15))
    exchange.advance(timedelta(minutes=1))
    exchange.set_price("AAPL", "101", volume=40)
    exchange.advance(timedelta(minutes=1))

    recorder.wait_for("fill", order.id)
    executions = [u for u in recorder.updates if u.event in ("partial_fill", "fill")]
    assert [(u.event, u.qty, u.position_qty) for u in executions] == [("partial_fill", 10.0, 10.0),
                                                                      ("fill", 5.0, 15.0)]
    assert Decimal(str(executions[-1].order.filled_qty)) == 15
    assert len({u.execution_id for u in executions}) == 2


def test_cancel_and_expiry_are_pushed(exchange, trading, stream_recorder):
    recorder = stream_recorder()
    canceled = trading.submit_order(LimitOrderRequest(symbol="AAPL", qty=1, side=OrderSide.BUY, limit_price=90,
                                                      time_in_force=TimeInForce.DAY))
    expiring = trading.submit_order(LimitOrderRequest(symbol="AAPL", qty=1, side=OrderSide.BUY, limit_price=90,
                                                      time_in_force=TimeInForce.DAY))

    trading.cancel_order_by_id(canceled.id)
    exchange.jump_to(exchange.clock.now().replace(hour=16, minute=1))

    recorder.wait_for("canceled", canceled.id)
    recorder.wait_for("expired", expiring.id)


def test_events_missed_while_disconnected_are_not_replayed(exchange, trading, stream_recorder, poll):
    recorder = stream_recorder()

    exchange.drop_stream_connections()
    poll(lambda: not exchange.stream_connected(KEY), "the stream to drop")
    missed = trading.submit_order(buy(1))
    poll(lambda: exchange.stream_connected(KEY), "alpaca-py to reconnect by itself")
    seen = trading.submit_order(buy(1))

    recorder.wait_for("fill", seen.id)
    assert recorder.events(missed.id) == []


def test_stream_faults_duplicate_and_drop_events(exchange, trading, stream_recorder):
    recorder = stream_recorder()
    exchange.set_faults("duplicate=1")
    doubled = trading.submit_order(buy(1))
    recorder.wait_for("fill", doubled.id)
    exchange.set_faults("drop=1")
    dropped = trading.submit_order(buy(1))
    exchange.set_faults("")
    marker = trading.submit_order(buy(1))

    recorder.wait_for("fill", marker.id)
    assert recorder.events(doubled.id) == ["new", "new", "fill", "fill"]
    assert recorder.events(dropped.id) == []


def test_an_outage_refuses_rest_and_the_stream_while_orders_keep_working(exchange, trading, stream_recorder, poll):
    # `down=1` (chaos's `--outage`): Alpaca's API unreachable, its matching not. An order working before fills meanwhile;
    # its event is not delivered (the connection it was for is closed), and the client finds the fill over REST once back.
    recorder = stream_recorder()
    resting = trading.submit_order(LimitOrderRequest(symbol="AAPL", qty=5, side=OrderSide.BUY, limit_price=99,
                                                     time_in_force=TimeInForce.DAY))
    recorder.wait_for("new", resting.id)
    exchange.set_faults("down=1")

    with pytest.raises(APIError) as refused:
        trading.get_order_by_id(resting.id)
    with pytest.raises(InvalidStatus) as upgrade:
        connect(exchange.stream_url, open_timeout=5)
    exchange.set_price("AAPL", "98")
    exchange.advance(timedelta(minutes=1))
    poll(lambda: not exchange.stream_connected(KEY), "the fill's event to close the stream")
    exchange.set_faults("")

    assert refused.value.status_code == 503 and upgrade.value.response.status_code == 503
    assert trading.get_order_by_id(resting.id).status == OrderStatus.FILLED
    poll(lambda: exchange.stream_connected(KEY), "alpaca-py to reconnect by itself once the broker is back")
    assert recorder.events(resting.id) == ["new"]
