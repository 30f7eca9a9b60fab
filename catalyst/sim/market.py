"""The contract between the emulator's market (replayed prices, news, calendar) and its exchange."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Protocol, Sequence
from zoneinfo import ZoneInfo

EXCHANGE_TZ = ZoneInfo("America/New_York")


@dataclass(frozen=True, slots=True)
class Bar:
    """One OHLCV bar. `start` is the bar's start, timezone-aware (America/New_York).

    Minute bars start on a minute; daily bars start at 00:00 of their session date.
    """

    symbol: str
    start: datetime
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: int
    trade_count: int | None = None
    vwap: Decimal | None = None


@dataclass(frozen=True, slots=True)
class Session:
    """One trading day: regular open and close, timezone-aware (America/New_York)."""

    day: date
    open: datetime
    close: datetime


@dataclass(frozen=True, slots=True)
class NewsItem:
    id: int
    created_at: datetime  # timezone-aware
    headline: str
    summary: str
    source: str
    author: str
    url: str
    symbols: tuple[str, ...]


class Market(Protocol):
    """What the exchange and the market-data routes read. Implementations never return the future:
    callers pass `now` (the virtual clock's time) and get nothing that starts at or after it,
    except where a method says otherwise.
    """

    @property
    def symbols(self) -> Sequence[str]: ...

    def sessions(self, start: date, end: date) -> list[Session]:
        """Trading days in [start, end], both inclusive, in order (weekends and holidays absent)."""
        ...

    def minute_bars(self, symbol: str, start: datetime, end: datetime) -> list[Bar]:
        """Minute bars whose start is in [start, end), pre-market (04:00) to after-hours (20:00)."""
        ...

    def daily_bars(self, symbol: str, start: date, end: date) -> list[Bar]:
        """Daily bars of sessions in [start, end]."""
        ...

    def price_at(self, symbol: str, at: datetime) -> Decimal | None:
        """The last trade price at instant `at` (inside a minute: a deterministic path through that
        minute's open, high, low and close). None before the symbol's first trade."""
        ...

    def news(self, symbols: Sequence[str] | None, start: datetime, end: datetime) -> list[NewsItem]:
        """News created in [start, end), newest first, optionally restricted to symbols."""
        ...
