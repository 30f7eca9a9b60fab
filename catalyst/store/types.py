"""Column types that keep money exact and time in UTC, on any database."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import DateTime, String
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

from catalyst.store.errors import InvalidValueError

DECIMAL_TEXT_LENGTH = 40


def to_decimal(value: Any, what: str = "value") -> Decimal:
    """Decimal from Decimal, int or str; floats are refused because 149.95 is not a float."""
    if isinstance(value, bool) or isinstance(value, float):
        raise InvalidValueError(f"{what} must be a Decimal, int or str, not {type(value).__name__} {value!r}")
    if isinstance(value, Decimal):
        number = value
    elif isinstance(value, (int, str)):
        try:
            number = Decimal(value)
        except InvalidOperation:
            raise InvalidValueError(f"{what} {value!r} is not a decimal number") from None
    else:
        raise InvalidValueError(f"{what} must be a Decimal, int or str, not {type(value).__name__}")
    if not number.is_finite():
        raise InvalidValueError(f"{what} must be finite, got {number}")
    return number


def to_utc(value: Any, what: str = "timestamp") -> datetime:
    """An aware datetime in UTC; a naive one is refused (its zone is a guess)."""
    if not isinstance(value, datetime):
        raise InvalidValueError(f"{what} must be a datetime, not {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidValueError(f"{what} {value.isoformat()} is naive; pass a timezone-aware datetime")
    return value.astimezone(timezone.utc)


class ExactDecimal(TypeDecorator[Decimal]):
    """A Decimal stored as text, so 149.95 reads back as 149.95 (SQLite has no decimal type)."""

    impl = String(DECIMAL_TEXT_LENGTH)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        if value is None:
            return None
        # Fixed-point text (never exponent form) keeps the column readable in the sqlite3 shell.
        return format(to_decimal(value), "f")

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        return None if value is None else Decimal(value)


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime in and out; SQLite keeps it as naive UTC text."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        utc = to_utc(value)
        # SQLite's text format drops the offset anyway; strip it explicitly so the stored text is UTC.
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)
