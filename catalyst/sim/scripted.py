"""A Market whose prices tests set exactly, so fills happen where and when a test says."""

from __future__ import annotations

import threading
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Sequence

from catalyst.sim import calendar
from catalyst.sim.market import EXCHANGE_TZ, Bar, NewsItem, Session

DEFAULT_VOLUME = 1_000_000


def _minute(moment: datetime) -> datetime:
    return moment.astimezone(EXCHANGE_TZ).replace(second=0, microsecond=0)


class ScriptedMarket:
    """Every weekday is a 09:30-16:00 session (no holidays, no early closes: tests pick their dates).

    `set_price(symbol, price, at=...)` records a trade at `at`: it becomes the latest trade and is folded
    into the bar of `at`'s minute (open = that minute's first price, high/low extended, close = price).
    `volume` replaces the minute's volume, which is what caps partial fills.
    """

    def __init__(self, symbols: Sequence[str], start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError(f"ScriptedMarket start must be timezone-aware, got {start.isoformat()}")
        self._symbols = tuple(symbols)
        self.start = start
        self._lock = threading.Lock()
        self._trades: dict[str, list[tuple[datetime, Decimal]]] = {s: [] for s in self._symbols}
        self._bars: dict[str, dict[datetime, Bar]] = {s: {} for s in self._symbols}

    @property
    def symbols(self) -> Sequence[str]:
        return self._symbols

    def set_price(self, symbol: str, price: Decimal | str | float, *, at: datetime,
                  volume: int = DEFAULT_VOLUME) -> None:
        if symbol not in self._trades:
            raise ValueError(f"unknown symbol {symbol!r}: ScriptedMarket trades {', '.join(self._symbols)}")
        value = Decimal(str(price))
        if value <= 0:
            raise ValueError(f"price for {symbol} must be positive, got {value}")
        minute = _minute(at)
        with self._lock:
            self._trades[symbol].append((at, value))
            self._trades[symbol].sort(key=lambda trade: trade[0])
            old = self._bars[symbol].get(minute)
            self._bars[symbol][minute] = Bar(
                symbol=symbol,
                start=minute,
                open=old.open if old else value,
                high=max(old.high, value) if old else value,
                low=min(old.low, value) if old else value,
                close=value,
                volume=volume,
                trade_count=(old.trade_count or 0) + 1 if old else 1,
                vwap=None,
            )

    def sessions(self, start: date, end: date) -> list[Session]:
        return calendar.trading_sessions(start, end)  # NYSE's, holidays and early closes included

    def minute_bars(self, symbol: str, start: datetime, end: datetime) -> list[Bar]:
        with self._lock:
            bars = self._bars.get(symbol, {})
            return sorted((b for m, b in bars.items() if start <= m < end), key=lambda b: b.start)

    def daily_bars(self, symbol: str, start: date, end: date) -> list[Bar]:
        by_day: dict[date, list[Bar]] = {}
        for bar in self.minute_bars(symbol, datetime.combine(start, time(0), tzinfo=EXCHANGE_TZ),
                                    datetime.combine(end + timedelta(days=1), time(0), tzinfo=EXCHANGE_TZ)):
            by_day.setdefault(bar.start.date(), []).append(bar)
        return [
            Bar(symbol, datetime.combine(day, time(0), tzinfo=EXCHANGE_TZ), bars[0].open,
                max(b.high for b in bars), min(b.low for b in bars), bars[-1].close, sum(b.volume for b in bars))
            for day, bars in sorted(by_day.items())
        ]

    def price_at(self, symbol: str, at: datetime) -> Decimal | None:
        with self._lock:
            price = None
            for moment, value in self._trades.get(symbol, []):
                if moment > at:
                    break
                price = value
            return price

    def news(self, symbols: Sequence[str] | None, start: datetime, end: datetime) -> list[NewsItem]:
        return []
