"""The one clock every actor reads: the wall clock live, the exchange emulator's accelerated clock in simulation."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta
from typing import Protocol

import requests

from catalyst.sim.market import EXCHANGE_TZ


class Clock(Protocol):
    """Exchange time (America/New_York, timezone-aware) and how fast it runs against the wall."""

    def now(self) -> datetime: ...

    @property
    def speed(self) -> float: ...


def wall_seconds(clock: Clock, exchange_seconds: float) -> float:
    """How long to sleep on the wall for `exchange_seconds` to pass on `clock` (a manual clock: a short poll)."""
    speed = clock.speed
    return exchange_seconds / speed if speed > 0 else 0.05


class WallClock:
    """Live trading: the machine's clock in New York."""

    speed = 1.0

    def now(self) -> datetime:
        return datetime.now(EXCHANGE_TZ)


class FollowedClock:
    """An emulator in another process: poll its `/sim/v1/clock` and extrapolate by its speed in between.

    Why: the daemon must follow the broker's time even when the broker outlives it (crash tests), and one HTTP
    call per `now()` would cost more than the trading itself. The poll runs on whichever actor thread asks first once
    `resync_s` has passed, over one kept-alive connection (a new one per poll cost milliseconds of that thread's
    time, inside whatever it was doing, e.g. protecting a fill); a thread asking while another polls extrapolates.
    """

    def __init__(self, base_url: str, resync_s: float = 1.0, timeout_s: float = 5.0) -> None:
        self._url = base_url.rstrip("/") + "/sim/v1/clock"
        self._resync_s = resync_s
        self._timeout_s = timeout_s
        self._polling = threading.Lock()  # held by the one thread polling; guards the session too
        self._http = requests.Session()
        self._anchor: tuple[datetime, float, float] | None = None  # (exchange time, wall monotonic, speed)
        with self._polling:
            self._sync()

    @property
    def speed(self) -> float:
        return self._anchor[2] if self._anchor else 1.0

    def now(self) -> datetime:
        anchor = self._anchor  # replaced whole, never changed in place: reading it needs no lock
        if (anchor is None or time.monotonic() - anchor[1] > self._resync_s) and self._polling.acquire(blocking=False):
            try:
                self._sync()
            finally:
                self._polling.release()
            anchor = self._anchor
        assert anchor is not None  # the first reading is taken in __init__
        at, wall, speed = anchor
        return at + timedelta(seconds=(time.monotonic() - wall) * speed)

    def _sync(self) -> None:
        try:
            body = self._http.get(self._url, timeout=self._timeout_s).json()
            at = datetime.fromisoformat(body["timestamp"].replace("Z", "+00:00")).astimezone(EXCHANGE_TZ)
            self._anchor = (at, time.monotonic(), float(body.get("speed", 1.0)))
        except (requests.RequestException, ValueError, KeyError, TypeError):
            if self._anchor is None:
                raise
            # keep extrapolating from the last good reading; the next call tries again
