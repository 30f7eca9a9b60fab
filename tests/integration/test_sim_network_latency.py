"""The emulator's `latency_ms`: a broker across a network. Every request, reply and stream frame is that much late.

Only lower bounds are asserted (a sleep guarantees them); how fast the loopback is without it is not a test's
business on a shared machine.
"""

from __future__ import annotations

import time

import pytest
from alpaca.trading.enums import OrderSide, TimeInForce
from alpaca.trading.requests import MarketOrderRequest
from pydantic import ValidationError

from catalyst.sim.server import ExchangeConfig

ONE_WAY_MS = 60
ONE_WAY_S = ONE_WAY_MS / 1000


@pytest.fixture
def exchange(exchange_factory):
    return exchange_factory(latency_ms=ONE_WAY_MS)


def buy(symbol: str, qty: int) -> MarketOrderRequest:
    return MarketOrderRequest(symbol=symbol, qty=qty, side=OrderSide.BUY, time_in_force=TimeInForce.DAY)


def test_a_rest_round_trip_pays_the_way_there_and_the_way_back(trading):
    sent = time.perf_counter()
    trading.get_account()
    took = time.perf_counter() - sent

    assert took >= 2 * ONE_WAY_S


def test_an_orders_events_arrive_a_round_trip_after_it_was_sent_and_in_the_order_sent(trading, stream_recorder):
    recorder = stream_recorder()

    sent = time.perf_counter()
    orders = [trading.submit_order(buy(symbol, 1)) for symbol in ("AAPL", "MSFT", "AAPL")]
    recorder.wait_for("fill", orders[-1].id)

    assert min(recorder.arrived) >= sent + 2 * ONE_WAY_S  # out over the network, the events back over it
    ids = [str(order.id) for order in orders]
    seen = [(str(u.order.id), u.event) for u in recorder.updates]
    assert seen == [(order_id, event) for order_id in ids for event in ("new", "fill")]


@pytest.mark.parametrize("latency_ms", [-1, float("nan"), 10_001])
def test_a_latency_out_of_range_is_refused_naming_it(latency_ms):
    with pytest.raises(ValidationError, match="latency_ms"):
        ExchangeConfig(latency_ms=latency_ms)
