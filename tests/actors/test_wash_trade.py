"""Alpaca refuses an order while one of the other side works in the symbol ("potential wash trade detected. use
complex orders"). A partly filled entry still working is such an order for the OCO protecting its first shares.

The whole actor system against the emulator with its wash-trade check on (alpaca-py, SQLite on disk). Before, the
refused OCO was taken for a stop already through the market: the position flattened, cancelling the entry and
selling its shares at market. Now the entry's rest is cancelled and the shares it bought are protected.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Iterator

import pytest

from tests.actors.conftest import START, Trading, exchange_at, logged_lines
from tests.actors.test_trade_scenarios import broker_working_stop_qty, legs, position_of, protected_qty


@pytest.fixture
def trading(tmp_path: Path) -> Iterator[Trading]:
    with exchange_at(START, wash_trade_check=True) as exchange:
        harness = Trading(exchange, f"sqlite+aiosqlite:///{tmp_path / 'catalyst.db'}").start()
        yield harness
        harness.stop()


def test_a_partly_filled_entry_whose_oco_is_refused_as_a_wash_trade_is_cut_short_and_its_shares_protected(
        trading: Trading) -> None:
    with logged_lines("actors.position", "INFO") as lines:
        trading.exchange.set_price("AAPL", "50.00", volume=800)  # 25% participation: 200 of the 500 a minute
        trading.open(trading.plan(qty="500", stop="48.00", target="55.00"))
        trading.wait_for(lambda: protected_qty(trading) == Decimal("200"), "the 200 bought to be protected")
        for _ in range(2):  # minutes in which the entry, were it still working, would fill more
            trading.trade("AAPL", "50.00", volume=800)

    entry = next(o for o in trading.all_orders() if o.role == "entry")
    position = position_of(trading)
    refused = [o for o in legs(trading) if o.status == "rejected"]
    assert entry.status == "cancelled" and entry.filled_qty == Decimal("200")
    assert position.status == "open" and position.quantity == Decimal("200")
    assert broker_working_stop_qty(trading) == Decimal("200")
    assert refused and all("wash trade" in (o.rejection_reason or "") for o in refused)
    assert not [o for o in trading.all_orders() if o.role == "flatten"]  # no market exit
    assert Decimal(next(p["qty"] for p in trading.broker_view()["positions"] if p["symbol"] == "AAPL")) == 200
    said = [line for line in lines if "potential wash trade" in line]
    assert len(said) == 1 and "cancelling the entry's rest, then protecting its 200 shares" in said[0]
