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
    care how fast our simulated day runs. `forced_until` holds the 429 bursts the fault plan injects.
    """

    per_minute: int
    now: Callable[[], float] = time.time
    _windows: dict[tuple[str, str], tuple[float, int]] = field(default_factory=dict)
    _forced_until: dict[str, float] = field(default_factory=dict)

    def force_burst(self, key: str, seconds: float) -> None:
        """As if another client of the account spent its budget: every call of `key` is refused for `seconds`
        (extended, never shortened, by a burst starting inside it), and each 429's X-RateLimit-Reset says when the
        refusals end, as Alpaca's does. A client that waits for the Reset is served after it; one that does not
        keeps being refused until then."""
        self._forced_until[key] = max(self._forced_until.get(key, 0.0), self.now() + seconds)

    def check(self, key: str, bucket: str = "trading") -> RateDecision:
        moment = self.now()
        window_start, used = self._windows.get((key, bucket), (moment, 0))
        if moment - window_start >= 60:
            window_start, used = moment, 0
        reset = str(math.ceil(window_start + 60))
        limit = self.per_minute
        forced_until = self._forced_until.get(key, 0.0)
        if moment < forced_until:
            return RateDecision(False, {"X-RateLimit-Limit": str(limit), "X-RateLimit-Remaining": "0",
                                        "X-RateLimit-Reset": str(math.ceil(forced_until))})
        if limit > 0 and used >= limit:
            self._windows[(key, bucket)] = (window_start, used)
            return RateDecision(False, {"X-RateLimit-Limit": str(limit), "X-RateLimit-Remaining": "0",
                                        "X-RateLimit-Reset": reset})
        used += 1
        self._windows[(key, bucket)] = (window_start, used)
        remaining = max(0, limit - used) if limit > 0 else 0
        return RateDecision(True, {"X-RateLimit-Limit": str(limit), "X-RateLimit-Remaining": str(remaining),
                                   "X-RateLimit-Reset": reset})
