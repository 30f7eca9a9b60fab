"""Argument checks that turn a bad value into a one-line InvalidValueError before any write."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from catalyst.store.errors import InvalidValueError
from catalyst.store.types import to_decimal, to_utc


def one_of(what: str, value: Any, allowed: tuple[str, ...]) -> str:
    # A StrEnum member is a str; store its plain value.
    if not isinstance(value, str) or str(value) not in allowed:
        raise InvalidValueError(f"{what} {value!r} is not one of: {', '.join(allowed)}")
    return str(value)


def decimal(what: str, value: Any) -> Decimal:
    return to_decimal(value, what)


def optional_decimal(what: str, value: Any) -> Decimal | None:
    return None if value is None else to_decimal(value, what)


def positive(what: str, value: Any) -> Decimal:
    number = to_decimal(value, what)
    if number <= 0:
        raise InvalidValueError(f"{what} must be positive, got {number}")
    return number


def utc(what: str, value: Any) -> datetime:
    return to_utc(value, what)


def optional_utc(what: str, value: Any) -> datetime | None:
    return None if value is None else to_utc(value, what)


def symbol(value: Any) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > 16:
        raise InvalidValueError(f"symbol {value!r} must be a non-empty string of at most 16 characters")
    return value.strip().upper()
