"""Telling an actor that may have stopped a moment ago, now or after a delay."""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from typing import Any

import pykka


def tell_if_alive(ref: Any, message: Any) -> bool:
    """Tell `ref`; False if its actor has stopped. A position actor stops as soon as its position is done (or
    crashes, to be rebuilt from the database), so a reference listed an instant ago may be dead by the time it is
    told: that is a position with nothing left to do, never an error that may stop the caller."""
    try:
        ref.tell(message)
    except pykka.ActorDeadError:
        return False
    return True


class Delayed:
    """A tell waiting for its time; `cancel()` calls it off (harmless once it has been told)."""

    __slots__ = ("due", "ref", "message", "cancelled")

    def __init__(self, due: float, ref: Any, message: Any) -> None:
        self.due, self.ref, self.message, self.cancelled = due, ref, message, False

    def cancel(self) -> None:
        self.cancelled = True


class _DelayedTells:
    """One daemon thread serving every delayed tell of the process, earliest first.

    Why not a threading.Timer each: a Timer starts a thread, and Thread.start() waits until that thread runs. The
    router arms a grace timer for every marketable entry whose submit reply says "filled", on the fill's hot path;
    a thread start there cost 0.2-0.5 ms of GIL hand-offs per entry, and 100 simultaneous entries started 100 threads.
    """

    def __init__(self) -> None:
        self._due: list[tuple[float, int, Delayed]] = []
        self._order = itertools.count()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None

    def add(self, delay_s: float, ref: Any, message: Any) -> Delayed:
        delayed = Delayed(time.monotonic() + max(0.0, delay_s), ref, message)
        with self._wake:
            heapq.heappush(self._due, (delayed.due, next(self._order), delayed))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._serve, name="delayed-tells", daemon=True)
                self._thread.start()
            elif self._due[0][2] is delayed:
                self._wake.notify()  # the new one is due before whatever the thread sleeps towards
        return delayed

    def _serve(self) -> None:
        while True:
            with self._wake:
                while not self._due or self._due[0][0] > time.monotonic():
                    self._wake.wait(self._due[0][0] - time.monotonic() if self._due else None)
                _, _, delayed = heapq.heappop(self._due)
            if not delayed.cancelled:
                tell_if_alive(delayed.ref, delayed.message)


_DELAYED = _DelayedTells()


def tell_later(ref: Any, delay_s: float, message: Any) -> Delayed:
    """Tell `ref` after `delay_s` wall seconds, if its actor is still alive then (an actor's own ticks, grace
    periods and rechecks). Served by one daemon thread, so a pending tell never holds the process open; cancel the
    returned handle to call it off."""
    return _DELAYED.add(delay_s, ref, message)


BUSY = object()  # an actor that had not answered by the deadline
GONE = object()  # an actor that stopped before answering (a position that closed meanwhile)


class Answers:
    """Questions put to several actors at once, their answers waited for up to `within_s` in all, not each: a busy
    actor (the doctor in a pass whose broker read hangs) costs the wait once, and is told apart from one that has
    stopped. Taking a busy actor for a missing one once rebuilt a live position beside its own actor."""

    def __init__(self, within_s: float) -> None:
        self.deadline = time.monotonic() + within_s

    def answer(self, future: Any) -> Any:
        """The future's value; BUSY if its actor has not answered by the deadline, GONE if it stopped."""
        try:
            return future.get(timeout=max(self.deadline - time.monotonic(), 0.001))
        except pykka.Timeout:
            return BUSY
        except pykka.ActorDeadError:
            return GONE

    def states(self, refs: Any) -> list[tuple[Any, Any]]:
        """(ref, its `state()` or BUSY) for each actor, all asked before any answer is awaited; stopped ones left out."""
        asked = []
        for ref in refs:
            try:
                asked.append((ref, ref.proxy().state()))
            except pykka.ActorDeadError:
                continue
        answered = [(ref, self.answer(future)) for ref, future in asked]
        return [(ref, state) for ref, state in answered if state is not GONE]
