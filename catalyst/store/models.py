"""SQLAlchemy 2 tables for the spec's entities (§1.3, §5) plus fills, raw trade updates and findings."""

from __future__ import annotations

import datetime as dt
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, CheckConstraint, Date, ForeignKey, Index, Integer, MetaData, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from catalyst.store.types import ExactDecimal, UtcDateTime

# Allowed values, mirrored by CHECK constraints. catalyst.domain owns the state machines; the
# store only refuses values that are not states at all.
CYCLE_PHASES = ("idle", "scanning", "evaluating", "trading", "monitoring", "closed", "completed")
CYCLE_STATES = ("active", "halted", "emergency_stopped")
SCAN_STATUSES = ("candidate", "approved", "rejected", "entered")
POSITION_SIDES = ("long", "short")
POSITION_STATUSES = ("pending", "open", "closed", "cancelled", "failed")
ORDER_ROLES = ("entry", "stop_loss", "take_profit", "exit", "flatten", "adopted")
ORDER_SIDES = ("buy", "sell")
ORDER_TYPES = ("market", "limit", "stop", "stop_limit")
ORDER_CLASSES = ("simple", "oco", "bracket", "oto")
ORDER_STATUSES = (
    "created", "submitted", "accepted", "partial_fill",
    "filled", "cancelled", "rejected", "expired", "replaced",
)  # fmt: skip
TERMINAL_ORDER_STATUSES = ("filled", "cancelled", "rejected", "expired", "replaced")
WORKING_ORDER_STATUSES = tuple(s for s in ORDER_STATUSES if s not in TERMINAL_ORDER_STATUSES)
FILL_SOURCES = ("stream", "rest", "activity")

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def one_of(column: str, values: tuple[str, ...]) -> CheckConstraint:
    """CHECK (column IN (...)), named after the column."""
    listed = ", ".join(f"'{v}'" for v in values)
    return CheckConstraint(f"{column} IN ({listed})", name=column)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {Decimal: ExactDecimal(), datetime: UtcDateTime(), dict[str, Any]: JSON()}


class StoreMeta(Base):
    """One row: the random id of this database, part of every client_order_id."""

    __tablename__ = "store_meta"
    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    instance_id: Mapped[str] = mapped_column(String(8))
    created_at: Mapped[datetime]


class Security(Base):
    __tablename__ = "securities"
    security_id: Mapped[int] = mapped_column(primary_key=True)
    symbol: Mapped[str] = mapped_column(String(16), unique=True)
    name: Mapped[str | None] = mapped_column(String(200))
    sector: Mapped[str | None] = mapped_column(String(100))


class TradingCycle(Base):
    __tablename__ = "trading_cycles"
    __table_args__ = (one_of("phase", CYCLE_PHASES), one_of("cycle_state", CYCLE_STATES))
    cycle_id: Mapped[int] = mapped_column(primary_key=True)
    date: Mapped[dt.date] = mapped_column(Date, unique=True)
    phase: Mapped[str] = mapped_column(String(16))
    cycle_state: Mapped[str] = mapped_column(String(24))
    halt_reason: Mapped[str | None] = mapped_column(Text)
    daily_pnl: Mapped[Decimal]
    started_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class ScanResult(Base):
    __tablename__ = "scan_results"
    __table_args__ = (one_of("status", SCAN_STATUSES), Index(None, "cycle_id", "rank_in_scan"))
    scan_id: Mapped[int] = mapped_column(primary_key=True)
    cycle_id: Mapped[int] = mapped_column(ForeignKey("trading_cycles.cycle_id"))
    security_id: Mapped[int] = mapped_column(ForeignKey("securities.security_id"), index=True)
    scanned_at: Mapped[datetime]
    rank_in_scan: Mapped[int]
    composite_score: Mapped[Decimal]
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    score_parts: Mapped[dict[str, Any]]


class Position(Base):
    __tablename__ = "positions"
    __table_args__ = (one_of("side", POSITION_SIDES), one_of("status", POSITION_STATUSES))
    position_id: Mapped[int] = mapped_column(primary_key=True)
    cycle_id: Mapped[int] = mapped_column(ForeignKey("trading_cycles.cycle_id"), index=True)
    security_id: Mapped[int] = mapped_column(ForeignKey("securities.security_id"), index=True)
    side: Mapped[str] = mapped_column(String(8))
    quantity: Mapped[Decimal]
    entry_price: Mapped[Decimal | None]
    exit_price: Mapped[Decimal | None]
    entry_time: Mapped[datetime | None]
    exit_time: Mapped[datetime | None]
    stop_loss: Mapped[Decimal | None]
    take_profit: Mapped[Decimal | None]
    status: Mapped[str] = mapped_column(String(16), index=True)
    realized_pnl: Mapped[Decimal]
    unrealized_pnl: Mapped[Decimal]
    last_price: Mapped[Decimal | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class Order(Base):
    __tablename__ = "orders"
    __table_args__ = (
        one_of("role", ORDER_ROLES),
        one_of("side", ORDER_SIDES),
        one_of("order_type", ORDER_TYPES),
        one_of("order_class", ORDER_CLASSES),
        one_of("status", ORDER_STATUSES),
        Index(None, "status", "updated_at"),  # working orders and §7.1 reconciliation
        # AUTOINCREMENT: an order_id is never reused, so neither is its client_order_id.
        {"sqlite_autoincrement": True},
    )
    order_id: Mapped[int] = mapped_column(primary_key=True)
    client_order_id: Mapped[str] = mapped_column(String(64), unique=True)
    alpaca_order_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    cycle_id: Mapped[int] = mapped_column(ForeignKey("trading_cycles.cycle_id"), index=True)
    security_id: Mapped[int] = mapped_column(ForeignKey("securities.security_id"))
    position_id: Mapped[int | None] = mapped_column(ForeignKey("positions.position_id"), index=True)
    parent_order_id: Mapped[int | None] = mapped_column(ForeignKey("orders.order_id"), index=True)
    role: Mapped[str] = mapped_column(String(16))
    side: Mapped[str] = mapped_column(String(8))
    order_type: Mapped[str] = mapped_column(String(16))
    order_class: Mapped[str] = mapped_column(String(16))
    time_in_force: Mapped[str] = mapped_column(String(8))
    quantity: Mapped[Decimal]
    limit_price: Mapped[Decimal | None]
    stop_price: Mapped[Decimal | None]
    planned_stop_loss: Mapped[Decimal | None]
    planned_take_profit: Mapped[Decimal | None]
    # An entry's: the price risk sized it at, so a restart before its first fill still measures that fill's slippage.
    planned_entry_price: Mapped[Decimal | None]
    status: Mapped[str] = mapped_column(String(16))
    broker_status: Mapped[str | None] = mapped_column(String(32))
    filled_qty: Mapped[Decimal]
    filled_avg_price: Mapped[Decimal | None]
    submitted_at: Mapped[datetime | None]
    filled_at: Mapped[datetime | None]
    cancelled_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    cancel_reason: Mapped[str | None] = mapped_column(Text)
    rejection_reason: Mapped[str | None] = mapped_column(Text)
    replaced_by_order_id: Mapped[int | None] = mapped_column(ForeignKey("orders.order_id"))
    submit_attempts: Mapped[int]
    outcome_unknown: Mapped[bool]


class Fill(Base):
    """One execution, recorded exactly once (execution_id), even for an order we do not know."""

    __tablename__ = "fills"
    __table_args__ = (one_of("side", ORDER_SIDES), one_of("source", FILL_SOURCES))
    fill_id: Mapped[int] = mapped_column(primary_key=True)
    execution_id: Mapped[str] = mapped_column(String(64), unique=True)
    order_id: Mapped[int | None] = mapped_column(ForeignKey("orders.order_id"), index=True)
    alpaca_order_id: Mapped[str | None] = mapped_column(String(64), index=True)
    symbol: Mapped[str] = mapped_column(String(16))
    side: Mapped[str] = mapped_column(String(8))
    qty: Mapped[Decimal]
    price: Mapped[Decimal]
    position_qty: Mapped[Decimal | None]
    occurred_at: Mapped[datetime]
    received_at: Mapped[datetime]
    source: Mapped[str] = mapped_column(String(16))


class TradeUpdate(Base):
    """Every stream/REST update as received; an update for an unknown order is kept, not dropped."""

    __tablename__ = "trade_updates"
    id: Mapped[int] = mapped_column(primary_key=True)
    received_at: Mapped[datetime] = mapped_column(index=True)
    event: Mapped[str] = mapped_column(String(32))
    alpaca_order_id: Mapped[str | None] = mapped_column(String(64), index=True)
    client_order_id: Mapped[str | None] = mapped_column(String(64), index=True)
    execution_id: Mapped[str | None] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]]


class DoctorFinding(Base):
    __tablename__ = "doctor_findings"
    finding_id: Mapped[int] = mapped_column(primary_key=True)
    found_at: Mapped[datetime] = mapped_column(index=True)
    pass_id: Mapped[str] = mapped_column(String(64), index=True)
    type: Mapped[str] = mapped_column(String(64))
    severity: Mapped[str] = mapped_column(String(16))
    subject: Mapped[str] = mapped_column(String(200))
    db_value: Mapped[str | None] = mapped_column(Text)
    broker_value: Mapped[str | None] = mapped_column(Text)
    action: Mapped[str | None] = mapped_column(String(64))
    outcome: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict[str, Any] | None]
