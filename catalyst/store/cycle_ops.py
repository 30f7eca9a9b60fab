"""Per-cycle figures the conductor needs: the day's realized and unrealized P&L."""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from catalyst.domain.cycle import exchange_day
from catalyst.domain.positions import DayPosition, day_pnl
from catalyst.store.models import Fill, Order, Position, TradingCycle


def day_positions_query(cycle_id: int, start: Any) -> Any:
    """The positions whose P&L a day can hold: its own, and any open at its start (still open, or closed since), as
    only those can have an exit during it. Not a search of the executions by time (no index: the daily loss limit
    reads this at every cycle tick)."""
    return select(Position.position_id, Position.cycle_id, Position.side, Position.status, Position.realized_pnl,
                  Position.unrealized_pnl, Position.exit_time).where(or_(
        Position.cycle_id == cycle_id, Position.status == "open", Position.exit_time >= start))


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
    positions = (await session.execute(day_positions_query(cycle_id, start))).all()
    fills = (await session.execute(fills_query([p.position_id for p in positions]))).all()
    return day_pnl(day_rows(positions, fills), cycle_id, (start, end))
