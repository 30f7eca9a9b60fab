"""The store's exception tree, so a caller can choose the level to catch.

    StoreError                      anything the persistence layer refuses or cannot do
    ├── DatabaseFileError           the database itself is unusable (names the file; needs a human)
    │   ├── NotADatabaseError       not an SQLite file, or corrupt
    │   ├── NotCatalystDatabaseError    another application's SQLite file (tables, but no schema revision)
    │   ├── DatabaseTooNewError     made by a newer Catalyst (unknown schema revision)
    │   ├── SchemaMismatchError     its tables or columns are not what its schema revision says
    │   └── DatabaseLockedError     another program held a lock on it past the daemon's wait (LOCK_WAIT_S)
    ├── InvalidValueError           an argument the schema would reject (status, float money, naive time)
    ├── RecordNotFoundError         an id that is not in the database
    └── ConstraintViolationError    the database refused a write (unique / foreign key / check)

storage_fault(error) tells a failure of the disk under the database (full, read-only, I/O error, corrupt) from a
failure of one statement: SQLite raises both as OperationalError/DatabaseError, and only the first needs a human.
A lock another program holds (SQLITE_BUSY) is neither: it is waited out (catalyst.store.db.past_a_held_lock), and
only a lock held past that wait, DatabaseLockedError, is a storage fault: nothing can be recorded until it goes.
"""

from __future__ import annotations

from collections.abc import Callable


class StoreError(Exception):
    """Base of every error raised by catalyst.store."""


class DatabaseFileError(StoreError):
    """The database file (or server) cannot be used at all."""

    def __init__(self, database: str, problem: str) -> None:
        super().__init__(f"{database}: {problem}")
        self.database = database
        self.problem = problem


class NotADatabaseError(DatabaseFileError):
    """The file is not an SQLite database, or it is corrupt."""


# What to do about a damaged database file: not the disk's space, and never a restart on it (a restart rebuilds every
# position from this file). SQLite's own `.recover` salvages what the damaged pages still hold.
DAMAGED_ADVICE = ("keep a copy of it and of its -wal file, then recover it (sqlite3 FILE .recover | sqlite3 NEW) or "
                  "restore a backup before starting on it again")


def is_damage(fault: str) -> bool:
    """SQLite's words for a damaged file (SQLITE_CORRUPT, SQLITE_NOTADB), as opposed to a full or failing disk."""
    lowered = fault.lower()
    return "malformed" in lowered or "not a database" in lowered


class NotCatalystDatabaseError(DatabaseFileError):
    """An SQLite file holding tables but no alembic_version: another application's, not one Catalyst made."""


class DatabaseTooNewError(DatabaseFileError):
    """The schema revision in the file is unknown to this version of Catalyst."""


class SchemaMismatchError(DatabaseFileError):
    """The tables, columns or indexes differ from the models of the revision the database is labelled with."""


# What to do about a lock held past the wait (a trader's `sqlite3` shell left inside a transaction, most likely).
LOCK_ADVICE = ("close the program holding it (a sqlite3 shell left inside a transaction: end it with ROLLBACK or quit "
               "it), then start again")
HELD_LOCK = "another program held a lock on it"


class DatabaseLockedError(DatabaseFileError):
    """Another program held a lock on the database for longer than the daemon waits for one: nothing can be written.
    `problem` is what happened (a storage fault's words); the message adds what to do."""

    def __init__(self, database: str, problem: str) -> None:
        super().__init__(database, problem)
        self.args = (f"{database}: {problem}: {LOCK_ADVICE}",)


def is_held_lock(fault: str) -> bool:
    """Whether a storage fault's words (storage_fault) are a lock held past the wait, not the disk."""
    return HELD_LOCK in fault


def is_busy(error: BaseException | None) -> bool:
    """Whether `error`, or what it wraps, is SQLite's SQLITE_BUSY: another connection holds the lock it needed."""
    return _in_chain(error, lambda one: str(getattr(one, "sqlite_errorname", "")).startswith("SQLITE_BUSY")) is not None


class InvalidValueError(StoreError, ValueError):
    """An argument the schema would reject; raised before anything is written."""


class RecordNotFoundError(StoreError, LookupError):
    """An order, position or cycle id that is not in the database."""


class ConstraintViolationError(StoreError):
    """The database refused a write: a unique, foreign-key or check constraint."""


# SQLite's result codes (and their extended forms, e.g. SQLITE_IOERR_WRITE) that mean the disk under the database
# failed, not the statement: nothing more can be written until someone frees space, remounts or repairs it, so
# retrying is pointless. SQLITE_BUSY/LOCKED (another writer: waited out, see is_busy) and SQLITE_CONSTRAINT (a refused
# row) are not here.
STORAGE_FAULT_CODES = ("SQLITE_FULL", "SQLITE_IOERR", "SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_CORRUPT",
                       "SQLITE_NOTADB")


def storage_fault(error: BaseException | None) -> str | None:
    """SQLite's own words ("database or disk is full") if `error`, or what it wraps (SQLAlchemy's `.orig`, a
    `raise … from` chain), is a failure of the disk under the database; None for anything else."""
    found = _storage_failure(error)
    if isinstance(found, DatabaseFileError):
        return found.problem
    return str(found) if found is not None else None


def storage_fault_code(error: BaseException | None) -> str | None:
    """SQLite's error name ("SQLITE_FULL", "SQLITE_IOERR_WRITE", …) of the storage failure in `error`, if any."""
    found = _storage_failure(error)
    return getattr(found, "sqlite_errorname", None) if found is not None else None


def _storage_failure(error: BaseException | None) -> BaseException | None:
    def failed(one: BaseException) -> bool:
        code = getattr(one, "sqlite_errorname", None)
        return isinstance(one, DatabaseLockedError) or (isinstance(code, str) and code.startswith(STORAGE_FAULT_CODES))

    return _in_chain(error, failed)


def _in_chain(error: BaseException | None, test: Callable[[BaseException], bool]) -> BaseException | None:
    """The first of `error` and what it wraps (SQLAlchemy's `.orig`, a `raise … from` chain) that passes `test`."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if test(error):
            return error
        wrapped = getattr(error, "orig", None)
        error = wrapped if isinstance(wrapped, BaseException) else (error.__cause__ or error.__context__)
    return None
