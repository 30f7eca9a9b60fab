"""Per-cycle figures the conductor needs: today's realized and unrealized P&L."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from catalyst.store.models import Position


async def cycle_pnl(session: AsyncSession, cycle_id: int) -> tuple[Decimal, Decimal]:
    """(realized, unrealized) over the cycle's positions; amounts are exact decimals stored as text."""
    rows = (await session.execute(
        select(Position.realized_pnl, Position.unrealized_pnl, Position.status).where(Position.cycle_id == cycle_id)
    )).all()
    realized = sum((r.realized_pnl for r in rows), Decimal(0))
    unrealized = sum((r.unrealized_pnl for r in rows if r.status == "open"), Decimal(0))
    return realized, unrealized
