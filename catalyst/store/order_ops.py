"""Order, fill and trade-update operations on one session (the caller owns the transaction)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from catalyst.store import checks, raw_sql
from catalyst.store.db import json_dumps
from catalyst.store.errors import InvalidValueError, RecordNotFoundError
from catalyst.store.models import (
    FILL_SOURCES, ORDER_CLASSES, ORDER_ROLES, ORDER_SIDES, ORDER_STATUSES, ORDER_TYPES,
    Order, Security,
)  # fmt: skip
from catalyst.store.records import NewOrder, OrderProgress, OrderRecord, order_record

ORDERS_WITH_SYMBOL = select(Order, Security.symbol).join(Security, Order.security_id == Security.security_id)


def client_order_id_prefix(instance: str) -> str:
    return f"cat-{instance}-"


def client_order_id_for(instance: str, order_id: int) -> str:
    """Derived from the row, never regenerated: a resubmission reuses it, so Alpaca refuses a duplicate."""
    return f"{client_order_id_prefix(instance)}{order_id}"


ORDER_READER = raw_sql.RowReader(Order.__table__, OrderRecord)
# The row and its client_order_id in one statement: the id is the one AUTOINCREMENT would give (one past the largest
# ever used, kept in sqlite_sequence, or past the largest present), and the client id is made from it (the first
# parameter is client_order_id_prefix). Computed inside the INSERT, under the write lock, so no other writer can
# take the same id in between; a separate UPDATE per row used to set the client id after a placeholder.
_INSERT_ORDER = (
    "INSERT INTO orders (order_id, client_order_id, cycle_id, security_id, position_id, parent_order_id, role, side, "
    "order_type, order_class, time_in_force, quantity, limit_price, stop_price, planned_stop_loss, "
    "planned_take_profit, planned_entry_price, status, filled_qty, created_at, updated_at, submit_attempts, "
    "outcome_unknown) "
    "SELECT next.id, ? || next.id, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'created', '0', ?, ?, 0, 0 FROM ("
    "SELECT MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'orders'), 0), "
    "COALESCE((SELECT MAX(order_id) FROM orders), 0)) + 1 AS id) AS next"
)


_INSERTED_COLUMNS = (
    "cycle_id", "security_id", "position_id", "parent_order_id", "role", "side", "order_type",
    "order_class", "time_in_force", "quantity", "limit_price", "stop_price", "planned_stop_loss",
    "planned_take_profit", "planned_entry_price", "created_at", "updated_at",
)
# What the insert leaves to _INSERT_ORDER's constants and to NULL, as stored.
_NEW_ORDER_DEFAULTS = {
    "status": "created", "filled_qty": "0", "submit_attempts": 0, "outcome_unknown": 0, "alpaca_order_id": None,
    "broker_status": None, "filled_avg_price": None, "submitted_at": None, "filled_at": None, "cancelled_at": None,
    "cancel_reason": None, "rejection_reason": None, "replaced_by_order_id": None,
}


async def create_orders(session: AsyncSession, specs: Sequence[NewOrder], at: datetime,
                        security: tuple[str, int] | None = None) -> list[OrderRecord]:
    """Insert the rows, each with its client_order_id, in the caller's transaction.

    `security`: (symbol, security_id) already read in this transaction (a position's protection rows are for its
    own symbol), so it is not looked up again. The records returned are built from the values written, not read
    back: an OCO's two rows are on the path between a fill and its stop (tests/integration/
    test_store_batch_group_commit.py holds them equal to a read)."""
    stamp = raw_sql.db_time(at, "created_at")
    raw = await raw_sql.connection(session)
    instance = raw_instance_id(raw)
    prefix = client_order_id_prefix(instance)
    securities: dict[str, tuple[str, int]] = {}  # an OCO's legs share their symbol: one lookup
    if security is not None:
        securities[security[0]] = security
    records = []
    for spec in specs:
        if spec.symbol not in securities:
            symbol = checks.symbol(spec.symbol)
            securities[spec.symbol] = (symbol, raw_security_id(raw, symbol))
        symbol, security_id = securities[spec.symbol]
        values = (
            spec.cycle_id, security_id, spec.position_id,
            spec.parent_order_id, checks.one_of("order role", spec.role, ORDER_ROLES),
            checks.one_of("order side", spec.side, ORDER_SIDES),
            checks.one_of("order type", spec.order_type, ORDER_TYPES),
            checks.one_of("order class", spec.order_class, ORDER_CLASSES), str(spec.time_in_force),
            format(checks.positive("order quantity", spec.quantity), "f"),
            raw_sql.db_decimal(spec.limit_price, "limit_price"), raw_sql.db_decimal(spec.stop_price, "stop_price"),
            raw_sql.db_decimal(spec.planned_stop_loss, "planned_stop_loss"),
            raw_sql.db_decimal(spec.planned_take_profit, "planned_take_profit"),
            raw_sql.db_decimal(spec.planned_entry_price, "planned_entry_price"), stamp, stamp,
        )
        order_id = raw_sql.execute(raw, "create_orders", _INSERT_ORDER, (prefix, *values)).lastrowid
        stored = dict(zip(_INSERTED_COLUMNS, values), **_NEW_ORDER_DEFAULTS)
        stored.update(order_id=order_id, client_order_id=client_order_id_for(instance, order_id))  # as the INSERT made it
        records.append(ORDER_READER.written(stored, symbol))
    return records


def raw_instance_id(raw: sqlite3.Connection) -> str:
    row = raw.execute("SELECT instance_id FROM store_meta WHERE id = 1").fetchone()
    if row is None:
        raise RecordNotFoundError("store_meta has no row: the database was not created by catalyst.store.migrate")
    return str(row[0])


def raw_security_id(raw: sqlite3.Connection, symbol: str) -> int:
    symbol = checks.symbol(symbol)
    row = raw.execute("SELECT security_id FROM securities WHERE symbol = ?", (symbol,)).fetchone()
    if row is not None:
        return int(row[0])
    return int(raw_sql.execute(raw, "securities", "INSERT INTO securities (symbol) VALUES (?)", (symbol,)).lastrowid)


def raw_order(raw: sqlite3.Connection, order_id: int) -> OrderRecord:
    record = ORDER_READER.one(raw, order_id)
    if record is None:
        raise RecordNotFoundError(f"order {order_id} is not in the database")
    return record


async def order_row(session: AsyncSession, order_id: int) -> Order:
    row = await session.get(Order, order_id)
    if row is None:
        raise RecordNotFoundError(f"order {order_id} is not in the database")
    return row


async def order_with_symbol(session: AsyncSession, row: Order) -> OrderRecord:
    symbol = await session.scalar(select(Security.symbol).where(Security.security_id == row.security_id))
    return order_record(row, symbol or "")


async def mark_submitted(
    session: AsyncSession, order_id: int, alpaca_order_id: str, broker_status: str | None, submitted_at: datetime,
    read_back: bool = True, progress: OrderProgress | None = None, at: datetime | None = None,
) -> OrderRecord | None:
    """The broker's id and status on the row; the row as written, or None with `read_back=False` (the router's
    hot path, which keeps its own view and would throw the record away). With `progress` (stamped `at`), the
    order's new state goes in the same statement: an acknowledgement that also moves the order (a stop leg
    "held", an entry already filled) is one row write, not two."""
    raw = await raw_sql.connection(session)
    if progress is not None:
        apply_status(raw, order_id, progress, at or submitted_at, None,
                     submitted=(alpaca_order_id, raw_sql.db_time(submitted_at, "submitted_at")))
        return raw_order(raw, order_id) if read_back else None
    stamp = raw_sql.db_time(submitted_at, "submitted_at")
    changed = raw_sql.execute(raw, "mark_submitted", (
        "UPDATE orders SET alpaca_order_id = ?, broker_status = ?, submitted_at = ?, updated_at = ?, "
        # a fast fill update may already have moved it further: only `created` becomes `submitted`
        "status = CASE WHEN status = 'created' THEN 'submitted' ELSE status END, outcome_unknown = 0 "
        "WHERE order_id = ?"
    ), (alpaca_order_id, broker_status, stamp, stamp, order_id)).rowcount
    if not changed:
        raise RecordNotFoundError(f"order {order_id} is not in the database")
    return raw_order(raw, order_id) if read_back else None


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


_APPLY_STATUS = (
    "UPDATE orders SET status = :status, broker_status = :broker_status, filled_qty = :filled_qty, "
    "filled_avg_price = :avg, updated_at = :at, "
    "filled_at = CASE WHEN :status = 'filled' AND filled_at IS NULL THEN :at ELSE filled_at END, "
    "cancelled_at = CASE WHEN :status IN ('cancelled', 'expired', 'replaced') AND cancelled_at IS NULL "
    "THEN :at ELSE cancelled_at END, "
    "rejection_reason = CASE WHEN :reason IS NOT NULL AND :status = 'rejected' THEN :reason ELSE rejection_reason END, "
    "cancel_reason = CASE WHEN :reason IS NOT NULL AND :status <> 'rejected' THEN :reason ELSE cancel_reason END, "
    "replaced_by_order_id = COALESCE(:replaced_by, replaced_by_order_id) WHERE order_id = :order_id"
)
_APPLY_STATUS_SUBMITTED = _APPLY_STATUS.replace(
    "updated_at = :at, ", "updated_at = :at, alpaca_order_id = :alpaca_order_id, submitted_at = :submitted_at, "
    "outcome_unknown = 0, ")
assert _APPLY_STATUS_SUBMITTED != _APPLY_STATUS, "_APPLY_STATUS no longer sets updated_at as expected"


def apply_status(raw: sqlite3.Connection, order_id: int, progress: OrderProgress, at: datetime,
                 replaced_by_order_id: int | None, submitted: tuple[str, str | None] | None = None) -> None:
    """Write the state the domain decided on; the store does not judge transitions (catalyst.domain does).
    `submitted`: the broker id and submitted_at (as stored) of an acknowledgement written with it."""
    parameters = {
        "status": checks.one_of("order status", progress.status, ORDER_STATUSES),
        "broker_status": progress.broker_status,
        "filled_qty": format(checks.decimal("filled_qty", progress.filled_qty), "f"),
        "avg": raw_sql.db_decimal(progress.filled_avg_price, "filled_avg_price"),
        "at": raw_sql.db_time(at, "at"), "reason": progress.reason, "replaced_by": replaced_by_order_id,
        "order_id": order_id,
    }
    sql = _APPLY_STATUS
    if submitted is not None:
        sql = _APPLY_STATUS_SUBMITTED
        parameters["alpaca_order_id"], parameters["submitted_at"] = submitted
    if not raw_sql.execute(raw, "update_order_status", sql, parameters).rowcount:  # type: ignore[arg-type]
        raise RecordNotFoundError(f"order {order_id} is not in the database")


async def update_order_status(
    session: AsyncSession,
    order_id: int,
    progress: OrderProgress,
    at: datetime,
    replaced_by_order_id: int | None = None,
    read_back: bool = True,
) -> OrderRecord | None:
    """The order's new state; the row as written, or None with `read_back=False` (as mark_submitted)."""
    raw = await raw_sql.connection(session)
    apply_status(raw, order_id, progress, at, replaced_by_order_id)
    return raw_order(raw, order_id) if read_back else None


_INSERT_FILL = (
    "INSERT INTO fills (execution_id, order_id, alpaca_order_id, symbol, side, qty, price, position_qty, "
    "occurred_at, received_at, source) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (execution_id) DO NOTHING"
)


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
    values = (
        checks.symbol(symbol), checks.one_of("fill side", side, ORDER_SIDES),
        format(checks.positive("fill qty", qty), "f"), format(checks.decimal("fill price", price), "f"),
        raw_sql.db_decimal(position_qty, "position_qty"), raw_sql.db_time(occurred_at, "occurred_at"),
        raw_sql.db_time(received_at, "received_at"), checks.one_of("fill source", source, FILL_SOURCES),
    )
    raw = await raw_sql.connection(session)
    if order_id is None and alpaca_order_id is not None:
        found = raw.execute("SELECT order_id FROM orders WHERE alpaca_order_id = ?", (alpaca_order_id,)).fetchone()
        order_id = found[0] if found else None
    symbol_, side_, qty_, price_, position_qty_, occurred, received, source_ = values
    if not raw_sql.execute(raw, "record_fill", _INSERT_FILL, (
        execution_id, order_id, alpaca_order_id, symbol_, side_, qty_, price_, position_qty_, occurred, received,
        source_,
    )).rowcount:
        return False  # execution_id known: only that conflict is passed over (_INSERT_FILL), any other refuses
    if order_progress is not None:
        if order_id is None:
            raise RecordNotFoundError(f"fill {execution_id}: no order to apply progress to")
        apply_status(raw, order_id, order_progress, occurred_at, None)
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
    values = (raw_sql.db_time(received_at, "received_at"), str(event), alpaca_order_id, client_order_id,
              execution_id, json_dumps(payload))
    raw = await raw_sql.connection(session)
    return int(raw_sql.execute(raw, "record_trade_update", (
        "INSERT INTO trade_updates (received_at, event, alpaca_order_id, client_order_id, execution_id, payload) "
        "VALUES (?, ?, ?, ?, ?, ?)"
    ), values).lastrowid)


async def find_orders(
    session: AsyncSession, *conditions: Any, order_by: tuple[Any, ...] = (Order.order_id,)
) -> list[OrderRecord]:
    result = await session.execute(ORDERS_WITH_SYMBOL.where(*conditions).order_by(*order_by))
    return [order_record(row, symbol) for row, symbol in result.all()]


@dataclass(frozen=True, slots=True)
class Replacement:
    """The broker's order that replaced one of ours (Alpaca's PATCH, by hand in the dashboard or by another program):
    its ids and the fields the replace may have changed. Everything else is the replaced row's."""

    alpaca_order_id: str
    client_order_id: str
    order_type: str
    time_in_force: str
    quantity: Decimal
    limit_price: Decimal | None
    stop_price: Decimal | None


async def record_replacement(session: AsyncSession, replaced_order_id: int, new: Replacement,
                             at: datetime) -> OrderRecord:
    """One transaction: the replacement's row (same role, position, parent and cycle as the row it replaces,
    `submitted` with the broker's ids, its events move it on from there) and the replaced row's pointer to it
    (spec §2.2: `replaced` points to the new order). An entry's replacement names the position's first entry as its
    parent: a position is known by that entry (recovery_ops.position_book), whichever of its entries works now.
    Idempotent: a replacement already written (the doctor's, a replay) is linked, not inserted twice; one that is
    another position's order is refused (ValueError)."""
    at = checks.utc("at", at)
    old = await order_row(session, replaced_order_id)
    row = await session.scalar(select(Order).where(Order.alpaca_order_id == new.alpaca_order_id))
    if row is not None and (row.role != old.role or row.position_id not in (None, old.position_id)):
        # The broker's order is another position's already (the doctor adopted its fill as shares placed by hand):
        # linked, its fills would be counted by both positions.
        raise ValueError(f"the broker's order {new.alpaca_order_id} is order o-{row.order_id} already ({row.role} of "
                         f"position p-{row.position_id}), not a replacement of o-{old.order_id}")
    if row is None:
        row = Order(
            client_order_id=new.client_order_id, alpaca_order_id=new.alpaca_order_id, cycle_id=old.cycle_id,
            security_id=old.security_id, position_id=old.position_id,
            parent_order_id=(old.parent_order_id or old.order_id) if old.role == "entry" else old.parent_order_id,
            role=old.role, side=old.side, order_type=checks.one_of("order type", new.order_type, ORDER_TYPES),
            order_class=old.order_class, time_in_force=new.time_in_force,
            quantity=checks.positive("order quantity", new.quantity),
            limit_price=checks.optional_decimal("limit_price", new.limit_price),
            stop_price=checks.optional_decimal("stop_price", new.stop_price),
            planned_stop_loss=old.planned_stop_loss, planned_take_profit=old.planned_take_profit,
            status="submitted", broker_status=None, filled_qty=Decimal(0), filled_avg_price=None, submitted_at=at,
            created_at=at, updated_at=at, submit_attempts=0, outcome_unknown=False,
        )
        session.add(row)
        await session.flush()
    old.replaced_by_order_id = row.order_id
    old.updated_at = at
    await session.flush()
    return await order_with_symbol(session, row)
