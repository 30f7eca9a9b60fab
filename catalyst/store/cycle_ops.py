"""Per-cycle figures the conductor needs: the day's realized and unrealized P&L."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from catalyst.domain.cycle import exchange_day
from catalyst.domain.positions import DayPosition, day_pnl
from catalyst.store.models import Position, TradingCycle


async def cycle_pnl(session: AsyncSession, cycle_id: int) -> tuple[Decimal, Decimal]:
    """(realized, unrealized) of the cycle's day (catalyst.domain.positions.counts_in_day): its own positions, and
    those kept from an earlier day that closed on it; amounts are exact decimals stored as text."""
    day = await session.scalar(select(TradingCycle.date).where(TradingCycle.cycle_id == cycle_id))
    if day is None:
        return Decimal(0), Decimal(0)
    start, end = exchange_day(day)
    rows = (await session.execute(
        select(Position.cycle_id, Position.status, Position.realized_pnl, Position.unrealized_pnl, Position.exit_time)
        .where(or_(Position.cycle_id == cycle_id,
                   and_(Position.status == "closed", Position.exit_time >= start, Position.exit_time < end)))
    )).all()
    return day_pnl([DayPosition(*row) for row in rows], cycle_id, (start, end))
