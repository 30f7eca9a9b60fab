"""How many positions an account under Alpaca's pattern day trader protection may still open today."""

from __future__ import annotations

from decimal import Decimal

from catalyst.domain import risk
from catalyst.domain.positions import PositionSide


def test_at_25000_or_more_at_the_last_close_or_unreported_there_is_no_limit():
    assert risk.day_trades_left(Decimal("25000"), 7, 2) is None
    assert risk.day_trades_left(None, 3, 0) is None
    assert risk.day_trades_left(Decimal("1000"), None, 0) is None


def test_under_25000_the_day_trades_made_and_the_positions_open_today_use_up_three():
    assert risk.day_trades_left(Decimal("24999.99"), 0, 0) == 3
    assert risk.day_trades_left(Decimal("24999.99"), 2, 0) == 1
    assert risk.day_trades_left(Decimal("24999.99"), 1, 1) == 1
    assert risk.day_trades_left(Decimal("24999.99"), 5, 0) == 0  # never negative


def test_approval_stops_at_the_limit_and_names_the_rule():
    candidates = [risk.Candidate(symbol=s, entry=Decimal("50"), stop=Decimal("49"), side=PositionSide.LONG)
                  for s in ("AAPL", "MSFT", "TSLA")]
    account = risk.Account(equity=Decimal("20000"), buying_power=Decimal("80000"), day_trades_left=1)
    decisions = risk.approve(candidates, risk.Book(), account, risk.RiskSettings())
    assert [d.approved for d in decisions] == [True, False, False]
    assert decisions[1].reason == risk.RejectionReason.DAY_TRADES.value
    unlimited = risk.approve(candidates, risk.Book(), risk.Account(equity=Decimal("20000"),
                                                                   buying_power=Decimal("80000")), risk.RiskSettings())
    assert all(d.approved for d in unlimited)
