"""NYSE trading sessions: weekdays minus NYSE holidays, regular hours 09:30-16:00 ET."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from functools import lru_cache

import holidays

from catalyst.sim.market import EXCHANGE_TZ, Session

REGULAR_OPEN = time(9, 30)
REGULAR_CLOSE = time(16, 0)
PREMARKET_OPEN = time(4, 0)
AFTER_HOURS_CLOSE = time(20, 0)


@lru_cache(maxsize=256)
def _nyse_holidays(year: int) -> frozenset[date]:
    # The `holidays` package carries the NYSE rules (Good Friday, observed dates, one-off closures),
    # so nothing here computes Easter or weekend observance by hand.
    return frozenset(holidays.financial_holidays("NYSE", years=year).keys())


def is_trading_day(day: date) -> bool:
    return day.weekday() < 5 and day not in _nyse_holidays(day.year)


def session_for(day: date) -> Session:
    """The regular session of `day` (the caller checks `is_trading_day`).

    Early closes (13:00 on the day after Thanksgiving, Christmas Eve, July 3rd) are NOT modelled:
    every session here runs the full 09:30-16:00.
    """
    return Session(
        day=day,
        open=datetime.combine(day, REGULAR_OPEN, tzinfo=EXCHANGE_TZ),
        close=datetime.combine(day, REGULAR_CLOSE, tzinfo=EXCHANGE_TZ),
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
