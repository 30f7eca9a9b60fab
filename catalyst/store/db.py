"""Engine factory: the only module that knows which database it talks to (SQLite today)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

from loguru import logger
from tenacity import RetryCallState, Retrying, retry_if_exception, retry_if_result, stop_after_delay, wait_fixed
from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from catalyst.store.errors import HELD_LOCK, DatabaseLockedError, NotADatabaseError, is_busy
from catalyst.store.inline_sqlite import connect_inline

DEFAULT_SQLITE_DRIVER = "sqlite+aiosqlite"
SQLITE_HEADER = b"SQLite format 3\x00"
SYNCHRONOUS_LEVELS = ("OFF", "NORMAL", "FULL", "EXTRA")
BUSY_TIMEOUT_MS = 5000  # SQLite's own wait for a lock, per statement (a checkpoint, a backup's moment), said nowhere
# How long in all a write waits for a lock another program holds on the database (a trader's `sqlite3` shell left
# inside a transaction, a backup) before the daemon stops on it as on a disk that refuses writes (exit 3). Nothing is
# written meanwhile, so no order is sent and a fill's stop waits: short, but past a backup's moment (README).
LOCK_WAIT_S = 30.0
LOCK_RETRY_PAUSE_S = 0.05  # between attempts (SQLite's busy timeout already waited within each)
T = TypeVar("T")


def _nothing_refused(_result: Any) -> BaseException | None:
    return None


def past_a_held_lock(attempt: Callable[[], T], database: str, *, refused: Callable[[T], BaseException | None] =
                     _nothing_refused, actor: str = "writer", wait_s: float | None = None) -> T:
    """`attempt()`, made again while another program holds the lock it needs (SQLITE_BUSY, raised or, for a batch,
    what `refused(result)` finds), up to LOCK_WAIT_S in all; the wait is said on one WARNING line and its end on one
    INFO line. Past it (or `wait_s`), DatabaseLockedError (a storage fault: the daemon stops on it, exit 3). Made again
    only because a refused lock means nothing of the attempt was written: SQLite takes the write lock at a
    transaction's first write, refuses that write, and the transaction is rolled back (Store.batch refuses a whole
    batch so). The first attempt is a plain call (every write of the daemon's makes it); tenacity waits out the rest."""
    started = time.monotonic()

    def lock_refused(result: T) -> bool:
        return is_busy(refused(result))

    def locked(busy: BaseException | None) -> DatabaseLockedError:
        error = DatabaseLockedError(database, f"database is locked: {HELD_LOCK} for longer than Catalyst waits "
                                              f"({LOCK_WAIT_S:g} s)")
        error.__cause__ = busy
        return error

    try:
        result = attempt()
    except Exception as error:
        if not is_busy(error):
            raise
        busy: BaseException | None = error
    else:
        busy = refused(result)
        if not is_busy(busy):
            return result
    remaining_s = (LOCK_WAIT_S if wait_s is None else wait_s) - (time.monotonic() - started)
    if remaining_s <= 0:
        raise locked(busy)
    log = logger.bind(actor=actor)
    log.warning(f"{actor} database {database} is locked: another program holds a lock on it (a sqlite3 shell left "
                f"inside a transaction?); waiting up to {LOCK_WAIT_S:g} s for it, writing nothing meanwhile (so no "
                "order is sent), then stopping")

    def held_too_long(state: RetryCallState) -> T:
        outcome = state.outcome
        assert outcome is not None  # called once an attempt has ended
        raise locked(outcome.exception() if outcome.failed else refused(outcome.result()))

    result = Retrying(retry=retry_if_exception(is_busy) | retry_if_result(lock_refused),
                      wait=wait_fixed(LOCK_RETRY_PAUSE_S), stop=stop_after_delay(remaining_s),
                      retry_error_callback=held_too_long)(attempt)
    log.info(f"{actor} database {database} is free again after {time.monotonic() - started:.1f} s: writing what "
             "waited")
    return result


def _json_default(value: Any) -> Any:
    # Scores and raw broker payloads may carry Decimals and datetimes; keep them exact as text.
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def json_dumps(value: Any) -> str:
    return json.dumps(value, default=_json_default, separators=(",", ":"))


def normalise_url(url: str | URL) -> URL:
    """The URL with the async driver filled in: a bare `sqlite:///x.db` means aiosqlite."""
    parsed = make_url(url)
    if parsed.drivername == "sqlite":
        parsed = parsed.set(drivername=DEFAULT_SQLITE_DRIVER)
    return parsed


def is_sqlite(url: str | URL) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def describe_database(url: str | URL) -> str:
    """A name for messages: the file path for SQLite, the URL without password otherwise."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return parsed.database or ":memory:"
    return parsed.render_as_string(hide_password=True)


def sqlite_file(url: str | URL) -> Path | None:
    """The SQLite database file `url` names; None for another database, an in-memory one or a `file:` URI."""
    if not is_sqlite(url):
        return None
    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def holds_data(path: Path) -> bool:
    """Whether the file exists with something in it (SQLite creates a missing one, and an empty file is a valid new
    database)."""
    return path.is_file() and path.stat().st_size > 0


def check_database_file(url: str | URL) -> None:
    """Refuse a file that exists but is not SQLite, before SQLAlchemy gives a vaguer error."""
    path = sqlite_file(url)
    if path is None or not holds_data(path):
        return
    with path.open("rb") as handle:
        header = handle.read(len(SQLITE_HEADER))
    if header != SQLITE_HEADER:
        raise NotADatabaseError(describe_database(url), "not an SQLite database (wrong file header)")


def make_engine(url: str | URL, *, synchronous: str = "FULL") -> AsyncEngine:
    """An AsyncEngine for `url` (default driver sqlite+aiosqlite) with the SQLite settings we rely on.

    synchronous=FULL is the default because an order row must survive power loss before the broker
    hears of it (golden rule: order first). NORMAL in WAL mode can lose the last commits on power loss.
    """
    level = synchronous.upper()
    if level not in SYNCHRONOUS_LEVELS:
        raise ValueError(f"synchronous must be one of {', '.join(SYNCHRONOUS_LEVELS)}, not {synchronous!r}")
    parsed = normalise_url(url)
    if parsed.drivername != DEFAULT_SQLITE_DRIVER:
        return create_async_engine(parsed, json_serializer=json_dumps)
    engine = create_async_engine(parsed, json_serializer=json_dumps, creator=lambda: _inline_connection(engine))
    _configure_sqlite(engine, level)
    return engine


def _inline_connection(engine: AsyncEngine) -> Any:
    # The dialect's own connect, with the URL's own arguments, handing it an aiosqlite connection that runs
    # statements inline (see inline_sqlite for why).
    dialect = engine.sync_engine.dialect
    cargs, cparams = dialect.create_connect_args(engine.sync_engine.url)
    return dialect.dbapi.connect(*cargs, async_creator_fn=connect_inline, **cparams)  # type: ignore[union-attr]


def _configure_sqlite(engine: AsyncEngine, synchronous: str) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin: otherwise a
        # method's reads run outside its transaction and DDL is not transactional.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA journal_mode=WAL")  # readers never block the single writer
            cursor.execute("PRAGMA foreign_keys=ON")  # off by default in SQLite, per connection
            cursor.execute(f"PRAGMA synchronous={synchronous}")
        finally:
            cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        # Deferred BEGIN is enough: one writer actor means no lock-upgrade races between writers.
        connection.exec_driver_sql("BEGIN")
