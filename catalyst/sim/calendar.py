"""NYSE trading sessions: weekdays minus NYSE holidays, regular hours 09:30-16:00 ET (13:00 on early closes)."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from functools import lru_cache

import holidays

from catalyst.sim.market import EXCHANGE_TZ, Session

REGULAR_OPEN = time(9, 30)
REGULAR_CLOSE = time(16, 0)
EARLY_CLOSE = time(13, 0)
PREMARKET_OPEN = time(4, 0)
AFTER_HOURS_CLOSE = time(20, 0)


@lru_cache(maxsize=256)
def _nyse_holidays(year: int) -> frozenset[date]:
    # The `holidays` package carries the NYSE rules (Good Friday, observed dates, one-off closures),
    # so nothing here computes Easter or weekend observance by hand.
    return frozenset(holidays.financial_holidays("NYSE", years=year).keys())


def is_trading_day(day: date) -> bool:
    return day.weekday() < 5 and day not in _nyse_holidays(day.year)


def is_early_close(day: date) -> bool:
    """NYSE closes at 13:00 on the day after Thanksgiving, and on July 3rd and Christmas Eve when they are trading
    days (a July 3rd that is the observed holiday, or a Christmas Eve on a weekend, has none: 2020, 2022, 2026).
    The `holidays` package knows the closures, not the half days, so these three rules are written here."""
    if not is_trading_day(day):
        return False
    thanksgiving = date(day.year, 11, 1) + timedelta(days=(3 - date(day.year, 11, 1).weekday()) % 7 + 21)
    return day in (thanksgiving + timedelta(days=1), date(day.year, 7, 3), date(day.year, 12, 24))


def session_for(day: date) -> Session:
    """The regular session of `day` (the caller checks `is_trading_day`): 09:30-16:00, or 09:30-13:00 on an early
    close."""
    return Session(
        day=day,
        open=datetime.combine(day, REGULAR_OPEN, tzinfo=EXCHANGE_TZ),
        close=datetime.combine(day, EARLY_CLOSE if is_early_close(day) else REGULAR_CLOSE, tzinfo=EXCHANGE_TZ),
    )


def trading_sessions(start: date, end: date) -> list[Session]:
    """Sessions in [start, end], both inclusive, in order; empty when end < start."""
    sessions: list[Session] = []
    day = start
    while day <= end:
        if is_trading_day(day):
            sessions.append(session_for(day))
        day += timedelta(days=1)
    return sessions


def next_trading_day(day: date) -> date:
    """The first trading day strictly after `day`."""
    day += timedelta(days=1)
    while not is_trading_day(day):
        day += timedelta(days=1)
    return day


def previous_trading_day(day: date) -> date:
    """The last trading day strictly before `day`."""
    day -= timedelta(days=1)
    while not is_trading_day(day):
        day -= timedelta(days=1)
    return day


def trading_days_before(day: date, count: int) -> list[date]:
    """The `count` trading days strictly before `day`, oldest first."""
    days: list[date] = []
    while len(days) < count:
        day = previous_trading_day(day)
        days.append(day)
    days.reverse()
    return days
