"""Named errors of the pure trading domain, each with a one-line message saying what is wrong.

The tree, so a caller can choose the level to catch::

    DomainError                      anything the domain refuses
    ├── IllegalTransition            a state machine refused (from -> to); a bug or a conflict to report
    ├── UnknownBrokerStatus          a broker status string nobody maps (ValueError)
    ├── InvalidQuantity              a quantity or price that is not a finite Decimal of the right sign (ValueError)
    ├── ExitExceedsPosition          an exit fill larger than the held quantity: a double-counted fill?
    ├── InvalidSchedule              phase times out of order (ValueError)
    └── NaiveDatetime                a clock reading without a time zone (ValueError)
"""

from __future__ import annotations

from decimal import Decimal


class DomainError(Exception):
    """Base of every error the pure domain raises."""


class IllegalTransition(DomainError):
    """A state machine refused to move `subject` from `from_state` to `to_state`."""

    def __init__(self, machine: str, subject: object, from_state: str, to_state: str) -> None:
        self.machine = machine
        self.subject = subject
        self.from_state = from_state
        self.to_state = to_state
        who = f" {subject}" if subject is not None else ""
        super().__init__(f"illegal {machine} transition{who}: {from_state} -> {to_state}")


class UnknownBrokerStatus(DomainError, ValueError):
    """The broker reported an order status string that no mapping knows."""

    def __init__(self, status: object) -> None:
        self.status = status
        super().__init__(f"unknown broker order status {status!r}")


class InvalidQuantity(DomainError, ValueError):
    """A quantity or price argument is missing, a float, not finite, or of the wrong sign."""


class ExitExceedsPosition(DomainError):
    """An exit fill is larger than the quantity the position holds.

    The spec clamps the quantity at 0 instead; clamping hides a fill counted twice, so we refuse.
    """

    def __init__(self, symbol: str, held: Decimal, exit_qty: Decimal) -> None:
        self.symbol = symbol
        self.held = held
        self.exit_qty = exit_qty
        super().__init__(f"exit fill of {exit_qty} {symbol} exceeds the {held} held (double-counted fill?)")


class InvalidSchedule(DomainError, ValueError):
    """The phase times of a schedule are not strictly increasing."""


class NaiveDatetime(DomainError, ValueError):
    """A datetime without tzinfo: exchange time cannot be known from it."""
