"""One client-side budget for Alpaca's trading requests, spent by priority: protection before entries before reads."""

from __future__ import annotations

import itertools
import threading
import time
from enum import IntEnum
from typing import Callable

from pydantic import BaseModel, ConfigDict

from catalyst.broker.errors import TransientError

ALPACA_TRADING_REQUESTS_PER_MINUTE = 200
_MAX_WAIT_SLICE_S = 0.05  # waiters re-check at least this often (a refill is not an event anyone signals)


class Priority(IntEnum):
    """Lower value goes first."""

    PROTECT = 0  # stop-loss / take-profit for shares already held
    CANCEL = 1
    ENTRY = 2
    READ = 3


class RateLimitTimeout(TransientError):
    kind = "rate budget exhausted (request not sent)"


class BudgetSnapshot(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    limit_per_minute: int  # 0 = limiter off
    remaining: int
    waiting: dict[str, int]


class RateLimiter:
    """Thread-safe token bucket with priority waiters.

    The bucket holds at most `burst` tokens and refills at (limit - burst) per minute, so no window
    of 60 s can ever see more than `limit` grants (burst + refill) — Alpaca counts per minute, and a
    plain bucket of `limit` tokens refilling at `limit`/min would allow twice that in a bad minute.
    A token is granted to the highest-priority waiter first (FIFO within a priority); a newcomer
    never overtakes a waiter of equal or higher priority.
    """

    def __init__(
        self,
        limit_per_minute: int = ALPACA_TRADING_REQUESTS_PER_MINUTE,
        *,
        burst: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if limit_per_minute < 0:
            raise ValueError(f"rate limit must be >= 0 requests/minute, got {limit_per_minute}")
        self._limit = limit_per_minute
        self._burst = max(1, burst if burst is not None else limit_per_minute // 10) if limit_per_minute else 0
        if self._limit and self._burst >= self._limit:
            raise ValueError(f"burst {self._burst} must be below the limit {self._limit}")
        self._rate_per_s = (self._limit - self._burst) / 60.0
        self._clock = clock
        self._tokens = float(self._burst)
        self._stamp = clock()
        self._cond = threading.Condition()
        self._waiters: list[tuple[int, int]] = []  # (priority, ticket)
        self._tickets = itertools.count()

    @property
    def enabled(self) -> bool:
        return self._limit > 0

    def acquire(self, priority: Priority, timeout: float | None = None) -> None:
        """Take one request's token, waiting behind higher-priority callers; RateLimitTimeout after `timeout`."""
        if not self._limit:
            return
        with self._cond:
            deadline = None if timeout is None else self._clock() + timeout
            entry = (int(priority), next(self._tickets))
            self._waiters.append(entry)
            try:
                while True:
                    self._refill()
                    if self._tokens >= 1 and min(self._waiters) == entry:
                        self._tokens -= 1
                        return
                    now = self._clock()
                    if deadline is not None and now >= deadline:
                        raise RateLimitTimeout(
                            f"no {priority.name} token within {timeout:g}s "
                            f"({len(self._waiters)} waiting, limit {self._limit}/min)"
                        )
                    wait = _MAX_WAIT_SLICE_S
                    if deadline is not None:
                        wait = min(wait, max(0.0, deadline - now))
                    self._cond.wait(wait)
            finally:
                self._waiters.remove(entry)
                self._cond.notify_all()  # the next head may now go

    def budget(self) -> BudgetSnapshot:
        with self._cond:
            self._refill()
            waiting = {p.name: 0 for p in Priority}
            for priority, _ in self._waiters:
                waiting[Priority(priority).name] += 1
            return BudgetSnapshot(limit_per_minute=self._limit, remaining=int(self._tokens), waiting=waiting)

    def _refill(self) -> None:
        now = self._clock()
        elapsed = max(0.0, now - self._stamp)
        self._stamp = now
        self._tokens = min(float(self._burst), self._tokens + elapsed * self._rate_per_s)
