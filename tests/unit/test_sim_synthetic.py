"""The synthetic market: determinism, calibration to real intraday volume, catalysts, intraminute paths."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from decimal import Decimal
from statistics import mean
from zoneinfo import ZoneInfo

import pytest

from catalyst.sim.calendar import trading_sessions
from catalyst.sim.synthetic import SyntheticMarket
from catalyst.sim.synthetic_plans import Pattern

# Under xdist (`make test`), on one worker: its module-scoped market is built once, not once per worker.
pytestmark = pytest.mark.xdist_group("sim_synthetic")

ET = ZoneInfo("America/New_York")
START = date(2026, 3, 2)


def _day_span(day: date) -> tuple[datetime, datetime]:
    return datetime.combine(day, time(0), tzinfo=ET), datetime.combine(day, time(23, 59), tzinfo=ET)


def _regular(bars):
    return [b for b in bars if time(9, 30) <= b.start.timetz().replace(tzinfo=None) < time(16, 0)]


@pytest.fixture(scope="module")
def market() -> SyntheticMarket:
    return SyntheticMarket(seed=42, start=START, history_days=60)


def test_same_seed_gives_identical_bars_and_news_whatever_the_access_order() -> None:
    first, second = SyntheticMarket(5, START), SyntheticMarket(5, START)
    later = trading_sessions(START, START + timedelta(days=20))[-1].day
    symbol = first.symbols[3]
    late_bars = second.minute_bars(symbol, *_day_span(later))  # second market generates the late day first
    assert first.minute_bars(symbol, *_day_span(later)) == late_bars
    assert first.daily_bars(symbol, date(2025, 1, 1), later) == second.daily_bars(symbol, date(2025, 1, 1), later)
    span = (datetime(2025, 11, 1, tzinfo=ET), datetime.combine(later, time(23), tzinfo=ET))
    assert first.news(None, *span) == second.news(None, *span)
    assert first.catalyst_symbols(START) == second.catalyst_symbols(START)


def test_a_different_seed_gives_a_different_market() -> None:
    first, second = SyntheticMarket(5, START), SyntheticMarket(6, START)
    symbol = first.symbols[0]
    assert first.minute_bars(symbol, *_day_span(START)) != second.minute_bars(symbol, *_day_span(START))
    assert first.catalyst_symbols(START) != second.catalyst_symbols(START)


def test_universe_has_fifty_named_tickers_priced_from_about_2_to_about_400(market: SyntheticMarket) -> None:
    assert len(set(market.symbols)) == 50 and all(market.company_name(s) for s in market.symbols)
    closes = [market.daily_bars(s, market.first_day, market.first_day)[0].close for s in market.symbols]
    assert min(closes) < Decimal("4") and max(closes) > Decimal("250")
    assert all(c.as_tuple().exponent == -2 for c in closes)


def test_sixty_days_of_daily_history_precede_the_start(market: SyntheticMarket) -> None:
    bars = market.daily_bars(market.symbols[0], date(2025, 1, 1), START - timedelta(days=1))
    assert len(bars) == 60
    assert market.price_at(market.symbols[0], datetime(2025, 11, 1, tzinfo=ET)) is None


def test_regular_session_volume_shares_match_the_real_calibration_over_twenty_sessions() -> None:
    market = SyntheticMarket(seed=9, start=START, history_days=0)
    sessions = trading_sessions(START, START + timedelta(days=40))[:20]
    windows = {  # minutes after 09:30 -> share in ../shared/data/README.md
        "first minute": (0, 1, 0.015), "first 5 min": (0, 5, 0.035), "first 30 min": (0, 30, 0.133),
        "12:00-14:00": (150, 270, 0.199), "last 30 min": (360, 390, 0.201), "last minute": (389, 390, 0.069),
    }
    shares: dict[str, list[float]] = {name: [] for name in windows}
    for session in sessions:
        plans = market.plan(session.day)
        for symbol in market.symbols:
            if plans[symbol].pattern is not Pattern.QUIET:  # catalysts trade front-loaded on purpose
                continue
            minutes = market.day_minutes(symbol, session.day)  # raw arrays: 20 x 47 days of Bars is slow
            regular = (minutes.offsets >= 330) & (minutes.offsets < 720)  # 09:30-16:00 from 04:00
            volumes = [int(v) for v in minutes.volume[regular]]
            assert len(volumes) == 390
            for name, (first, stop, _) in windows.items():
                shares[name].append(sum(volumes[first:stop]) / sum(volumes))
    for name, (_, _, expected) in windows.items():
        assert mean(shares[name]) == pytest.approx(expected, rel=0.12), name


def test_every_day_has_catalysts_with_gap_volume_and_news_before_the_open(market: SyntheticMarket) -> None:
    for session in trading_sessions(START, START + timedelta(days=28)):
        picks = market.catalyst_symbols(session.day)
        assert 2 <= len(picks) <= 5
        assert any(p.pattern is Pattern.BULL_FLAG for p in picks)
        for pick in picks:
            history = market.daily_bars(pick.symbol, START - timedelta(days=60), session.day)
            today, yesterday, previous_20 = history[-1], history[-2], history[-22:-2]
            assert today.open / yesterday.close - 1 >= Decimal("0.05") and pick.gap >= Decimal("0.05")
            assert today.volume >= 3 * mean(b.volume for b in previous_20)
            news = market.news([pick.symbol], *_day_span(session.day))
            assert any(n.id == pick.news_id and time(6) <= n.created_at.time() < time(9, 30) for n in news)


def test_catalyst_patterns_mix_bull_flags_that_hold_and_gappers_that_fade(market: SyntheticMarket) -> None:
    outcomes: dict[Pattern, list[bool]] = {Pattern.BULL_FLAG: [], Pattern.FADE: []}
    for session in trading_sessions(START, START + timedelta(days=28)):
        for pick in market.catalyst_symbols(session.day):
            bar = market.daily_bars(pick.symbol, session.day, session.day)[0]
            if pick.pattern in outcomes:
                outcomes[pick.pattern].append(bar.close < bar.open)
    assert not any(outcomes[Pattern.BULL_FLAG]) and all(outcomes[Pattern.FADE]) and outcomes[Pattern.FADE]


def test_a_bull_flag_pulls_back_on_lighter_volume_than_its_impulse(market: SyntheticMarket) -> None:
    day = START
    pick = next(p for p in market.catalyst_symbols(day) if p.pattern is Pattern.BULL_FLAG)
    plan = market.plan(day)[pick.symbol]
    (_, t_impulse, _), (_, t_pullback, _), _ = plan.volume_boosts
    bars = _regular(market.minute_bars(pick.symbol, *_day_span(day)))
    impulse, pullback = bars[:t_impulse], bars[t_impulse:t_pullback]
    assert max(b.high for b in impulse) > bars[0].open * Decimal("1.03")
    assert mean(b.volume for b in pullback) < mean(b.volume for b in impulse)
    assert min(b.low for b in pullback) > bars[0].open  # orderly: the pullback holds above the open


def test_minute_bars_aggregate_to_the_daily_bar_and_extended_hours_are_thin(market: SyntheticMarket) -> None:
    for symbol in market.symbols[:10]:
        bars = market.minute_bars(symbol, *_day_span(START))
        regular, daily = _regular(bars), market.daily_bars(symbol, START, START)[0]
        assert len(regular) == 390 and bars[0].start.time() >= time(4) and bars[-1].start.time() < time(20)
        assert (regular[0].open, regular[-1].close) == (daily.open, daily.close)
        assert max(b.high for b in regular) == daily.high and min(b.low for b in regular) == daily.low
        assert sum(b.volume for b in regular) == daily.volume
        extended = sum(b.volume for b in bars) - daily.volume
        assert 0 < extended < daily.volume * 0.3


def test_price_at_walks_inside_the_minute_from_open_to_close(market: SyntheticMarket) -> None:
    symbol = market.symbols[7]
    for bar in _regular(market.minute_bars(symbol, *_day_span(START)))[::13]:
        prices = [market.price_at(symbol, bar.start + timedelta(seconds=s)) for s in range(60)]
        assert prices[0] == bar.open and prices[59] == bar.close
        assert all(bar.low <= p <= bar.high for p in prices)
        extremes = {bar.high, bar.low}
        assert extremes <= set(prices)


def test_price_between_sessions_is_the_last_trade(market: SyntheticMarket) -> None:
    symbol = market.symbols[1]
    last_bar = market.minute_bars(symbol, *_day_span(date(2026, 2, 27)))[-1]
    assert market.price_at(symbol, datetime(2026, 2, 28, 12, tzinfo=ET)) == last_bar.close
