"""Schema migrations, configured in code so they run from an installed package in any directory."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

from catalyst.store.db import check_database_file, describe_database, is_sqlite, make_engine
from catalyst.store.errors import (
    DAMAGED_ADVICE,
    DatabaseFileError,
    DatabaseTooNewError,
    NotADatabaseError,
    StoreError,
)
from catalyst.store.models import Base

MIGRATIONS_DIR = Path(__file__).resolve().with_name("migrations")
T = TypeVar("T")


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
    file that is not SQLite, is corrupt, or was made by a newer Catalyst.
    """

    def run(connection: Connection) -> str:
        _refuse_damaged(connection, database_url)
        _refuse_unknown_revision(connection, database_url)
        config = alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
        return head_revision()

    return _with_connection(database_url, run)


def downgrade(database_url: str, revision: str) -> str:
    """Take the database back to `revision` (an older Catalyst refuses a schema newer than it knows); returns it.
    Raises StoreError for a revision this Catalyst does not know or that is not older than the database's."""

    def run(connection: Connection) -> str:
        _refuse_damaged(connection, database_url)
        _refuse_unknown_revision(connection, database_url)
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

    def compare(connection: Connection) -> list[Any]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, Base.metadata))

    return _with_connection(database_url, compare)


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
        return asyncio.run(run())
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
