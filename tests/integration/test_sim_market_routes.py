"""alpaca-py's own data clients against the emulator's market-data routes over loopback."""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jsonschema
import pytest
import yaml
from aiohttp import web
from alpaca.common.exceptions import APIError
from alpaca.data.enums import MostActivesBy
from alpaca.data.historical import StockHistoricalDataClient
from alpaca.data.historical.news import NewsClient
from alpaca.data.historical.screener import ScreenerClient
from alpaca.data.requests import (
    MarketMoversRequest, MostActivesRequest, NewsRequest, StockBarsRequest, StockLatestBarRequest,
    StockLatestQuoteRequest, StockLatestTradeRequest, StockSnapshotRequest,
)
from alpaca.data.timeframe import TimeFrame, TimeFrameUnit

from catalyst.sim.clock import SimClock
from catalyst.sim.market_routes import add_market_data_routes
from catalyst.sim.synthetic import SyntheticMarket

# Under xdist (`make test`), on one worker: its module-scoped market is built once, not once per worker.
pytestmark = pytest.mark.xdist_group("sim_market_routes")

ET = ZoneInfo("America/New_York")
DAY = date(2026, 3, 2)
NOW = datetime(2026, 3, 2, 10, 15, 30, tzinfo=ET)
OPENAPI = Path(__file__).resolve().parents[2].parent / "shared" / "alpaca-reference" / "market-data-openapi.yaml"


class Emulator:
    """Only the market-data routes, served from a background thread on 127.0.0.1:0."""

    def __init__(self, market: SyntheticMarket, clock: SimClock) -> None:
        self.market, self.clock = market, clock
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.runner: web.AppRunner | None = None
        self.url = ""

    def start(self) -> None:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(timeout=10)

    async def _start(self) -> None:
        app = web.Application()
        add_market_data_routes(app, self.market, self.clock)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        host, port = self.runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"

    def stop(self) -> None:
        assert self.runner is not None
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()

    def get(self, path: str) -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())


@pytest.fixture(scope="module")
def market() -> SyntheticMarket:
    return SyntheticMarket(seed=1, start=DAY)


@pytest.fixture
def emulator(market: SyntheticMarket) -> Iterator[Emulator]:
    server = Emulator(market, SimClock(NOW, speed=0))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def data(emulator: Emulator) -> StockHistoricalDataClient:
    return StockHistoricalDataClient("key", "secret", url_override=emulator.url)


def _schema(name: str) -> dict[str, Any]:
    """An OpenAPI 3.0 component as JSON Schema (`nullable: true` becomes a union with null)."""
    if not OPENAPI.is_file():
        pytest.skip(f"Alpaca's OpenAPI file not found at {OPENAPI}")
    spec = yaml.safe_load(OPENAPI.read_text())

    def convert(node: Any) -> Any:
        if isinstance(node, dict):
            node = {k: convert(v) for k, v in node.items() if k not in ("x-examples", "example", "examples")}
            if node.pop("nullable", False) and "type" in node:
                node["type"] = [node["type"], "null"]
            return node
        return [convert(v) for v in node] if isinstance(node, list) else node

    return {"$ref": f"#/components/schemas/{name}", "components": convert(spec["components"])}


def test_minute_bars_page_through_everything_exactly_once(data, market) -> None:
    symbols = list(market.symbols[:20])  # a day and a morning of 20 names: more than one 10,000-bar page
    request = StockBarsRequest(symbol_or_symbols=symbols, timeframe=TimeFrame.Minute,
                               start=datetime(2026, 2, 27, 4, tzinfo=ET), end=NOW)
    barset = data.get_stock_bars(request)
    expected = {s: market.minute_bars(s, datetime(2026, 2, 27, 4, tzinfo=ET), NOW - timedelta(seconds=59))
                for s in symbols}
    assert sum(len(v) for v in expected.values()) > 10_000
    for symbol in symbols:
        got = barset.data[symbol]
        assert [b.timestamp for b in got] == [b.start for b in expected[symbol]]
        assert [b.close for b in got] == [float(b.close) for b in expected[symbol]]
        assert got[-1].vwap is not None and got[-1].trade_count is not None


def test_small_pages_end_with_a_null_token(emulator) -> None:
    path = "/v2/stocks/bars?symbols=AUTX,BLRB&timeframe=1Min&start=2026-03-02T14:30:00Z&limit=7"
    seen: list[tuple[str, str]] = []
    token = ""
    for _ in range(100):
        status, body = emulator.get(path + (f"&page_token={token}" if token else ""))
        assert status == 200 and set(body) == {"bars", "next_page_token"}
        seen.extend((symbol, bar["t"]) for symbol, bars in body["bars"].items() for bar in bars)
        token = body["next_page_token"]
        if token is None:
            break
    assert token is None and len(seen) == len(set(seen)) == 2 * 45  # 09:30 .. 10:14, complete minutes only


def test_nothing_is_served_from_the_future(data, emulator, market) -> None:
    request = StockBarsRequest(symbol_or_symbols="AUTX", timeframe=TimeFrame.Minute,
                               start=datetime(2026, 3, 2, 9, tzinfo=ET), end=datetime(2026, 3, 3, tzinfo=ET))
    bars = data.get_stock_bars(request).data["AUTX"]
    assert bars[-1].timestamp == datetime(2026, 3, 2, 10, 14, tzinfo=ET)  # the forming 10:15 bar is omitted
    latest = data.get_stock_latest_bar(StockLatestBarRequest(symbol_or_symbols="AUTX"))["AUTX"]
    assert latest.timestamp == bars[-1].timestamp
    whole_day = market.news(None, datetime(2026, 3, 2, tzinfo=ET), datetime(2026, 3, 3, tzinfo=ET))
    assert any(item.created_at > NOW for item in whole_day)  # there IS later news to leak
    news = NewsClient("key", "secret", url_override=emulator.url).get_news(
        NewsRequest(start=datetime(2026, 3, 2, tzinfo=ET), end=datetime(2026, 3, 3, tzinfo=ET)))
    assert news.data["news"] and all(item.created_at <= NOW for item in news.data["news"])
    daily = data.get_stock_bars(StockBarsRequest(symbol_or_symbols="AUTX", timeframe=TimeFrame.Day,
                                                 start=datetime(2026, 3, 2, tzinfo=ET))).data["AUTX"]
    assert len(daily) == 1 and daily[0].close == bars[-1].close  # today's bar is the session so far


def test_daily_bars_carry_sixty_days_of_history_and_validate_against_alpacas_schema(data, emulator) -> None:
    status, body = emulator.get("/v2/stocks/bars?symbols=AUTX,ZERB&timeframe=1Day&start=2025-01-01")
    assert status == 200
    jsonschema.validate(body, _schema("MultiBarsResponse"))
    assert body["next_page_token"] is None and len(body["bars"]["AUTX"]) == 61
    assert body["bars"]["AUTX"][0]["t"].endswith("T05:00:00Z") and {"n", "vw"} <= set(body["bars"]["AUTX"][0])
    parsed = data.get_stock_bars(StockBarsRequest(symbol_or_symbols=["AUTX"], timeframe=TimeFrame.Day,
                                                  start=datetime(2025, 1, 1, tzinfo=ET), limit=5))
    assert len(parsed.data["AUTX"]) == 5


def test_latest_trade_quote_and_snapshot_agree_with_the_market(data, emulator, market) -> None:
    trade = data.get_stock_latest_trade(StockLatestTradeRequest(symbol_or_symbols=["AUTX", "BLRB"]))
    quote = data.get_stock_latest_quote(StockLatestQuoteRequest(symbol_or_symbols="AUTX"))["AUTX"]
    assert trade["AUTX"].price == float(market.price_at("AUTX", NOW)) and trade["AUTX"].timestamp == NOW
    assert quote.bid_price < trade["AUTX"].price < quote.ask_price
    status, body = emulator.get("/v2/stocks/snapshots?symbols=AUTX,BLRB")
    assert status == 200
    jsonschema.validate(body, _schema("MultiSnapshotResponse"))
    snapshot = data.get_stock_snapshot(StockSnapshotRequest(symbol_or_symbols=["AUTX", "BLRB"]))["BLRB"]
    previous = market.daily_bars("BLRB", date(2026, 2, 27), date(2026, 2, 27))[0]
    assert snapshot.previous_daily_bar.close == float(previous.close)
    assert snapshot.daily_bar.timestamp == datetime(2026, 3, 2, tzinfo=ET)
    assert snapshot.minute_bar.timestamp == datetime(2026, 3, 2, 10, 14, tzinfo=ET)
    assert snapshot.latest_trade.price == trade["BLRB"].price


def test_news_filters_by_symbol_and_pages_with_a_final_null_token(emulator, market) -> None:
    catalyst = market.catalyst_symbols(DAY)[0]
    client = NewsClient("key", "secret", url_override=emulator.url)
    mine = client.get_news(NewsRequest(symbols=catalyst.symbol, start=datetime(2026, 3, 2, tzinfo=ET)))
    assert [n.id for n in mine.data["news"]] == [catalyst.news_id]
    assert mine.data["news"][0].symbols == [catalyst.symbol]
    every = market.news(None, datetime(2026, 2, 20, tzinfo=ET), NOW)
    ids, token = [], ""
    for _ in range(100):
        status, body = emulator.get("/v1beta1/news?start=2026-02-20&limit=4" + (f"&page_token={token}" if token else ""))
        assert status == 200 and set(body) == {"news", "next_page_token"}
        ids += [item["id"] for item in body["news"]]
        token = body["next_page_token"]
        if token is None:
            break
    assert ids == [item.id for item in every] and len(ids) > 8


def test_movers_and_most_actives_come_from_today_so_far(emulator, market) -> None:
    screener = ScreenerClient("key", "secret", url_override=emulator.url)
    movers = screener.get_market_movers(MarketMoversRequest(top=5))
    assert 0 < len(movers.gainers) <= 5 and movers.last_updated == NOW
    assert [g.percent_change for g in movers.gainers] == sorted((g.percent_change for g in movers.gainers), reverse=True)
    best = movers.gainers[0]
    previous = market.daily_bars(best.symbol, date(2026, 2, 27), date(2026, 2, 27))[0].close
    price = market.price_at(best.symbol, NOW)
    assert best.price == float(price) and best.percent_change == round(float((price - previous) / previous * 100), 2)
    assert all(loser.percent_change < 0 for loser in movers.losers)
    actives = screener.get_most_actives(MostActivesRequest(top=3, by=MostActivesBy.VOLUME))
    so_far = sum(b.volume for b in market.minute_bars(actives.most_actives[0].symbol,
                                                      datetime(2026, 3, 2, tzinfo=ET), NOW - timedelta(seconds=59)))
    assert len(actives.most_actives) == 3 and actives.most_actives[0].volume == so_far
    assert actives.most_actives[0].volume >= actives.most_actives[1].volume >= actives.most_actives[2].volume


def test_before_the_open_the_movers_are_the_previous_sessions(market) -> None:
    """Alpaca's API reference: the movers "reset at market open. Until then, it shows the previous market day's
    movers". At 09:15 on Monday they are Friday's, against Thursday's close, priced at Friday's."""
    server = Emulator(market, SimClock(datetime(2026, 3, 2, 9, 15, tzinfo=ET), speed=0))
    server.start()
    try:
        movers = ScreenerClient("key", "secret", url_override=server.url).get_market_movers(MarketMoversRequest(top=50))
    finally:
        server.stop()
    friday, thursday = date(2026, 2, 27), date(2026, 2, 26)
    expected = {}
    for symbol in market.symbols:
        (close,), (before,) = market.daily_bars(symbol, friday, friday), market.daily_bars(symbol, thursday, thursday)
        expected[symbol] = (float(close.close), round(float((close.close - before.close) / before.close * 100), 2))
    assert movers.gainers and all(expected[g.symbol] == (g.price, g.percent_change) for g in movers.gainers)


def test_unknown_symbols_give_empty_results_never_null(data, emulator) -> None:
    assert emulator.get("/v2/stocks/bars?symbols=NOPE&timeframe=1Min") == (200, {"bars": {}, "next_page_token": None})
    assert emulator.get("/v2/stocks/snapshots?symbols=NOPE") == (200, {})
    assert emulator.get("/v2/stocks/trades/latest?symbols=NOPE") == (200, {"trades": {}})
    assert data.get_stock_snapshot(StockSnapshotRequest(symbol_or_symbols="NOPE")) == {}


@pytest.mark.parametrize("query", [
    "/v2/stocks/bars?symbols=AUTX&timeframe=1Min&limit=0",
    "/v2/stocks/bars?symbols=AUTX&timeframe=1Min&limit=10001",
    "/v2/stocks/bars?symbols=AUTX&timeframe=1Min&start=yesterday",
    "/v2/stocks/bars?symbols=AUTX&timeframe=1Min&page_token=garbage",
    "/v2/stocks/bars?timeframe=1Min",
    "/v2/stocks/bars?symbols=AUTX&timeframe=1Min&start=2026-03-02&end=2026-03-01",
    "/v1beta1/news?limit=51",
    "/v1beta1/screener/stocks/most-actives?by=price",
])
def test_bad_parameters_answer_422_in_alpacas_error_shape(emulator, query: str) -> None:
    status, body = emulator.get(query)
    assert status == 422 and body["code"] == 42210000 and body["message"]


def test_alpaca_py_reports_an_unsupported_timeframe_as_an_api_error(data) -> None:
    with pytest.raises(APIError) as caught:
        data.get_stock_bars(StockBarsRequest(symbol_or_symbols="AUTX", timeframe=TimeFrame(1, TimeFrameUnit.Week)))
    assert caught.value.status_code == 422 and "timeframe" in caught.value.message
