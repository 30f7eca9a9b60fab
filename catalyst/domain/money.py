"""Decimal money and quantity helpers: validation and arithmetic in one fixed context."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Context, Decimal
from typing import Sequence

from catalyst.domain.errors import InvalidQuantity

ZERO = Decimal(0)
"""The Decimal zero every quantity and P&L starts from."""

# Fixed precision so results never depend on a thread's ambient decimal context (actors are threads).
MONEY_CONTEXT = Context(prec=28, rounding=ROUND_HALF_EVEN)
"""The context for every division (averages); 28 significant digits, banker's rounding."""


def positive(value: object, what: str) -> Decimal:
    """`value` as a finite Decimal > 0, else InvalidQuantity naming `what`.

    Floats are refused: 149.95 as a float is not 149.95, and money must not drift.
    """
    if isinstance(value, bool) or not isinstance(value, (Decimal, int)):
        raise InvalidQuantity(f"{what} must be a Decimal, got {type(value).__name__} {value!r}")
    number = Decimal(value)
    if not number.is_finite() or number <= 0:
        raise InvalidQuantity(f"{what} must be a finite number > 0, got {value!r}")
    return number


def weighted_average(avg: Decimal, quantity: Decimal, price: Decimal, qty: Decimal) -> Decimal:
    """Average of `quantity` at `avg` plus `qty` at `price`; the new lot alone when `quantity` is 0."""
    if quantity == 0:
        return price
    ctx = MONEY_CONTEXT
    cost = ctx.add(ctx.multiply(avg, quantity), ctx.multiply(price, qty))
    return ctx.divide(cost, ctx.add(quantity, qty))


def lots_average(lots: Sequence[tuple[Decimal, Decimal]]) -> Decimal:
    """Average price of (qty, price) lots, weighted by quantity; at least one lot."""
    avg, quantity = ZERO, ZERO
    for qty, price in lots:
        avg, quantity = weighted_average(avg, quantity, price, qty), MONEY_CONTEXT.add(quantity, qty)
    return avg


def to_tick(price: Decimal) -> Decimal:
    """A price on a valid tick: Alpaca refuses sub-penny prices at or above $1, and allows 4 decimals below."""
    tick = Decimal("0.01") if price >= 1 else Decimal("0.0001")
    return price.quantize(tick, rounding=ROUND_HALF_EVEN)
