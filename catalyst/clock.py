"""The one clock every actor reads: the wall clock live, the exchange emulator's accelerated clock in simulation."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta
from typing import Callable, Protocol

import requests
from loguru import logger

from catalyst.sim.market import EXCHANGE_TZ


class Clock(Protocol):
    """Exchange time (America/New_York, timezone-aware) and how fast it runs against the wall."""

    def now(self) -> datetime: ...

    @property
    def speed(self) -> float: ...


CLOCK_SKEW_WARN_S = 2.0  # this machine's clock this far from the broker's is said as a WARNING, and corrected
CLOCK_READING_MAX_S = 1.0  # a reading of the broker's clock that took longer places it too loosely to correct by
FIX_TIME_SYNC = ("the entry window and the 15:55 flatten run on this machine's clock; fix its time sync (timedatectl, "
                 "chronyc tracking)")
FOLLOWING_BROKER = ("the entry window and the 15:55 flatten follow the broker's clock meanwhile; fix this machine's "
                    "time sync (timedatectl, chronyc tracking)")


def clock_skew_s(before: datetime, broker_at: datetime, after: datetime) -> float:
    """Seconds the broker's clock is ahead of ours (negative: behind), from one reading of it taken between two of
    ours: the broker stamped its answer somewhere in that interval, so it is compared with the midpoint."""
    return (broker_at - (before + (after - before) / 2)).total_seconds()


def describe_skew(skew_s: float) -> str:
    """`this machine's clock is 95.2 s behind the broker's` (or ahead of)."""
    return f"this machine's clock is {abs(skew_s):.1f} s {'behind' if skew_s > 0 else 'ahead of'} the broker's"


def wall_seconds(clock: Clock, exchange_seconds: float) -> float:
    """How long to sleep on the wall for `exchange_seconds` to pass on `clock` (a manual clock: a short poll)."""
    speed = clock.speed
    return exchange_seconds / speed if speed > 0 else 0.05


class WallClock:
    """Live trading: the machine's clock in New York, corrected to the broker's once it is found more than
    CLOCK_SKEW_WARN_S off (follow): the entry window and the 15:55 flatten are the exchange's times, and a machine
    whose time sync broke mid-day would otherwise flatten late, after the close if it drifts far enough."""

    speed = 1.0

    def __init__(self, source: Callable[[], datetime] = lambda: datetime.now(EXCHANGE_TZ)) -> None:
        self._source = source  # this machine's own time (tests put it off the exchange's)
        self.correction_s = 0.0  # added to the machine's time; set by the start-up check and the doctor only

    def now(self) -> datetime:
        correction_s = self.correction_s  # one read: another thread may set it meanwhile
        return self._source() + timedelta(seconds=correction_s) if correction_s else self._source()

    def follow(self, measured_s: float) -> float:
        """`measured_s`: how far the broker's clock was found ahead of now()'s (clock_skew_s). Returns how far this
        machine's own clock is from the broker's; beyond CLOCK_SKEW_WARN_S now() follows the broker from here on,
        within it (time sync fixed, or a measurement's noise) the machine's own clock again."""
        own_s = self.correction_s + measured_s
        self.correction_s = own_s if abs(own_s) > CLOCK_SKEW_WARN_S else 0.0
        return own_s


class FollowedClock:
    """An emulator in another process: its `/sim/v1/clock`, read every `resync_s` by a thread of its own over one
    kept-alive connection, extrapolated by its speed in between.

    Why a thread of its own: the daemon must follow the broker's time even when the broker outlives it (crash tests),
    and one HTTP call per `now()` would cost more than the trading itself. Read inline by whichever actor asked first
    once `resync_s` had passed, the clock put a loopback round trip (1–3 ms) inside that actor's step once a second (a
    fill's commit, a stop's submit): the slowest trades of a simulated day were the clock's, not the trading's. Now
    `now()` never waits for the network; a reading that fails leaves the last one extrapolated, and the next is tried
    `resync_s` later. Readings failing for `silent_for_s` give one WARNING (the time is then a guess: a paused or
    stepped emulator is not followed), and one INFO line when they come back.
    """

    MIN_RESYNC_S = 0.01  # a zero would be a busy loop of HTTP requests
    SILENT_FOR_S = 10.0

    def __init__(self, base_url: str, resync_s: float = 1.0, timeout_s: float = 5.0,
                 silent_for_s: float = SILENT_FOR_S) -> None:
        self._url = base_url.rstrip("/") + "/sim/v1/clock"
        self._resync_s = max(resync_s, self.MIN_RESYNC_S)
        self._timeout_s = timeout_s
        self._silent_for_s = silent_for_s
        self._failing_since: float | None = None  # monotonic time of the first failed reading in a row
        self._warned = False
        self._http = requests.Session()  # used by one thread at a time: __init__, then the follower only
        self._anchor: tuple[datetime, float, float] | None = None  # (exchange time, wall monotonic, speed)
        self._sync()  # the first reading is taken here: an emulator that does not answer raises
        self._closed = threading.Event()
        self._follower = threading.Thread(target=self._follow, name="clock-follower", daemon=True)
        self._follower.start()

    @property
    def speed(self) -> float:
        return self._anchor[2] if self._anchor else 1.0

    def now(self) -> datetime:
        anchor = self._anchor  # replaced whole, never changed in place: reading it needs no lock
        assert anchor is not None  # the first reading is taken in __init__
        at, wall, speed = anchor
        return at + timedelta(seconds=(time.monotonic() - wall) * speed)

    def close(self, timeout: float = 5.0) -> None:
        """Stop following (the last reading goes on being extrapolated) and close the connection."""
        self._closed.set()
        if self._follower is not threading.current_thread():
            self._follower.join(timeout)
        self._http.close()

    def _follow(self) -> None:
        while not self._closed.wait(self._resync_s):
            self._sync()

    def _sync(self) -> None:
        try:
            body = self._http.get(self._url, timeout=self._timeout_s).json()
            at = datetime.fromisoformat(body["timestamp"].replace("Z", "+00:00")).astimezone(EXCHANGE_TZ)
            self._anchor = (at, time.monotonic(), float(body.get("speed", 1.0)))
        except (requests.RequestException, ValueError, KeyError, TypeError) as error:
            if self._anchor is None:
                raise
            # keep extrapolating from the last good reading; the next one is tried resync_s later
            self._failed(error)
        else:
            self._answered()

    def _failed(self, error: Exception) -> None:
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
        if not self._warned and now - self._failing_since >= self._silent_for_s:
            self._warned = True
            assert self._anchor is not None  # a failure before the first reading raised in __init__
            at, _, speed = self._anchor
            logger.warning("exchange clock {}: no reading for {:.0f} s ({}); the time goes on from the last one "
                           "({:%H:%M:%S}) at {:g}x, and a paused or stepped exchange is not followed",
                           self._url, now - self._failing_since, " ".join(str(error).split())[:160], at, speed)

    def _answered(self) -> None:
        if self._warned and self._failing_since is not None:
            logger.info("exchange clock {}: readings back after {:.0f} s", self._url,
                        time.monotonic() - self._failing_since)
        self._failing_since, self._warned = None, False
