"""NYSE sessions for the emulator: weekdays minus exchange holidays, 09:30-16:00 ET (13:00 on half days)."""

from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

from catalyst.sim.calendar import (
    is_trading_day, next_trading_day, previous_trading_day, trading_days_before, trading_sessions,
)

ET = ZoneInfo("America/New_York")


def test_thanksgiving_2026_is_not_a_session() -> None:
    days = [s.day for s in trading_sessions(date(2026, 11, 23), date(2026, 11, 27))]
    assert days == [date(2026, 11, 23), date(2026, 11, 24), date(2026, 11, 25), date(2026, 11, 27)]


def test_weekends_are_absent() -> None:
    days = [s.day for s in trading_sessions(date(2026, 3, 1), date(2026, 3, 8))]
    assert days == [date(2026, 3, d) for d in (2, 3, 4, 5, 6)]


def test_good_friday_is_closed_without_hand_written_easter_maths() -> None:
    assert not is_trading_day(date(2026, 4, 3))
    assert not is_trading_day(date(2025, 4, 18))


def test_sessions_run_0930_to_1600_new_york_time_across_dst() -> None:
    winter, summer = trading_sessions(date(2026, 1, 5), date(2026, 1, 5))[0], trading_sessions(
        date(2026, 7, 6), date(2026, 7, 6))[0]
    assert winter.open == datetime(2026, 1, 5, 9, 30, tzinfo=ET)
    assert summer.close == datetime(2026, 7, 6, 16, 0, tzinfo=ET)
    assert winter.open.utcoffset() != summer.open.utcoffset()


def test_neighbouring_trading_days_skip_weekends_and_holidays() -> None:
    assert next_trading_day(date(2026, 11, 25)) == date(2026, 11, 27)
    assert previous_trading_day(date(2026, 1, 20)) == date(2026, 1, 16)  # MLK day on the 19th
    assert trading_days_before(date(2026, 3, 2), 3) == [date(2026, 2, 25), date(2026, 2, 26), date(2026, 2, 27)]


def test_an_empty_range_has_no_sessions() -> None:
    assert trading_sessions(date(2026, 3, 5), date(2026, 3, 4)) == []


def test_early_closes_at_1300_follow_the_nyse_rules() -> None:
    early = {d for y in range(2019, 2028) for s in trading_sessions(date(y, 1, 1), date(y, 12, 31))
             if s.close.hour == 13 for d in [s.day]}
    assert early == {  # NYSE's published half days
        date(2019, 7, 3), date(2019, 11, 29), date(2019, 12, 24), date(2020, 11, 27), date(2020, 12, 24),
        date(2021, 11, 26), date(2022, 11, 25), date(2023, 7, 3), date(2023, 11, 24), date(2024, 7, 3),
        date(2024, 11, 29), date(2024, 12, 24), date(2025, 7, 3), date(2025, 11, 28), date(2025, 12, 24),
        date(2026, 11, 27), date(2026, 12, 24), date(2027, 11, 26),
    }
    christmas_eve = trading_sessions(date(2026, 12, 24), date(2026, 12, 24))[0]
    assert (christmas_eve.open, christmas_eve.close) == (datetime(2026, 12, 24, 9, 30, tzinfo=ET),
                                                         datetime(2026, 12, 24, 13, 0, tzinfo=ET))
