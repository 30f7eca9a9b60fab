"""ScannerActor: fetches the universe's market data in a few batched calls, scores, ranks, persists scan_results.

Rate budget: the universe (scanner.universe): "all", one call for the account's tradable symbols, once a day;
"screener", one movers call and one most-actives call. Then per chunk of `symbols_per_request` symbols one snapshots
call (about 110 for Alpaca's whole market); only symbols that pass the price and gap screens (known from the
snapshot) cost a daily-bars, a minute-bars and a news call per chunk. Never one call per symbol.
"""

from __future__ import annotations

import re
from collections import Counter
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, Callable, Protocol, Sequence, TypeVar

import pykka
from loguru import logger
from pydantic import BaseModel, ConfigDict

from catalyst.broker.errors import AuthError, BrokerError
from catalyst.broker.marketdata import (
    ActiveReport, BarReport, BarTimeframe, MoversReport, NewsReport, SnapshotReport,
)
from catalyst.domain.cycle import EXCHANGE_TZ
from catalyst.domain.errors import DomainError
from catalyst.domain.scanning import (
    CandidateInputs, Ranked, Ranking, ScannerSettings, average_daily_volume, detect_bull_flag, gap_pct,
    news_catalyst, rank, suggested_exits,
)
from catalyst.store.errors import StoreError
from catalyst.store.records import NewScanResult

T = TypeVar("T")
REGULAR_OPEN, PREMARKET_OPEN, REGULAR_CLOSE = time(9, 30), time(4, 0), time(16, 0)


class MarketData(Protocol):
    """The market-data half of AlpacaBroker the scanner uses."""

    def tradable_symbols(self) -> list[str]: ...
    def movers(self, top: int = 10) -> MoversReport: ...
    def most_actives(self, top: int = 10, by: str = "volume") -> list[ActiveReport]: ...
    def snapshots(self, symbols: Sequence[str]) -> dict[str, SnapshotReport]: ...
    def bars(self, symbols: Sequence[str], timeframe: BarTimeframe | str, start: datetime,
             end: datetime | None = None) -> dict[str, list[BarReport]]: ...
    def news(self, symbols: Sequence[str] | None, start: datetime | None = None, end: datetime | None = None,
             limit: int | None = None) -> list[NewsReport]: ...


class Candidate(BaseModel):
    """A ranked catalyst candidate, persisted as scan_results row `scan_id`; stop and target are suggestions."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    symbol: str
    rank: int
    score: Decimal
    price: Decimal
    stop: Decimal
    target: Decimal
    scan_id: int
    gap_pct: Decimal
    relative_volume: Decimal
    headline: str | None
    bull_flag: bool
    pattern_stop: bool = False  # the stop is the flag's low (under the price), not a percentage of the price


class ScannerActor(pykka.ThreadingActor):
    """Runs scans when the cycle asks (`proxy.scan(cycle_id, now).get()`); never raises for a broker fault."""

    # Left behind by a stop if still busy after its share of the bound (waiting on a broker that does not answer):
    # a daemon thread does not hold the process's exit (catalyst.daemon.Daemon.stop).
    use_daemon_thread = True

    def __init__(self, broker: MarketData, writer: Any, settings: ScannerSettings | None = None) -> None:
        super().__init__()
        self.broker = broker
        self.writer = writer  # the DbWriter proxy
        self.settings = settings or ScannerSettings()
        self.log = logger.bind(actor="scanner")
        self._calls = 0
        self._tradable: tuple[date, list[str]] | None = None  # the day's tradable symbols, read once a day

    def scan(self, cycle_id: int, now: datetime) -> list[Candidate]:
        self._calls = 0
        try:
            universe = self._gather(now)
            ranking = rank(universe, self.settings)
            candidates = self._persist(cycle_id, now, ranking)
        except BrokerError as exc:
            # Refused keys or a market-data plan that lacks the feed: every later scan meets it too, so an ERROR.
            self.log.log("ERROR" if isinstance(exc, AuthError) else "WARNING",
                         f"scanner scan at {_hhmm(now)} abandoned: {exc} (the cycle retries at its next slot)")
            return []
        except StoreError as exc:
            self.log.error(f"scanner scan at {_hhmm(now)} not saved: {exc}")
            return []
        except DomainError as exc:  # market data the maths refuses (a negative volume, ...): named, not raised
            self.log.error(f"scanner scan at {_hhmm(now)} abandoned on bad market data: {exc}")
            return []
        for candidate in candidates:
            self.log.info(_candidate_line(candidate))
        for rejection in ranking.rejected:
            self.log.debug(f"scanner {rejection.symbol} rejected: {rejection.reason}")
        kinds = Counter(_reason_kind(r.reason) for r in ranking.rejected)
        summary = ", ".join(f"{kind} {count}" for kind, count in kinds.most_common())
        self.log.info(f"scanner cycle {cycle_id} at {_hhmm(now)}: universe {len(universe)}, "
                      f"{len(candidates)} candidates, {len(ranking.rejected)} rejected"
                      f"{f' ({summary})' if summary else ''}, {self._calls} broker calls")
        return candidates

    # -- market data --
    def _gather(self, now: datetime) -> list[CandidateInputs]:
        s = self.settings
        today = now.astimezone(EXCHANGE_TZ).date()
        symbols = self._universe(today)
        snapshots: dict[str, SnapshotReport] = {}
        for chunk in self._chunks(symbols):
            snapshots.update(self._call(lambda c=chunk: self.broker.snapshots(c)))
        quotes = {sym: _quote(snapshots.get(sym), today) for sym in symbols}
        movers = [sym for sym in symbols if _worth_a_look(quotes[sym], s)]
        history = self._daily_volumes(movers, now, today)
        minutes = self._minute_bars(movers, now, today)
        news = self._news(movers, now, [quotes[sym][2] for sym in movers])
        inputs = []
        for sym in symbols:
            price, prev_close, _ = quotes[sym]
            bars = minutes.get(sym, [])
            inputs.append(CandidateInputs(
                symbol=sym, now=now, price=price, prev_close=prev_close,
                volume_so_far=_volume_so_far(bars, now),
                avg_daily_volume=average_daily_volume(history.get(sym, []), s.avg_volume_days),
                news=news_catalyst(news.get(sym, []), s.catalyst_keywords),
                flag=detect_bull_flag(bars, s.flag) if bars else None,
            ))
        return inputs

    def _universe(self, today: date) -> list[str]:
        s = self.settings
        found: list[str] = []
        if s.universe == "all":
            if self._tradable is None or self._tradable[0] != today:
                self._tradable = (today, self._call(self.broker.tradable_symbols))
            found += self._tradable[1]
        elif s.movers_top:
            found += [m.symbol for m in self._call(lambda: self.broker.movers(top=s.movers_top)).gainers]
        if s.universe == "screener" and s.most_actives_top:
            found += [a.symbol for a in self._call(lambda: self.broker.most_actives(top=s.most_actives_top))]
        found += [sym.upper() for sym in s.watchlist]
        return list(dict.fromkeys(found))  # first mention wins, order kept

    def _daily_volumes(self, symbols: list[str], now: datetime, today: date) -> dict[str, list[Decimal]]:
        # Enough calendar days for avg_volume_days sessions across weekends and holidays.
        start = now - timedelta(days=self.settings.avg_volume_days * 7 // 5 + 10)
        volumes: dict[str, list[Decimal]] = {}
        for chunk in self._chunks(symbols):
            found = self._call(lambda c=chunk: self.broker.bars(c, BarTimeframe.DAY, start, now))
            for sym, bars in found.items():  # today's partial bar is not history
                volumes[sym] = [b.volume for b in bars if b.start.astimezone(EXCHANGE_TZ).date() < today]
        return volumes

    def _minute_bars(self, symbols: list[str], now: datetime, today: date) -> dict[str, list[BarReport]]:
        start = datetime.combine(today, PREMARKET_OPEN, tzinfo=EXCHANGE_TZ)
        bars: dict[str, list[BarReport]] = {}
        for chunk in self._chunks(symbols):
            bars.update(self._call(lambda c=chunk: self.broker.bars(c, BarTimeframe.MINUTE, start, now)))
        return {sym: sorted(found, key=lambda b: b.start) for sym, found in bars.items()}

    def _news(self, symbols: list[str], now: datetime, prev_days: list[date | None]) -> dict[str, list[str]]:
        """Headlines per symbol, newest first, since the previous close (or news_window_hours, if earlier)."""
        start = now - timedelta(hours=self.settings.news_window_hours)
        closes = [datetime.combine(d, REGULAR_CLOSE, tzinfo=EXCHANGE_TZ) for d in prev_days if d is not None]
        start = min([start, *closes])
        wanted, headlines = set(symbols), dict[str, list[str]]()
        for chunk in self._chunks(symbols):
            items = self._call(lambda c=chunk: self.broker.news(c, start, now, limit=self.settings.news_limit))
            for item in sorted(items, key=lambda n: n.created_at, reverse=True):
                for sym in set(item.symbols) & wanted:
                    headlines.setdefault(sym, []).append(item.headline)
        return headlines

    def _chunks(self, symbols: list[str]) -> list[list[str]]:
        size = self.settings.symbols_per_request
        return [symbols[i : i + size] for i in range(0, len(symbols), size)]

    def _call(self, fetch: Callable[[], T]) -> T:
        self._calls += 1
        return fetch()

    # -- results --
    def _persist(self, cycle_id: int, now: datetime, ranking: Ranking) -> list[Candidate]:
        if not ranking.candidates:
            return []
        exits = [suggested_exits(r.inputs.price, r.inputs.flag, self.settings)  # type: ignore[arg-type]
                 for r in ranking.candidates]
        rows = [NewScanResult(symbol=r.inputs.symbol, rank_in_scan=r.rank, composite_score=r.score.composite,
                              scanned_at=now, score_parts=_score_parts(r, stop, target))
                for r, (stop, target) in zip(ranking.candidates, exits)]
        scan_ids = self.writer.insert_scan_results(cycle_id, rows).get()
        return [
            Candidate(symbol=r.inputs.symbol, rank=r.rank, score=r.score.composite,
                      price=r.inputs.price, stop=stop, target=target, scan_id=scan_id,  # type: ignore[arg-type]
                      gap_pct=r.score.gap_pct, relative_volume=r.score.relative_volume,
                      headline=r.inputs.news.headline if r.inputs.news else None,
                      bull_flag=r.inputs.flag is not None,
                      pattern_stop=r.inputs.flag is not None and r.inputs.flag.pullback_low < r.inputs.price)
            for r, (stop, target), scan_id in zip(ranking.candidates, exits, scan_ids)
        ]


def _quote(snap: SnapshotReport | None, today: date) -> tuple[Decimal | None, Decimal | None, date | None]:
    """(latest price, previous close, previous session's date) from a snapshot, as far as it has them.

    Before the bell Alpaca's dailyBar is still the previous session (and prevDailyBar the one before):
    the previous close is whichever daily bar is not today's.
    """
    if snap is None:
        return None, None, None
    price = snap.latest_trade.price if snap.latest_trade else snap.minute_bar.close if snap.minute_bar else None
    previous = snap.daily_bar
    if previous is not None and previous.start.astimezone(EXCHANGE_TZ).date() >= today:
        previous = snap.previous_daily_bar
    if previous is None:
        return price, None, None
    return price, previous.close, previous.start.astimezone(EXCHANGE_TZ).date()


def _worth_a_look(quote: tuple[Decimal | None, Decimal | None, date | None], s: ScannerSettings) -> bool:
    price, prev_close, _ = quote
    if price is None or prev_close is None or price <= 0 or prev_close <= 0:
        return False
    return s.min_price <= price <= s.max_price and gap_pct(prev_close, price) >= s.min_gap_pct


def _volume_so_far(bars: list[BarReport], now: datetime) -> Decimal:
    """Pre-market volume before the bell; regular-session volume after it (what relative_volume expects)."""
    after_open = now.astimezone(EXCHANGE_TZ).time() >= REGULAR_OPEN
    return sum((b.volume for b in bars if (b.start.astimezone(EXCHANGE_TZ).time() >= REGULAR_OPEN) == after_open),
               Decimal(0))


def _score_parts(ranked: Ranked, stop: Decimal, target: Decimal) -> dict[str, Any]:
    """JSON for scan_results.score_parts: decimals as strings (JSON numbers are floats)."""
    score, inputs, flag = ranked.score, ranked.inputs, ranked.inputs.flag
    return {
        **{name: str(part) for name, part in score.parts.items()},
        "gap_pct": str(score.gap_pct.quantize(Decimal("0.01"))),
        "rvol": str(score.relative_volume.quantize(Decimal("0.01"))),
        "avg_dollar_volume": str(score.avg_dollar_volume.quantize(Decimal(1))),
        "price": str(inputs.price), "prev_close": str(inputs.prev_close),
        "volume_so_far": str(inputs.volume_so_far),
        "headline": inputs.news.headline if inputs.news else None,
        "keyword": inputs.news.keyword if inputs.news else None,
        "flag": None if flag is None else {
            "impulse_low": str(flag.impulse_low), "impulse_high": str(flag.impulse_high),
            "pullback_low": str(flag.pullback_low), "breakout_price": str(flag.breakout_price),
            "volume_ratio": str(flag.volume_ratio), "breakout_at": flag.breakout_at.isoformat(),
        },
        "stop": str(stop), "target": str(target),
    }


def _candidate_line(c: Candidate) -> str:
    news = f'"{c.headline[:60]}"' if c.headline else "none"
    return (f"scanner {c.symbol} rank {c.rank} score {c.score.quantize(Decimal('0.01'))} "
            f"gap {c.gap_pct.quantize(Decimal('0.1'))}% rvol {c.relative_volume.quantize(Decimal('0.1'))} "
            f"news {news} flag {'yes' if c.bull_flag else 'no'} price {c.price} stop {c.stop} target {c.target}")


def _reason_kind(reason: str) -> str:
    """'below gap: 2.0% < 5%' -> 'below gap'; 'price 1.50 below floor 2' -> 'price'."""
    return re.split(r"[:\d(]", reason, maxsplit=1)[0].strip() or reason


def _hhmm(now: datetime) -> str:
    return now.astimezone(EXCHANGE_TZ).strftime("%H:%M")
