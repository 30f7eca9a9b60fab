"""Schema migrations, configured in code so they run from an installed package in any directory."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, create_engine, inspect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from catalyst.store.db import (check_database_file, describe_database, holds_data, is_sqlite, make_engine,
                               past_a_held_lock, sqlite_file)
from catalyst.store.errors import (
    DAMAGED_ADVICE,
    DatabaseFileError,
    DatabaseTooNewError,
    NotADatabaseError,
    NotCatalystDatabaseError,
    SchemaMismatchError,
    StoreError,
)
from catalyst.store.models import Base

MIGRATIONS_DIR = Path(__file__).resolve().with_name("migrations")
T = TypeVar("T")
MAX_DIFFERENCES_SAID = 3  # one line stays readable; the first few say what happened to the file
MAX_TABLES_SAID = 3  # enough of another application's tables for its owner to recognise the file


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, f"no migrations found in {MIGRATIONS_DIR}"
    return head


def upgrade(database_url: str) -> str:
    """Bring the database to the newest schema (creating it if absent); returns the head revision.

    Safe to run on every start: at head it changes nothing. Raises a DatabaseFileError subclass for a
    file that is not SQLite, is corrupt, was made by a newer Catalyst, or whose schema is not its revision's.
    """
    verify(database_url)

    def run(connection: Connection) -> str:
        migrated = MigrationContext.configure(connection).get_current_revision() != head_revision()
        config = alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
        if migrated:
            # A database at an older revision (or a new one) can only be compared with the models (the head's) after
            # its migrations ran; one at head was compared by verify. A difference raises here, inside the
            # migration's transaction, so the file is left at the revision it had.
            _refuse_schema_differences(connection, database_url)
        return head_revision()

    return _with_connection(database_url, run)


def verify(database_url: str) -> None:
    """Refuse a database this Catalyst must not start on: not SQLite, damaged, another application's, made by a newer
    Catalyst, or with a schema that is not its revision's (compared only at the head revision, the one the models
    describe).

    Read-only, so the daemon runs it before anything else, a wait for the broker included: an unusable database is
    named at once rather than after broker.startup_wait_s, and a file it refuses is left exactly as it was. A
    missing or empty file passes (it becomes a new database)."""

    def check(connection: Connection) -> None:
        _refuse_damaged(connection, database_url)
        _refuse_another_applications(connection, database_url)
        _refuse_unknown_revision(connection, database_url)
        if MigrationContext.configure(connection).get_current_revision() == head_revision():
            _refuse_schema_differences(connection, database_url)

    _with_read_only_connection(database_url, check)


def downgrade(database_url: str, revision: str) -> str:
    """Take the database back to `revision` (an older Catalyst refuses a schema newer than it knows); returns it.
    Raises StoreError for a revision this Catalyst does not know or that is not older than the database's."""
    verify(database_url)

    def run(connection: Connection) -> str:
        scripts = ScriptDirectory.from_config(alembic_config())
        known = [script.revision for script in scripts.walk_revisions()]
        current = MigrationContext.configure(connection).get_current_revision()
        if revision not in known:
            raise StoreError(f"{describe_database(database_url)}: no schema revision {revision!r} "
                             f"(known: {', '.join(sorted(known))})")
        if current is None or known.index(revision) <= known.index(current):
            raise StoreError(f"{describe_database(database_url)}: is at revision {current or 'none'}, not newer than "
                             f"{revision}: nothing to take back")
        config = alembic_config()
        config.attributes["connection"] = connection
        command.downgrade(config, revision)
        return revision

    return _with_connection(database_url, run)


def current_revision(database_url: str) -> str | None:
    """The schema revision recorded in the database, None for an empty one."""
    return _with_connection(database_url, lambda c: MigrationContext.configure(c).get_current_revision())


def schema_differences(database_url: str) -> list[Any]:
    """What `alembic check` would report: differences between the models and the database."""
    return _with_connection(database_url, _compare_with_models)


def _compare_with_models(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, Base.metadata))


def _refuse_schema_differences(connection: Connection, database_url: str) -> None:
    """Why: the revision is only a label. A table or column changed by hand (a dropped `fills`) kept it, and a daemon
    started on it placed entries, was filled, and only then failed to record the fills."""
    differences = [_describe_difference(found) for found in _beyond_named_tables(_compare_with_models(connection))
                   if not _harmless(found)]
    if not differences:
        return
    shown = "; ".join(differences[:MAX_DIFFERENCES_SAID])
    if len(differences) > MAX_DIFFERENCES_SAID:
        shown += f"; and {len(differences) - MAX_DIFFERENCES_SAID} more"
    revision = MigrationContext.configure(connection).get_current_revision()
    raise SchemaMismatchError(
        describe_database(database_url),
        f"its schema does not match its revision {revision}: {shown}; it was changed outside Catalyst's migrations: "
        "keep a copy of it, then put back what differs before starting on it again (a backup restored instead "
        "would lose the orders written since)",
    )


def _harmless(difference: Any) -> bool:
    """What an operator adds for their own queries and Catalyst never meets: a table of their own, or an index that
    enforces nothing (a unique one could refuse Catalyst's writes). Refused, it stopped a daemon over a report's
    index."""
    if not isinstance(difference, tuple):
        return False
    kind, item = difference[0], difference[1]
    return kind == "remove_table" or (kind == "remove_index" and not getattr(item, "unique", False))


def _beyond_named_tables(differences: list[Any]) -> list[Any]:
    """Without the indexes and constraints of a table found missing or unexpected: naming the table says them."""
    tables = {found[1].name for found in differences if isinstance(found, tuple) and found[0].endswith("_table")}

    def part_of_a_named_table(found: Any) -> bool:
        owner = getattr(found[1], "table", None) if isinstance(found, tuple) else None
        return owner is not None and owner.name in tables

    return [found for found in differences if not part_of_a_named_table(found)]


def _describe_difference(difference: Any) -> str:
    """One of compare_metadata's differences in an operator's words. Its verbs say what would make the database match
    the models: `add_*` is something the database lacks, `remove_*` something Catalyst does not have."""
    if isinstance(difference, list):  # one column's modify_* changes come grouped
        return "; ".join(_describe_difference(change) for change in difference)
    kind = difference[0]
    verb, _, what = kind.partition("_")
    state = {"add": "missing", "remove": "unexpected"}.get(verb)
    if what == "table":
        return f"{state} table {difference[1].name}"
    if what == "column":
        return f"{state} column {difference[2]}.{difference[3].name}"
    if verb == "modify":  # ("modify_type", schema, table, column, existing, found, expected)
        return f"column {difference[2]}.{difference[3]}: {what} {difference[-2]}, expected {difference[-1]}"
    if state is not None and hasattr(difference[1], "table"):  # an index or a constraint
        named = getattr(difference[1], "name", None) or "(unnamed)"
        return f"{state} {what.replace('fk', 'foreign key')} {named} on {difference[1].table.name}"
    return kind


def _refuse_damaged(connection: Connection, database_url: str) -> None:
    """Why at every start: a damaged file (a page the disk lost, a copy taken mid-write) opens and reads fine until a
    statement meets the damage, mid-trade; a daemon started on one traded a whole morning on it. quick_check reads
    every page once (well under a second for a day-trading database)."""
    if connection.dialect.name != "sqlite":
        return
    found = [str(row[0]) for row in connection.exec_driver_sql("PRAGMA quick_check(3)")]
    if found != ["ok"]:
        raise NotADatabaseError(describe_database(database_url),
                                f"the database file is damaged (quick_check: {'; '.join(found)}): {DAMAGED_ADVICE}")


def _refuse_another_applications(connection: Connection, database_url: str) -> None:
    """Why: migrations add Catalyst's tables beside whatever a file holds, so a database_url naming another
    application's SQLite file had them added into it, and `catalyst status` then read that application's `orders`
    table as ours. Every database Catalyst made has its version table from its first migration on."""
    tables = inspect(connection).get_table_names()
    version_table = MigrationContext.configure(connection).version_table
    if not tables or version_table in tables:
        return
    held = ", ".join(tables[:MAX_TABLES_SAID]) + (", …" if len(tables) > MAX_TABLES_SAID else "")
    raise NotCatalystDatabaseError(
        describe_database(database_url),
        f"not a Catalyst database (it holds tables {held} but no {version_table} table): point daemon.database_url "
        "at Catalyst's database, or at a new file for Catalyst to create",
    )


def _refuse_unknown_revision(connection: Connection, database_url: str) -> None:
    current = MigrationContext.configure(connection).get_current_revision()
    if current is None:
        return
    try:
        ScriptDirectory.from_config(alembic_config()).get_revision(current)
    except CommandError:
        raise DatabaseTooNewError(
            describe_database(database_url),
            f"schema revision {current!r} is unknown to this Catalyst (newest known: {head_revision()}); "
            "it was made by a newer version",
        ) from None


def _with_read_only_connection(database_url: str, work: Callable[[Connection], None]) -> None:
    """Run `work` on an SQLite file opened read-only: a check must not change the file it may refuse (make_engine
    would switch its journal to WAL), nor create it. (SQLite still leaves `-wal` and `-shm` files beside a database
    already in WAL mode: a read-only connection cannot remove them; the file itself is unchanged.) Another database,
    or an in-memory one, is read as usual."""
    check_database_file(database_url)
    path = sqlite_file(database_url)
    if path is None:
        _with_connection(database_url, work)
        return
    if not holds_data(path):
        return
    read_only = f"{path.absolute().as_uri()}?mode=ro"
    engine = create_engine("sqlite://", creator=lambda: sqlite3.connect(read_only, uri=True), poolclass=NullPool)

    def attempt() -> None:
        with engine.connect() as connection:
            work(connection)

    try:
        past_a_held_lock(attempt, describe_database(database_url), actor="system")  # a lock that blocks readers too
    except DBAPIError as error:
        raise _file_error(database_url, error) from error
    finally:
        engine.dispose()


def _with_connection(database_url: str, work: Callable[[Connection], T]) -> T:
    """Run `work` on a sync view of an async connection, in one transaction, on a fresh event loop."""
    check_database_file(database_url)

    async def run() -> T:
        engine = make_engine(database_url)
        try:
            async with engine.begin() as connection:
                return await connection.run_sync(work)
        finally:
            await engine.dispose()

    try:
        return past_a_held_lock(lambda: asyncio.run(run()), describe_database(database_url), actor="system")
    except StoreError:
        raise
    except DBAPIError as error:
        raise _file_error(database_url, error) from error


def _file_error(database_url: str, error: DBAPIError) -> DatabaseFileError:
    name = describe_database(database_url)
    detail = str(error.orig).strip().splitlines()[0] if error.orig is not None else type(error).__name__
    lowered = detail.lower()
    if is_sqlite(database_url) and ("not a database" in lowered or "malformed" in lowered):
        return NotADatabaseError(name, f"not a usable SQLite database ({detail}): {DAMAGED_ADVICE}")
    return DatabaseFileError(name, f"cannot use the database ({detail})")
