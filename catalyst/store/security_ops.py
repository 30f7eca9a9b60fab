"""Securities, trading cycles, scan results and doctor findings on one session."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from catalyst.store import checks
from catalyst.store.errors import InvalidValueError, RecordNotFoundError
from catalyst.store.models import (
    CYCLE_PHASES, CYCLE_STATES, SCAN_STATUSES, DoctorFinding, ScanResult, Security, TradingCycle,
)  # fmt: skip
from catalyst.store.records import (
    CycleRecord, NewFinding, NewScanResult, ScanResultRecord, SecurityRecord,
    cycle_record, finding_columns, scan_result_record, security_record,
)  # fmt: skip


async def ensure_security_row(
    session: AsyncSession, symbol: str, name: str | None = None, sector: str | None = None
) -> Security:
    symbol = checks.symbol(symbol)
    row = await session.scalar(select(Security).where(Security.symbol == symbol))
    if row is None:
        row = Security(symbol=symbol, name=name, sector=sector)
        session.add(row)
        await session.flush()
    else:
        # Fill in what we learn later, never erase what we knew.
        row.name = name if name is not None else row.name
        row.sector = sector if sector is not None else row.sector
    return row


async def ensure_security(
    session: AsyncSession, symbol: str, name: str | None = None, sector: str | None = None
) -> SecurityRecord:
    return security_record(await ensure_security_row(session, symbol, name, sector))


async def get_or_create_cycle(session: AsyncSession, day: date, at: datetime) -> CycleRecord:
    if not isinstance(day, date) or isinstance(day, datetime):
        raise InvalidValueError(f"cycle date must be a date, not {type(day).__name__} {day!r}")
    row = await session.scalar(select(TradingCycle).where(TradingCycle.date == day))
    if row is None:
        at = checks.utc("started_at", at)
        row = TradingCycle(
            date=day, phase="idle", cycle_state="active", daily_pnl=Decimal(0), started_at=at, updated_at=at
        )
        session.add(row)
        await session.flush()
    return cycle_record(row)


async def get_cycle(session: AsyncSession, day: date) -> CycleRecord | None:
    row = await session.scalar(select(TradingCycle).where(TradingCycle.date == day))
    return None if row is None else cycle_record(row)


async def unfinished_cycles_before(session: AsyncSession, day: date) -> list[CycleRecord]:
    """Earlier days not completed, oldest first: the daemon was not running at their close."""
    rows = await session.scalars(select(TradingCycle).where(TradingCycle.date < day, TradingCycle.phase != "completed")
                                 .order_by(TradingCycle.date))
    return [cycle_record(row) for row in rows]


async def cycle_row(session: AsyncSession, cycle_id: int) -> TradingCycle:
    row = await session.get(TradingCycle, cycle_id)
    if row is None:
        raise RecordNotFoundError(f"trading cycle {cycle_id} is not in the database")
    return row


async def set_cycle_phase(session: AsyncSession, cycle_id: int, phase: str, at: datetime) -> CycleRecord:
    phase = checks.one_of("cycle phase", phase, CYCLE_PHASES)
    row = await cycle_row(session, cycle_id)
    row.phase = phase
    row.updated_at = checks.utc("at", at)
    return cycle_record(row)


async def set_cycle_state(
    session: AsyncSession, cycle_id: int, state: str, at: datetime, halt_reason: str | None = None
) -> CycleRecord:
    state = checks.one_of("cycle state", state, CYCLE_STATES)
    row = await cycle_row(session, cycle_id)
    row.cycle_state = state
    row.halt_reason = halt_reason
    row.updated_at = checks.utc("at", at)
    return cycle_record(row)


async def set_daily_pnl(session: AsyncSession, cycle_id: int, daily_pnl: Decimal, at: datetime) -> CycleRecord:
    row = await cycle_row(session, cycle_id)
    row.daily_pnl = checks.decimal("daily_pnl", daily_pnl)
    row.updated_at = checks.utc("at", at)
    return cycle_record(row)


async def insert_scan_results(session: AsyncSession, cycle_id: int, results: Sequence[NewScanResult]) -> list[int]:
    await cycle_row(session, cycle_id)
    rows = []
    for result in results:
        security = await ensure_security_row(session, result.symbol)
        row = ScanResult(
            cycle_id=cycle_id,
            security_id=security.security_id,
            scanned_at=checks.utc("scanned_at", result.scanned_at),
            rank_in_scan=int(result.rank_in_scan),
            composite_score=checks.decimal("composite_score", result.composite_score),
            status=checks.one_of("scan status", result.status, SCAN_STATUSES),
            reason=result.reason,
            score_parts=dict(result.score_parts),
        )
        session.add(row)
        rows.append(row)
    await session.flush()
    return [row.scan_id for row in rows]


async def set_scan_status(session: AsyncSession, scan_id: int, status: str, reason: str | None = None) -> None:
    row = await session.get(ScanResult, scan_id)
    if row is None:
        raise RecordNotFoundError(f"scan result {scan_id} is not in the database")
    row.status = checks.one_of("scan status", status, SCAN_STATUSES)
    row.reason = reason if reason is not None else row.reason


async def scan_results(session: AsyncSession, cycle_id: int) -> list[ScanResultRecord]:
    query = (
        select(ScanResult, Security.symbol)
        .join(Security, ScanResult.security_id == Security.security_id)
        .where(ScanResult.cycle_id == cycle_id)
        .order_by(ScanResult.scanned_at, ScanResult.rank_in_scan)
    )
    return [scan_result_record(row, symbol) for row, symbol in (await session.execute(query)).all()]


async def orders_behind_halts_since(session: AsyncSession, since: datetime) -> dict[str, str]:
    """Broker id → reason of the orders behind the doctor's halts found since `since` (newest reason kept)."""
    rows = await session.scalars(select(DoctorFinding).where(DoctorFinding.found_at >= checks.utc("since", since),
                                                             DoctorFinding.outcome == "halted")
                                 .order_by(DoctorFinding.found_at))
    behind: dict[str, str] = {}
    for row in rows:
        details = row.details if isinstance(row.details, dict) else {}
        for broker_id in details.get("broker_ids") or ():
            behind[str(broker_id)] = str(details.get("reason") or f"{row.type} {row.subject}")
    return behind


async def insert_findings(session: AsyncSession, findings: Sequence[NewFinding]) -> list[int]:
    rows = []
    for finding in findings:
        columns = finding_columns(finding)
        columns["found_at"] = checks.utc("found_at", finding.found_at)
        rows.append(DoctorFinding(**columns))
    session.add_all(rows)
    await session.flush()
    return [row.finding_id for row in rows]
