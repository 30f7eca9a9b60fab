"""Per-cycle figures the conductor needs: the day's realized and unrealized P&L."""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from catalyst.domain.cycle import exchange_day
from catalyst.domain.positions import DayPosition, day_pnl
from catalyst.store.models import Fill, Order, Position, TradingCycle


def day_positions_query(cycle_id: int, start: Any, end: Any) -> Any:
    """The positions whose P&L a day can hold: its own, and any with an execution or its close during it."""
    traded = select(Order.position_id).join(Fill, Fill.order_id == Order.order_id).where(
        Order.position_id.is_not(None), Fill.occurred_at >= start, Fill.occurred_at < end)
    return select(Position.position_id, Position.cycle_id, Position.side, Position.status, Position.realized_pnl,
                  Position.unrealized_pnl, Position.exit_time).where(or_(
        Position.cycle_id == cycle_id, Position.position_id.in_(traded),
        and_(Position.status == "closed", Position.exit_time >= start, Position.exit_time < end)))


def fills_query(position_ids: list[int]) -> Any:
    return (select(Order.position_id, Fill.occurred_at, Fill.side, Fill.qty, Fill.price)
            .join(Order, Fill.order_id == Order.order_id).where(Order.position_id.in_(position_ids))
            .order_by(Fill.occurred_at, Fill.fill_id))


def day_rows(positions: list[Any], fills: list[Any]) -> list[DayPosition]:
    by_position: dict[int, list[Any]] = defaultdict(list)
    for fill in fills:
        by_position[fill.position_id].append((fill.occurred_at, fill.side, fill.qty, fill.price))
    return [DayPosition(p.cycle_id, p.side, p.status, p.realized_pnl, p.unrealized_pnl, p.exit_time,
                        tuple(by_position[p.position_id])) for p in positions]


async def cycle_pnl(session: AsyncSession, cycle_id: int) -> tuple[Decimal, Decimal]:
    """(realized, unrealized) of the cycle's day (catalyst.domain.positions.day_pnl); amounts are exact decimals
    stored as text."""
    day = await session.scalar(select(TradingCycle.date).where(TradingCycle.cycle_id == cycle_id))
    if day is None:
        return Decimal(0), Decimal(0)
    start, end = exchange_day(day)
    positions = (await session.execute(day_positions_query(cycle_id, start, end))).all()
    fills = (await session.execute(fills_query([p.position_id for p in positions]))).all()
    return day_pnl(day_rows(positions, fills), cycle_id, (start, end))
