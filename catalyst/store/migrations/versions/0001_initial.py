"""Initial schema: cycles, securities, scans, positions, orders, fills, trade updates, findings.

Revision ID: 0001
Revises:
Create Date: 2025-12-28

Written by hand to match catalyst/store/models.py (a test compares them). Decimals are text and
timestamps naive-UTC text on SQLite; the types below are the stored representations.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timezone

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

DECIMAL = sa.String(40)
TIMESTAMP = sa.DateTime(timezone=True)


def _one_of(table: str, column: str, values: tuple[str, ...]) -> sa.CheckConstraint:
    listed = ", ".join(f"'{v}'" for v in values)
    # op.f(): the name is final, whatever naming convention the models' metadata carries.
    return sa.CheckConstraint(f"{column} IN ({listed})", name=op.f(f"ck_{table}_{column}"))


def _col(name: str, type_: sa.types.TypeEngine, nullable: bool = False, **kw: object) -> sa.Column:
    return sa.Column(name, type_, nullable=nullable, **kw)


def upgrade() -> None:
    meta = op.create_table(
        "store_meta",
        _col("id", sa.Integer()),
        _col("instance_id", sa.String(8)),
        _col("created_at", TIMESTAMP),
        sa.PrimaryKeyConstraint("id", name="pk_store_meta"),
        sa.CheckConstraint("id = 1", name=op.f("ck_store_meta_single_row")),
    )
    # The database's identity, random at creation: a wiped database cannot reuse old client order ids.
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    op.bulk_insert(meta, [{"id": 1, "instance_id": secrets.token_hex(4), "created_at": now}])

    op.create_table(
        "securities",
        _col("security_id", sa.Integer()),
        _col("symbol", sa.String(16)),
        _col("name", sa.String(200), True),
        _col("sector", sa.String(100), True),
        sa.PrimaryKeyConstraint("security_id", name="pk_securities"),
        sa.UniqueConstraint("symbol", name="uq_securities_symbol"),
    )
    op.create_table(
        "trading_cycles",
        _col("cycle_id", sa.Integer()),
        _col("date", sa.Date()),
        _col("phase", sa.String(16)),
        _col("cycle_state", sa.String(24)),
        _col("halt_reason", sa.Text(), True),
        _col("daily_pnl", DECIMAL),
        _col("started_at", TIMESTAMP),
        _col("updated_at", TIMESTAMP),
        sa.PrimaryKeyConstraint("cycle_id", name="pk_trading_cycles"),
        sa.UniqueConstraint("date", name="uq_trading_cycles_date"),
        _one_of(
            "trading_cycles", "phase",
            ("idle", "scanning", "evaluating", "trading", "monitoring", "closed", "completed"),
        ),  # fmt: skip
        _one_of("trading_cycles", "cycle_state", ("active", "halted", "emergency_stopped")),
    )
    op.create_table(
        "scan_results",
        _col("scan_id", sa.Integer()),
        _col("cycle_id", sa.Integer()),
        _col("security_id", sa.Integer()),
        _col("scanned_at", TIMESTAMP),
        _col("rank_in_scan", sa.Integer()),
        _col("composite_score", DECIMAL),
        _col("status", sa.String(16)),
        _col("reason", sa.Text(), True),
        _col("score_parts", sa.JSON()),
        sa.PrimaryKeyConstraint("scan_id", name="pk_scan_results"),
        sa.ForeignKeyConstraint(
            ["cycle_id"], ["trading_cycles.cycle_id"], name="fk_scan_results_cycle_id_trading_cycles"
        ),
        sa.ForeignKeyConstraint(
            ["security_id"], ["securities.security_id"], name="fk_scan_results_security_id_securities"
        ),
        _one_of("scan_results", "status", ("candidate", "approved", "rejected", "entered")),
    )
    op.create_index("ix_scan_results_cycle_id_rank_in_scan", "scan_results", ["cycle_id", "rank_in_scan"])
    op.create_index("ix_scan_results_security_id", "scan_results", ["security_id"])

    op.create_table(
        "positions",
        _col("position_id", sa.Integer()),
        _col("cycle_id", sa.Integer()),
        _col("security_id", sa.Integer()),
        _col("side", sa.String(8)),
        _col("quantity", DECIMAL),
        _col("entry_price", DECIMAL, True),
        _col("exit_price", DECIMAL, True),
        _col("entry_time", TIMESTAMP, True),
        _col("exit_time", TIMESTAMP, True),
        _col("stop_loss", DECIMAL, True),
        _col("take_profit", DECIMAL, True),
        _col("status", sa.String(16)),
        _col("realized_pnl", DECIMAL),
        _col("unrealized_pnl", DECIMAL),
        _col("last_price", DECIMAL, True),
        _col("created_at", TIMESTAMP),
        _col("updated_at", TIMESTAMP),
        sa.PrimaryKeyConstraint("position_id", name="pk_positions"),
        sa.ForeignKeyConstraint(
            ["cycle_id"], ["trading_cycles.cycle_id"], name="fk_positions_cycle_id_trading_cycles"
        ),
        sa.ForeignKeyConstraint(
            ["security_id"], ["securities.security_id"], name="fk_positions_security_id_securities"
        ),
        _one_of("positions", "side", ("long", "short")),
        _one_of("positions", "status", ("pending", "open", "closed", "cancelled", "failed")),
    )
    op.create_index("ix_positions_cycle_id", "positions", ["cycle_id"])
    op.create_index("ix_positions_security_id", "positions", ["security_id"])
    op.create_index("ix_positions_status", "positions", ["status"])

    op.create_table(
        "orders",
        _col("order_id", sa.Integer(), primary_key=True),
        _col("client_order_id", sa.String(64)),
        _col("alpaca_order_id", sa.String(64), True),
        _col("cycle_id", sa.Integer()),
        _col("security_id", sa.Integer()),
        _col("position_id", sa.Integer(), True),
        _col("parent_order_id", sa.Integer(), True),
        _col("role", sa.String(16)),
        _col("side", sa.String(8)),
        _col("order_type", sa.String(16)),
        _col("order_class", sa.String(16)),
        _col("time_in_force", sa.String(8)),
        _col("quantity", DECIMAL),
        _col("limit_price", DECIMAL, True),
        _col("stop_price", DECIMAL, True),
        _col("planned_stop_loss", DECIMAL, True),
        _col("planned_take_profit", DECIMAL, True),
        _col("status", sa.String(16)),
        _col("broker_status", sa.String(32), True),
        _col("filled_qty", DECIMAL),
        _col("filled_avg_price", DECIMAL, True),
        _col("submitted_at", TIMESTAMP, True),
        _col("filled_at", TIMESTAMP, True),
        _col("cancelled_at", TIMESTAMP, True),
        _col("created_at", TIMESTAMP),
        _col("updated_at", TIMESTAMP),
        _col("cancel_reason", sa.Text(), True),
        _col("rejection_reason", sa.Text(), True),
        _col("replaced_by_order_id", sa.Integer(), True),
        _col("submit_attempts", sa.Integer()),
        _col("outcome_unknown", sa.Boolean()),
        sa.UniqueConstraint("client_order_id", name="uq_orders_client_order_id"),
        sa.UniqueConstraint("alpaca_order_id", name="uq_orders_alpaca_order_id"),
        sa.ForeignKeyConstraint(
            ["cycle_id"], ["trading_cycles.cycle_id"], name="fk_orders_cycle_id_trading_cycles"
        ),
        sa.ForeignKeyConstraint(
            ["security_id"], ["securities.security_id"], name="fk_orders_security_id_securities"
        ),
        sa.ForeignKeyConstraint(
            ["position_id"], ["positions.position_id"], name="fk_orders_position_id_positions"
        ),
        sa.ForeignKeyConstraint(
            ["parent_order_id"], ["orders.order_id"], name="fk_orders_parent_order_id_orders"
        ),
        sa.ForeignKeyConstraint(
            ["replaced_by_order_id"], ["orders.order_id"], name="fk_orders_replaced_by_order_id_orders"
        ),
        _one_of("orders", "role", ("entry", "stop_loss", "take_profit", "exit", "flatten", "adopted")),
        _one_of("orders", "side", ("buy", "sell")),
        _one_of("orders", "order_type", ("market", "limit", "stop", "stop_limit")),
        _one_of("orders", "order_class", ("simple", "oco", "bracket", "oto")),
        _one_of(
            "orders",
            "status",
            (
                "created", "submitted", "accepted", "partial_fill",
                "filled", "cancelled", "rejected", "expired", "replaced",
            ),  # fmt: skip
        ),
        # AUTOINCREMENT: an order_id is never reused, so neither is its client_order_id.
        sqlite_autoincrement=True,
    )
    op.create_index("ix_orders_cycle_id", "orders", ["cycle_id"])
    op.create_index("ix_orders_position_id", "orders", ["position_id"])
    op.create_index("ix_orders_parent_order_id", "orders", ["parent_order_id"])
    op.create_index("ix_orders_status_updated_at", "orders", ["status", "updated_at"])

    op.create_table(
        "fills",
        _col("fill_id", sa.Integer()),
        _col("execution_id", sa.String(64)),
        _col("order_id", sa.Integer(), True),
        _col("alpaca_order_id", sa.String(64), True),
        _col("symbol", sa.String(16)),
        _col("side", sa.String(8)),
        _col("qty", DECIMAL),
        _col("price", DECIMAL),
        _col("position_qty", DECIMAL, True),
        _col("occurred_at", TIMESTAMP),
        _col("received_at", TIMESTAMP),
        _col("source", sa.String(16)),
        sa.PrimaryKeyConstraint("fill_id", name="pk_fills"),
        sa.UniqueConstraint("execution_id", name="uq_fills_execution_id"),
        sa.ForeignKeyConstraint(["order_id"], ["orders.order_id"], name="fk_fills_order_id_orders"),
        _one_of("fills", "side", ("buy", "sell")),
        _one_of("fills", "source", ("stream", "rest", "activity")),
    )
    op.create_index("ix_fills_order_id", "fills", ["order_id"])
    op.create_index("ix_fills_alpaca_order_id", "fills", ["alpaca_order_id"])

    op.create_table(
        "trade_updates",
        _col("id", sa.Integer()),
        _col("received_at", TIMESTAMP),
        _col("event", sa.String(32)),
        _col("alpaca_order_id", sa.String(64), True),
        _col("client_order_id", sa.String(64), True),
        _col("execution_id", sa.String(64), True),
        _col("payload", sa.JSON()),
        sa.PrimaryKeyConstraint("id", name="pk_trade_updates"),
    )
    op.create_index("ix_trade_updates_received_at", "trade_updates", ["received_at"])
    op.create_index("ix_trade_updates_alpaca_order_id", "trade_updates", ["alpaca_order_id"])
    op.create_index("ix_trade_updates_client_order_id", "trade_updates", ["client_order_id"])

    op.create_table(
        "doctor_findings",
        _col("finding_id", sa.Integer()),
        _col("found_at", TIMESTAMP),
        _col("pass_id", sa.String(64)),
        _col("type", sa.String(64)),
        _col("severity", sa.String(16)),
        _col("subject", sa.String(200)),
        _col("db_value", sa.Text(), True),
        _col("broker_value", sa.Text(), True),
        _col("action", sa.String(64), True),
        _col("outcome", sa.Text(), True),
        _col("details", sa.JSON(), True),
        sa.PrimaryKeyConstraint("finding_id", name="pk_doctor_findings"),
    )
    op.create_index("ix_doctor_findings_found_at", "doctor_findings", ["found_at"])
    op.create_index("ix_doctor_findings_pass_id", "doctor_findings", ["pass_id"])


def downgrade() -> None:
    for table in ("doctor_findings", "trade_updates", "fills", "orders", "positions", "scan_results"):
        op.drop_table(table)
    for table in ("trading_cycles", "securities", "store_meta"):
        op.drop_table(table)
