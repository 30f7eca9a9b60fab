"""An entry order keeps the price risk sized it at (orders.planned_entry_price).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-05

Without it, a daemon restarted between an entry's submit and its first fill rebuilt the plan with its stop and target
but not the price they were measured from, so a fill that paid worse than sized kept the planned stop: more than the
budget at risk. NULL for the rows written before it (and for every order but an entry): those fills keep the planned
stop and target, as they did.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

DECIMAL = sa.String(40)  # as 0001: decimals are text on SQLite


def upgrade() -> None:
    op.add_column("orders", sa.Column("planned_entry_price", DECIMAL, nullable=True))


def downgrade() -> None:
    # SQLite's own DROP COLUMN (3.35+), not alembic's batch copy of the table: the copy is refused under the foreign
    # keys every connection enables as soon as a fill or a child order points at an order.
    op.execute("ALTER TABLE orders DROP COLUMN planned_entry_price")
