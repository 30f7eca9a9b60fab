"""Position operations on one session: open at the entry fill (linking the entry), update, close."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from catalyst.store import checks
from catalyst.store.errors import InvalidValueError, RecordNotFoundError
from catalyst.store.models import POSITION_STATUSES, Position, Security
from catalyst.store.order_ops import order_row
from catalyst.store.records import PositionRecord, position_record

POSITION_SIDE_FOR_ENTRY = {"buy": "long", "sell": "short"}
POSITIONS_WITH_SYMBOL = select(Position, Security.symbol).join(Security, Position.security_id == Security.security_id)


async def position_row(session: AsyncSession, position_id: int) -> Position:
    row = await session.get(Position, position_id)
    if row is None:
        raise RecordNotFoundError(f"position {position_id} is not in the database")
    return row


async def position_with_symbol(session: AsyncSession, row: Position) -> PositionRecord:
    symbol = await session.scalar(select(Security.symbol).where(Security.security_id == row.security_id))
    return position_record(row, symbol or "")


async def open_position_for_entry(
    session: AsyncSession,
    entry_order_id: int,
    quantity: Any,
    entry_price: Any,
    entry_time: datetime,
    stop_loss: Any = None,
    take_profit: Any = None,
) -> PositionRecord:
    """Spec §1.3 steps 7-8 in one transaction: create the open position and link its entry order.

    Idempotent: an entry already linked returns its position unchanged, so a replayed first fill
    (restart, REST catch-up after a stream gap) never creates a second position.
    """
    entry = await order_row(session, entry_order_id)
    if entry.position_id is not None:
        return await position_with_symbol(session, await position_row(session, entry.position_id))
    if entry.role not in ("entry", "adopted"):
        raise InvalidValueError(f"order {entry_order_id} is a {entry.role} order, not an entry")
    at = checks.utc("entry_time", entry_time)
    price = checks.decimal("entry_price", entry_price)
    row = Position(
        cycle_id=entry.cycle_id,
        security_id=entry.security_id,
        side=POSITION_SIDE_FOR_ENTRY[entry.side],
        quantity=checks.positive("position quantity", quantity),
        entry_price=price,
        entry_time=at,
        stop_loss=checks.optional_decimal("stop_loss", stop_loss),
        take_profit=checks.optional_decimal("take_profit", take_profit),
        status="open",
        realized_pnl=Decimal(0),
        unrealized_pnl=Decimal(0),
        last_price=price,
        created_at=at,
        updated_at=at,
    )
    session.add(row)
    await session.flush()
    entry.position_id = row.position_id
    entry.updated_at = max(entry.updated_at, at)
    return await position_with_symbol(session, row)


# Columns update_position may change; anything else (side, ids, entry_time) is fixed at open.
UPDATABLE_DECIMALS = (
    "quantity", "entry_price", "stop_loss", "take_profit", "last_price", "unrealized_pnl", "realized_pnl",
)  # fmt: skip


async def update_position(session: AsyncSession, position_id: int, at: datetime, **changes: Any) -> PositionRecord:
    """Set the given columns (quantity, entry_price, stop_loss, take_profit, last_price, *_pnl, status)."""
    row = await position_row(session, position_id)
    for name, value in changes.items():
        if name in UPDATABLE_DECIMALS:
            setattr(row, name, checks.decimal(name, value))
        elif name == "status":
            row.status = checks.one_of("position status", value, POSITION_STATUSES)
        else:
            allowed = ", ".join(("status", *UPDATABLE_DECIMALS))
            raise InvalidValueError(f"update_position cannot change {name!r}; allowed: {allowed}")
    row.updated_at = checks.utc("at", at)
    return await position_with_symbol(session, row)


async def close_position(
    session: AsyncSession, position_id: int, exit_price: Any, exit_time: datetime, realized_pnl: Any
) -> PositionRecord:
    """Spec §1.3 step 13: closed, quantity 0, exit price/time and the realized P&L from the actual fills."""
    row = await position_row(session, position_id)
    at = checks.utc("exit_time", exit_time)
    row.status = "closed"
    row.quantity = Decimal(0)
    row.exit_price = checks.decimal("exit_price", exit_price)
    row.exit_time = at
    row.realized_pnl = checks.decimal("realized_pnl", realized_pnl)
    row.unrealized_pnl = Decimal(0)
    row.updated_at = at
    return await position_with_symbol(session, row)


async def find_positions(session: AsyncSession, *conditions: Any) -> list[PositionRecord]:
    result = await session.execute(POSITIONS_WITH_SYMBOL.where(*conditions).order_by(Position.position_id))
    return [position_record(row, symbol) for row, symbol in result.all()]
