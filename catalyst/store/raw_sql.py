"""Plain SQL on the session's own SQLite connection, for the operations on the fill → protection path.

Why: each of those operations ran a dozen ORM statements (identity-map lookups, unit-of-work flushes, a
symbol join per returned record), 1-4 ms of Python each on our machines, and the order-first rule puts three
commits of them between a fill and its stop. The same writes as plain parameterised SQL cost tens of
microseconds. They run on the connection of the caller's transaction (the session's), so `Store.batch`, its
savepoints, its single commit and its error handling are unchanged; before them any pending ORM change is
flushed, after them the session forgets what it loaded, so ORM code in the same transaction never sees a
stale row.

Values are stored exactly as the ORM types store them (catalyst.store.types): decimals as fixed-point text,
timestamps as naive UTC text in SQLAlchemy's SQLite format, booleans as 0/1.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from sqlalchemy import Boolean
from sqlalchemy.ext.asyncio import AsyncSession

from catalyst.store.errors import ConstraintViolationError, InvalidValueError
from catalyst.store.types import ExactDecimal, UtcDateTime, to_decimal, to_utc

_SQLITE_TIME = "%Y-%m-%d %H:%M:%S.%f"  # SQLAlchemy's storage format for DATETIME on SQLite


class PlainTransaction:
    """A transaction the Store opened with BEGIN on its own sqlite3 connection, with no ORM session around it.

    Why: a batch made only of the operations below needs nothing from the session, yet a session transaction costs
    about a millisecond of Python per commit (session and transaction objects, pool checkout and reset, events,
    greenlet hops), as much as the writes and the fsync together; the order-first rule puts three such commits
    between a fill and its stop. The operations take it where they take a session: `connection` hands back `raw`.
    """

    __slots__ = ("raw",)

    def __init__(self, raw: sqlite3.Connection) -> None:
        self.raw = raw


def inline_sqlite3(driver_connection: Any) -> sqlite3.Connection:
    """The sqlite3 connection of an InlineConnection (statements on it run on the caller's thread)."""
    raw = getattr(driver_connection, "sqlite3_connection", None)
    if raw is None:  # only an InlineConnection may be used from this thread (see inline_sqlite)
        raise InvalidValueError("the store needs catalyst's inline SQLite connection (make_engine)")
    return raw


async def connection(session: AsyncSession | PlainTransaction) -> sqlite3.Connection:
    """The sqlite3 connection under the session's transaction, with the ORM's pending changes flushed to it.

    The ORM's loaded objects are then let go (expunged, not expired: an expired attribute would need I/O the
    async session cannot do implicitly), so ORM code later in the same transaction reads the rows afresh.
    """
    if isinstance(session, PlainTransaction):
        return session.raw
    if session.identity_map or session.new:
        if session.new or session.dirty or session.deleted:
            await session.flush()
        session.expunge_all()
    # Asking the session for its connection is what begins a pending SAVEPOINT (Store.batch's per-call
    # isolation) on it: ask once per (sub)transaction, even though the sqlite3 connection under it is known.
    sync = session.sync_session
    current = sync.get_nested_transaction() or sync.get_transaction()
    cached = session.info.get("catalyst_sqlite3")
    if cached is not None and cached[1] is current:
        return cached[0]
    raw = inline_sqlite3((await (await session.connection()).get_raw_connection()).driver_connection)
    session.info["catalyst_sqlite3"] = (raw, current)
    return raw


def execute(raw: sqlite3.Connection, what: str, sql: str, parameters: tuple[Any, ...] = ()) -> sqlite3.Cursor:
    try:
        return raw.execute(sql, parameters)
    except sqlite3.IntegrityError as error:
        # Store._transaction turns SQLAlchemy's IntegrityError into this; plain sqlite3 needs the same.
        raise ConstraintViolationError(f"{what} refused by the database: {str(error).splitlines()[0]}") from error


def db_time(value: datetime | None, what: str = "timestamp") -> str | None:
    return None if value is None else to_utc(value, what).strftime(_SQLITE_TIME)


def db_decimal(value: Any, what: str = "value") -> str | None:
    return None if value is None else format(to_decimal(value, what), "f")


def _read_time(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


def _reader(column: Any) -> Any:
    if isinstance(column.type, ExactDecimal):
        return lambda v: None if v is None else Decimal(v)
    if isinstance(column.type, UtcDateTime):
        return _read_time
    if isinstance(column.type, Boolean):
        return lambda v: None if v is None else bool(v)
    return None


class RowReader:
    """Turns `SELECT <table's columns>, securities.symbol` rows into a record dataclass with the ORM's types."""

    def __init__(self, table: Any, record_type: type) -> None:
        wanted = set(record_type.__dataclass_fields__) - {"symbol"}
        self.columns = [c for c in table.columns if c.name in wanted]
        self.readers = [(c.name, _reader(c)) for c in self.columns]
        self.record_type = record_type
        names = ", ".join(f"t.{c.name}" for c in self.columns)
        self.select = (f"SELECT {names}, s.symbol FROM {table.name} t "
                       f"JOIN securities s ON s.security_id = t.security_id WHERE t.{table.primary_key.columns.keys()[0]} = ?")

    def one(self, raw: sqlite3.Connection, key: int) -> Any | None:
        row = raw.execute(self.select, (key,)).fetchone()
        if row is None:
            return None
        return self._record(zip(self.readers, row), row[-1])  # the row's last column is the symbol

    def written(self, stored: dict[str, Any], symbol: str) -> Any:
        """The record a read of the row just written would give, from the values as stored (decimals and times as
        their text): every column must be given, so a column added to the table is never silently left out."""
        return self._record(((reader, stored[reader[0]]) for reader in self.readers), symbol)

    def _record(self, stored: Iterable[tuple[tuple[str, Any], Any]], symbol: str) -> Any:
        """((column, its reader), value as stored) pairs → the record, each value read as the ORM would."""
        return self.record_type(symbol=symbol, **{name: (read(value) if read else value)
                                                   for (name, read), value in stored})
