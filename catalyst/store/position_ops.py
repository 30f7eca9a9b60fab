"""Position operations on one session: open at the entry fill (linking the entry), update, close."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import aliased
from sqlalchemy.ext.asyncio import AsyncSession

from catalyst.store import checks, raw_sql
from catalyst.store.errors import InvalidValueError, RecordNotFoundError
from catalyst.store.models import POSITION_STATUSES, TERMINAL_ORDER_STATUSES, Order, Position, Security
from catalyst.store.order_ops import create_orders
from catalyst.store.records import NewOrder, OrderRecord, PositionRecord, position_record

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


POSITION_READER = raw_sql.RowReader(Position.__table__, PositionRecord)


async def open_position_for_entry(
    session: AsyncSession,
    entry_order_id: int,
    quantity: Any,
    entry_price: Any,
    entry_time: datetime,
    stop_loss: Any = None,
    take_profit: Any = None,
    replacements: Sequence[int] = (),
) -> PositionRecord:
    """Spec §1.3 steps 7-8 in one transaction: create the open position and link its entry order, and the orders
    that replaced it at the broker (`replacements`: a limit entry moved by hand; their fills are the position's).

    Idempotent: an entry already linked returns its position unchanged, so a replayed first fill
    (restart, REST catch-up after a stream gap) never creates a second position. The position returned is built
    from the values written, not read back (it is on the path between a fill and its stop).
    """
    raw = await raw_sql.connection(session)
    entry = raw.execute("SELECT o.position_id, o.role, o.cycle_id, o.security_id, o.side, s.symbol FROM orders o "
                        "JOIN securities s ON s.security_id = o.security_id WHERE o.order_id = ?",
                        (entry_order_id,)).fetchone()
    if entry is None:
        raise RecordNotFoundError(f"order {entry_order_id} is not in the database")
    position_id, role, cycle_id, security_id, side, symbol = entry
    if position_id is not None:
        return POSITION_READER.one(raw, position_id)
    if role not in ("entry", "adopted"):
        raise InvalidValueError(f"order {entry_order_id} is a {role} order, not an entry")
    at = raw_sql.db_time(entry_time, "entry_time")
    price = format(checks.decimal("entry_price", entry_price), "f")
    stored = {
        "cycle_id": cycle_id, "security_id": security_id, "side": POSITION_SIDE_FOR_ENTRY[side],
        "quantity": format(checks.positive("position quantity", quantity), "f"), "entry_price": price,
        "entry_time": at, "stop_loss": raw_sql.db_decimal(stop_loss, "stop_loss"),
        "take_profit": raw_sql.db_decimal(take_profit, "take_profit"), "status": "open", "realized_pnl": "0",
        "unrealized_pnl": "0", "last_price": price, "created_at": at, "updated_at": at,
    }
    stored["position_id"] = raw_sql.execute(
        raw, "open_position_for_entry",
        f"INSERT INTO positions ({', '.join(stored)}) VALUES ({', '.join('?' * len(stored))})",
        tuple(stored.values()),
    ).lastrowid
    raw_sql.execute(raw, "open_position_for_entry",
                    "UPDATE orders SET position_id = ?, updated_at = MAX(updated_at, ?) WHERE order_id = ?",
                    (stored["position_id"], at, entry_order_id))
    for replacement in replacements:
        raw_sql.execute(raw, "open_position_for_entry",
                        "UPDATE orders SET position_id = ? WHERE order_id = ? AND role = 'entry' AND position_id IS NULL",
                        (stored["position_id"], replacement))
    return POSITION_READER.written({**stored, "exit_price": None, "exit_time": None}, symbol)


async def open_position_with_orders(
    session: AsyncSession,
    entry_order_id: int,
    quantity: Any,
    entry_price: Any,
    entry_time: datetime,
    stop_loss: Any,
    take_profit: Any,
    orders: Sequence[NewOrder],
    created_at: datetime,
    replacements: Sequence[int] = (),
) -> tuple[PositionRecord, list[OrderRecord]]:
    """The position opened by its first entry fill and its first protection rows, which belong to it: one commit."""
    position = await open_position_for_entry(
        session, entry_order_id, quantity, entry_price, entry_time, stop_loss, take_profit, replacements)
    owned = [replace(order, position_id=position.position_id) for order in orders]
    security = (position.symbol, position.security_id)
    return position, (await create_orders(session, owned, created_at, security) if owned else [])


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


async def mark_open_position(session: AsyncSession, position_id: int, last_price: Any, unrealized_pnl: Any,
                             at: datetime) -> bool:
    """The doctor's mark to market, only while the position is still open: one that closed since the doctor read it
    keeps the zero its close wrote (a mark after it showed a closed position with unrealized P&L). False if not open."""
    result = await session.execute(
        update(Position).where(Position.position_id == position_id, Position.status == "open").values(
            last_price=checks.decimal("last_price", last_price),
            unrealized_pnl=checks.decimal("unrealized_pnl", unrealized_pnl), updated_at=checks.utc("at", at)))
    return bool(result.rowcount)


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


def exit_working_at_broker() -> Any:
    """A condition on Position: an exit order of its own (a stop, a target, a market exit) works at the broker. Of a
    closed position: late entry shares kept under their stops overnight (sold at the next open by its actor), or a
    leg whose cancel never came. A row still `created` does not count: nothing of it is at the broker."""
    exit_order = aliased(Order)  # the outer query may select orders too: only Position is correlated
    return (select(exit_order.order_id)
            .where(exit_order.position_id == Position.position_id,
                   exit_order.role.in_(("take_profit", "stop_loss", "flatten")),
                   exit_order.status.notin_(TERMINAL_ORDER_STATUSES), exit_order.alpaca_order_id.is_not(None))
            .correlate(Position).exists())


async def find_positions(session: AsyncSession, *conditions: Any) -> list[PositionRecord]:
    result = await session.execute(POSITIONS_WITH_SYMBOL.where(*conditions).order_by(Position.position_id))
    return [position_record(row, symbol) for row, symbol in result.all()]
