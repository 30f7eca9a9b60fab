"""The wall clock follows the broker's once it is found more than 2 s off (catalyst.clock.WallClock.follow)."""

from __future__ import annotations

from datetime import datetime, timedelta

from catalyst.clock import WallClock
from catalyst.sim.market import EXCHANGE_TZ

NOON = datetime(2024, 3, 4, 12, 0, tzinfo=EXCHANGE_TZ)


def clock_off_by(seconds: list[float]) -> WallClock:
    """A wall clock whose machine time is NOON plus whatever `seconds[0]` holds when read (the broker is at NOON)."""
    return WallClock(source=lambda: NOON + timedelta(seconds=seconds[0]))


def test_within_two_seconds_the_machines_own_time_is_kept():
    off = [-1.5]
    clock = clock_off_by(off)
    assert clock.follow(1.5) == 1.5  # the broker 1.5 s ahead of us
    assert clock.correction_s == 0.0 and clock.now() == NOON - timedelta(seconds=1.5)


def test_beyond_two_seconds_the_brokers_time_is_followed_and_measured_again_against_it():
    off = [-30.0]
    clock = clock_off_by(off)
    assert clock.follow(30.0) == 30.0
    assert clock.now() == NOON
    off[0] = -31.0  # drifting further: measured against the corrected time, 1 s more
    assert clock.follow(1.0) == 31.0 and clock.now() == NOON
    off[0] = 0.0  # time sync fixed: the corrected time is 31 s ahead, and the machine's own is right again
    assert clock.follow(-31.0) == 0.0
    assert clock.correction_s == 0.0 and clock.now() == NOON


def test_a_clock_ahead_is_followed_back():
    off = [120.0]
    clock = clock_off_by(off)
    assert clock.follow(-120.0) == -120.0 and clock.now() == NOON
