"""Market-data half of the broker port: neutral bar/trade/snapshot/news/screener reports and the calls that fetch them."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Callable, Sequence, TypeVar

from alpaca.data.enums import DataFeed, MostActivesBy
from alpaca.data.historical import StockHistoricalDataClient
from alpaca.data.historical.news import NewsClient
from alpaca.data.historical.screener import ScreenerClient
from alpaca.data.models import Bar, Snapshot, Trade
from alpaca.data.requests import (
    MarketMoversRequest,
    MostActivesRequest,
    NewsRequest,
    StockBarsRequest,
    StockLatestTradeRequest,
    StockSnapshotRequest,
)
from alpaca.data.timeframe import TimeFrame
from loguru import logger

from catalyst.broker.calls import BrokerCalls
from catalyst.broker.errors import AuthError
from catalyst.broker.reports import Report, dec

class BarTimeframe(StrEnum):
    MINUTE = "1Min"
    DAY = "1Day"


_TIMEFRAMES = {BarTimeframe.MINUTE: TimeFrame.Minute, BarTimeframe.DAY: TimeFrame.Day}


class TradeTick(Report):
    symbol: str
    price: Decimal
    size: Decimal
    at: datetime


class BarReport(Report):
    symbol: str
    start: datetime
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    trade_count: Decimal | None = None
    vwap: Decimal | None = None


class SnapshotReport(Report):
    symbol: str
    latest_trade: TradeTick | None
    minute_bar: BarReport | None
    daily_bar: BarReport | None
    previous_daily_bar: BarReport | None


class NewsReport(Report):
    id: int
    headline: str
    summary: str
    source: str
    author: str
    url: str | None
    symbols: tuple[str, ...]
    created_at: datetime
    updated_at: datetime


class MoverReport(Report):
    symbol: str
    percent_change: Decimal
    change: Decimal
    price: Decimal


class MoversReport(Report):
    gainers: tuple[MoverReport, ...]
    losers: tuple[MoverReport, ...]
    at: datetime


class ActiveReport(Report):
    symbol: str
    volume: Decimal
    trade_count: Decimal


def trade_tick(trade: Trade) -> TradeTick:
    return TradeTick(symbol=trade.symbol, price=dec(trade.price), size=dec(trade.size), at=trade.timestamp)


def bar_report(bar: Bar) -> BarReport:
    return BarReport(
        symbol=bar.symbol,
        start=bar.timestamp,
        open=dec(bar.open),
        high=dec(bar.high),
        low=dec(bar.low),
        close=dec(bar.close),
        volume=dec(bar.volume),
        trade_count=dec(bar.trade_count),
        vwap=dec(bar.vwap),
    )


def snapshot_report(symbol: str, snap: Snapshot) -> SnapshotReport:
    return SnapshotReport(
        symbol=symbol,
        latest_trade=trade_tick(snap.latest_trade) if snap.latest_trade else None,
        minute_bar=bar_report(snap.minute_bar) if snap.minute_bar else None,
        daily_bar=bar_report(snap.daily_bar) if snap.daily_bar else None,
        previous_daily_bar=bar_report(snap.previous_daily_bar) if snap.previous_daily_bar else None,
    )


T = TypeVar("T")


def refused_by_the_plan(exc: AuthError) -> bool:
    """Alpaca's 403 for data the market-data plan does not cover ("subscription does not permit querying recent SIP
    data"): not a key problem, a feed problem."""
    return "subscription" in exc.message.lower()


class MarketDataCalls(BrokerCalls):
    """Mixed into AlpacaBroker: market-data calls (their own 200/min budget: not the trading limiter)."""

    _data: StockHistoricalDataClient
    _news: NewsClient
    _screener: ScreenerClient
    data_feed: str = "auto"
    _plan_refused = False  # "auto" met a refusal for the plan: IEX, which every plan has, from then on

    def _feed(self) -> DataFeed | None:
        if self.data_feed == "auto":
            return DataFeed.IEX if self._plan_refused else None
        return DataFeed(self.data_feed)

    def _feed_read(self, operation: str, fetch: Callable[[DataFeed | None], T]) -> T:
        """A market-data read on the configured feed. With "auto", Alpaca's default feed; refused for the plan (a free
        account asking recent SIP data), IEX from then on, said once as an ERROR; a feed refused for the plan
        otherwise is an error naming the setting."""
        while True:  # twice at most: once refused, "auto" reads IEX, and a second refusal is final
            try:
                return self._read(operation, lambda: fetch(self._feed()), priority=None)
            except AuthError as exc:
                if not refused_by_the_plan(exc):
                    raise
                if self.data_feed != "auto" or self._plan_refused:
                    raise self._refused_for_the_plan(exc) from None
                refused = exc.message
            self._plan_refused = True
            logger.error(f"broker {self.name} market data refused for this account's plan ({refused}): reading the "
                         "IEX feed from now on (broker.data_feed = \"auto\"; set \"iex\" to start there, or \"sip\" "
                         "with a market-data subscription). IEX trades are a few percent of the consolidated tape: "
                         "the scanner's volume floors see that much less")

    def _refused_for_the_plan(self, exc: AuthError) -> AuthError:
        feed = self._feed()
        name = feed.value if feed is not None else "default"
        fix = ("set broker.data_feed = \"iex\" (every plan has it)" if feed is not DataFeed.IEX
               else "even IEX: see the account's market-data plan at Alpaca")
        return AuthError(f"{exc.message}: the market-data feed {name} is not in this account's plan; {fix}",
                         status=exc.status, code=exc.code, operation=exc.operation)

    def latest_trades(self, symbols: Sequence[str]) -> dict[str, TradeTick]:
        def fetch(feed: DataFeed | None) -> dict[str, TradeTick]:
            request = StockLatestTradeRequest(symbol_or_symbols=list(symbols), feed=feed)
            return {sym: trade_tick(t) for sym, t in self._data.get_stock_latest_trade(request).items()}

        return self._feed_read(f"latest trades {_names(symbols)}", fetch)

    def snapshots(self, symbols: Sequence[str]) -> dict[str, SnapshotReport]:
        def fetch(feed: DataFeed | None) -> dict[str, SnapshotReport]:
            request = StockSnapshotRequest(symbol_or_symbols=list(symbols), feed=feed)
            return {sym: snapshot_report(sym, s) for sym, s in self._data.get_stock_snapshot(request).items()}

        return self._feed_read(f"snapshots {_names(symbols)}", fetch)

    def bars(
        self,
        symbols: Sequence[str],
        timeframe: BarTimeframe | str,
        start: datetime,
        end: datetime | None = None,
    ) -> dict[str, list[BarReport]]:
        frame = _TIMEFRAMES[BarTimeframe(timeframe)]

        def fetch(feed: DataFeed | None) -> dict[str, list[BarReport]]:
            request = StockBarsRequest(symbol_or_symbols=list(symbols), timeframe=frame, start=start, end=end, feed=feed)
            bar_set = self._data.get_stock_bars(request)
            return {sym: [bar_report(b) for b in bars] for sym, bars in bar_set.data.items()}

        return self._feed_read(f"bars {timeframe} {_names(symbols)}", fetch)

    def news(
        self,
        symbols: Sequence[str] | None,
        start: datetime | None = None,
        end: datetime | None = None,
        limit: int | None = None,
    ) -> list[NewsReport]:
        request = NewsRequest(
            symbols=",".join(symbols) if symbols else None, start=start, end=end, limit=limit
        )

        def fetch() -> list[NewsReport]:
            items = self._news.get_news(request).data.get("news", [])
            return [
                NewsReport(
                    id=n.id,
                    headline=n.headline,
                    summary=n.summary,
                    source=n.source,
                    author=n.author,
                    url=n.url,
                    symbols=tuple(n.symbols),
                    created_at=n.created_at,
                    updated_at=n.updated_at,
                )
                for n in items
            ]

        return self._read(f"news {_names(symbols or ['*'])}", fetch, priority=None)

    def movers(self, top: int = 10) -> MoversReport:
        def fetch() -> MoversReport:
            m = self._screener.get_market_movers(MarketMoversRequest(top=top))

            def conv(items: Sequence[object]) -> tuple[MoverReport, ...]:
                return tuple(
                    MoverReport(symbol=x.symbol, percent_change=dec(x.percent_change), change=dec(x.change),
                                price=dec(x.price))
                    for x in items  # type: ignore[attr-defined]
                )

            return MoversReport(gainers=conv(m.gainers), losers=conv(m.losers), at=m.last_updated)

        return self._read(f"movers top={top}", fetch, priority=None)

    def most_actives(self, top: int = 10, by: str = "volume") -> list[ActiveReport]:
        request = MostActivesRequest(top=top, by=MostActivesBy(by))
        return self._read(
            f"most actives top={top}",
            lambda: [
                ActiveReport(symbol=a.symbol, volume=dec(a.volume), trade_count=dec(a.trade_count))
                for a in self._screener.get_most_actives(request).most_actives
            ],
            priority=None,
        )


def _names(symbols: Sequence[str]) -> str:
    shown = ",".join(list(symbols)[:5])
    return shown + (f",+{len(symbols) - 5}" if len(symbols) > 5 else "")
