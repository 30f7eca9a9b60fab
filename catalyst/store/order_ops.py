"""Order, fill and trade-update operations on one session (the caller owns the transaction)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from catalyst.store import checks
from catalyst.store.errors import InvalidValueError, RecordNotFoundError
from catalyst.store.models import (
    FILL_SOURCES, ORDER_CLASSES, ORDER_ROLES, ORDER_SIDES, ORDER_STATUSES, ORDER_TYPES,
    Fill, Order, Security, StoreMeta, TradeUpdate,
)  # fmt: skip
from catalyst.store.records import NewOrder, OrderProgress, OrderRecord, order_record
from catalyst.store.security_ops import ensure_security_row

ORDERS_WITH_SYMBOL = select(Order, Security.symbol).join(Security, Order.security_id == Security.security_id)


async def instance_id(session: AsyncSession) -> str:
    meta = await session.get(StoreMeta, 1)
    if meta is None:
        raise RecordNotFoundError("store_meta has no row: the database was not created by catalyst.store.migrate")
    return meta.instance_id


def client_order_id_for(instance: str, order_id: int) -> str:
    """Derived from the row, never regenerated: a resubmission reuses it, so Alpaca refuses a duplicate."""
    return f"cat-{instance}-{order_id}"


async def create_orders(session: AsyncSession, specs: Sequence[NewOrder], at: datetime) -> list[OrderRecord]:
    """Insert the rows and give each its client_order_id in the same transaction."""
    at = checks.utc("created_at", at)
    instance = await instance_id(session)
    rows: list[tuple[Order, str]] = []
    for spec in specs:
        security = await ensure_security_row(session, spec.symbol)
        row = Order(
            # Placeholder only until the flush assigns order_id, a few lines below, same transaction.
            client_order_id=f"new-{uuid.uuid4().hex}",
            cycle_id=spec.cycle_id,
            security_id=security.security_id,
            position_id=spec.position_id,
            parent_order_id=spec.parent_order_id,
            role=checks.one_of("order role", spec.role, ORDER_ROLES),
            side=checks.one_of("order side", spec.side, ORDER_SIDES),
            order_type=checks.one_of("order type", spec.order_type, ORDER_TYPES),
            order_class=checks.one_of("order class", spec.order_class, ORDER_CLASSES),
            time_in_force=str(spec.time_in_force),
            quantity=checks.positive("order quantity", spec.quantity),
            limit_price=checks.optional_decimal("limit_price", spec.limit_price),
            stop_price=checks.optional_decimal("stop_price", spec.stop_price),
            planned_stop_loss=checks.optional_decimal("planned_stop_loss", spec.planned_stop_loss),
            planned_take_profit=checks.optional_decimal("planned_take_profit", spec.planned_take_profit),
            status="created",
            filled_qty=Decimal(0),
            created_at=at,
            updated_at=at,
            submit_attempts=0,
            outcome_unknown=False,
        )
        session.add(row)
        rows.append((row, security.symbol))
    await session.flush()
    for row, _ in rows:
        row.client_order_id = client_order_id_for(instance, row.order_id)
    await session.flush()
    return [order_record(row, symbol) for row, symbol in rows]


async def order_row(session: AsyncSession, order_id: int) -> Order:
    row = await session.get(Order, order_id)
    if row is None:
        raise RecordNotFoundError(f"order {order_id} is not in the database")
    return row


async def order_with_symbol(session: AsyncSession, row: Order) -> OrderRecord:
    symbol = await session.scalar(select(Security.symbol).where(Security.security_id == row.security_id))
    return order_record(row, symbol or "")


async def mark_submitted(
    session: AsyncSession, order_id: int, alpaca_order_id: str, broker_status: str | None, submitted_at: datetime
) -> OrderRecord:
    row = await order_row(session, order_id)
    row.alpaca_order_id = alpaca_order_id
    row.broker_status = broker_status
    row.submitted_at = checks.utc("submitted_at", submitted_at)
    if row.status == "created":  # a fast fill update may already have moved it further
        row.status = "submitted"
    row.outcome_unknown = False
    row.updated_at = row.submitted_at
    return await order_with_symbol(session, row)


async def record_submit_attempt(session: AsyncSession, order_id: int, at: datetime) -> int:
    row = await order_row(session, order_id)
    row.submit_attempts += 1
    row.updated_at = checks.utc("at", at)
    return row.submit_attempts


async def set_outcome_unknown(session: AsyncSession, order_id: int, unknown: bool, at: datetime) -> OrderRecord:
    row = await order_row(session, order_id)
    row.outcome_unknown = bool(unknown)
    row.updated_at = checks.utc("at", at)
    return await order_with_symbol(session, row)


def apply_status(row: Order, progress: OrderProgress, at: datetime, replaced_by_order_id: int | None) -> None:
    """Write the state the domain decided on; the store does not judge transitions (catalyst.domain does)."""
    row.status = checks.one_of("order status", progress.status, ORDER_STATUSES)
    row.broker_status = progress.broker_status
    row.filled_qty = checks.decimal("filled_qty", progress.filled_qty)
    row.filled_avg_price = checks.optional_decimal("filled_avg_price", progress.filled_avg_price)
    row.updated_at = at
    if row.status == "filled" and row.filled_at is None:
        row.filled_at = at
    if row.status in ("cancelled", "expired", "replaced") and row.cancelled_at is None:
        row.cancelled_at = at
    if progress.reason is not None:
        if row.status == "rejected":
            row.rejection_reason = progress.reason
        else:
            row.cancel_reason = progress.reason
    if replaced_by_order_id is not None:
        row.replaced_by_order_id = replaced_by_order_id


async def update_order_status(
    session: AsyncSession,
    order_id: int,
    progress: OrderProgress,
    at: datetime,
    replaced_by_order_id: int | None = None,
) -> OrderRecord:
    row = await order_row(session, order_id)
    apply_status(row, progress, checks.utc("at", at), replaced_by_order_id)
    return await order_with_symbol(session, row)


async def record_fill(
    session: AsyncSession,
    *,
    execution_id: str,
    symbol: str,
    side: str,
    qty: Any,
    price: Any,
    occurred_at: datetime,
    received_at: datetime,
    source: str,
    alpaca_order_id: str | None = None,
    order_id: int | None = None,
    position_qty: Any = None,
    order_progress: OrderProgress | None = None,
) -> bool:
    """Record one execution exactly once; False (and nothing changed) when execution_id is known."""
    if not isinstance(execution_id, str) or not execution_id:
        raise InvalidValueError(f"execution_id {execution_id!r} must be a non-empty string")
    if await session.scalar(select(Fill.fill_id).where(Fill.execution_id == execution_id)) is not None:
        return False
    if order_id is None and alpaca_order_id is not None:
        order_id = await session.scalar(select(Order.order_id).where(Order.alpaca_order_id == alpaca_order_id))
    occurred = checks.utc("occurred_at", occurred_at)
    session.add(
        Fill(
            execution_id=execution_id,
            order_id=order_id,
            alpaca_order_id=alpaca_order_id,
            symbol=checks.symbol(symbol),
            side=checks.one_of("fill side", side, ORDER_SIDES),
            qty=checks.positive("fill qty", qty),
            price=checks.decimal("fill price", price),
            position_qty=checks.optional_decimal("position_qty", position_qty),
            occurred_at=occurred,
            received_at=checks.utc("received_at", received_at),
            source=checks.one_of("fill source", source, FILL_SOURCES),
        )
    )
    if order_progress is not None:
        if order_id is None:
            raise RecordNotFoundError(f"fill {execution_id}: no order to apply progress to")
        apply_status(await order_row(session, order_id), order_progress, occurred, None)
    await session.flush()
    return True


async def record_trade_update(
    session: AsyncSession,
    *,
    event: str,
    payload: dict[str, Any],
    received_at: datetime,
    alpaca_order_id: str | None = None,
    client_order_id: str | None = None,
    execution_id: str | None = None,
) -> int:
    if not isinstance(payload, dict):
        raise InvalidValueError(f"trade update payload must be a dict, not {type(payload).__name__}")
    row = TradeUpdate(
        received_at=checks.utc("received_at", received_at),
        event=str(event),
        alpaca_order_id=alpaca_order_id,
        client_order_id=client_order_id,
        execution_id=execution_id,
        payload=payload,
    )
    session.add(row)
    await session.flush()
    return row.id


async def find_orders(
    session: AsyncSession, *conditions: Any, order_by: tuple[Any, ...] = (Order.order_id,)
) -> list[OrderRecord]:
    result = await session.execute(ORDERS_WITH_SYMBOL.where(*conditions).order_by(*order_by))
    return [order_record(row, symbol) for row, symbol in result.all()]
