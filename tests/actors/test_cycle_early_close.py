"""A half day (NYSE closes at 13:00 on the day after Thanksgiving, Christmas Eve, July 3rd): the broker's calendar
says so, and the day's flatten comes before that close, not at 15:55, when the exits could no longer fill and the
day's stops would have expired at 13:00."""

from __future__ import annotations

import threading
import time as time_module
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, Iterator

import pytest
from loguru import logger

from actors.cycle import CycleActor
from actors.messages import TradePlan
from catalyst.broker.adapter import AlpacaBroker
from catalyst.broker.ratelimit import RateLimiter
from catalyst.domain.cycle import PhaseSchedule
from catalyst.domain.positions import PositionSide
from catalyst.broker.errors import ServerError
from catalyst.hooks import MarketHours, TradingCalendar
from catalyst.sim.market import EXCHANGE_TZ
from catalyst.sim.server import EmbeddedExchange
from tests.actors.conftest import exchange_at
from tests.actors.test_cycle_resume import Hooks, working_stops

HALF_DAY = date(2026, 11, 27)  # the day after Thanksgiving
MIDDAY = datetime(2026, 11, 27, 12, 30, tzinfo=EXCHANGE_TZ)


@pytest.fixture
def exchange() -> Iterator[EmbeddedExchange]:
    """Overrides the actor conftest's exchange: 12:30 on a half day, the market open."""
    with exchange_at(MIDDAY, ("AAPL", "MSFT")) as ex:
        yield ex


def broker_calendar(trading) -> TradingCalendar:
    """The cycle's calendar hooks as the daemon wires them: the broker's calendar, through alpaca-py."""
    return TradingCalendar(AlpacaBroker(trading.key, "secret", trading_url=trading.exchange.base_url,
                                        limiter=RateLimiter(0), name="cycle"))


def hooks_with_the_broker_calendar(trading) -> dict[str, Any]:
    """The resume tests' scan and approval, with the daemon's calendar hooks."""
    calendar = broker_calendar(trading)
    return {**Hooks(trading).as_dict(), "is_trading_day": calendar.is_trading_day,
            "session_close": calendar.session_close}


def test_the_broker_calendar_gives_the_half_days_close(trading) -> None:
    calendar = broker_calendar(trading)
    assert calendar.session_close(HALF_DAY) == time(13, 0)
    assert calendar.session_close(HALF_DAY + timedelta(days=3)) == time(16, 0)  # Monday
    assert calendar.session_close(HALF_DAY + timedelta(days=1)) is None and not calendar.is_trading_day(
        HALF_DAY + timedelta(days=1))


def test_on_a_half_day_positions_are_flattened_before_the_1300_close(trading) -> None:
    trading.exchange.set_price("AAPL", "50.00")
    cycle_row = trading.writer.get_or_create_cycle(HALF_DAY).get()
    trading.writer.set_cycle_phase(cycle_row.cycle_id, "monitoring", trading.exchange.clock.now()).get()
    trading.open(TradePlan(symbol="AAPL", side=PositionSide.LONG, qty=Decimal("100"), stop_loss=Decimal("48.00"),
                           take_profit=Decimal("55.00"), cycle_id=cycle_row.cycle_id))
    trading.wait_for(lambda: working_stops(trading), "the position's stop at the broker")
    hooks = hooks_with_the_broker_calendar(trading)
    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(message.record["message"]), level="INFO",
                      filter=lambda record: record["name"] == "actors.cycle")
    cycle = CycleActor.start(trading.writer, trading.system, trading.exchange.clock, PhaseSchedule(), hooks)
    try:
        trading.wait_for(lambda: cycle.proxy().state().get()["phase"] == "monitoring", "the cycle to resume")
        trading.exchange.advance(timedelta(minutes=26))  # 12:56: the flatten is due, the market still open

        trading.wait_for(lambda: not trading.broker_view()["positions"], "the position to be flattened", timeout=30)
        assert trading.exchange.clock.now() < datetime(2026, 11, 27, 13, 0, tzinfo=EXCHANGE_TZ)
        assert [o.status for o in trading.all_orders() if o.role == "flatten"] == ["filled"]
        assert working_stops(trading) == []
        trading.exchange.advance(timedelta(minutes=5))  # 13:01: closed
        trading.wait_for(lambda: cycle.proxy().state().get()["phase"] in ("closed", "completed"), "the close")
    finally:
        cycle.stop()
        logger.remove(sink)
    assert f"cycle {HALF_DAY} early close at 13:00: positions are flattened at 12:55" in lines
    assert any(line.startswith(f"cycle {HALF_DAY} flattening 1 live positions: end of day") for line in lines)


class _At:
    def __init__(self, now: datetime) -> None:
        self.moment = now

    def now(self) -> datetime:
        return self.moment


@pytest.mark.parametrize("moment, closed", [
    (MIDDAY, False),
    (datetime(2026, 11, 27, 13, 1, tzinfo=EXCHANGE_TZ), True),  # after the half day's close, before 16:00
    (datetime(2026, 11, 28, 12, 0, tzinfo=EXCHANGE_TZ), True),  # a Saturday
    (datetime(2026, 11, 30, 9, 0, tzinfo=EXCHANGE_TZ), True),  # Monday, before the bell
    (datetime(2026, 11, 30, 9, 31, tzinfo=EXCHANGE_TZ), False),  # the bell, not the schedule's evaluating_at (a review)
    (datetime(2026, 11, 30, 15, 59, tzinfo=EXCHANGE_TZ), False),
    (datetime(2026, 11, 30, 16, 0, tzinfo=EXCHANGE_TZ), True),
], ids=["half-day-midday", "half-day-after-1300", "saturday", "before-the-bell", "0931", "1559", "1600"])
def test_market_hours_for_a_rebuild_follow_the_broker_calendar(trading, moment: datetime, closed: bool) -> None:
    hours = MarketHours(broker_calendar(trading), _At(moment))
    assert hours.closed() is closed


def test_market_hours_follow_the_configured_schedule_on_weekdays_while_the_calendar_cannot_be_read() -> None:
    class Unreadable:
        reads = 0

        def known_session_hours(self, day: date) -> tuple[bool, None]:
            return False, None

        def session_hours(self, day: date) -> None:
            self.reads += 1
            raise ServerError("calendar 2026-11-30..2026-12-07: HTTP 503")

    calendar, clock = Unreadable(), _At(datetime(2026, 11, 30, 11, 0, tzinfo=EXCHANGE_TZ))  # a Monday
    hours = MarketHours(calendar, clock)
    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(message.record["message"]), level="WARNING")
    try:
        assert hours.closed() is False  # taken as closed, a stop refused in the day waited for 15:55 (a review)
        clock.moment = datetime(2026, 11, 30, 16, 30, tzinfo=EXCHANGE_TZ)
        assert hours.closed() is True
        clock.moment = datetime(2026, 12, 5, 11, 0, tzinfo=EXCHANGE_TZ)  # a Saturday
        assert hours.closed() is True
    finally:
        logger.remove(sink)
    assert calendar.reads == 1  # not asked again for a minute: each position deciding would wait on it
    assert lines == ["cycle cannot read the broker's calendar (server error: calendar 2026-11-30..2026-12-07: HTTP "
                     "503): market hours are the regular session's (09:30-16:00 on weekdays) for the next 60 s (a "
                     "holiday or a half day unknown)"]


def test_market_hours_do_not_wait_on_a_calendar_read_another_actor_is_making() -> None:
    release, reading = threading.Event(), threading.Event()

    class Slow:
        def known_session_hours(self, day: date) -> tuple[bool, None]:
            return False, None

        def session_hours(self, day: date) -> tuple[time, time]:
            reading.set()
            release.wait(10)
            return time(9, 30), time(13, 0)

    hours = MarketHours(Slow(), _At(datetime(2026, 11, 27, 14, 0, tzinfo=EXCHANGE_TZ)))  # the half day, 14:00
    first = threading.Thread(target=hours.closed)
    first.start()
    try:
        assert reading.wait(5)
        started = time_module.monotonic()
        assert hours.closed() is False  # the regular session's answer, at once (a review: every actor waited)
        assert time_module.monotonic() - started < 1
    finally:
        release.set()
        first.join(5)
    assert hours.closed() is True  # read: the half day closed at 13:00


def test_market_hours_answer_a_day_already_read_even_while_another_actor_holds_the_read(trading) -> None:
    """A third review: every lookup took the read's lock, and one that found it held (another actor's lookup of the
    cached week, paused by the GIL) got the regular session's guess: 'open' at 14:00 on a half day, and a flatten
    asked then cancelled the stops for an exit queued until Monday."""
    calendar = broker_calendar(trading)
    calendar.session_hours(HALF_DAY)  # the week read, as the daemon's start reads it
    hours = MarketHours(calendar, _At(datetime(2026, 11, 27, 14, 0, tzinfo=EXCHANGE_TZ)))
    with hours._reading:  # another actor inside a read
        assert hours.closed() is True
