"""The priority rate limiter: who goes first, when it gives up, and that it never overspends a minute."""

from __future__ import annotations

import threading
import time

import pytest

from catalyst.broker.ratelimit import Priority, RateLimiter, RateLimitTimeout


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


def poll(condition, what: str, deadline_s: float = 10.0) -> None:
    deadline = time.monotonic() + deadline_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


def drain(limiter: RateLimiter) -> None:
    while limiter.budget().remaining:
        limiter.acquire(Priority.READ, timeout=0)


def start_waiters(limiter: RateLimiter, priorities: list[Priority], granted: list[str]) -> list[threading.Thread]:
    """Start one thread per priority, in this order, each queued before the next starts."""
    threads = []
    for index, priority in enumerate(priorities):
        label = f"{priority.name}-{index}"

        def take(p: Priority = priority, name: str = label) -> None:
            limiter.acquire(p, timeout=None)
            granted.append(name)

        thread = threading.Thread(target=take, daemon=True)
        thread.start()
        threads.append(thread)
        poll(lambda n=index + 1: sum(limiter.budget().waiting.values()) == n, f"{n_label(index)} queued")
    return threads


def n_label(index: int) -> str:
    return f"waiter {index + 1}"


def release_one_token_at_a_time(limiter: RateLimiter, clock: FakeClock, granted: list[str], count: int) -> None:
    # burst 1 → refill (limit - 1) per minute; a hair more than one token per step (floats), capped at 1
    seconds_per_token = 1.01 * 60.0 / (limiter.budget().limit_per_minute - 1)
    for n in range(1, count + 1):
        clock.advance(seconds_per_token)
        poll(lambda n=n: len(granted) == n, f"grant {n}")


def test_waiters_are_served_protect_then_cancel_then_entry_then_read() -> None:
    clock = FakeClock()
    limiter = RateLimiter(60, burst=1, clock=clock)
    drain(limiter)
    granted: list[str] = []
    threads = start_waiters(limiter, [Priority.READ, Priority.ENTRY, Priority.CANCEL, Priority.PROTECT], granted)

    release_one_token_at_a_time(limiter, clock, granted, 4)

    assert granted == ["PROTECT-3", "CANCEL-2", "ENTRY-1", "READ-0"]
    for thread in threads:
        thread.join(5)


def test_waiters_of_one_priority_are_served_first_come_first_served() -> None:
    clock = FakeClock()
    limiter = RateLimiter(60, burst=1, clock=clock)
    drain(limiter)
    granted: list[str] = []
    start_waiters(limiter, [Priority.ENTRY, Priority.ENTRY, Priority.ENTRY], granted)

    release_one_token_at_a_time(limiter, clock, granted, 3)

    assert granted == ["ENTRY-0", "ENTRY-1", "ENTRY-2"]


def test_budget_reports_waiters_per_priority() -> None:
    clock = FakeClock()
    limiter = RateLimiter(60, burst=1, clock=clock)
    drain(limiter)
    granted: list[str] = []
    start_waiters(limiter, [Priority.READ, Priority.READ, Priority.PROTECT], granted)

    budget = limiter.budget()

    assert budget.remaining == 0
    assert budget.waiting == {"PROTECT": 1, "CANCEL": 0, "ENTRY": 0, "READ": 2}
    release_one_token_at_a_time(limiter, clock, granted, 3)


def test_an_empty_budget_times_out_with_a_named_error() -> None:
    limiter = RateLimiter(60, burst=1, clock=FakeClock())
    drain(limiter)

    with pytest.raises(RateLimitTimeout, match="no ENTRY token within 0s"):
        limiter.acquire(Priority.ENTRY, timeout=0)
    assert limiter.budget().waiting["ENTRY"] == 0  # the timed-out waiter left the queue


def test_no_minute_ever_sees_more_grants_than_the_limit() -> None:
    clock = FakeClock()
    limiter = RateLimiter(200, clock=clock)
    grants: list[float] = []
    for _ in range(6000):  # ten simulated minutes of callers taking every token the moment it exists
        try:
            limiter.acquire(Priority.READ, timeout=0)
            grants.append(clock())
        except RateLimitTimeout:
            clock.advance(0.1)

    busiest = max(sum(1 for t in grants if start <= t < start + 60) for start in grants)
    assert 150 <= busiest <= 200


def test_a_zero_limit_turns_the_limiter_off() -> None:
    limiter = RateLimiter(0)

    for _ in range(1000):
        limiter.acquire(Priority.READ, timeout=0)

    assert not limiter.enabled and limiter.budget().limit_per_minute == 0


def test_a_negative_limit_is_refused_with_a_clear_message() -> None:
    with pytest.raises(ValueError, match="rate limit must be >= 0"):
        RateLimiter(-1)
