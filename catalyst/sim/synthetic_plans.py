"""Daily plans for the synthetic market: each symbol-day's OHLCV, pattern, gap and intraday waypoints."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from catalyst.sim.synthetic_news import CatalystKind
from catalyst.sim.synthetic_paths import REGULAR_MINUTES, ohlc_waypoints, round_ticks, stable_rng

MIN_CATALYST_GAP = 0.05
MIN_CATALYST_VOLUME_MULTIPLE = 3.0


class Pattern(StrEnum):
    QUIET = "quiet"
    BULL_FLAG = "bull_flag"  # impulse up after the open, orderly pullback on lighter volume, breakout
    FADE = "fade"  # pops after the open, then sells off to close below its open (most real gappers)
    HOLD = "hold"  # gaps and holds, closing between its open and its high


@dataclass(frozen=True, slots=True)
class SymbolProfile:
    base_ticks: float
    daily_sigma: float
    average_volume: float
    trade_size: float


@dataclass(frozen=True, slots=True)
class SymbolDay:
    """One symbol's plan for one session (prices in ticks). `waypoints` are (point index 0..390, ticks)."""

    prev_close: int
    open: int
    high: int
    low: int
    close: int
    volume: int
    average_volume_20d: int
    pattern: Pattern
    waypoints: tuple[tuple[int, int], ...]
    volume_boosts: tuple[tuple[int, int, float], ...] = ()  # (first minute, stop minute, multiplier)
    catalyst_kind: CatalystKind | None = None
    news_minute: int | None = None  # offset from 04:00 of the catalyst news (pre-market)

    @property
    def gap(self) -> float:
        return self.open / self.prev_close - 1.0


def make_profiles(seed: int, symbols: list[str]) -> dict[str, SymbolProfile]:
    """Base prices spread log-evenly from about $2.2 to $400 over a seeded permutation of the universe."""
    order = stable_rng(seed, "price-ranks").permutation(len(symbols))
    profiles: dict[str, SymbolProfile] = {}
    for symbol, rank in zip(symbols, order):
        rng = stable_rng(seed, symbol, "profile")
        fraction = rank / max(len(symbols) - 1, 1)
        base_dollars = 2.2 * (400 / 2.2) ** fraction
        profiles[symbol] = SymbolProfile(
            base_ticks=base_dollars * 10_000,
            daily_sigma=float(rng.uniform(0.012, 0.035) + 0.015 * (1 - fraction)),
            average_volume=float(10 ** rng.uniform(5.4, 6.6) * (1.8 - fraction)),
            trade_size=float(rng.uniform(60, 250)),
        )
    return profiles


def quiet_day(rng: np.random.Generator, profile: SymbolProfile, prev_close: int, avg20: float) -> SymbolDay:
    sigma = profile.daily_sigma
    reversion = -0.08 * math.log(prev_close / profile.base_ticks)  # keeps each name near its price level
    o = round_ticks(prev_close * math.exp(rng.normal(reversion / 2, 0.25 * sigma)))
    c = round_ticks(o * math.exp(rng.normal(reversion / 2, sigma)))
    h = max(round_ticks(max(o, c) * (1 + abs(rng.normal(0, 0.4 * sigma)))), o, c)
    lo = min(round_ticks(min(o, c) * (1 - abs(rng.normal(0, 0.4 * sigma)))), o, c)
    volume = int(profile.average_volume * rng.lognormal(0.0, 0.25))
    return SymbolDay(
        prev_close=prev_close, open=o, high=h, low=lo, close=c, volume=volume,
        average_volume_20d=int(avg20), pattern=Pattern.QUIET,
        waypoints=tuple(ohlc_waypoints(rng, o, h, lo, c)),
    )


def catalyst_day(
    rng: np.random.Generator, pattern: Pattern, kind: CatalystKind, prev_close: int, avg20: float
) -> SymbolDay:
    gap = min(MIN_CATALYST_GAP + 0.005 + rng.exponential(0.12), 0.8)
    o = round_ticks(prev_close * (1 + gap))
    while o < prev_close * (1 + MIN_CATALYST_GAP):  # rounding must never take a catalyst below a 5% gap
        o = round_ticks(o + 100)
    volume = int(avg20 * rng.uniform(4.0, 15.0))
    u = rng.uniform
    boosts: tuple[tuple[int, int, float], ...]
    if pattern is Pattern.BULL_FLAG:
        t_low, t_impulse = int(rng.integers(1, 4)), int(rng.integers(6, 20))
        t_pullback = t_impulse + int(rng.integers(10, 25))
        t_breakout = t_pullback + int(rng.integers(8, 20))
        t_high = t_breakout + int(rng.integers(10, 90))
        impulse = round_ticks(o * (1 + u(0.04, 0.12)))
        pullback = round_ticks(impulse - (impulse - o) * u(0.35, 0.6))
        h = round_ticks(impulse * (1 + u(0.03, 0.10)))
        c = round_ticks(h * (1 - u(0.01, 0.05)))
        lo = round_ticks(o * (1 - u(0.003, 0.015)))
        points = [(0, o), (t_low, lo), (t_impulse, impulse), (t_pullback, pullback),
                  (t_breakout, round_ticks(impulse * 1.004)), (t_high, h), (REGULAR_MINUTES, c)]
        boosts = ((0, t_impulse, 2.5), (t_impulse, t_pullback, 0.5), (t_pullback, t_breakout + 10, 2.0))
    elif pattern is Pattern.FADE:
        t_high, t_low = int(rng.integers(2, 30)), int(rng.integers(250, REGULAR_MINUTES))
        h = round_ticks(o * (1 + u(0.01, 0.10)))
        c = round_ticks(o * (1 - u(0.02, 0.15)))
        lo = min(round_ticks(c * (1 - u(0.0, 0.02))), c)
        points = [(0, o), (t_high, h), (t_low, lo), (REGULAR_MINUTES, c)]
        boosts = ((0, 30, 1.6),)
    else:
        t_low, t_high = int(rng.integers(3, 50)), int(rng.integers(60, 380))
        h = round_ticks(o * (1 + u(0.03, 0.12)))
        lo = round_ticks(o * (1 - u(0.01, 0.04)))
        c = round_ticks(o + (h - o) * u(0.3, 0.9))
        points = [(0, o), (t_low, lo), (t_high, h), (REGULAR_MINUTES, c)]
        boosts = ((0, 30, 1.4),)
    return SymbolDay(
        prev_close=prev_close, open=o, high=max(p for _, p in points), low=min(p for _, p in points),
        close=c, volume=volume, average_volume_20d=int(avg20), pattern=pattern,
        waypoints=tuple(points), volume_boosts=boosts, catalyst_kind=kind,
        news_minute=int(rng.integers(120, 300)),  # 06:00-09:00 ET, before the open
    )


def choose_catalysts(seed: int, day_key: str, symbols: list[str]) -> list[tuple[str, Pattern, CatalystKind]]:
    """2-5 catalyst names a day; the first always a bull flag, most others fade (68% of real gappers
    closed below their open, ../shared/data/README.md)."""
    rng = stable_rng(seed, "catalysts", day_key)
    count = int(rng.integers(2, 6))
    chosen = [symbols[int(i)] for i in rng.choice(len(symbols), size=count, replace=False)]
    kinds = list(CatalystKind)
    picks: list[tuple[str, Pattern, CatalystKind]] = []
    for index, symbol in enumerate(chosen):
        roll = rng.random()
        pattern = Pattern.BULL_FLAG if index == 0 or roll < 0.1 else Pattern.HOLD if roll < 0.2 else Pattern.FADE
        picks.append((symbol, pattern, kinds[int(rng.integers(0, len(kinds)))]))
    return picks
