"""The market-data feed against the account's plan: Alpaca's free plan refuses recent SIP data (403, "subscription
does not permit querying recent SIP data"), which would abandon every scan of a first paper run.

The emulator's `data_plan = "basic"` answers as that plan does (a request naming no feed taken as SIP, the stricter
reading of Alpaca's docs); alpaca-py against it, as in production.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Callable

import pytest
from loguru import logger

from catalyst.broker.adapter import AlpacaBroker
from catalyst.broker.errors import AuthError
from catalyst.broker.marketdata import BarTimeframe
from catalyst.broker.ratelimit import RateLimiter
from catalyst.sim.server import EmbeddedExchange
from tests.integration.conftest import SIM_START

KEY, SECRET = "PKTESTKEY", "test-secret"


def broker_for(exchange: EmbeddedExchange, data_feed: str) -> AlpacaBroker:
    return AlpacaBroker(KEY, SECRET, exchange.base_url, stream_url=exchange.stream_url, timeout_s=5,
                        limiter=RateLimiter(0), retry_wait_initial_s=0.01, retry_wait_max_s=0.05, data_feed=data_feed)


@pytest.fixture
def free_plan(exchange_factory: Callable[..., EmbeddedExchange]) -> EmbeddedExchange:
    exchange = exchange_factory(data_plan="basic")
    exchange.advance(timedelta(minutes=20))  # minute bars to read
    return exchange


def errors_logged(action: Callable[[], Any]) -> tuple[Any, list[str]]:
    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(message.record["message"]), level="ERROR")
    try:
        return action(), lines
    finally:
        logger.remove(sink)


def test_auto_falls_back_to_iex_once_the_plan_refuses_and_says_so_once(free_plan: EmbeddedExchange) -> None:
    broker = broker_for(free_plan, "auto")

    trades, first = errors_logged(lambda: broker.latest_trades(["AAPL"]))
    bars, second = errors_logged(lambda: broker.bars(["AAPL"], BarTimeframe.MINUTE, SIM_START))

    assert trades["AAPL"].price > 0 and bars["AAPL"]
    assert len(first) == 1 and first[0].startswith("broker alpaca market data refused for this account's plan "
                                                   "(subscription does not permit querying recent SIP data)")
    assert "reading the IEX feed from now on" in first[0] and second == []  # said once, IEX asked from then on


def test_a_configured_sip_feed_the_plan_refuses_names_the_setting(free_plan: EmbeddedExchange) -> None:
    with pytest.raises(AuthError) as refused:
        broker_for(free_plan, "sip").snapshots(["AAPL"])

    assert "the market-data feed sip is not in this account's plan; set broker.data_feed = \"iex\"" in str(refused.value)
    assert "\n" not in str(refused.value)


def test_sip_history_older_than_15_minutes_is_served_on_the_free_plan(free_plan: EmbeddedExchange) -> None:
    bars = broker_for(free_plan, "sip").bars(["AAPL"], BarTimeframe.MINUTE, SIM_START,
                                             end=SIM_START + timedelta(minutes=4))
    assert bars["AAPL"]


def test_an_unlimited_plan_serves_what_auto_asks_without_a_word(exchange: EmbeddedExchange) -> None:
    exchange.advance(timedelta(minutes=2))
    trades, lines = errors_logged(lambda: broker_for(exchange, "auto").latest_trades(["AAPL"]))
    assert trades["AAPL"].price > 0 and lines == []
