"""Realized P&L at the close is exactly what the fills say, whatever order a rebuild replays them in, and a position
kept overnight adds up to it over its days (cases from a review of catalyst.domain.positions' exact close)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal as D

from catalyst.domain.positions import DayPosition, OrderSide, Position, PositionSide, realized_in_day, replay_fills

B, S = OrderSide.BUY, OrderSide.SELL


def test_time_order_and_entries_first_give_the_same_exact_figure_at_the_close():
    fills = [(B, D(100), D("50")), (S, D(100), D("49.5")), (B, D(33), D("49.98")), (B, D(33), D("49.97")),
             (S, D(66), D("49.99"))]
    first = replay_fills(Position("X", PositionSide.LONG), fills)
    exact = sum((q * p * (1 if s is S else -1) for s, q, p in fills), D(0))
    assert first.status == "closed" and first.realized_pnl == exact


def test_a_position_kept_overnight_sums_to_the_exact_figure_over_its_days():
    t0 = datetime(2024, 3, 4, 15, tzinfo=timezone.utc)
    day1, day2 = (t0 - timedelta(hours=6), t0 + timedelta(hours=6)), (t0 + timedelta(hours=18), t0 + timedelta(hours=30))
    fills = ((t0, "buy", D(3), D("50")), (t0, "buy", D(3), D("49.98")), (t0, "buy", D(3), D("49.97")),
             (t0 + timedelta(minutes=5), "sell", D(4), D("49.00")), (t0 + timedelta(hours=20), "sell", D(5), D("48.00")))
    closed = replay_fills(Position("X", PositionSide.LONG), [(OrderSide(s), q, p) for _, s, q, p in fills])
    row = DayPosition(1, "long", "closed", closed.realized_pnl, D(0), t0 + timedelta(hours=20), fills)
    total = realized_in_day(row, 1, day1) + realized_in_day(row, 2, day2)
    assert total == closed.realized_pnl == D("-13.85")
