"""The emulator's virtual clock: speed, manual mode, forward-only moves, pause."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from catalyst.sim.clock import ClockError, SimClock

ET = ZoneInfo("America/New_York")
START = datetime(2026, 3, 2, 9, 30, tzinfo=ET)


class FakeWall:
    """A monotonic source the test moves by hand, so nothing sleeps."""

    def __init__(self) -> None:
        self.seconds = 1000.0

    def __call__(self) -> float:
        return self.seconds


def test_accelerated_clock_runs_speed_times_faster_than_the_wall() -> None:
    wall = FakeWall()
    clock = SimClock(START, speed=60, wall=wall)
    wall.seconds += 2.5
    assert clock.now() == START + timedelta(minutes=2.5)


def test_now_is_reported_in_new_york_time() -> None:
    clock = SimClock(START.astimezone(ZoneInfo("UTC")), speed=0)
    assert clock.now().tzinfo == ET and clock.now() == START


def test_manual_clock_moves_only_by_advance_and_jump() -> None:
    wall = FakeWall()
    clock = SimClock(START, speed=0, wall=wall)
    wall.seconds += 3600
    assert clock.now() == START
    clock.advance(timedelta(seconds=90))
    assert clock.now() == START + timedelta(seconds=90)
    clock.jump_to(datetime(2026, 3, 3, 4, 0, tzinfo=ET))
    assert clock.now() == datetime(2026, 3, 3, 4, 0, tzinfo=ET)


def test_jump_backwards_is_refused_and_time_is_unchanged() -> None:
    clock = SimClock(START, speed=0)
    with pytest.raises(ClockError, match="only moves forward"):
        clock.jump_to(START - timedelta(seconds=1))
    with pytest.raises(ClockError, match="only moves forward"):
        clock.advance(timedelta(seconds=-1))
    assert clock.now() == START


def test_jump_across_daylight_saving_keeps_absolute_time() -> None:
    before_dst = datetime(2026, 3, 7, 20, 0, tzinfo=ET)
    clock = SimClock(before_dst, speed=0)
    clock.advance(timedelta(hours=24))
    utc = ZoneInfo("UTC")  # same-tzinfo subtraction in Python is wall-clock: compare in UTC
    assert clock.now().astimezone(utc) - before_dst.astimezone(utc) == timedelta(hours=24)
    assert clock.now().hour == 21  # 24 real hours later is 21:00 EDT on the DST Sunday


def test_pause_freezes_time_and_resume_continues_from_there() -> None:
    wall = FakeWall()
    clock = SimClock(START, speed=10, wall=wall)
    wall.seconds += 1
    clock.pause()
    wall.seconds += 100
    assert clock.paused and clock.now() == START + timedelta(seconds=10)
    clock.resume()
    wall.seconds += 1
    assert clock.now() == START + timedelta(seconds=20)


def test_set_speed_keeps_the_current_time_and_changes_the_rate() -> None:
    wall = FakeWall()
    clock = SimClock(START, speed=1, wall=wall)
    wall.seconds += 10
    clock.set_speed(100)
    wall.seconds += 1
    assert clock.now() == START + timedelta(seconds=110)
    assert clock.speed == 100


def test_naive_times_and_negative_speeds_are_named_errors() -> None:
    with pytest.raises(ClockError, match="timezone-aware"):
        SimClock(datetime(2026, 3, 2, 9, 30), speed=1)
    with pytest.raises(ClockError, match="speed"):
        SimClock(START, speed=-1)
    with pytest.raises(ClockError, match="speed"):
        SimClock(START, speed=1).set_speed(-2)


@pytest.mark.parametrize("speed", [-1.0, float("nan"), float("inf"), 10_001.0])
def test_a_speed_outside_0_to_10000_is_refused_at_start_and_when_changed(speed: float) -> None:
    with pytest.raises(ClockError, match="between 0 and 10,000"):
        SimClock(START, speed=speed)
    clock = SimClock(START, speed=0)
    with pytest.raises(ClockError, match="between 0 and 10,000"):
        clock.set_speed(speed)
    assert clock.speed == 0
