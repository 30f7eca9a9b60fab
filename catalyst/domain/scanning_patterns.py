"""Bull-flag detection on minute bars: impulse leg up, orderly pullback on lighter volume, breakout.

The shape, on bars in time order::

            impulse_high
               /\\        breakout (close above the pullback's high)
              /  \\/\\  /
             /      \\/   <- pullback: retraces less than max_retracement of the impulse, lighter volume
            /      pullback_low  (the pattern low: the natural stop)
    impulse_low

Search: every bar is tried as the impulse's peak, latest first; the impulse starts at the lowest low of
the `max_impulse_bars` before it. Walking forward from the peak, bars belong to the pullback until one
closes above the pullback's high (the breakout). The pattern is refused when the pullback retraces too
deep, lasts too long, trades heavier than the impulse, or when a later bar closed back under the pullback
low (a failed flag is no flag). The most recent valid pattern wins.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Protocol, Sequence

from pydantic import BaseModel, ConfigDict, Field

from catalyst.domain.money import MONEY_CONTEXT


class MinuteBarLike(Protocol):
    """Any OHLCV bar: the broker's BarReport and the emulator's Bar both fit."""

    @property
    def start(self) -> datetime: ...
    @property
    def high(self) -> Decimal: ...
    @property
    def low(self) -> Decimal: ...
    @property
    def close(self) -> Decimal: ...
    @property
    def volume(self) -> Decimal | int: ...


class BullFlagSettings(BaseModel):
    """Bull-flag shape limits (config `[scanner.flag]`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_impulse_bars: int = Field(default=3, ge=1)
    max_impulse_bars: int = Field(default=30, ge=1)
    # An impulse smaller than this is noise, not a leg (percent of the impulse low).
    min_impulse_pct: Decimal = Field(default=Decimal("2"), gt=0)
    min_pullback_bars: int = Field(default=2, ge=1)
    max_pullback_bars: int = Field(default=30, ge=1)
    # Fractions of the impulse: a pause shallower than min is just the trend; deeper than max is a reversal.
    min_retracement: Decimal = Field(default=Decimal("0.1"), ge=0, lt=1)
    max_retracement: Decimal = Field(default=Decimal("0.5"), gt=0, le=1)
    # Average pullback volume over average impulse volume must stay below this ("lighter volume").
    max_volume_ratio: Decimal = Field(default=Decimal("0.8"), gt=0)


@dataclass(frozen=True, slots=True)
class Flag:
    impulse_low: Decimal
    impulse_high: Decimal
    pullback_low: Decimal  # the pattern low: the natural stop
    breakout_price: Decimal  # the level broken: the pullback's highest high
    volume_ratio: Decimal  # average pullback volume / average impulse volume
    breakout_at: datetime


def detect_bull_flag(minute_bars: Sequence[MinuteBarLike], settings: BullFlagSettings | None = None) -> Flag | None:
    """The most recent valid bull flag in `minute_bars` (time order), or None."""
    limits = settings or BullFlagSettings()
    bars = list(minute_bars)
    for peak in range(len(bars) - 2, limits.min_impulse_bars - 1, -1):
        flag = _flag_at(bars, peak, limits)
        if flag is not None:
            return flag
    return None


def _flag_at(bars: list[MinuteBarLike], peak: int, limits: BullFlagSettings) -> Flag | None:
    ctx = MONEY_CONTEXT
    first = max(0, peak - limits.max_impulse_bars)
    start = min(range(first, peak), key=lambda i: (bars[i].low, -i))  # the latest of equal lows
    impulse_high, impulse_low = bars[peak].high, bars[start].low
    if peak - start < limits.min_impulse_bars or impulse_low <= 0:
        return None
    if any(bars[i].high > impulse_high for i in range(start, peak)):
        return None  # the peak must top its own leg
    impulse = impulse_high - impulse_low
    if ctx.divide(impulse * 100, impulse_low) < limits.min_impulse_pct:
        return None
    pullback_high, pullback_low = Decimal(0), impulse_high
    for index in range(peak + 1, min(len(bars), peak + limits.max_pullback_bars + 2)):
        bar, pullback_bars = bars[index], index - peak - 1
        if pullback_bars >= limits.min_pullback_bars and bar.close > pullback_high:
            return _breakout(bars, start, peak, index, pullback_high, pullback_low, limits)
        if bar.high > impulse_high:
            return None  # a new high before a pullback formed: the impulse is still running
        pullback_high, pullback_low = max(pullback_high, bar.high), min(pullback_low, bar.low)
        if ctx.divide(impulse_high - pullback_low, impulse) >= limits.max_retracement:
            return None
    return None


def _breakout(
    bars: list[MinuteBarLike], start: int, peak: int, breakout: int,
    pullback_high: Decimal, pullback_low: Decimal, limits: BullFlagSettings,
) -> Flag | None:
    ctx = MONEY_CONTEXT
    impulse_high, impulse_low = bars[peak].high, bars[start].low
    if ctx.divide(impulse_high - pullback_low, impulse_high - impulse_low) < limits.min_retracement:
        return None
    impulse_volume = _mean_volume(bars[start + 1 : peak + 1])
    pullback_volume = _mean_volume(bars[peak + 1 : breakout])
    if impulse_volume <= 0:
        return None
    ratio = ctx.divide(pullback_volume, impulse_volume)
    if ratio >= limits.max_volume_ratio:
        return None
    if any(bar.close < pullback_low for bar in bars[breakout + 1 :]):
        return None  # broke out, then failed back under the pattern low
    return Flag(
        impulse_low=impulse_low, impulse_high=impulse_high, pullback_low=pullback_low,
        breakout_price=pullback_high, volume_ratio=ratio.quantize(Decimal("0.0001")),
        breakout_at=bars[breakout].start,
    )


def _mean_volume(bars: Sequence[MinuteBarLike]) -> Decimal:
    if not bars:
        return Decimal(0)
    return MONEY_CONTEXT.divide(sum((Decimal(b.volume) for b in bars), Decimal(0)), len(bars))
