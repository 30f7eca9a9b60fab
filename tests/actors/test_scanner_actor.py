"""ScannerActor against the emulator over loopback: the spec's example ranks first, rows land in scan_results."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, Iterator, Sequence

import pytest
from loguru import logger

from actors.db_writer import DbWriter
from actors.scanner import Candidate, ScannerActor
from catalyst.broker.adapter import AlpacaBroker
from catalyst.broker.marketdata import BarReport, MoverReport, MoversReport, SnapshotReport, TradeTick
from catalyst.broker.ratelimit import RateLimiter
from catalyst.domain.scanning import ScannerSettings
from catalyst.sim.clock import SimClock
from catalyst.sim.market import EXCHANGE_TZ, NewsItem
from catalyst.sim.scripted import ScriptedMarket
from catalyst.sim.server import EmbeddedExchange, ExchangeConfig

DAY = date(2024, 3, 4)  # a Monday
NOW = datetime.combine(DAY, time(9, 25), tzinfo=EXCHANGE_TZ)  # inside the 09:15-09:35 scanning window
AVERAGE_VOLUME = 1_000_000
PREV_CLOSES = {"AAPL": "150.00", "NVDA": "100.00", "MSFT": "400.00", "TSLA": "200.00", "AMD": "50.00"}


class NewsScriptedMarket(ScriptedMarket):
    """ScriptedMarket plus headlines a test adds."""

    def __init__(self, symbols: Sequence[str], start: datetime) -> None:
        super().__init__(symbols, start)
        self.items: list[NewsItem] = []

    def add_news(self, symbol: str, headline: str, at: datetime) -> None:
        self.items.append(NewsItem(id=len(self.items) + 1, created_at=at, headline=headline, summary="",
                                   source="test", author="test", url="https://news.example.invalid",
                                   symbols=(symbol,)))

    def news(self, symbols: Sequence[str] | None, start: datetime, end: datetime) -> list[NewsItem]:
        wanted = set(symbols) if symbols else None
        found = [n for n in self.items if start <= n.created_at < end and (wanted is None or wanted & set(n.symbols))]
        return sorted(found, key=lambda n: (n.created_at, n.id), reverse=True)


def at(hh: int, mm: int, day: date = DAY) -> datetime:
    return datetime.combine(day, time(hh, mm), tzinfo=EXCHANGE_TZ)


def bar(market: ScriptedMarket, symbol: str, minute: datetime, low: str, high: str, close: str, volume: int) -> None:
    """One minute bar with exactly this low, high, close and volume (four prints inside the minute)."""
    for second, price in ((0, close), (15, low), (30, high), (59, close)):
        market.set_price(symbol, price, at=minute + timedelta(seconds=second), volume=volume)


def history(market: ScriptedMarket) -> None:
    """25 sessions at each name's previous close on its average volume."""
    day = DAY - timedelta(days=1)
    for _ in range(25):
        while day.weekday() >= 5:
            day -= timedelta(days=1)
        for symbol, close in PREV_CLOSES.items():
            market.set_price(symbol, close, at=at(15, 0, day), volume=AVERAGE_VOLUME)
        day -= timedelta(days=1)


def spec_example(market: NewsScriptedMarket) -> None:
    """AAPL: an earnings beat before the bell, a ~5% gap on ~3x pre-market volume and a pre-market bull flag."""
    market.add_news("AAPL", "Apple (AAPL) beats quarterly earnings estimates", at(7, 30))
    flag = [  # low, high, close, volume
        ("151.90", "152.30", "152.20", 1000),  # base
        ("152.10", "153.50", "153.40", 5000), ("153.30", "155.00", "154.90", 5000),  # impulse
        ("154.80", "156.50", "156.40", 5000), ("156.20", "157.50", "157.30", 5500),
        ("156.80", "157.40", "157.00", 1200), ("156.30", "157.10", "156.50", 1200),  # pullback, light
        ("155.90", "156.80", "156.20", 1000),
        ("156.20", "157.80", "157.60", 3000),  # breakout above 157.40
    ]
    for minute, (low, high, close, volume) in enumerate(flag):
        bar(market, "AAPL", at(8, 55) + timedelta(minutes=minute), low, high, close, volume)
    market.set_price("AAPL", "157.55", at=at(9, 20), volume=2000)


def others(market: NewsScriptedMarket) -> None:
    # NVDA: a bigger gap and more volume on contract news, but no flag: second.
    market.add_news("NVDA", "NVIDIA (NVDA) wins $500 million government contract", at(6, 45))
    for minute in range(5):
        market.set_price("NVDA", "108.00", at=at(9, 5 + minute), volume=10_000)
    # MSFT: gaps 12% on heavy volume with no news at all; AMD: gaps on a dividend headline (no catalyst).
    for minute in range(5):
        market.set_price("MSFT", "448.00", at=at(9, 5 + minute), volume=20_000)
        market.set_price("AMD", "53.00", at=at(9, 5 + minute), volume=20_000)
    market.add_news("AMD", "AMD (AMD) declares regular quarterly dividend", at(8, 0))
    market.set_price("TSLA", "201.00", at=at(9, 10), volume=50_000)  # quiet: a 0.5% gap


def crafted(data_plan: str = "unlimited") -> EmbeddedExchange:
    market = NewsScriptedMarket(list(PREV_CLOSES), NOW)
    history(market)
    spec_example(market)
    others(market)
    return EmbeddedExchange(ExchangeConfig(speed=0, start=NOW, rate_limit_per_minute=0, data_plan=data_plan), market,
                            SimClock(NOW, 0))


@pytest.fixture
def crafted_exchange() -> Iterator[EmbeddedExchange]:
    with crafted() as ex:
        yield ex


class CountingBroker:
    """The real AlpacaBroker, counting the market-data requests a scan makes."""

    def __init__(self, broker: AlpacaBroker) -> None:
        self.broker = broker
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.broker, name)

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            return method(*args, **kwargs)

        return counted


def broker_for(exchange: EmbeddedExchange, **kw: Any) -> CountingBroker:
    return CountingBroker(AlpacaBroker("PKSCANNER", "secret", trading_url=exchange.base_url, timeout_s=5.0,
                                       limiter=RateLimiter(0), **kw))


@pytest.fixture
def writer(tmp_path: Any) -> Iterator[Any]:
    ref = DbWriter.start(f"sqlite+aiosqlite:///{tmp_path / 'scanner.db'}")
    yield ref.proxy()
    ref.stop()


@pytest.fixture
def log_lines() -> Iterator[list[str]]:
    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(message.record["message"]), level="INFO")
    yield lines
    logger.remove(sink)


def scan(broker: Any, writer: Any, now: datetime = NOW, **settings: Any) -> tuple[int, list[Candidate]]:
    cycle_id = writer.get_or_create_cycle(now.date()).get().cycle_id
    scanner = ScannerActor.start(broker, writer, ScannerSettings(**settings)).proxy()
    return cycle_id, scanner.scan(cycle_id, now).get()


def test_the_spec_example_is_found_and_ranked_first(crafted_exchange: EmbeddedExchange, writer: Any) -> None:
    _, candidates = scan(broker_for(crafted_exchange), writer)

    assert [c.symbol for c in candidates] == ["AAPL", "NVDA"]
    aapl = candidates[0]
    assert aapl.rank == 1 and aapl.bull_flag and aapl.headline == "Apple (AAPL) beats quarterly earnings estimates"
    assert aapl.price == Decimal("157.55")
    assert Decimal("5") <= aapl.gap_pct < Decimal("5.1") and Decimal("3") <= aapl.relative_volume < Decimal("3.5")
    assert aapl.stop == Decimal("155.90")  # the flag's pullback low
    assert aapl.target == Decimal("160.85")  # 2R: 157.55 + 2 x 1.65
    assert candidates[1].stop == Decimal("104.76") and not candidates[1].bull_flag  # 3% under 108, no pattern


def test_ranked_rows_are_in_scan_results_with_their_score_parts(
    crafted_exchange: EmbeddedExchange, writer: Any
) -> None:
    cycle_id, candidates = scan(broker_for(crafted_exchange), writer)

    rows = writer.scan_results(cycle_id).get()

    assert [(r.symbol, r.rank_in_scan, r.status) for r in rows] == [("AAPL", 1, "candidate"), ("NVDA", 2, "candidate")]
    assert [r.scan_id for r in rows] == [c.scan_id for c in candidates]
    assert rows[0].composite_score == candidates[0].score > rows[1].composite_score
    parts = rows[0].score_parts
    assert parts["news"] == "1" and parts["pattern"] == "1" and parts["keyword"] == "earnings beat"
    assert Decimal(parts["flag"]["pullback_low"]) == Decimal(parts["stop"]) == Decimal("155.90")
    assert {"gap", "relative_volume", "liquidity", "gap_pct", "rvol"} <= parts.keys()


def test_each_candidate_and_the_summary_are_logged_with_rejection_reasons(
    crafted_exchange: EmbeddedExchange, writer: Any, log_lines: list[str]
) -> None:
    scan(broker_for(crafted_exchange), writer)

    aapl = next(line for line in log_lines if line.startswith("scanner AAPL rank 1"))
    assert 'news "Apple (AAPL) beats quarterly earnings estimates" flag yes' in aapl
    summary = next(line for line in log_lines if "candidates," in line)
    assert "universe 5, 2 candidates, 3 rejected" in summary
    assert "no news catalyst 2" in summary and "below gap 1" in summary


@pytest.mark.parametrize(("universe", "lists"), [("all", ["tradable_symbols"]),
                                                 ("screener", ["most_actives", "movers"])])
def test_a_scan_costs_a_few_batched_requests(crafted_exchange: EmbeddedExchange, writer: Any, universe: str,
                                             lists: list[str]) -> None:
    broker = broker_for(crafted_exchange)

    _, candidates = scan(broker, writer, universe=universe)

    assert sorted(broker.calls) == sorted(["bars", "bars", "news", "snapshots", *lists])
    assert [c.symbol for c in candidates] == ["AAPL", "NVDA"]


def test_the_tradable_symbols_are_read_once_a_day(crafted_exchange: EmbeddedExchange, writer: Any) -> None:
    broker = broker_for(crafted_exchange)
    cycle_id = writer.get_or_create_cycle(DAY).get().cycle_id
    scanner = ScannerActor.start(broker, writer, ScannerSettings()).proxy()

    scanner.scan(cycle_id, NOW).get()
    scanner.scan(cycle_id, NOW + timedelta(minutes=10)).get()
    scanner.scan(cycle_id, NOW + timedelta(days=1)).get()

    assert broker.calls.count("tradable_symbols") == 2


def test_a_broker_failure_returns_no_candidates_and_logs_one_line(
    crafted_exchange: EmbeddedExchange, writer: Any, log_lines: list[str]
) -> None:
    crafted_exchange.set_faults("http_5xx=1")

    cycle_id, candidates = scan(broker_for(crafted_exchange, read_attempts=1), writer)

    assert candidates == []
    assert writer.scan_results(cycle_id).get() == []
    failures = [line for line in log_lines if "abandoned" in line]
    assert len(failures) == 1 and "\n" not in failures[0]


def test_on_a_free_data_plan_auto_finds_the_same_candidates_on_iex_and_a_sip_setting_is_an_error_naming_it(
    writer: Any, log_lines: list[str]
) -> None:
    # A free paper account: Alpaca refuses recent SIP data. Every scan of the first paper run was abandoned with a
    # WARNING; "auto" now reads IEX once refused (the emulator's IEX is its one tape: the same candidates).
    with crafted("basic") as free:
        _, on_iex = scan(broker_for(free, data_feed="auto"), writer)
        _, on_sip = scan(broker_for(free, data_feed="sip", read_attempts=1), writer)

    assert [c.symbol for c in on_iex][:1] == ["AAPL"]
    assert on_sip == []
    abandoned = [line for line in log_lines if "abandoned" in line]
    assert len(abandoned) == 1 and 'set broker.data_feed = "iex"' in abandoned[0]


def test_the_scanner_survives_a_failed_scan_and_scans_again(crafted_exchange: EmbeddedExchange, writer: Any) -> None:
    broker = broker_for(crafted_exchange, read_attempts=1)
    cycle_id = writer.get_or_create_cycle(DAY).get().cycle_id
    scanner = ScannerActor.start(broker, writer, ScannerSettings()).proxy()
    crafted_exchange.set_faults("http_5xx=1")
    assert scanner.scan(cycle_id, NOW).get() == []
    crafted_exchange.set_faults("")

    assert [c.symbol for c in scanner.scan(cycle_id, NOW).get()] == ["AAPL", "NVDA"]


class NegativeVolumeMarket:
    """A hand-written market-data fake whose minute bar carries a negative volume (a corrupt payload)."""

    def tradable_symbols(self) -> list[str]:
        return ["BAD"]

    def movers(self, top: int = 10) -> MoversReport:
        return MoversReport(gainers=(MoverReport(symbol="BAD", percent_change=Decimal("10"), change=Decimal("10"),
                                                 price=Decimal("110")),), losers=(), at=NOW)

    def most_actives(self, top: int = 10, by: str = "volume") -> list[Any]:
        return []

    def snapshots(self, symbols: Sequence[str]) -> dict[str, SnapshotReport]:
        yesterday = report_bar(datetime.combine(DAY - timedelta(days=3), time(0), tzinfo=EXCHANGE_TZ), "100", 10**6)
        trade = TradeTick(symbol="BAD", price=Decimal("110"), size=Decimal(100), at=NOW)
        return {"BAD": SnapshotReport(symbol="BAD", latest_trade=trade, minute_bar=None, daily_bar=yesterday,
                                      previous_daily_bar=None)}

    def bars(self, symbols: Sequence[str], timeframe: Any, start: datetime, end: datetime | None = None) -> Any:
        if timeframe == "1Day":
            return {"BAD": [report_bar(datetime.combine(DAY - timedelta(days=3), time(0), tzinfo=EXCHANGE_TZ),
                                       "100", 10**6)]}
        return {"BAD": [report_bar(at(9, 0), "110", -500)]}

    def news(self, symbols: Any, start: Any = None, end: Any = None, limit: Any = None) -> list[Any]:
        return []


def report_bar(start: datetime, price: str, volume: int) -> BarReport:
    value = Decimal(price)
    return BarReport(symbol="BAD", start=start, open=value, high=value, low=value, close=value, volume=Decimal(volume))


def test_corrupt_market_data_is_named_in_one_line_and_scans_nothing(writer: Any, log_lines: list[str]) -> None:
    _, candidates = scan(NegativeVolumeMarket(), writer)

    assert candidates == []
    assert any("bad market data" in line and "volume so far must not be negative" in line for line in log_lines)
