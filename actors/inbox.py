"""A pykka mailbox that lets its actor take what is waiting without blocking, to serve it in one go."""

from __future__ import annotations

import queue
from collections import deque
from collections.abc import Callable
from typing import Any


class PeekableInbox:
    """A mailbox the actor thread can peek into without blocking and push one message back to.

    The DbWriter drains waiting Store calls into one commit with it; the router drains waiting trade updates and
    submit results into one commit.
    """

    def __init__(self) -> None:
        self._queue: queue.Queue[Any] = queue.Queue()
        self._front: deque[Any] = deque()  # touched by the actor thread only

    def put(self, envelope: Any, /) -> None:
        self._queue.put(envelope)

    def get(self) -> Any:
        return self._front.popleft() if self._front else self._queue.get()

    def get_nowait(self) -> Any:
        return self._front.popleft() if self._front else self._queue.get_nowait()

    def push_front(self, envelope: Any) -> None:
        self._front.appendleft(envelope)

    def empty(self) -> bool:
        return not self._front and self._queue.empty()

    def take_next(self, wanted: Callable[[Any], bool], timeout: float) -> Any | None:
        """The next envelope if `wanted(envelope)`, waiting at most `timeout` seconds for one to arrive; None on
        timeout or when the next one is not wanted (it keeps its place in line)."""
        if timeout <= 0:
            return None
        try:
            envelope = self._front.popleft() if self._front else self._queue.get(timeout=timeout)
        except queue.Empty:
            return None
        if not wanted(envelope):
            self.push_front(envelope)
            return None
        return envelope

    def take_waiting(self, wanted: Callable[[Any], bool], limit: int) -> list[Any]:
        """The envelopes already waiting, in order, while `wanted(envelope)` holds (at most `limit`).

        Never blocks; the first envelope not wanted (a stop, a call of another kind) keeps its place in line.
        """
        taken: list[Any] = []
        while len(taken) < limit:
            try:
                envelope = self.get_nowait()
            except queue.Empty:
                break
            if not wanted(envelope):
                self.push_front(envelope)
                break
            taken.append(envelope)
        return taken
