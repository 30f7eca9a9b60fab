"""What a position actor is rebuilt from after a crash or a restart: its entry, its orders and their fills."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from catalyst.store.models import TERMINAL_ORDER_STATUSES, Fill, Order, Position, TradingCycle
from catalyst.store.order_ops import find_orders
from catalyst.store.position_ops import exit_working_at_broker, find_positions
from catalyst.store.records import FillRecord, OrderRecord, PositionRecord, fill_record


@dataclass(frozen=True, slots=True)
class PositionBook:
    entry: OrderRecord
    position: PositionRecord | None
    orders: tuple[OrderRecord, ...]  # the entry and every order of the position, by order_id
    fills: tuple[FillRecord, ...]  # every recorded execution of those orders, in the order they happened


# A position is known by its first entry: an entry that replaced it at the broker (a limit moved by hand, followed:
# order_ops.record_replacement) names that first entry as its parent.
ENTRY_KEY = func.coalesce(Order.parent_order_id, Order.order_id)


async def position_book(session: AsyncSession, entry_order_id: int) -> PositionBook | None:
    """The book of the position whose entry, or an entry that replaced it, is `entry_order_id`; `entry` is the first
    of its entries, the position's key."""
    key = await session.scalar(select(ENTRY_KEY).where(Order.order_id == entry_order_id, Order.role == "entry"))
    entries = await find_orders(session, Order.order_id == key, Order.role == "entry") if key is not None else []
    if not entries:
        return None
    entry = entries[0]
    position = None
    orders = [entry, *await find_orders(session, Order.parent_order_id == entry.order_id, Order.role == "entry")]
    chain = {o.order_id for o in orders}
    position_id = next((o.position_id for o in orders if o.position_id is not None), None)
    if position_id is not None:
        found = await find_positions(session, Position.position_id == position_id)
        position = found[0] if found else None
        orders += [o for o in await find_orders(session, Order.position_id == position_id)
                   if o.order_id not in chain]
    orders.sort(key=lambda o: o.order_id)
    ids = [o.order_id for o in orders]
    rows = await session.scalars(
        select(Fill).where(Fill.order_id.in_(ids)).order_by(Fill.occurred_at, Fill.fill_id)
    )
    return PositionBook(entry=entry, position=position, orders=tuple(orders), fills=tuple(fill_record(r) for r in rows))


async def entry_order_ids_of_live_positions(session: AsyncSession) -> list[int]:
    """Entries still working without a position, entries that filled before a crash let their position row be
    written, entries replaced at the broker whose replacement has no row yet, the entries of open positions, and
    those of closed positions with an exit order still working; each position by its first entry (ENTRY_KEY)."""
    pending = await session.scalars(
        select(ENTRY_KEY).where(Order.role == "entry", Order.position_id.is_(None),
                                Order.status.notin_(TERMINAL_ORDER_STATUSES))
    )
    # A kill between the entry's fill commit and the position row leaves a filled entry with no position: it
    # must be rebuilt from its recorded fills, or the doctor would see an orphan and book the shares twice.
    unlinked = (await session.execute(
        select(ENTRY_KEY, Order.filled_qty).where(Order.role == "entry", Order.position_id.is_(None),
                                                  Order.status.in_(TERMINAL_ORDER_STATUSES))
    )).all()
    pending = [*pending, *(order_id for order_id, filled in unlinked if filled and filled > 0)]
    # A kill between an entry's `replaced` and its replacement's row (a limit moved by hand, being followed): the new
    # order works at the broker, known to no row. Its position is rebuilt, asks the broker about the entry and follows
    # the replacement (PositionActor._restore); without it the new order's fill held shares with no stop. Only on a
    # day not completed: a day order's replacement has ended with its day (and before entries were followed, one the
    # doctor adopted would be counted twice).
    awaiting = await session.scalars(
        select(ENTRY_KEY).join(TradingCycle, TradingCycle.cycle_id == Order.cycle_id)
        .where(Order.role == "entry", Order.position_id.is_(None), Order.status == "replaced",
               Order.replaced_by_order_id.is_(None), TradingCycle.phase != "completed"))
    pending = [*pending, *awaiting]
    opened = await session.scalars(
        select(ENTRY_KEY).join(Position, Position.position_id == Order.position_id)
        .where(Order.role == "entry", Position.status == "open")
    )
    # A closed position with an exit order of its own working at the broker: late entry shares kept under stops
    # overnight (their sale waits for the next open, by their actor), or a leg whose cancel never came. Without an
    # actor after a restart, the shares would wait under a stop that is good till cancelled, sold by nothing (a
    # review).
    kept = await session.scalars(
        select(ENTRY_KEY).join(Position, Position.position_id == Order.position_id)
        .where(Order.role == "entry", Position.status == "closed", exit_working_at_broker()))
    return sorted({*pending, *opened, *kept})
