"""aiosqlite without its worker thread: each statement runs at once, on the thread of the event loop that awaits it.

Why: aiosqlite hands every statement to a private thread and wakes the event loop when it is done, so one SQL
statement costs two thread switches, a self-pipe write and, in a busy daemon, a wait for the GIL behind every other
thread. A profile of the fill → OCO path showed those hand-offs, not SQLite, as the DbWriter's main cost (the
order-first rule puts three commits on that path). Our users of the Store already run it on a thread of their own
(the DbWriter actor owns a private loop; the CLI and tests own theirs), so a statement blocking that loop for the
microseconds SQLite needs blocks nothing else. SQLAlchemy's aiosqlite dialect, its greenlet adaptation and
aiosqlite's Connection and Cursor classes are all kept; only the hand-off goes.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Generator
from typing import Any

import aiosqlite


class _RunNow:
    """Stands in for aiosqlite's queue to its worker thread: runs the call at once and settles its future."""

    def put_nowait(self, item: tuple[asyncio.Future[Any] | None, Callable[[], Any]]) -> None:
        future, function = item
        try:
            result = function()
        except BaseException as error:  # noqa: BLE001 - the awaiting caller gets it, as from the worker thread
            if future is not None and not future.done():
                future.set_exception(error)
            return
        if future is not None and not future.done():
            future.set_result(result)


class InlineConnection(aiosqlite.Connection):
    """An aiosqlite.Connection whose calls run inline (awaiting an already settled future never yields)."""

    def __init__(self, connector: Callable[[], sqlite3.Connection], iter_chunk_size: int = 64) -> None:
        super().__init__(connector, iter_chunk_size)
        self._tx = _RunNow()  # type: ignore[assignment]  # duck-typed: only put_nowait is ever called

    def __await__(self) -> Generator[Any, None, aiosqlite.Connection]:
        return self._connect().__await__()  # no worker thread to start

    @property
    def sqlite3_connection(self) -> sqlite3.Connection:
        """The connection itself: safe to use directly, as every call already runs on the caller's thread."""
        return self._conn


def connect_inline(database: str, *, iter_chunk_size: int = 64, **kwargs: Any) -> InlineConnection:
    """`aiosqlite.connect` with the same arguments, giving an InlineConnection."""
    return InlineConnection(lambda: sqlite3.connect(database, **kwargs), iter_chunk_size)
