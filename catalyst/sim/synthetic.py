"""A seeded, deterministic synthetic market: made-up names, daily catalysts, minute bars 04:00-20:00 ET."""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import ROUND_DOWN, Decimal
from typing import Sequence

import numpy as np

from catalyst.sim import calendar
from catalyst.sim.market import EXCHANGE_TZ, Bar, NewsItem, Session
from catalyst.sim.synthetic_news import (
    NEWS_AUTHORS, NEWS_SOURCES, Company, catalyst_text, make_universe, noise_text,
)
from catalyst.sim.synthetic_paths import (
    REGULAR_FIRST_MINUTE, REGULAR_MINUTES, REGULAR_VOLUME_PROFILE, DayMinutes, bridge, candles_from_path,
    minute_offset, regular_session, round_array, stable_rng, ticks_to_decimal, allocate_volume,
)
from catalyst.sim.synthetic_plans import (
    Pattern, SymbolDay, catalyst_day, choose_catalysts, make_profiles, quiet_day,
)

_AFTER_HOURS_FIRST_MINUTE = REGULAR_FIRST_MINUTE + REGULAR_MINUTES  # 16:00
_AFTER_HOURS_MINUTES = 240  # 16:00-20:00
_MINUTE_CACHE_SIZE = 512  # symbol-days (~40 KB each)
_GAP_PLACES = Decimal("0.0001")


@dataclass(frozen=True, slots=True)
class CatalystPick:
    """A name the generator made a catalyst on `day` (for tests and demos)."""

    symbol: str
    gap: Decimal  # open / previous close - 1, e.g. 0.1234 for +12.34%
    pattern: Pattern
    volume: int
    average_volume_20d: int
    news_id: int


class SyntheticMarket:
    """Implements `Market`. Same seed, same market, byte for byte: every random draw comes from a
    generator seeded by CRC32 of (seed, symbol, day). Daily plans are generated in order (each day needs
    the previous close) and kept; minute bars are generated per symbol-day on demand and cached (LRU).
    Daily bars are the regular session (09:30-16:00) only; pre-market and after-hours minutes are thin.
    """

    def __init__(self, seed: int, start: date, symbols: int = 50, history_days: int = 60) -> None:
        self.seed = seed
        self.companies: list[Company] = make_universe(symbols)
        self._symbols = [c.symbol for c in self.companies]
        self._profiles = make_profiles(seed, self._symbols)
        first_live = start if calendar.is_trading_day(start) else calendar.next_trading_day(start)
        self.start = first_live
        self.first_day = calendar.trading_days_before(first_live, history_days)[0] if history_days else first_live
        self._lock = threading.RLock()
        self._plans: dict[date, dict[str, SymbolDay]] = {}
        self._news: dict[date, list[NewsItem]] = {}
        self._catalyst_news: dict[date, dict[str, int]] = {}
        self._last_planned: date | None = None
        self._closes = {s: int(round(p.base_ticks / 100) * 100) for s, p in self._profiles.items()}
        self._volumes = {s: deque([p.average_volume] * 20, maxlen=20) for s, p in self._profiles.items()}
        self._minutes: OrderedDict[tuple[str, date], DayMinutes] = OrderedDict()

    # -- Market protocol --
    @property
    def symbols(self) -> Sequence[str]:
        return tuple(self._symbols)

    def sessions(self, start: date, end: date) -> list[Session]:
        return calendar.trading_sessions(start, end)

    def minute_bars(self, symbol: str, start: datetime, end: datetime) -> list[Bar]:
        if symbol not in self._profiles or end <= start:
            return []
        bars: list[Bar] = []
        first = max(start.astimezone(EXCHANGE_TZ).date(), self.first_day)
        for session in calendar.trading_sessions(first, end.astimezone(EXCHANGE_TZ).date()):
            minutes = self.day_minutes(symbol, session.day)
            low = minute_offset(start) if session.day == start.astimezone(EXCHANGE_TZ).date() else -1.0
            high = minute_offset(end) if session.day == end.astimezone(EXCHANGE_TZ).date() else 10_000.0
            bars.extend(minutes.bars_between(low, high))
        return bars

    def daily_bars(self, symbol: str, start: date, end: date) -> list[Bar]:
        if symbol not in self._profiles:
            return []
        bars = []
        for session in calendar.trading_sessions(max(start, self.first_day), end):
            plan = self.plan(session.day)[symbol]
            trade_size = self._profiles[symbol].trade_size
            bars.append(Bar(
                symbol=symbol,
                start=datetime.combine(session.day, datetime.min.time(), tzinfo=EXCHANGE_TZ),
                open=ticks_to_decimal(plan.open), high=ticks_to_decimal(plan.high),
                low=ticks_to_decimal(plan.low), close=ticks_to_decimal(plan.close),
                volume=plan.volume, trade_count=max(1, round(plan.volume / trade_size)),
                vwap=ticks_to_decimal((plan.high + plan.low + plan.close) // 3),
            ))
        return bars

    def price_at(self, symbol: str, at: datetime) -> Decimal | None:
        if symbol not in self._profiles:
            return None
        day = at.astimezone(EXCHANGE_TZ).date()
        if day < self.first_day:
            return None
        if calendar.is_trading_day(day):
            minutes = self.day_minutes(symbol, day)
            offset = minute_offset(at)
            index = minutes.last_index_at_or_before(offset)
            if index >= 0:
                seconds = (offset - int(minutes.offsets[index])) * 60.0
                return ticks_to_decimal(minutes.price_in_bar(index, seconds))
        if day <= self.first_day:
            return None
        previous = calendar.previous_trading_day(day)
        if previous < self.first_day:
            return None
        minutes = self.day_minutes(symbol, previous)
        return ticks_to_decimal(int(minutes.close[-1]))

    def news(self, symbols: Sequence[str] | None, start: datetime, end: datetime) -> list[NewsItem]:
        wanted = set(symbols) if symbols else None
        first = max(start.astimezone(EXCHANGE_TZ).date(), self.first_day)
        items: list[NewsItem] = []
        for session in calendar.trading_sessions(first, end.astimezone(EXCHANGE_TZ).date()):
            self.plan(session.day)
            for item in self._news[session.day]:
                if start <= item.created_at < end and (wanted is None or wanted.intersection(item.symbols)):
                    items.append(item)
        items.sort(key=lambda item: (item.created_at, item.id), reverse=True)
        return items

    # -- extras --
    def company_name(self, symbol: str) -> str:
        return next(c.name for c in self.companies if c.symbol == symbol)

    def catalyst_symbols(self, day: date) -> list[CatalystPick]:
        plans = self.plan(day)
        news_ids = self._catalyst_news[day]
        return [
            CatalystPick(
                symbol=symbol, gap=(Decimal(plan.open) / Decimal(plan.prev_close) - 1).quantize(_GAP_PLACES, ROUND_DOWN),
                pattern=plan.pattern, volume=plan.volume, average_volume_20d=plan.average_volume_20d,
                news_id=news_ids[symbol],
            )
            for symbol, plan in plans.items()
            if plan.catalyst_kind is not None
        ]

    def plan(self, day: date) -> dict[str, SymbolDay]:
        """Every symbol's plan for trading day `day` (generating all earlier days first if needed)."""
        if day < self.first_day or not calendar.is_trading_day(day):
            raise KeyError(f"no synthetic session on {day.isoformat()} (first day {self.first_day.isoformat()})")
        with self._lock:
            while day not in self._plans:
                self._plan_next_day()
            return self._plans[day]

    def day_minutes(self, symbol: str, day: date) -> DayMinutes:
        key = (symbol, day)
        with self._lock:
            cached = self._minutes.get(key)
            if cached is not None:
                self._minutes.move_to_end(key)
                return cached
            plan = self.plan(day)[symbol]
        minutes = self._build_minutes(symbol, day, plan)
        with self._lock:
            self._minutes[key] = minutes
            while len(self._minutes) > _MINUTE_CACHE_SIZE:
                self._minutes.popitem(last=False)
        return minutes

    # -- generation --
    def _plan_next_day(self) -> None:
        day = self.first_day if self._last_planned is None else calendar.next_trading_day(self._last_planned)
        picks = {symbol: (pattern, kind) for symbol, pattern, kind in
                 choose_catalysts(self.seed, day.isoformat(), self._symbols)}
        plans: dict[str, SymbolDay] = {}
        for symbol in self._symbols:
            rng = stable_rng(self.seed, symbol, day.isoformat(), "plan")
            prev_close, avg20 = self._closes[symbol], float(np.mean(self._volumes[symbol]))
            if symbol in picks:
                plans[symbol] = catalyst_day(rng, *picks[symbol], prev_close, avg20)
            else:
                plans[symbol] = quiet_day(rng, self._profiles[symbol], prev_close, avg20)
            self._closes[symbol] = plans[symbol].close
            self._volumes[symbol].append(plans[symbol].volume)
        self._plans[day] = plans
        self._news[day] = self._make_news(day, plans)
        self._last_planned = day

    def _make_news(self, day: date, plans: dict[str, SymbolDay]) -> list[NewsItem]:
        rng = stable_rng(self.seed, "news", day.isoformat())
        base_id = (day.toordinal() - 700_000) * 100
        origin = datetime.combine(day, datetime.min.time(), tzinfo=EXCHANGE_TZ)
        by_symbol = {c.symbol: c for c in self.companies}
        items: list[NewsItem] = []
        catalysts = [(s, p) for s, p in plans.items() if p.catalyst_kind is not None]
        for index, (symbol, plan) in enumerate(catalysts):
            assert plan.catalyst_kind is not None and plan.news_minute is not None
            headline, summary = catalyst_text(plan.catalyst_kind, by_symbol[symbol], rng)
            created = origin + timedelta(hours=4, minutes=plan.news_minute - 1, seconds=int(rng.integers(0, 60)))
            items.append(self._news_item(base_id + index, created, headline, summary, symbol, rng))
            self._catalyst_news.setdefault(day, {})[symbol] = base_id + index
        quiet = [s for s in self._symbols if plans[s].catalyst_kind is None]
        for index in range(int(rng.integers(3, 9))):  # unrelated noise
            symbol = quiet[int(rng.integers(0, len(quiet)))]
            headline, summary = noise_text(by_symbol[symbol], rng)
            created = origin + timedelta(seconds=int(rng.integers(0, 24 * 3600)))
            items.append(self._news_item(base_id + 10 + index, created, headline, summary, symbol, rng))
        return items

    @staticmethod
    def _news_item(
        news_id: int, created: datetime, headline: str, summary: str, symbol: str, rng: np.random.Generator
    ) -> NewsItem:
        return NewsItem(
            id=news_id, created_at=created, headline=headline, summary=summary,
            source=NEWS_SOURCES[int(rng.integers(0, len(NEWS_SOURCES)))],
            author=NEWS_AUTHORS[int(rng.integers(0, len(NEWS_AUTHORS)))],
            url=f"https://news.example.invalid/{news_id}", symbols=(symbol,),
        )

    def _build_minutes(self, symbol: str, day: date, plan: SymbolDay) -> DayMinutes:
        rng = stable_rng(self.seed, symbol, day.isoformat(), "minutes")
        trade_size = self._profiles[symbol].trade_size
        weights = REGULAR_VOLUME_PROFILE.copy()
        for first, stop, multiplier in plan.volume_boosts:
            weights[first:stop] *= multiplier
        o, h, lo, c, v, n = regular_session(rng, list(plan.waypoints), plan.volume, weights, trade_size)
        pre = self._extended(rng, plan, pre_market=True, trade_size=trade_size)
        post = self._extended(rng, plan, pre_market=False, trade_size=trade_size)
        regular_offsets = np.arange(REGULAR_FIRST_MINUTE, REGULAR_FIRST_MINUTE + REGULAR_MINUTES)
        parts = [pre, (regular_offsets, o, h, lo, c, v, n), post]
        return DayMinutes(symbol, day, *(np.concatenate([p[i] for p in parts]) for i in range(7)))

    @staticmethod
    def _extended(
        rng: np.random.Generator, plan: SymbolDay, pre_market: bool, trade_size: float
    ) -> tuple[np.ndarray, ...]:
        """Thin, sparse extended-hours trading; on a catalyst day pre-market wakes up at the news."""
        steps = REGULAR_FIRST_MINUTE if pre_market else _AFTER_HOURS_MINUTES
        t = np.arange(steps)
        sigma = plan.prev_close * 0.0006
        if pre_market and plan.news_minute is not None:
            news = plan.news_minute
            reaction = plan.open * (1 + rng.uniform(-0.03, 0.03))
            path = np.concatenate((bridge(rng, plan.prev_close, plan.prev_close, news, sigma)[:-1],
                                   bridge(rng, reaction, plan.open, steps - news, sigma * 4)))
            odds = np.where(t < news, 0.04, 0.9)
            weights = np.where(t < news, 0.2, 1.0 + 30.0 / (1.0 + np.maximum(t - news, 0)))
            total = int(plan.volume * rng.uniform(0.08, 0.2))
        elif pre_market:
            path = bridge(rng, plan.prev_close, plan.open, steps, sigma)
            odds = 0.03 + 0.3 * (t / steps) ** 2
            weights = 0.2 + (t / steps) ** 2
            total = int(plan.volume * rng.uniform(0.005, 0.02))
        else:
            drift = plan.close * np.exp(rng.normal(0, 0.004))
            path = bridge(rng, plan.close, drift, steps, plan.close * 0.0004)
            odds = 0.03 + 0.3 * np.exp(-t / 60.0)
            weights = 0.2 + np.exp(-t / 45.0)
            total = int(plan.volume * rng.uniform(0.01, 0.03))
        o, h, lo, c = candles_from_path(rng, round_array(path), 1, 10**12, sigma * 0.5)
        active = rng.random(steps) < odds
        volumes = allocate_volume(total, weights[active], minimum=1)
        trades = np.maximum(1, np.rint(volumes / trade_size)).astype(np.int64)
        offsets = t[active] + (0 if pre_market else _AFTER_HOURS_FIRST_MINUTE)
        return offsets, o[active], h[active], lo[active], c[active], volumes, trades
