"""The doctor's store operations: the reconciliation read set, and adopting orders/positions placed by hand."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from catalyst.store import checks, raw_sql
from catalyst.store.models import (
    ORDER_ROLES, ORDER_SIDES, ORDER_STATUSES, ORDER_TYPES, WORKING_ORDER_STATUSES, Fill, Order, Position, Security,
)  # fmt: skip
from catalyst.store.order_ops import find_orders, order_with_symbol, raw_instance_id
from catalyst.store.position_ops import exit_working_at_broker, find_positions, open_position_for_entry
from catalyst.store.records import OrderRecord, PositionRecord
from catalyst.store.security_ops import ensure_security_row

# The adopted entry is stored with role "entry", not "adopted": the restart book (recovery_ops.position_book,
# live_entry_ids) and PositionActor._restore only rebuild positions whose entry has role "entry". Its
# client_order_id (the hand order's, or "adopt-...") tells it apart. Switch to "adopted" once they accept it.
ADOPTED_ENTRY_ROLE = "entry"
_CHUNK = 500  # SQLite's bound-parameter limit is 999 on older builds


@dataclass(frozen=True, slots=True)
class BrokerOrderRow:
    """A broker order to write as a row of ours (an order placed by hand, adopted)."""

    cycle_id: int
    symbol: str
    role: str
    side: str
    order_type: str
    quantity: Decimal
    alpaca_order_id: str | None
    client_order_id: str
    status: str = "submitted"
    filled_qty: Decimal = Decimal(0)
    filled_avg_price: Decimal | None = None
    position_id: int | None = None
    planned_stop_loss: Decimal | None = None
    planned_take_profit: Decimal | None = None


@dataclass(frozen=True, slots=True)
class AdoptedFill:
    execution_id: str  # `<broker order id>:<cum qty>`, the router's key, so a later catch-up finds it recorded
    alpaca_order_id: str | None
    qty: Decimal
    price: Decimal
    occurred_at: datetime
    source: str = "activity"


async def instance_id(session: AsyncSession) -> str:
    """This database's id, the middle of every client_order_id it made (`cat-<instance>-<order id>`)."""
    return raw_instance_id(await raw_sql.connection(session))


async def reconciliation_orders(session: AsyncSession, since: datetime) -> list[OrderRecord]:
    """Working and unknown-outcome orders, plus every order created since `since` (to recognise the broker's
    list of that window as ours, terminal ones included)."""
    return await find_orders(
        session,
        or_(Order.status.in_(WORKING_ORDER_STATUSES), Order.outcome_unknown.is_(True),
            Order.created_at >= checks.utc("since", since)),
    )


async def execution_keys(session: AsyncSession, order_ids: Sequence[int]) -> list[str]:
    ids = list(order_ids)
    keys: list[str] = []
    for start in range(0, len(ids), _CHUNK):
        keys += await session.scalars(select(Fill.execution_id).where(Fill.order_id.in_(ids[start:start + _CHUNK])))
    return keys


async def closed_positions_holding_shares(session: AsyncSession, symbols: Sequence[str],
                                          closed_since: datetime) -> list[PositionRecord]:
    """Positions of `symbols` closed since `closed_since`, or with an exit order of their own still working at the
    broker (late shares kept under stops over a weekend, a review: past the look-back they halted entries), whose
    recorded fills still hold shares: entry executions recorded after the close (their fill event lost), not sold.
    Each record's `quantity` is the shares they hold."""
    if not symbols:
        return []
    closed = await find_positions(session, Position.status == "closed", Security.symbol.in_(list(symbols)),
                                  or_(Position.exit_time >= checks.utc("closed_since", closed_since),
                                      exit_working_at_broker()))
    held: dict[int, Decimal] = {p.position_id: Decimal(0) for p in closed}
    rows = await session.execute(select(Order.position_id, Order.role, Fill.qty)
                                 .join(Fill, Fill.order_id == Order.order_id).where(Order.position_id.in_(list(held))))
    for position_id, role, qty in rows.all():
        held[position_id] += qty if role in ("entry", "adopted") else -qty
    return [replace(p, quantity=held[p.position_id]) for p in closed if held[p.position_id] > 0]


async def oldest_entry_kept_after_close(session: AsyncSession) -> datetime | None:
    """When the oldest entry of a closed position with an exit order working at the broker was created (late entry
    shares kept under stops or with a sale queued, over a weekend, say): the doctor lists the broker's orders from
    there, or those shares look bought by no order of ours once the entry is older than its look-back (a review: a
    halt every pass from Saturday on)."""
    oldest = await session.scalar(
        select(func.min(Order.created_at)).join(Position, Position.position_id == Order.position_id)
        .where(Order.role == "entry", Position.status == "closed", exit_working_at_broker()))
    return checks.utc("created_at", oldest) if oldest is not None else None


async def adopt_order(session: AsyncSession, spec: BrokerOrderRow, at: datetime) -> OrderRecord:
    """Insert a broker order we did not place as a row of ours, keeping the broker's ids."""
    at = checks.utc("at", at)
    security = await ensure_security_row(session, spec.symbol)
    row = Order(
        client_order_id=spec.client_order_id, alpaca_order_id=spec.alpaca_order_id, cycle_id=spec.cycle_id,
        security_id=security.security_id, position_id=spec.position_id, parent_order_id=None,
        role=checks.one_of("order role", spec.role, ORDER_ROLES),
        side=checks.one_of("order side", spec.side, ORDER_SIDES),
        order_type=checks.one_of("order type", spec.order_type, ORDER_TYPES), order_class="simple",
        time_in_force="day", quantity=checks.positive("order quantity", spec.quantity), limit_price=None,
        stop_price=None, planned_stop_loss=checks.optional_decimal("planned_stop_loss", spec.planned_stop_loss),
        planned_take_profit=checks.optional_decimal("planned_take_profit", spec.planned_take_profit),
        status=checks.one_of("order status", spec.status, ORDER_STATUSES), broker_status=None,
        filled_qty=checks.decimal("filled_qty", spec.filled_qty),
        filled_avg_price=checks.optional_decimal("filled_avg_price", spec.filled_avg_price),
        submitted_at=at, filled_at=at if spec.status == "filled" else None, created_at=at, updated_at=at,
        submit_attempts=0, outcome_unknown=False,
    )
    session.add(row)
    await session.flush()
    return await order_with_symbol(session, row)


async def adopt_position(
    session: AsyncSession, entry: BrokerOrderRow, fills: Sequence[AdoptedFill], at: datetime
) -> tuple[OrderRecord, PositionRecord]:
    """One transaction: the adopted entry (filled), its executions, and the open position linked to it."""
    if not fills:
        raise ValueError(f"adopting {entry.symbol}: no executions to build the position from")
    order = await adopt_order(session, entry, at)
    for fill in fills:
        session.add(Fill(
            execution_id=fill.execution_id, order_id=order.order_id, alpaca_order_id=fill.alpaca_order_id,
            symbol=entry.symbol, side=entry.side, qty=checks.positive("fill qty", fill.qty),
            price=checks.decimal("fill price", fill.price), position_qty=None,
            occurred_at=checks.utc("occurred_at", fill.occurred_at), received_at=checks.utc("at", at),
            source=fill.source,
        ))
    await session.flush()
    position = await open_position_for_entry(
        session, order.order_id, entry.filled_qty, entry.filled_avg_price, at,
        entry.planned_stop_loss, entry.planned_take_profit,
    )
    return await order_with_symbol(session, await session.get(Order, order.order_id)), position
