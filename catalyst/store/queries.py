"""Read queries: lookups, working orders, the restart book and the reconciliation sets (spec §7)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from catalyst.store import checks
from catalyst.store.models import TERMINAL_ORDER_STATUSES, WORKING_ORDER_STATUSES, Fill, Order, Position
from catalyst.store.order_ops import find_orders
from catalyst.store.position_ops import find_positions
from catalyst.store.records import FillRecord, LiveBook, OrderRecord, PositionRecord, fill_record


def _one(orders: list[OrderRecord]) -> OrderRecord | None:
    return orders[0] if orders else None


async def get_order(session: AsyncSession, order_id: int) -> OrderRecord | None:
    return _one(await find_orders(session, Order.order_id == order_id))


async def get_order_by_client_id(session: AsyncSession, client_order_id: str) -> OrderRecord | None:
    return _one(await find_orders(session, Order.client_order_id == client_order_id))


async def get_order_by_alpaca_id(session: AsyncSession, alpaca_order_id: str) -> OrderRecord | None:
    return _one(await find_orders(session, Order.alpaca_order_id == alpaca_order_id))


async def orders_for_position(session: AsyncSession, position_id: int) -> list[OrderRecord]:
    return await find_orders(session, Order.position_id == position_id)


async def working_orders(session: AsyncSession) -> list[OrderRecord]:
    """Orders not in a terminal state, including created ones a crash left unsubmitted."""
    return await find_orders(session, Order.status.in_(WORKING_ORDER_STATUSES))


async def orders_with_unknown_outcome(session: AsyncSession) -> list[OrderRecord]:
    """Submits that timed out or 5xx'd: settle each by a lookup by client_order_id, never by resubmitting."""
    return await find_orders(session, Order.outcome_unknown.is_(True))


async def orders_needing_reconciliation(session: AsyncSession, older_than: datetime) -> list[OrderRecord]:
    """Spec §7.1: at the broker, not terminal, not updated since `older_than`; oldest submission first.

    `replaced` counts as terminal here too (spec §2.2), though §7.1's SQL lists only four states.
    """
    return await find_orders(
        session,
        Order.alpaca_order_id.is_not(None),
        Order.status.not_in(TERMINAL_ORDER_STATUSES),
        Order.updated_at < checks.utc("older_than", older_than),
        order_by=(Order.submitted_at, Order.order_id),
    )


async def get_position(session: AsyncSession, position_id: int) -> PositionRecord | None:
    positions = await find_positions(session, Position.position_id == position_id)
    return positions[0] if positions else None


async def open_positions_for_reconciliation(session: AsyncSession) -> list[PositionRecord]:
    """Spec §7.2: open positions holding shares, to compare with the broker's positions."""
    # quantity is exact text, so `> 0` is decided in Python, not by string comparison in SQL.
    return [p for p in await find_positions(session, Position.status == "open") if p.quantity > 0]


async def live_positions(session: AsyncSession) -> LiveBook:
    """Everything a restart rebuilds position actors from: unfilled working entries and open positions."""
    pending = await find_orders(
        session,
        Order.role == "entry",
        Order.position_id.is_(None),
        Order.status.in_(WORKING_ORDER_STATUSES),
    )
    open_positions = await find_positions(session, Position.status == "open")
    return LiveBook(pending_entries=tuple(pending), open_positions=tuple(open_positions))


async def fills_for_order(session: AsyncSession, order_id: int) -> list[FillRecord]:
    rows = await session.scalars(select(Fill).where(Fill.order_id == order_id).order_by(Fill.occurred_at, Fill.fill_id))
    return [fill_record(row) for row in rows]
