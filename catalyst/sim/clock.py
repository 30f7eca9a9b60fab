"""An accelerated, thread-safe virtual clock in exchange time for the emulator."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Callable

from catalyst.sim.market import EXCHANGE_TZ


# Above this a simulated session (6.5 h) passes in under 2.5 s of wall time: the exchange's clock outruns the
# daemon's own timers (one 10 s HTTP timeout is more than a simulated day) and the "day" is nonsense, so a speed
# beyond it is refused rather than run. The benchmarks go to 2,000x.
MAX_SPEED = 10_000.0


class ClockError(ValueError):
    """A clock call that would break its invariants (naive time, negative speed, time going backwards)."""


class SimClock:
    """Virtual time = start + wall-elapsed x speed.

    `speed == 0` is manual mode: time moves only by `advance` / `jump_to`. Both only move forward, in
    any mode. The anchor is kept in UTC because adding a timedelta to an aware ET datetime is wall-clock
    arithmetic and would be wrong across a DST change; `now()` converts to America/New_York on the way out.
    `wall` is the monotonic source (seconds); tests pass a fake one instead of sleeping.
    """

    def __init__(self, start: datetime, speed: float, wall: Callable[[], float] = time.monotonic) -> None:
        _require_aware(start, "start")
        _require_speed(speed)
        self._lock = threading.Lock()
        self._wall = wall
        self._anchor_virtual = start.astimezone(timezone.utc)
        self._anchor_wall = wall()
        self._speed = float(speed)
        self._paused = False

    @property
    def speed(self) -> float:
        with self._lock:
            return self._speed

    @property
    def paused(self) -> bool:
        with self._lock:
            return self._paused

    def now(self) -> datetime:
        with self._lock:
            return self._now_utc().astimezone(EXCHANGE_TZ)

    def advance(self, delta: timedelta) -> datetime:
        """Move virtual time forward by `delta` (any mode); returns the new now."""
        if delta < timedelta(0):
            raise ClockError(f"clock only moves forward: advance({delta}) is negative")
        with self._lock:
            self._reanchor(self._now_utc() + delta)
            return self._anchor_virtual.astimezone(EXCHANGE_TZ)

    def jump_to(self, target: datetime) -> datetime:
        """Set virtual time to `target` (not earlier than now): how a simulation skips nights quickly."""
        _require_aware(target, "jump_to target")
        with self._lock:
            current = self._now_utc()
            if target < current:
                raise ClockError(
                    f"clock only moves forward: jump_to({target.isoformat()}) is before now "
                    f"({current.astimezone(EXCHANGE_TZ).isoformat()})"
                )
            self._reanchor(target.astimezone(timezone.utc))
            return self._anchor_virtual.astimezone(EXCHANGE_TZ)

    def pause(self) -> None:
        with self._lock:
            self._reanchor(self._now_utc())
            self._paused = True

    def resume(self) -> None:
        with self._lock:
            self._reanchor(self._now_utc())
            self._paused = False

    def set_speed(self, speed: float) -> None:
        _require_speed(speed)
        with self._lock:
            self._reanchor(self._now_utc())
            self._speed = float(speed)

    # -- internals (call with the lock held) --
    def _now_utc(self) -> datetime:
        if self._paused or self._speed == 0:
            return self._anchor_virtual
        elapsed = (self._wall() - self._anchor_wall) * self._speed
        return self._anchor_virtual + timedelta(seconds=elapsed)

    def _reanchor(self, virtual_utc: datetime) -> None:
        self._anchor_virtual = virtual_utc
        self._anchor_wall = self._wall()


def _require_speed(speed: float) -> None:
    if not 0 <= speed <= MAX_SPEED:  # False for NaN too
        raise ClockError(f"clock speed must be between 0 and {MAX_SPEED:,.0f}, got {speed}")


def _require_aware(value: datetime, what: str) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ClockError(f"{what} must be timezone-aware, got naive {value.isoformat()}")
