"""Market-data calls over a scripted transport: wire shapes from ALPACA.md §3 in, neutral Decimal reports out."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

from requests import PreparedRequest, Response

from catalyst.broker.adapter import AlpacaBroker
from catalyst.broker.marketdata import BarTimeframe
from catalyst.broker.ratelimit import Priority, RateLimiter

KEY, SECRET = "PKTESTKEY0002", "test-secret-md"


def respond(request: PreparedRequest, status: int, body: Any) -> Response:
    response = Response()
    response.status_code, response._content = status, json.dumps(body).encode()
    response.headers["Content-Type"] = "application/json"
    response.request, response.url, response.encoding = request, request.url or "", "utf-8"
    return response


BAR = {"t": "2024-03-04T14:35:00Z", "o": 100.5, "h": 101.25, "l": 100.0, "c": 101.1, "v": 12000, "n": 40, "vw": 100.8}
ANSWERS: dict[str, Any] = {
    "/v2/stocks/trades/latest": {"trades": {"AAPL": {"t": "2024-03-04T14:35:01Z", "p": 101.13, "s": 100}}},
    "/v2/stocks/bars": {"bars": {"AAPL": [BAR]}, "next_page_token": None},
    "/v2/stocks/snapshots": {"AAPL": {"latestTrade": {"t": "2024-03-04T14:35:01Z", "p": 101.13, "s": 100},
                                      "minuteBar": BAR, "dailyBar": BAR, "prevDailyBar": BAR}},
    "/v1beta1/news": {"news": [{"id": 7, "headline": "AAPL beats", "source": "sim", "url": None, "summary": "s",
                                "created_at": "2024-03-04T12:00:00Z", "updated_at": "2024-03-04T12:00:00Z",
                                "symbols": ["AAPL"], "author": "a", "content": ""}], "next_page_token": None},
    "/v1beta1/screener/stocks/movers": {"gainers": [{"symbol": "AAPL", "percent_change": 12.5, "change": 11.2,
                                                     "price": 101.13}], "losers": [], "market_type": "stocks",
                                        "last_updated": "2024-03-04T14:35:00Z"},
    "/v1beta1/screener/stocks/most-actives": {"most_actives": [{"symbol": "AAPL", "volume": 1200000,
                                                                "trade_count": 5300}],
                                              "last_updated": "2024-03-04T14:35:00Z"},
}


def network(request: PreparedRequest, timeout: Any) -> Response:
    return respond(request, 200, ANSWERS[urlsplit(request.url or "").path])


def make() -> tuple[AlpacaBroker, RateLimiter]:
    limiter = RateLimiter(60, burst=1)
    broker = AlpacaBroker(KEY, SECRET, "http://127.0.0.1:9", limiter=limiter, transport=network)
    return broker, limiter


def test_latest_trades_and_snapshots_keep_prices_as_written() -> None:
    broker, _ = make()

    trade = broker.latest_trades(["AAPL"])["AAPL"]
    snap = broker.snapshots(["AAPL"])["AAPL"]

    assert trade.price == Decimal("101.13") and trade.size == Decimal(100)
    assert snap.latest_trade == trade and snap.previous_daily_bar is not None
    assert snap.previous_daily_bar.close == Decimal("101.1")


def test_bars_news_and_screeners_become_neutral_reports() -> None:
    broker, _ = make()

    bars = broker.bars(["AAPL"], BarTimeframe.MINUTE, datetime(2024, 3, 4, tzinfo=timezone.utc))["AAPL"]
    news = broker.news(["AAPL"], limit=10)
    movers = broker.movers(top=5)
    actives = broker.most_actives(top=5)

    assert bars[0].vwap == Decimal("100.8") and bars[0].volume == Decimal(12000)
    assert news[0].id == 7 and news[0].symbols == ("AAPL",)
    assert movers.gainers[0].percent_change == Decimal("12.5") and movers.losers == ()
    assert actives[0].symbol == "AAPL" and actives[0].trade_count == Decimal(5300)


def test_market_data_does_not_spend_the_trading_budget() -> None:
    broker, limiter = make()
    while limiter.budget().remaining:
        limiter.acquire(Priority.READ, timeout=0)

    broker.latest_trades(["AAPL"])  # would time out after 30 s if it needed a trading token

    assert limiter.budget().remaining == 0
