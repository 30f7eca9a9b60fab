"""Position state machine (spec §3), quantity rules (§3.3), average prices and realized/unrealized P&L.

Reading of the spec diagram: its arrows from `closed` to `failed`/`cancelled` are labelled "(if position
never had fills)". A position that never had fills never reached `open`, so it cannot be `closed`: it
ends `cancelled` or `failed` straight from `pending`, and `closed` is terminal. Decide `cancelled` only
when the entry order is terminal AND its cumulative `filled_qty` (carried on every Alpaca order report) is
0: a `canceled` entry with shares filled means fills still to apply (a reordered stream), not a
cancelled position.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from catalyst.domain.errors import DomainError, ExitExceedsPosition, IllegalTransition, InvalidQuantity
from catalyst.domain.machine import StateMachine
from catalyst.domain.money import MONEY_CONTEXT, ZERO, positive, to_tick, weighted_average


class PositionStatus(StrEnum):
    """Lifecycle of a position (spec §3.2)."""

    PENDING = "pending"
    OPEN = "open"
    CLOSED = "closed"
    CANCELLED = "cancelled"
    FAILED = "failed"


class PositionSide(StrEnum):
    """Direction of a position."""

    LONG = "long"
    SHORT = "short"


class OrderSide(StrEnum):
    """Direction of an order (Alpaca's `side`)."""

    BUY = "buy"
    SELL = "sell"


_P = PositionStatus
_CTX = MONEY_CONTEXT

POSITION_TRANSITIONS: dict[PositionStatus, frozenset[PositionStatus]] = {
    _P.PENDING: frozenset({_P.OPEN, _P.CANCELLED, _P.FAILED}),  # entry fills / entry cancelled / rejected
    _P.OPEN: frozenset({_P.CLOSED}),  # exit fills bring the quantity to 0
    _P.CLOSED: frozenset(),
    _P.CANCELLED: frozenset(),
    _P.FAILED: frozenset(),
}

POSITION_MACHINE: StateMachine[PositionStatus] = StateMachine("position", POSITION_TRANSITIONS)
"""The position machine; closed, cancelled and failed are terminal."""


def entry_side(side: PositionSide) -> OrderSide:
    """The order side that opens or adds to a position: buy for long, sell for short."""
    return OrderSide.BUY if PositionSide(side) is PositionSide.LONG else OrderSide.SELL


def exit_side(side: PositionSide) -> OrderSide:
    """The order side that reduces or closes a position: sell for long, buy (cover) for short."""
    return OrderSide.SELL if PositionSide(side) is PositionSide.LONG else OrderSide.BUY


@dataclass(frozen=True)
class Position:
    """An immutable position; every change returns a new one. Quantity is unsigned; `side` gives direction.

    Invariant: `quantity == entry_filled_qty - exit_filled_qty`, never negative, 0 unless open.
    """

    symbol: str
    side: PositionSide
    status: PositionStatus = PositionStatus.PENDING
    quantity: Decimal = ZERO
    avg_entry_price: Decimal | None = None
    realized_pnl: Decimal = ZERO
    avg_exit_price: Decimal | None = None
    entry_filled_qty: Decimal = ZERO
    exit_filled_qty: Decimal = ZERO
    # What the entry fills cost and the exit fills brought, exactly (qty × price summed): at the close the realized
    # P&L is their difference. Realized piece by piece against the average entry price alone, a repeating average
    # (three lots at 50, 49.98 and 49.97) left -894.9999999999999999999999990 for a trade the fills say lost 895.00
    # (a review). 0 for a position made from a row's average (the doctor's marks), which never closes here.
    entry_cost: Decimal = ZERO
    exit_proceeds: Decimal = ZERO

    def __post_init__(self) -> None:
        object.__setattr__(self, "side", PositionSide(self.side))
        object.__setattr__(self, "status", PositionStatus(self.status))
        if self.quantity != self.entry_filled_qty - self.exit_filled_qty or self.quantity < 0:
            raise InvalidQuantity(
                f"position {self.symbol}: quantity {self.quantity} != entry {self.entry_filled_qty}"
                f" - exit {self.exit_filled_qty}"
            )
        if (self.quantity > 0) != (self.status is PositionStatus.OPEN):
            raise InvalidQuantity(f"position {self.symbol}: quantity {self.quantity} with status {self.status}")

    @property
    def entry_side(self) -> OrderSide:
        """The order side that adds to this position."""
        return entry_side(self.side)

    @property
    def exit_side(self) -> OrderSide:
        """The order side that reduces this position."""
        return exit_side(self.side)

    @property
    def is_terminal(self) -> bool:
        """True once closed, cancelled or failed: no fill may touch it again."""
        return self.status in POSITION_MACHINE.terminal

    def apply_fill(self, order_side: OrderSide, qty: Decimal, price: Decimal) -> Position:
        """The position after one execution of `qty` shares at `price` (spec §3.3).

        Entry-side fills add and re-average the entry price; exit-side fills reduce and realize P&L.
        """
        qty = positive(qty, f"fill qty for {self.symbol}")
        price = positive(price, f"fill price for {self.symbol}")
        if OrderSide(order_side) is self.entry_side:
            return self._add(qty, price)
        return self._reduce(qty, price)

    def _add(self, qty: Decimal, price: Decimal) -> Position:
        status = self.status
        if status is not PositionStatus.OPEN:
            # pending -> open on the first entry fill; closed/cancelled/failed raise IllegalTransition.
            status = POSITION_MACHINE.check(status, PositionStatus.OPEN, self.symbol)
        return replace(
            self,
            status=status,
            quantity=_CTX.add(self.quantity, qty),
            avg_entry_price=weighted_average(self.avg_entry_price or ZERO, self.quantity, price, qty),
            entry_filled_qty=_CTX.add(self.entry_filled_qty, qty),
            entry_cost=_CTX.add(self.entry_cost, _CTX.multiply(qty, price)),
        )

    def _reduce(self, qty: Decimal, price: Decimal) -> Position:
        # The spec clamps at 0 (`if quantity <= 0: quantity = 0`); that silently swallows a fill counted
        # twice and leaves the P&L wrong, so an exit larger than the holding is refused instead.
        if qty > self.quantity or self.avg_entry_price is None:
            raise ExitExceedsPosition(self.symbol, self.quantity, qty)
        remaining = _CTX.subtract(self.quantity, qty)
        status = self.status
        proceeds = _CTX.add(self.exit_proceeds, _CTX.multiply(qty, price))
        realized = _CTX.add(self.realized_pnl, _CTX.multiply(self._pnl_per_share(price), qty))
        if remaining == 0:
            status = POSITION_MACHINE.check(status, PositionStatus.CLOSED, self.symbol)
            if self.entry_cost:  # every entry share costed: sells minus buys, to the cent the fills say
                realized = (_CTX.subtract(proceeds, self.entry_cost) if self.side is PositionSide.LONG
                            else _CTX.subtract(self.entry_cost, proceeds))
        return replace(
            self,
            status=status,
            quantity=remaining,
            realized_pnl=realized,
            avg_exit_price=weighted_average(self.avg_exit_price or ZERO, self.exit_filled_qty, price, qty),
            exit_filled_qty=_CTX.add(self.exit_filled_qty, qty),
            exit_proceeds=proceeds,
        )

    def _pnl_per_share(self, price: Decimal) -> Decimal:
        avg = self.avg_entry_price or ZERO
        return _CTX.subtract(price, avg) if self.side is PositionSide.LONG else _CTX.subtract(avg, price)

    def unrealized_pnl(self, price: Decimal) -> Decimal:
        """P&L of the shares still held if they were closed at `price`; 0 when nothing is held."""
        price = positive(price, f"mark price for {self.symbol}")
        if self.quantity == 0:
            return ZERO
        return _CTX.multiply(self._pnl_per_share(price), self.quantity)

    def cancel(self) -> Position:
        """pending -> cancelled: the entry ended without a single fill (see the module docstring)."""
        return replace(self, status=POSITION_MACHINE.check(self.status, PositionStatus.CANCELLED, self.symbol))

    def fail(self) -> Position:
        """pending -> failed: the entry order was rejected."""
        return replace(self, status=POSITION_MACHINE.check(self.status, PositionStatus.FAILED, self.symbol))


def replay_fills(position: Position, fills: Sequence[tuple[OrderSide, Decimal, Decimal]]) -> Position:
    """`position` after `fills` ((side, qty, price) in the order they happened), as a rebuild finds it.

    Entry shares can be recorded after the exit that closed the position: a stop filled the shares recorded while
    the entry's last fill event was lost, or the entry's rest filled in the moment after its stop. In time order
    they would reopen a closed position, which is terminal: such a book is replayed with its entries first. The
    shares it still holds are the same; so is the realized P&L once they are sold too (sells minus buys)."""
    try:
        return _applied(position, fills)
    except IllegalTransition:
        entries_first = sorted(fills, key=lambda fill: OrderSide(fill[0]) is not position.entry_side)
        return _applied(position, entries_first)


def _applied(position: Position, fills: Sequence[tuple[OrderSide, Decimal, Decimal]]) -> Position:
    for side, qty, price in fills:
        position = position.apply_fill(side, qty, price)
    return position


def held_at_broker(side: PositionSide, broker_qty: Decimal, others: Decimal) -> Decimal:
    """What the broker holds of a symbol on this position's side beyond the other open positions' shares.

    `broker_qty` and `others` are signed (short negative): the broker nets every position of a symbol into one.
    Zero or less means none of this position's shares are there: sold outside Catalyst (by hand, another program on
    the key), and a market exit of them would open a position on the other side."""
    sign = Decimal(1) if side is PositionSide.LONG else Decimal(-1)
    return (broker_qty - others) * sign


def exit_size(recorded: Decimal, held: Decimal) -> Decimal:
    """A market exit's quantity: the shares recorded, never more than the broker holds of them (`held_at_broker`).

    Alpaca refuses a sell larger than the shares held, but a sell with none held is a short sale it takes."""
    return max(min(recorded, held), Decimal(0))


def exits_from_fill(side: PositionSide, planned_entry: Decimal, stop: Decimal, target: Decimal,
                    fill: Decimal) -> tuple[Decimal, Decimal]:
    """The plan's stop and target, moved by the entry's slippage when it paid worse than the price risk sized the
    trade at: as far from the fill as from that price, so the loss at the stop stays what risk allowed and the
    target stays beyond the fill.

    A market entry on a gapper at the open can fill several percent from the last price before it; left where they
    were, a long's take-profit may sit below its fill (an instant exit called a take-profit) or its stop twice the
    risk budget away. A fill at or better than planned keeps the plan's prices: less risk than budgeted, and a stop
    still at the level the pattern chose (one the fill went through is refused by the broker, and the position
    leaves at market, as its plan said). Prices that would not be positive keep the plan's too."""
    moved = fill - planned_entry
    worse = moved > 0 if side is PositionSide.LONG else moved < 0
    if not worse:
        return stop, target
    new_stop, new_target = to_tick(stop + moved), to_tick(target + moved)
    if new_stop <= 0 or new_target <= 0:
        return stop, target
    return new_stop, new_target



@dataclass(frozen=True)
class DayPosition:
    """What a day's P&L reads of a positions row and its recorded executions."""

    cycle_id: int
    side: str  # long | short
    status: str
    realized_pnl: Decimal
    unrealized_pnl: Decimal
    exit_time: datetime | None = None  # timezone-aware; set once closed
    fills: tuple[tuple[datetime, str, Decimal, Decimal], ...] = ()  # (occurred_at, order side, qty, price), in order


def realized_in_day(position: DayPosition, cycle_id: int, day: tuple[datetime, datetime]) -> Decimal:
    """The part of `position`'s realized P&L its exits made during the day [start, end): a gain or loss is the day's
    it is realized on. A position kept overnight whose stop (good till cancelled) sells at the next open is that
    day's loss, for its daily loss limit, status and report; a piece sold the day before was that day's, and is not
    counted again. Its realized P&L at each bound is its recorded executions before it, replayed; at the end, the
    row's own figure when every execution is before it (the usual case, a day's own trade). A book that cannot be
    replayed, or none recorded, counts the row's figure on the day it closed, or its own day while open."""
    start, end = day

    def on_its_day() -> Decimal:
        closed_at = position.exit_time if position.status == PositionStatus.CLOSED else None
        on_day = start <= closed_at < end if closed_at is not None else position.cycle_id == cycle_id
        return position.realized_pnl if on_day else ZERO

    def realized_before(cutoff: datetime) -> Decimal | None:
        book = [(side, qty, price) for at, side, qty, price in position.fills if at < cutoff]
        if not book:
            return ZERO
        try:
            return replay_fills(Position("day", PositionSide(position.side)), book).realized_pnl
        except DomainError:
            return None

    if not position.fills:
        return on_its_day()
    at_start = realized_before(start)
    at_end = position.realized_pnl if all(at < end for at, *_ in position.fills) else realized_before(end)
    if at_start is None or at_end is None:
        return on_its_day()
    return at_end - at_start


def day_pnl(positions: Sequence[DayPosition], cycle_id: int, day: tuple[datetime, datetime]) -> tuple[Decimal, Decimal]:
    """(realized, unrealized) of the day whose cycle is `cycle_id`: what every position realized during it
    (realized_in_day), and the unrealized P&L of the day's own positions still open."""
    realized = sum((realized_in_day(p, cycle_id, day) for p in positions), ZERO)
    unrealized = sum((p.unrealized_pnl for p in positions if p.cycle_id == cycle_id and p.status == PositionStatus.OPEN),
                     ZERO)
    return realized, unrealized
