"""Trading-cycle phase machine (spec §4) and the day's phase schedule in exchange time (America/New_York).

Schedule decisions (spec §4.2 gives scanning 9:15-9:35 and evaluating 9:30-10:00, overlapping):

- scanning 09:15: pre-market gap and news scans run before the bell.
- evaluating 09:30: evaluation needs the opening prints (the real open for the gap, the first bars for
  relative volume and the flag), so it starts at the bell, not inside the scanning window.
- trading 09:35, right after evaluation: five one-minute bars are enough to approve; entries are
  submitted from here.
- monitoring 10:00: the end of the spec's evaluation window ends new entries; exits are managed until
  the close.
- flatten_at 15:55: not a phase but a deadline inside monitoring: every position is exited before the close.
- closed 16:00. `completed` is never due by the clock: the conductor enters it once P&L and reports are
  final. Trading days (weekends, holidays) are the calendar's business, not this module's.

The conductor is event-driven inside these times too ("candidates found", "entries approved"): the
schedule says which phase the clock *requires*, and the conductor catches up along `CYCLE_MACHINE.path`
without ever going back.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from datetime import date, datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from catalyst.domain.errors import IllegalTransition, InvalidSchedule, NaiveDatetime
from catalyst.domain.machine import StateMachine

EXCHANGE_TZ = ZoneInfo("America/New_York")
"""The time zone every schedule time is read in."""


def exchange_day(day: date) -> tuple[datetime, datetime]:
    """[start, end) of `day` in exchange time: its midnight and the next one (23, 24 or 25 hours apart)."""
    return (datetime.combine(day, time(0), EXCHANGE_TZ),
            datetime.combine(day + timedelta(days=1), time(0), EXCHANGE_TZ))


class CyclePhase(StrEnum):
    """Phase of the daily trading cycle (spec §4.2)."""

    IDLE = "idle"
    SCANNING = "scanning"
    EVALUATING = "evaluating"
    TRADING = "trading"
    MONITORING = "monitoring"
    CLOSED = "closed"
    COMPLETED = "completed"


_C = CyclePhase

CYCLE_TRANSITIONS: dict[CyclePhase, frozenset[CyclePhase]] = {
    _C.IDLE: frozenset({_C.SCANNING}),  # start_cycle()
    _C.SCANNING: frozenset({_C.EVALUATING, _C.CLOSED}),  # candidates found / emergency stop
    _C.EVALUATING: frozenset({_C.TRADING, _C.CLOSED}),  # entries approved / emergency stop
    _C.TRADING: frozenset({_C.MONITORING, _C.CLOSED}),  # positions open / emergency stop
    _C.MONITORING: frozenset({_C.CLOSED}),  # all positions closed (or emergency stop)
    _C.CLOSED: frozenset({_C.COMPLETED, _C.IDLE}),  # end of day / the diagram's closed -> idle
    _C.COMPLETED: frozenset({_C.IDLE}),  # next trading day
}

CYCLE_MACHINE: StateMachine[CyclePhase] = StateMachine("cycle", CYCLE_TRANSITIONS)
"""The cycle machine; it has no terminal phase (completed leads to the next day's idle)."""

ACTIVE_PHASES: frozenset[CyclePhase] = frozenset({_C.SCANNING, _C.EVALUATING, _C.TRADING, _C.MONITORING})
"""Phases an emergency stop may interrupt."""


def emergency_stop(phase: CyclePhase) -> CyclePhase:
    """`closed` from any active phase; IllegalTransition from idle, closed or completed."""
    phase = CyclePhase(phase)
    if phase not in ACTIVE_PHASES:
        raise IllegalTransition(CYCLE_MACHINE.name, "emergency stop", str(phase), str(_C.CLOSED))
    return CYCLE_MACHINE.check(phase, _C.CLOSED, "emergency stop")


@dataclass(frozen=True)
class PhaseSchedule:
    """Start times of the clock-driven phases, naive `time`s read in America/New_York, strictly increasing."""

    scanning_at: time = time(9, 15)
    evaluating_at: time = time(9, 30)
    trading_at: time = time(9, 35)
    monitoring_at: time = time(10, 0)
    flatten_at: time = time(15, 55)
    closed_at: time = time(16, 0)

    def __post_init__(self) -> None:
        named = [(field.name, getattr(self, field.name)) for field in fields(self)]
        for name, value in named:
            if not isinstance(value, time) or value.tzinfo is not None:
                raise InvalidSchedule(f"{name} must be a naive datetime.time in New York time, got {value!r}")
        for (earlier, a), (later, b) in zip(named, named[1:]):
            if not a < b:
                raise InvalidSchedule(f"schedule out of order: {earlier} {a} must be before {later} {b}")


def schedule_for_close(schedule: PhaseSchedule, close: time) -> PhaseSchedule:
    """The day's schedule when the market closes at `close` (exchange time, from the broker's calendar): on an early
    close (13:00 on NYSE's half days) `closed_at` moves to the close and `flatten_at` keeps its lead before it, so
    positions are still exited before the bell. A close at or after `closed_at` changes nothing. InvalidSchedule if
    the flatten would then come at or before `monitoring_at` (a day too short for the configured entry window)."""
    if close >= schedule.closed_at:
        return schedule
    lead = datetime.combine(date.min, schedule.closed_at) - datetime.combine(date.min, schedule.flatten_at)
    if datetime.combine(date.min, close) - datetime.min < lead:
        raise InvalidSchedule(f"a close at {close} leaves no room for flatten_at {lead} before it")
    flatten_at = (datetime.combine(date.min, close) - lead).time()
    return replace(schedule, flatten_at=flatten_at, closed_at=close)


def exchange_time(now: datetime) -> time:
    """The wall-clock time in New York for an aware `now`; NaiveDatetime for a naive one."""
    if not isinstance(now, datetime) or now.tzinfo is None or now.utcoffset() is None:
        raise NaiveDatetime(f"need a timezone-aware datetime to read exchange time, got {now!r}")
    return now.astimezone(EXCHANGE_TZ).time()


def phase_due(schedule: PhaseSchedule, now: datetime) -> CyclePhase:
    """The phase the clock requires at `now` (never `completed`, which follows the reports)."""
    clock = exchange_time(now)
    if clock >= schedule.closed_at:
        return _C.CLOSED
    if clock >= schedule.monitoring_at:
        return _C.MONITORING
    if clock >= schedule.trading_at:
        return _C.TRADING
    if clock >= schedule.evaluating_at:
        return _C.EVALUATING
    if clock >= schedule.scanning_at:
        return _C.SCANNING
    return _C.IDLE


def flatten_due(schedule: PhaseSchedule, now: datetime) -> bool:
    """True from `flatten_at` on: every position must be exited before the close."""
    return exchange_time(now) >= schedule.flatten_at


def market_open(schedule: PhaseSchedule, now: datetime) -> bool:
    """True between the bell (`evaluating_at`) and the close: a market exit sent now can fill today."""
    return schedule.evaluating_at <= exchange_time(now) < schedule.closed_at


FLATTEN_RETRY_WAITS: tuple[timedelta, ...] = (
    timedelta(seconds=30), timedelta(minutes=1), timedelta(minutes=2), timedelta(minutes=4), timedelta(minutes=8),
)
"""Exchange time before a flatten found undone is asked for again, then between tries; one try per wait, after the
last the position is left under its stops for a human. Waits, not a loop: an exit the broker refuses for a lasting
reason (a restricted account, day-trade protection) costs a stop cancelled and placed again on every try."""


class FlattenStep(StrEnum):
    """What the conductor does about a position still open, and no longer flattening, after it was flattened."""

    NOTED = "noted"  # first seen undone: the first retry is scheduled
    WAIT = "wait"
    RETRY = "retry"
    GIVE_UP = "give up"  # said once


@dataclass(frozen=True)
class FlattenRetry:
    """One undone flatten's tries: how many the conductor asked for again, and when the next is due."""

    due_at: datetime
    attempts: int = 0
    given_up: bool = False


def undone_flatten(retry: FlattenRetry | None, now: datetime) -> tuple[FlattenRetry, FlattenStep]:
    """The next step for a flatten found undone at `now` (its market exit failed, the shares back under their stops),
    given its tries so far (None: first seen). Exchange time throughout."""
    if retry is None:
        return FlattenRetry(due_at=now + FLATTEN_RETRY_WAITS[0]), FlattenStep.NOTED
    if retry.given_up or now < retry.due_at:
        return retry, FlattenStep.WAIT
    if retry.attempts >= len(FLATTEN_RETRY_WAITS):
        return replace(retry, given_up=True), FlattenStep.GIVE_UP
    attempts = retry.attempts + 1
    wait = FLATTEN_RETRY_WAITS[min(attempts, len(FLATTEN_RETRY_WAITS) - 1)]
    return FlattenRetry(due_at=now + wait, attempts=attempts), FlattenStep.RETRY
