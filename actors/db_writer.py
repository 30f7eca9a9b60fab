"""DbWriter: the one actor that writes the database, exposing the Store as synchronous methods.

Decision: every database write in the daemon goes through this single pykka ThreadingActor. SQLite
allows one writer at a time; several threads writing through their own connections is how other
trading systems met "database is locked". Here the actor's mailbox is the queue: calls are served one
by one on this thread, each in its own transaction, so SQLite never sees two writers from us.

The actor owns a private asyncio event loop (created in on_start, closed in on_stop) and the
AsyncEngine; each proxy call runs one Store coroutine to completion on that loop. Callers do
`writer.proxy().create_order(...).get()`. An exception inside a call (a constraint, a bad argument,
a disk error) goes to the caller's future; the actor and its engine keep serving.

Group commit: when a call starts and more Store calls are already waiting in the mailbox, the writer
drains them (up to MAX_GROUP, stopping at the first message that is not a Store call, which stays at
the front) and runs them all in ONE transaction and ONE commit via `Store.batch`, each under its own
savepoint. Every caller still gets its own result or its own exception, and no future resolves before
the commit that holds its writes is on disk: durability per caller is unchanged, only the fsyncs are
shared. A lone call runs exactly as before, in its own transaction.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import pykka
from loguru import logger
from pykka.messages import ProxyCall
from sqlalchemy.engine import make_url

from actors.inbox import PeekableInbox
from catalyst.store.batch import CallOutcome, StoreCall
from catalyst.store.db import make_engine, past_a_held_lock
from catalyst.store.errors import DatabaseLockedError, storage_fault, storage_fault_code
from catalyst.store.migrate import upgrade
from catalyst.store.repository import Store, runs_plain, utc_now
from catalyst.store.reserve import DiskReserve

# Store coroutines served by the actor (everything public except lifecycle).
EXPOSED_METHODS = tuple(
    name
    for name, member in vars(Store).items()
    if inspect.iscoroutinefunction(member) and not name.startswith("_") and name != "close"
)
T = TypeVar("T")
log = logger.bind(actor="writer")
MAX_GROUP = 256  # calls per group commit: bounds one transaction's size and the wait of the first caller


@dataclass(frozen=True, slots=True)
class WriterStats:
    """What the writer has done: `transactions` < `calls` means group commit shared commits."""

    transactions: int
    calls: int
    largest_group: int


class StorageHealth:
    """The writer's word on the disk under the database, read by the daemon's main loop from its own thread.

    `fault` is set once, by the first write the disk refused (full, read-only, I/O error: storage_fault), and never
    cleared: with nothing recordable no order may be sent (the golden rule), so the daemon stops on it with one
    clear line (Daemon.check_actors) instead of dying actor by actor, each with a traceback, as its writes fail."""

    def __init__(self) -> None:
        self.fault: str | None = None
        # Set once, when a write refused for a full disk went through on the disk reserve's space: what was in flight
        # is recorded, nothing more should be (the space is shared with whatever filled the disk), so the daemon
        # opens no new position and stops once every filled share is under a stop (Daemon.check_actors).
        self.reserve_used: str | None = None


class DbWriter(pykka.ThreadingActor):
    """Single writer of the Catalyst database; see the module docstring for why."""

    def __init__(
        self,
        database_url: str,
        *,
        clock: Callable[[], datetime] = utc_now,
        synchronous: str = "FULL",
        defer_report_sync: bool = False,
        migrate: bool = True,
        health: StorageHealth | None = None,
        reserve: DiskReserve | None = None,
    ) -> None:
        super().__init__()
        self.health = health if health is not None else StorageHealth()
        if migrate:
            # Runs in the caller's thread inside DbWriter.start(), so an unusable file (not SQLite,
            # corrupt, newer schema) raises its StoreError right there, not in a dying actor thread.
            upgrade(database_url)
        self._reserve = reserve
        if reserve is not None:
            well, said = reserve.set_aside()
            (log.info if well else log.warning)(f"writer {said}")
        self._database_url = database_url
        self._database_name = str(make_url(database_url).database)  # named by a held lock's lines (not parsed per write)
        self._clock = clock
        self._synchronous = synchronous
        self._defer_report_sync = defer_report_sync
        self._loop: asyncio.AbstractEventLoop | None = None
        self._store: Store | None = None
        self._transactions = 0
        self._calls = 0
        self._largest_group = 0

    def stats(self) -> WriterStats:
        return WriterStats(self._transactions, self._calls, self._largest_group)

    @staticmethod
    def _create_actor_inbox() -> Any:
        return PeekableInbox()

    def on_start(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._store = Store(make_engine(self._database_url, synchronous=self._synchronous), clock=self._clock,
                            synchronous=self._synchronous, defer_report_sync=self._defer_report_sync)
        self._loop.run_until_complete(self._store.open())

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
        try:
            result = self._run_calls(method, *args, **kwargs)
        except Exception as error:  # the caller gets it either way; a failing disk is also the daemon's matter
            self._note_storage_fault(error)
            raise
        if method == "batch":  # its calls' errors come back as outcomes, not raised
            self._note_batch_errors(result)
        return result

    def _note_batch_errors(self, outcomes: Any) -> None:
        for outcome in outcomes:
            if outcome.error is not None:
                self._note_storage_fault(outcome.error)

    def _note_storage_fault(self, error: BaseException) -> None:
        fault = storage_fault(error)
        if fault is None or self.health.fault is not None:
            return
        self.health.fault = fault
        log.error(f"writer database {make_url(self._database_url).database} refused a write: {fault}; nothing more "
                  "can be recorded, so no order can be sent")

    def _run_calls(self, method: str, /, *args: Any, **kwargs: Any) -> Any:
        assert self._loop is not None and self._store is not None, "DbWriter used before start or after stop"
        waiting = self._drain_waiting_calls()
        self._transactions += 1
        self._calls += 1 + len(waiting)
        self._largest_group = max(self._largest_group, 1 + len(waiting))
        calls = [StoreCall(method, args, kwargs)]
        calls += [StoreCall(e.message.attr_path[0], e.message.args, e.message.kwargs) for e in waiting]
        loop, store = self._loop, self._store
        run = (lambda coroutine: run_to_end(loop, coroutine)) if runs_plain(calls) else loop.run_until_complete
        if not waiting:
            return self._on_the_reserve_if_full(
                lambda: self._past_a_held_lock(lambda: run(getattr(store, method)(*args, **kwargs))), calls)
        mine, *theirs = self._on_the_reserve_if_full(lambda: self._past_a_held_lock(lambda: run(store.batch(calls))),
                                                     calls)
        # The commit is on disk (or failed for all): only now may any caller see its outcome.
        for envelope, outcome in zip(waiting, theirs):
            if envelope.reply_to is None:
                continue
            if outcome.error is None:
                if envelope.message.attr_path[0] == "batch":
                    self._note_batch_errors(outcome.value)
                envelope.reply_to.set(outcome.value)
            else:
                error = outcome.error
                self._note_storage_fault(error)
                envelope.reply_to.set_exception(exc_info=(type(error), error, error.__traceback__))
        return mine.unwrap()

    def _past_a_held_lock(self, attempt: Callable[[], T]) -> T:
        """`attempt()`, waiting out a lock another program holds on the database (past_a_held_lock). A lock held past
        the wait is a storage fault: a lone call raises DatabaseLockedError, a batch gives it to each of its calls (as
        a refused commit does), and the daemon stops on it as on a disk that refuses writes (Daemon.check_actors)."""
        last: list[Any] = []

        def remembered() -> T:
            last.clear()
            last.append(attempt())
            return last[0]  # type: ignore[no-any-return]

        stopping = self.health.fault is not None  # the daemon stops on it: no second wait to hold its stop up
        try:
            return past_a_held_lock(remembered, self._database_name, refused=_commit_refused,
                                    wait_s=0 if stopping else None)
        except DatabaseLockedError as locked:
            if not stopping and self._loop is not None and self._store is not None:
                # The daemon stops on it now: its last writes (a stop's) fail at once rather than each after SQLite's
                # busy timeout, which would outlast the stop's bound.
                run_to_end(self._loop, self._store._plain_sqlite3()).execute("PRAGMA busy_timeout = 0")
            if last and isinstance(last[0], list):  # a batch refused at its BEGIN each time: nothing of it written
                return [CallOutcome(error=locked) for _ in last[0]]  # type: ignore[return-value]
            raise

    def _on_the_reserve_if_full(self, attempt: Callable[[], T], calls: list[StoreCall]) -> T:
        """`attempt()`; if the disk refused it for want of space and nothing of it was written, once only: give the
        disk reserve's space back and make the attempt again. A fill in flight is then recorded and its stop can be
        sent, where without the reserve its shares would stay unprotected until the disk is fixed."""
        try:
            result = attempt()
        except Exception as error:  # a lone call: its transaction was rolled back, nothing of it written
            if not self._release_reserve(error, calls):
                raise
            return attempt()
        refused = _commit_refused(result)
        if refused is not None and self._release_reserve(refused, calls):
            return attempt()
        return result

    def _release_reserve(self, error: BaseException, calls: list[StoreCall]) -> bool:
        reserve = self._reserve
        if reserve is None or not reserve.may_help(storage_fault_code(error)) or not reserve.release():
            return False
        database = make_url(self._database_url).database
        what = ", ".join(sorted({one.method for one in calls}))
        self.health.reserve_used = (f"the disk under {database} is full ({storage_fault(error)}); its {reserve.size} "
                                    "reserve was given back to record what was in flight")
        log.error(f"writer database {database} refused a write ({what}) for a full disk: gave back the "
                  f"{reserve.size} disk reserve ({reserve.path}) and wrote it again; "
                  "no new position will be opened, and the daemon stops once every filled share is under a stop: "
                  "free disk space, then restart")
        return True

    def _drain_waiting_calls(self) -> list[Any]:
        inbox = self.actor_inbox
        assert isinstance(inbox, PeekableInbox)
        return inbox.take_waiting(_is_store_call, MAX_GROUP - 1)


def run_to_end(loop: asyncio.AbstractEventLoop, coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to its end on this thread, stepping it by hand while it does not suspend.

    Why not simply `loop.run_until_complete`: the Store's statements run inline (catalyst/store/inline_sqlite.py), so
    its plain-SQL coroutines (runs_plain) finish without ever suspending, and a task, its scheduling and a selector
    poll per call were a tenth of the writer's time in profiles of the fill → OCO path. ORM sessions do need the
    running loop (SQLAlchemy closes them in a task of their own): the writer runs those on the loop. The coroutine
    runs in a context of its own, as in a task; one that does suspend (a future not yet settled) finishes on `loop`
    as a task in that same context, so it is never left half-run.
    """
    context = contextvars.copy_context()
    try:
        waiting_on = context.run(coroutine.send, None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    return loop.run_until_complete(loop.create_task(_finish(coroutine, waiting_on), context=context))


async def _finish(coroutine: Coroutine[Any, Any, T], waiting_on: Any) -> T:
    """Go on with a coroutine stepped by hand until it suspended on `waiting_on`, as its own task would."""
    while True:
        if waiting_on is not None:  # a future (a bare yield, as asyncio.sleep(0)'s, is None: just step again)
            # Taken over as a task takes over a future its coroutine awaits: else awaiting it again is refused.
            waiting_on._asyncio_future_blocking = False
            await asyncio.wait([waiting_on])  # its outcome, exception or not, is read by the coroutine itself
        try:
            waiting_on = coroutine.send(None)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]


def _commit_refused(result: Any) -> BaseException | None:
    """The error every outcome of a batch carries when its COMMIT (or BEGIN) failed, so that nothing of it was
    written (Store.batch); None for any other result, one where some calls committed included."""
    if not isinstance(result, list) or not result or not isinstance(result[0], CallOutcome):
        return None  # every write's result passes here: the common answers first
    first = result[0].error
    if first is None:
        return None
    return first if all(isinstance(o, CallOutcome) and o.error is first for o in result) else None


def _is_store_call(envelope: Any) -> bool:
    message = envelope.message
    return isinstance(message, ProxyCall) and len(message.attr_path) == 1 and message.attr_path[0] in EXPOSED_METHODS


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
