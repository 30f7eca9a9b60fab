"""Bull-flag detection on crafted minute series: found on a flag, not on a trend, a deep or a heavy pullback."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from catalyst.domain.scanning_patterns import BullFlagSettings, detect_bull_flag

T0 = datetime(2024, 3, 4, 9, 30, tzinfo=ZoneInfo("America/New_York"))


@dataclass(frozen=True)
class MinuteBar:
    start: datetime
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: int


def bars(*rows: tuple[str, str, str, int]) -> list[MinuteBar]:
    """Bars from (low, high, close, volume) rows, one minute apart."""
    return [
        MinuteBar(T0 + timedelta(minutes=i), Decimal(close), Decimal(high), Decimal(low), Decimal(close), volume)
        for i, (low, high, close, volume) in enumerate(rows)
    ]


BASE = [("10.00", "10.05", "10.02", 1000), ("10.00", "10.04", "10.01", 1000)]
IMPULSE = [("10.00", "10.20", "10.18", 5000), ("10.15", "10.45", "10.42", 5000),
           ("10.40", "10.70", "10.68", 5000), ("10.65", "11.00", "10.95", 6000)]
PULLBACK = [("10.80", "10.95", "10.85", 1500), ("10.75", "10.88", "10.78", 1500), ("10.70", "10.82", "10.74", 1200)]
BREAKOUT = [("10.74", "11.02", "10.99", 4000)]


def test_flag_found_with_its_levels_and_volume_ratio() -> None:
    flag = detect_bull_flag(bars(*BASE, *IMPULSE, *PULLBACK, *BREAKOUT))

    assert flag is not None
    assert (flag.impulse_low, flag.impulse_high) == (Decimal("10.00"), Decimal("11.00"))
    assert flag.pullback_low == Decimal("10.70")  # the pattern low: the stop
    assert flag.breakout_price == Decimal("10.95")  # the pullback's high, closed above
    assert flag.volume_ratio == Decimal("0.2625")  # 1400 / 5333.33
    assert flag.breakout_at == T0 + timedelta(minutes=9)


def test_no_flag_before_the_breakout() -> None:
    assert detect_bull_flag(bars(*BASE, *IMPULSE, *PULLBACK)) is None


def test_no_flag_on_a_steady_trend() -> None:
    step = Decimal("0.10")
    trend = [(str(10 + i * step), str(Decimal("10.15") + i * step), str(Decimal("10.12") + i * step), 3000)
             for i in range(30)]

    assert detect_bull_flag(bars(*trend)) is None


def test_no_flag_when_the_pullback_retraces_more_than_sixty_percent() -> None:
    deep = [("10.80", "10.95", "10.85", 1500), ("10.55", "10.88", "10.60", 1500), ("10.35", "10.62", "10.45", 1200)]
    breakout = [("10.45", "10.98", "10.97", 4000)]

    assert detect_bull_flag(bars(*BASE, *IMPULSE, *deep, *breakout)) is None


def test_no_flag_when_the_pullback_trades_heavier_than_the_impulse() -> None:
    heavy = [(low, high, close, 7000) for low, high, close, _ in PULLBACK]

    assert detect_bull_flag(bars(*BASE, *IMPULSE, *heavy, *BREAKOUT)) is None


def test_no_flag_once_price_closed_back_under_the_pattern_low() -> None:
    failed = [("10.50", "10.90", "10.55", 3000)]

    assert detect_bull_flag(bars(*BASE, *IMPULSE, *PULLBACK, *BREAKOUT, *failed)) is None


def test_no_flag_when_the_impulse_is_too_small() -> None:
    small = BullFlagSettings(min_impulse_pct=Decimal("20"))

    assert detect_bull_flag(bars(*BASE, *IMPULSE, *PULLBACK, *BREAKOUT), small) is None


def test_latest_flag_wins_when_two_formed() -> None:
    second_impulse = [("11.00", "11.30", "11.28", 5000), ("11.25", "11.60", "11.55", 5000),
                      ("11.50", "11.90", "11.85", 6000)]
    second_pullback = [("11.75", "11.85", "11.78", 1000), ("11.70", "11.80", "11.72", 1000)]
    second_breakout = [("11.72", "11.95", "11.90", 3000)]

    flag = detect_bull_flag(bars(*BASE, *IMPULSE, *PULLBACK, *BREAKOUT, *second_impulse, *second_pullback,
                                 *second_breakout))

    assert flag is not None and flag.impulse_high == Decimal("11.90") and flag.pullback_low == Decimal("11.70")
