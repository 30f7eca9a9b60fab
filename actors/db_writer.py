"""DbWriter: the one actor that writes the database, exposing the Store as synchronous methods.

Decision: every database write in the daemon goes through this single pykka ThreadingActor. SQLite
allows one writer at a time; several threads writing through their own connections is how other
trading systems met "database is locked". Here the actor's mailbox is the queue: calls are served one
by one on this thread, each in its own transaction, so SQLite never sees two writers from us.

The actor owns a private asyncio event loop (created in on_start, closed in on_stop) and the
AsyncEngine; each proxy call runs one Store coroutine to completion on that loop. Callers do
`writer.proxy().create_order(...).get()`. An exception inside a call (a constraint, a bad argument,
a disk error) goes to the caller's future; the actor and its engine keep serving.

Ready for group commit later: Store methods are thin wrappers over session-level operations, so a
batching writer could drain several queued calls into one transaction without changing them.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pykka

from catalyst.store.db import make_engine
from catalyst.store.migrate import upgrade
from catalyst.store.repository import Store, utc_now

# Store coroutines served by the actor (everything public except lifecycle).
EXPOSED_METHODS = tuple(
    name
    for name, member in vars(Store).items()
    if inspect.iscoroutinefunction(member) and not name.startswith("_") and name != "close"
)


class DbWriter(pykka.ThreadingActor):
    """Single writer of the Catalyst database; see the module docstring for why."""

    def __init__(
        self,
        database_url: str,
        *,
        clock: Callable[[], datetime] = utc_now,
        synchronous: str = "FULL",
        migrate: bool = True,
    ) -> None:
        super().__init__()
        if migrate:
            # Runs in the caller's thread inside DbWriter.start(), so an unusable file (not SQLite,
            # corrupt, newer schema) raises its StoreError right there, not in a dying actor thread.
            upgrade(database_url)
        self._database_url = database_url
        self._clock = clock
        self._synchronous = synchronous
        self._loop: asyncio.AbstractEventLoop | None = None
        self._store: Store | None = None

    def on_start(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._store = Store(make_engine(self._database_url, synchronous=self._synchronous), clock=self._clock)

    def on_stop(self) -> None:
        self._close()

    def on_failure(self, exception_type: Any, exception_value: Any, traceback: Any) -> None:
        self._close()

    def _close(self) -> None:
        if self._loop is None:
            return
        if self._store is not None:
            self._loop.run_until_complete(self._store.close())
        self._loop.close()
        self._loop, self._store = None, None

    def _run(self, method: str, /, *args: Any, **kwargs: Any) -> Any:
        assert self._loop is not None and self._store is not None, "DbWriter used before start or after stop"
        return self._loop.run_until_complete(getattr(self._store, method)(*args, **kwargs))


def _expose(name: str) -> Callable[..., Any]:
    coroutine = getattr(Store, name)

    @functools.wraps(coroutine)
    def call(self: DbWriter, *args: Any, **kwargs: Any) -> Any:
        return self._run(name, *args, **kwargs)

    # A plain function now: drop the coroutine marker functools.wraps may have copied.
    call.__dict__.pop("_is_coroutine_marker", None)
    return call


for _name in EXPOSED_METHODS:
    setattr(DbWriter, _name, _expose(_name))
