"""Markets replayed from CSV files: real minute bars, or real daily bars with synthesized minute paths."""

from __future__ import annotations

from abc import ABC, abstractmethod

import bisect
import csv
import threading
from collections import OrderedDict, defaultdict
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from catalyst.sim.market import EXCHANGE_TZ, Bar, NewsItem, Session
from catalyst.sim.synthetic_paths import (
    REGULAR_FIRST_MINUTE, REGULAR_MINUTES, TICKS_PER_DOLLAR, DayMinutes, minute_offset, ohlc_waypoints,
    regular_session, stable_rng, ticks_to_decimal,
)
from catalyst.sim.calendar import session_for

_MINUTE_HEADER = ["timestamp", "symbol", "open", "high", "low", "close", "volume"]
_DAILY_HEADER = ["date", "symbol", "open", "high", "low", "close", "volume"]
_ESTIMATED_TRADE_SIZE = 100  # the files carry no trade counts: n is estimated as volume / 100
_OHLCV = tuple[int, int, int, int, int]


class MarketDataError(ValueError):
    """A market data file that cannot be used; the message names the file, the line and the problem."""


def _rows(path: Path, header: list[str]) -> Iterator[tuple[int, list[str]]]:
    try:
        handle = path.open(newline="")
    except OSError as error:
        raise MarketDataError(f"{path}: cannot read market data: {error.strerror or error}") from None
    with handle:
        reader = csv.reader(handle)
        first = next(reader, None)
        if first != header:
            raise MarketDataError(f"{path}:1: expected header {','.join(header)}, got {','.join(first or [])!r}")
        for line, row in enumerate(reader, start=2):
            if len(row) != len(header):
                raise MarketDataError(f"{path}:{line}: expected {len(header)} columns, got {len(row)}")
            yield line, row


def _parse_ohlcv(path: Path, line: int, fields: list[str]) -> _OHLCV:
    try:
        o, h, lo, c = (int((Decimal(x) * TICKS_PER_DOLLAR).to_integral_value()) for x in fields[:4])
        volume = int(fields[4])
    except (InvalidOperation, ValueError):
        raise MarketDataError(f"{path}:{line}: not a number in {','.join(fields)}") from None
    if min(o, h, lo, c) <= 0 or volume < 0:
        raise MarketDataError(f"{path}:{line}: prices must be positive and volume non-negative")
    return o, h, lo, c, volume


class _ReplayMarket(ABC):
    """What both replays share: per symbol-day minute arrays, sessions from the file, no news."""

    def __init__(self) -> None:
        self._days: dict[str, list[date]] = {}  # symbol -> sorted trading days with data
        self._daily: dict[str, dict[date, Bar]] = {}
        self._session_days: list[date] = []

    @property
    def symbols(self) -> Sequence[str]:
        return tuple(sorted(self._days))

    def sessions(self, start: date, end: date) -> list[Session]:
        lo = bisect.bisect_left(self._session_days, start)
        hi = bisect.bisect_right(self._session_days, end)
        return [session_for(day) for day in self._session_days[lo:hi]]

    def daily_bars(self, symbol: str, start: date, end: date) -> list[Bar]:
        days = self._days.get(symbol, [])
        lo, hi = bisect.bisect_left(days, start), bisect.bisect_right(days, end)
        return [self._daily[symbol][day] for day in days[lo:hi] if day in self._daily[symbol]]

    def minute_bars(self, symbol: str, start: datetime, end: datetime) -> list[Bar]:
        days = self._days.get(symbol, [])
        first, last = start.astimezone(EXCHANGE_TZ).date(), end.astimezone(EXCHANGE_TZ).date()
        bars: list[Bar] = []
        for day in days[bisect.bisect_left(days, first) : bisect.bisect_right(days, last)]:
            low = minute_offset(start) if day == first else -1.0
            high = minute_offset(end) if day == last else 10_000.0
            bars.extend(self.day_minutes(symbol, day).bars_between(low, high))
        return bars

    def price_at(self, symbol: str, at: datetime) -> Decimal | None:
        days = self._days.get(symbol, [])
        position = bisect.bisect_right(days, at.astimezone(EXCHANGE_TZ).date())
        for day in reversed(days[max(0, position - 2) : position]):  # today, else the previous data day
            minutes = self.day_minutes(symbol, day)
            offset = minute_offset(at) if day == at.astimezone(EXCHANGE_TZ).date() else 10_000.0
            index = minutes.last_index_at_or_before(offset)
            if index >= 0:
                seconds = (offset - int(minutes.offsets[index])) * 60.0
                return ticks_to_decimal(minutes.price_in_bar(index, seconds))
        return None

    def news(self, symbols: Sequence[str] | None, start: datetime, end: datetime) -> list[NewsItem]:
        return []  # the files carry no news

    @abstractmethod
    def day_minutes(self, symbol: str, day: date) -> DayMinutes:
        """The symbol's minute path for one session (the two replays build it differently)."""


def _daily_bar(symbol: str, day: date, o: int, h: int, lo: int, c: int, volume: int) -> Bar:
    return Bar(
        symbol=symbol, start=datetime.combine(day, datetime.min.time(), tzinfo=EXCHANGE_TZ),
        open=ticks_to_decimal(o), high=ticks_to_decimal(h), low=ticks_to_decimal(lo), close=ticks_to_decimal(c),
        volume=volume, trade_count=max(1, volume // _ESTIMATED_TRADE_SIZE) if volume else 0,
        vwap=ticks_to_decimal((h + lo + c) // 3),
    )


class MinuteCsvMarket(_ReplayMarket):
    """Replays `timestamp,symbol,open,high,low,close,volume` minute bars (timestamps carry their UTC offset).

    Sessions are the days present; daily bars aggregate the regular-session (09:30-16:00) minutes.
    Trade counts and VWAPs are estimates (the file has neither): n = volume / 100, vw = (h + l + c) / 3.
    """

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.path = Path(path)
        grouped: dict[tuple[str, date], dict[int, _OHLCV]] = defaultdict(dict)
        for line, row in _rows(self.path, _MINUTE_HEADER):
            try:
                stamp = datetime.fromisoformat(row[0])
            except ValueError:
                raise MarketDataError(f"{self.path}:{line}: bad timestamp {row[0]!r}") from None
            if stamp.tzinfo is None:
                raise MarketDataError(f"{self.path}:{line}: timestamp {row[0]!r} has no UTC offset")
            if stamp.second or stamp.microsecond:
                raise MarketDataError(f"{self.path}:{line}: timestamp {row[0]!r} is not on a minute")
            local = stamp.astimezone(EXCHANGE_TZ)
            offset = int(round(minute_offset(local)))
            bucket = grouped[(row[1], local.date())]
            if offset in bucket:
                raise MarketDataError(f"{self.path}:{line}: duplicate bar for {row[1]} at {row[0]}")
            bucket[offset] = _parse_ohlcv(self.path, line, row[2:])
        if not grouped:
            raise MarketDataError(f"{self.path}:2: no bars in the file")
        self._minutes: dict[tuple[str, date], DayMinutes] = {}
        days: dict[str, list[date]] = defaultdict(list)
        for (symbol, day), bucket in grouped.items():
            offsets = np.array(sorted(bucket), dtype=np.int64)
            columns = np.array([bucket[int(o)] for o in offsets], dtype=np.int64).T
            volume = columns[4]
            trades = np.where(volume > 0, np.maximum(1, volume // _ESTIMATED_TRADE_SIZE), 0)
            minutes = DayMinutes(symbol, day, offsets, *columns[:4], volume, trades)
            self._minutes[(symbol, day)] = minutes
            days[symbol].append(day)
            regular = (offsets >= REGULAR_FIRST_MINUTE) & (offsets < REGULAR_FIRST_MINUTE + REGULAR_MINUTES)
            if regular.any():
                o, h, lo, c, v = (col[regular] for col in columns)
                bar = _daily_bar(symbol, day, int(o[0]), int(h.max()), int(lo.min()), int(c[-1]), int(v.sum()))
                self._daily.setdefault(symbol, {})[day] = bar
        self._days = {symbol: sorted(d) for symbol, d in days.items()}
        self._daily = {symbol: self._daily.get(symbol, {}) for symbol in self._days}
        self._session_days = sorted({day for _, day in grouped})

    def day_minutes(self, symbol: str, day: date) -> DayMinutes:
        return self._minutes[(symbol, day)]


class DailyCsvMarket(_ReplayMarket):
    """Replays `date,symbol,open,high,low,close,volume` daily bars; minute bars are synthesized inside
    each real day (regular session only): the path starts at the open, touches the high and the low,
    ends at the close, and the day's volume is spread by the calibrated intraday profile. Same seed,
    same minutes. Rows whose high/low do not cover their open/close (a few exist in real files) are
    widened to cover them and counted in `repaired_rows`.
    """

    _CACHE_SIZE = 512

    def __init__(self, path: str | Path, seed: int = 0) -> None:
        super().__init__()
        self.path, self.seed, self.repaired_rows = Path(path), seed, 0
        self._ohlcv: dict[str, dict[date, _OHLCV]] = defaultdict(dict)
        for line, row in _rows(self.path, _DAILY_HEADER):
            try:
                day = date.fromisoformat(row[0])
            except ValueError:
                raise MarketDataError(f"{self.path}:{line}: bad date {row[0]!r}") from None
            if day in self._ohlcv[row[1]]:
                raise MarketDataError(f"{self.path}:{line}: duplicate bar for {row[1]} on {row[0]}")
            o, h, lo, c, v = _parse_ohlcv(self.path, line, row[2:])
            if h < max(o, c) or lo > min(o, c):
                self.repaired_rows += 1
                h, lo = max(h, o, c), min(lo, o, c)
            self._ohlcv[row[1]][day] = (o, h, lo, c, v)
        if not self._ohlcv:
            raise MarketDataError(f"{self.path}:2: no bars in the file")
        self._days = {symbol: sorted(bars) for symbol, bars in self._ohlcv.items()}
        self._daily = {
            symbol: {day: _daily_bar(symbol, day, *values) for day, values in bars.items()}
            for symbol, bars in self._ohlcv.items()
        }
        self._session_days = sorted({day for bars in self._ohlcv.values() for day in bars})
        self._cache: OrderedDict[tuple[str, date], DayMinutes] = OrderedDict()
        self._cache_lock = threading.Lock()

    def day_minutes(self, symbol: str, day: date) -> DayMinutes:
        key = (symbol, day)
        with self._cache_lock:
            cached = self._cache.get(key)
        if cached is None:
            o, h, lo, c, v = self._ohlcv[symbol][day]
            rng = stable_rng(self.seed, symbol, day.isoformat(), "daily-replay")
            columns = regular_session(rng, ohlc_waypoints(rng, o, h, lo, c), v, trade_size=_ESTIMATED_TRADE_SIZE)
            offsets = np.arange(REGULAR_FIRST_MINUTE, REGULAR_FIRST_MINUTE + REGULAR_MINUTES)
            cached = DayMinutes(symbol, day, offsets, *columns)
            with self._cache_lock:
                self._cache[key] = cached
                while len(self._cache) > self._CACHE_SIZE:
                    self._cache.popitem(last=False)
        return cached
