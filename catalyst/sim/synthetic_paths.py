"""Intraday building blocks shared by the synthetic and replayed markets: ticks, volume profile, minute paths."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal

import numpy as np

from catalyst.sim.market import EXCHANGE_TZ, Bar

# Prices are held as integer ticks of $0.0001 so paths are exact; a cent is 100 ticks.
TICKS_PER_DOLLAR = 10_000
CENT = 100
DAY_ORIGIN = time(4, 0)  # minute offsets count from 04:00 ET (pre-market open)
REGULAR_FIRST_MINUTE = 330  # 09:30
REGULAR_MINUTES = 390  # 09:30-16:00
EXTENDED_LAST_MINUTE = 959  # 19:59
PATH_SECONDS = 59  # inside a minute the path runs 0-59 s, then holds the close for the last second

# Share of regular-hours volume by segment, calibrated to ../shared/data/README.md (37 real sessions):
# first minute 1.5%, first 5 min 3.5%, first 30 min 13.3%, 12:00-14:00 19.9%, last 30 min 20.1%,
# last minute 6.9%. The 46.7% left is split between 10:00-12:00 and 14:00-15:30 (the U shape).
_VOLUME_SEGMENTS: tuple[tuple[int, int, float], ...] = (
    (0, 1, 0.015),
    (1, 5, 0.020),
    (5, 30, 0.098),
    (30, 150, 0.290),
    (150, 270, 0.199),
    (270, 360, 0.177),
    (360, 389, 0.132),
    (389, 390, 0.069),
)


def _regular_volume_profile() -> np.ndarray:
    weights = np.zeros(REGULAR_MINUTES)
    for first, stop, share in _VOLUME_SEGMENTS:
        weights[first:stop] = share / (stop - first)
    return weights


REGULAR_VOLUME_PROFILE = _regular_volume_profile()


def stable_rng(*parts: object) -> np.random.Generator:
    """A generator seeded from its parts via CRC32 (never Python's per-process randomized `hash()`)."""
    key = "|".join(str(part) for part in parts).encode()
    return np.random.Generator(np.random.PCG64([zlib.crc32(key), zlib.crc32(key[::-1]), len(key)]))


def tick_size(price_ticks: float) -> int:
    """Alpaca quotes in cents from $1 up and in $0.0001 below."""
    return CENT if price_ticks >= TICKS_PER_DOLLAR else 1


def round_ticks(price_ticks: float) -> int:
    size = tick_size(price_ticks)
    return max(1, int(round(price_ticks / size)) * size)


def ticks_to_decimal(ticks: int) -> Decimal:
    if ticks >= TICKS_PER_DOLLAR and ticks % CENT == 0:
        return Decimal(int(ticks) // CENT).scaleb(-2)
    return Decimal(int(ticks)).scaleb(-4)


def decimal_to_ticks(price: Decimal) -> int:
    return int((price * TICKS_PER_DOLLAR).to_integral_value())


def minute_start(day: date, offset: int) -> datetime:
    return datetime.combine(day, DAY_ORIGIN, tzinfo=EXCHANGE_TZ) + timedelta(minutes=offset)


def minute_offset(at: datetime) -> float:
    """Minutes (fractional) since 04:00 ET of `at`'s exchange date."""
    local = at.astimezone(EXCHANGE_TZ)
    origin = datetime.combine(local.date(), DAY_ORIGIN, tzinfo=EXCHANGE_TZ)
    return (local - origin).total_seconds() / 60.0


def bridge(rng: np.random.Generator, start: float, end: float, steps: int, sigma: float) -> np.ndarray:
    """A Brownian bridge of `steps` increments from start to end (steps + 1 points, both ends exact)."""
    if steps <= 0:
        return np.array([end], dtype=float)
    walk = np.concatenate(([0.0], np.cumsum(rng.normal(0.0, sigma, steps))))
    fraction = np.linspace(0.0, 1.0, steps + 1)
    return start + (end - start) * fraction + walk - fraction * walk[-1]


def allocate_volume(total: int, weights: np.ndarray, minimum: int = 0) -> np.ndarray:
    """Integer volumes proportional to `weights` that sum exactly to `total` (largest remainder)."""
    count = len(weights)
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    floor_each = minimum if total >= minimum * count else 0
    spread = total - floor_each * count
    exact = weights / weights.sum() * spread
    volumes = np.floor(exact).astype(np.int64)
    remainder = int(spread - volumes.sum())
    if remainder:
        order = np.argsort(-(exact - volumes), kind="stable")
        volumes[order[:remainder]] += 1
    return volumes + floor_each


@dataclass(frozen=True, slots=True)
class DayMinutes:
    """One symbol's minute bars for one day, compact: integer arrays indexed by bar, ticks for prices."""

    symbol: str
    day: date
    offsets: np.ndarray  # minute offsets from 04:00, increasing
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    trade_count: np.ndarray

    def __len__(self) -> int:
        return len(self.offsets)

    def bar(self, index: int) -> Bar:
        o, h, lo, c = (int(a[index]) for a in (self.open, self.high, self.low, self.close))
        return Bar(
            symbol=self.symbol,
            start=minute_start(self.day, int(self.offsets[index])),
            open=ticks_to_decimal(o),
            high=ticks_to_decimal(h),
            low=ticks_to_decimal(lo),
            close=ticks_to_decimal(c),
            volume=int(self.volume[index]),
            trade_count=int(self.trade_count[index]),
            vwap=ticks_to_decimal((h + lo + c) // 3),
        )

    def bars_between(self, first_offset: float, stop_offset: float) -> list[Bar]:
        """Bars whose start offset is in [first_offset, stop_offset)."""
        lo = int(np.searchsorted(self.offsets, first_offset, side="left"))
        hi = int(np.searchsorted(self.offsets, stop_offset, side="left"))
        return [self.bar(i) for i in range(lo, hi)]

    def last_index_at_or_before(self, offset: float) -> int:
        """Index of the last bar starting at or before `offset`, -1 if none."""
        return int(np.searchsorted(self.offsets, offset, side="right")) - 1

    def price_in_bar(self, index: int, seconds: float) -> int:
        """The deterministic intraminute path: open -> high -> low -> close on a down bar,
        open -> low -> high -> close on an up bar, linear in seconds over 0-59 s, close for the last second."""
        o, h, lo, c = (int(a[index]) for a in (self.open, self.high, self.low, self.close))
        points = (o, lo, h, c) if c >= o else (o, h, lo, c)
        if seconds >= PATH_SECONDS:
            return c
        position = max(seconds, 0.0) / (PATH_SECONDS / 3)
        segment = min(int(position), 2)
        fraction = position - segment
        a, b = points[segment], points[segment + 1]
        return round_ticks(a + (b - a) * fraction) if a != b else a


def candles_from_path(
    rng: np.random.Generator, path: np.ndarray, low: int, high: int, wick_sigma: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Minute candles from a point path (len n+1): open=path[k], close=path[k+1], small wicks inside [low, high]."""
    opens, closes = path[:-1], path[1:]
    wick_up = np.abs(rng.normal(0.0, wick_sigma, len(opens)))
    wick_down = np.abs(rng.normal(0.0, wick_sigma, len(opens)))
    highs = round_array(np.maximum(opens, closes) + wick_up)
    lows = round_array(np.minimum(opens, closes) - wick_down)
    highs = np.clip(np.maximum(highs, np.maximum(opens, closes)), low, high)
    lows = np.clip(np.minimum(lows, np.minimum(opens, closes)), low, high)
    return opens.copy(), highs, lows, closes.copy()


def round_array(values: np.ndarray) -> np.ndarray:
    sizes = np.where(values >= TICKS_PER_DOLLAR, CENT, 1)
    return np.maximum(np.rint(values / sizes) * sizes, 1).astype(np.int64)


def regular_session(
    rng: np.random.Generator,
    waypoints: list[tuple[int, int]],
    volume: int,
    volume_weights: np.ndarray = REGULAR_VOLUME_PROFILE,
    trade_size: float = 120.0,
) -> tuple[np.ndarray, ...]:
    """390 regular-session candles through `waypoints` [(point index 0..390, ticks)], which must include
    the open (0), the close (390), the day's high and its low: the path touches each waypoint exactly and
    never leaves [low, high]. Returns (open, high, low, close, volume, trade_count) arrays; volumes sum to
    `volume` and follow `volume_weights` with per-minute noise.
    """
    points = sorted(dict(waypoints).items())
    prices = [price for _, price in points]
    low, high = min(prices), max(prices)
    sigma = max((high - low) * 0.018, 1.0)
    path = np.empty(REGULAR_MINUTES + 1)
    for (t_a, p_a), (t_b, p_b) in zip(points, points[1:]):
        path[t_a : t_b + 1] = bridge(rng, p_a, p_b, t_b - t_a, sigma)
    path = np.clip(round_array(path), low, high)
    for t, price in points:  # rounding may have nudged a waypoint: pin them back exactly
        path[t] = price
    opens, highs, lows, closes = candles_from_path(rng, path.astype(np.int64), low, high, sigma * 0.6)
    noisy = volume_weights * rng.lognormal(0.0, 0.3, REGULAR_MINUTES)
    volumes = allocate_volume(volume, noisy, minimum=1)
    trades = np.where(volumes > 0, np.maximum(1, np.rint(volumes / trade_size)), 0).astype(np.int64)
    return opens, highs, lows, closes, volumes, trades


def ohlc_waypoints(rng: np.random.Generator, o: int, h: int, lo: int, c: int) -> list[tuple[int, int]]:
    """Waypoints for a day known only by its OHLC: the open, the close, and one touch each of the high
    and the low at random minutes (at the open or the close when the extreme is one of them)."""
    inner = [int(x) for x in rng.choice(np.arange(1, REGULAR_MINUTES), size=2, replace=False)]
    t_high = 0 if h == o else REGULAR_MINUTES if h == c else inner[0]
    t_low = 0 if lo == o else REGULAR_MINUTES if lo == c else inner[1]
    return [(0, o), (t_high, h), (t_low, lo), (REGULAR_MINUTES, c)]
