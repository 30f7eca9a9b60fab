"""Alpaca's per-key request budget: a fixed window per real-time minute, with the headers it reports."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable


@dataclass
class RateDecision:
    allowed: bool
    headers: dict[str, str]


@dataclass
class RateLimiter:
    """`per_minute == 0` turns limiting off (headers still show the budget as unlimited-ish).

    The window is in REAL seconds, not virtual ones: Alpaca's limit protects its servers, which do not
    care how fast our simulated day runs. `forced` holds 429s injected by the fault plan's bursts.
    """

    per_minute: int
    now: Callable[[], float] = time.time
    _windows: dict[tuple[str, str], tuple[float, int]] = field(default_factory=dict)
    _forced: dict[str, int] = field(default_factory=dict)

    def force_burst(self, key: str, count: int) -> None:
        self._forced[key] = self._forced.get(key, 0) + count

    def check(self, key: str, bucket: str = "trading") -> RateDecision:
        moment = self.now()
        window_start, used = self._windows.get((key, bucket), (moment, 0))
        if moment - window_start >= 60:
            window_start, used = moment, 0
        reset = str(math.ceil(window_start + 60))
        limit = self.per_minute
        if self._forced.get(key, 0) > 0:
            self._forced[key] -= 1
            return RateDecision(False, {"X-RateLimit-Limit": str(limit), "X-RateLimit-Remaining": "0",
                                        "X-RateLimit-Reset": reset})
        if limit > 0 and used >= limit:
            self._windows[(key, bucket)] = (window_start, used)
            return RateDecision(False, {"X-RateLimit-Limit": str(limit), "X-RateLimit-Remaining": "0",
                                        "X-RateLimit-Reset": reset})
        used += 1
        self._windows[(key, bucket)] = (window_start, used)
        remaining = max(0, limit - used) if limit > 0 else 0
        return RateDecision(True, {"X-RateLimit-Limit": str(limit), "X-RateLimit-Remaining": str(remaining),
                                   "X-RateLimit-Reset": reset})
