"""The store's exception tree, so a caller can choose the level to catch.

    StoreError                      anything the persistence layer refuses or cannot do
    ├── DatabaseFileError           the database itself is unusable (names the file; needs a human)
    │   ├── NotADatabaseError       not an SQLite file, or corrupt
    │   └── DatabaseTooNewError     made by a newer Catalyst (unknown schema revision)
    ├── InvalidValueError           an argument the schema would reject (status, float money, naive time)
    ├── RecordNotFoundError         an id that is not in the database
    └── ConstraintViolationError    the database refused a write (unique / foreign key / check)
"""

from __future__ import annotations


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


class DatabaseTooNewError(DatabaseFileError):
    """The schema revision in the file is unknown to this version of Catalyst."""


class InvalidValueError(StoreError, ValueError):
    """An argument the schema would reject; raised before anything is written."""


class RecordNotFoundError(StoreError, LookupError):
    """An order, position or cycle id that is not in the database."""


class ConstraintViolationError(StoreError):
    """The database refused a write: a unique, foreign-key or check constraint."""
