"""Plain frozen values the store returns and accepts; safe to pass between actor threads."""

from __future__ import annotations

from dataclasses import dataclass, field
import datetime as dt
from datetime import datetime
from decimal import Decimal
from typing import Any

from catalyst.store.models import Fill, Order, Position, ScanResult, Security, TradingCycle


@dataclass(frozen=True, slots=True)
class SecurityRecord:
    security_id: int
    symbol: str
    name: str | None
    sector: str | None


@dataclass(frozen=True, slots=True)
class CycleRecord:
    cycle_id: int
    date: dt.date
    phase: str
    cycle_state: str
    halt_reason: str | None
    daily_pnl: Decimal
    started_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class NewOrder:
    """What a caller knows before the order row exists; order_id and client_order_id come from the store."""

    cycle_id: int
    symbol: str
    role: str
    side: str
    order_type: str
    quantity: Decimal
    time_in_force: str = "day"
    order_class: str = "simple"
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    position_id: int | None = None
    parent_order_id: int | None = None
    planned_stop_loss: Decimal | None = None
    planned_take_profit: Decimal | None = None
    planned_entry_price: Decimal | None = None


@dataclass(frozen=True, slots=True)
class OrderRecord:
    order_id: int
    client_order_id: str
    alpaca_order_id: str | None
    cycle_id: int
    security_id: int
    symbol: str
    position_id: int | None
    parent_order_id: int | None
    role: str
    side: str
    order_type: str
    order_class: str
    time_in_force: str
    quantity: Decimal
    limit_price: Decimal | None
    stop_price: Decimal | None
    planned_stop_loss: Decimal | None
    planned_take_profit: Decimal | None
    planned_entry_price: Decimal | None
    status: str
    broker_status: str | None
    filled_qty: Decimal
    filled_avg_price: Decimal | None
    submitted_at: datetime | None
    filled_at: datetime | None
    cancelled_at: datetime | None
    created_at: datetime
    updated_at: datetime
    cancel_reason: str | None
    rejection_reason: str | None
    replaced_by_order_id: int | None
    submit_attempts: int
    outcome_unknown: bool


@dataclass(frozen=True, slots=True)
class OrderProgress:
    """An order's new broker-reported state, applied together with the fill that caused it."""

    status: str
    broker_status: str | None
    filled_qty: Decimal
    filled_avg_price: Decimal | None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class PositionRecord:
    position_id: int
    cycle_id: int
    security_id: int
    symbol: str
    side: str
    quantity: Decimal
    entry_price: Decimal | None
    exit_price: Decimal | None
    entry_time: datetime | None
    exit_time: datetime | None
    stop_loss: Decimal | None
    take_profit: Decimal | None
    status: str
    realized_pnl: Decimal
    unrealized_pnl: Decimal
    last_price: Decimal | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class FillRecord:
    fill_id: int
    execution_id: str
    order_id: int | None
    alpaca_order_id: str | None
    symbol: str
    side: str
    qty: Decimal
    price: Decimal
    position_qty: Decimal | None
    occurred_at: datetime
    received_at: datetime
    source: str


@dataclass(frozen=True, slots=True)
class LiveBook:
    """What a restart rebuilds actors from: entries not yet filled, and open positions."""

    pending_entries: tuple[OrderRecord, ...]
    open_positions: tuple[PositionRecord, ...]


@dataclass(frozen=True, slots=True)
class NewScanResult:
    symbol: str
    rank_in_scan: int
    composite_score: Decimal
    scanned_at: datetime
    score_parts: dict[str, Any] = field(default_factory=dict)
    status: str = "candidate"
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class ScanResultRecord:
    scan_id: int
    cycle_id: int
    security_id: int
    symbol: str
    scanned_at: datetime
    rank_in_scan: int
    composite_score: Decimal
    status: str
    reason: str | None
    score_parts: dict[str, Any]


@dataclass(frozen=True, slots=True)
class NewFinding:
    found_at: datetime
    pass_id: str
    type: str
    severity: str
    subject: str
    db_value: str | None = None
    broker_value: str | None = None
    action: str | None = None
    outcome: str | None = None
    details: dict[str, Any] | None = None


def _columns(row: Any, record_type: type, joined: tuple[str, ...] = ()) -> dict[str, Any]:
    """The record's fields read from the ORM row, except those that come from a join."""
    names = [n for n in record_type.__dataclass_fields__ if n not in joined]
    return {name: getattr(row, name) for name in names}


def security_record(row: Security) -> SecurityRecord:
    return SecurityRecord(**_columns(row, SecurityRecord))


def cycle_record(row: TradingCycle) -> CycleRecord:
    return CycleRecord(**_columns(row, CycleRecord))


def order_record(row: Order, symbol: str) -> OrderRecord:
    return OrderRecord(symbol=symbol, **_columns(row, OrderRecord, joined=("symbol",)))


def position_record(row: Position, symbol: str) -> PositionRecord:
    return PositionRecord(symbol=symbol, **_columns(row, PositionRecord, joined=("symbol",)))


def fill_record(row: Fill) -> FillRecord:
    return FillRecord(**_columns(row, FillRecord))


def scan_result_record(row: ScanResult, symbol: str) -> ScanResultRecord:
    return ScanResultRecord(symbol=symbol, **_columns(row, ScanResultRecord, joined=("symbol",)))


def finding_columns(finding: NewFinding) -> dict[str, Any]:
    return {name: getattr(finding, name) for name in NewFinding.__dataclass_fields__}

