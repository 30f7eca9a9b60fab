"""A triggered OCO stop reported as Alpaca was seen to report it (alpaca-py #198): the take-profit ends `replaced` at
the trigger, and the stop fills after, here over minutes in a thin market (the emulator's
`trigger_replaces_take_profit`, an order taking a tenth of a minute's volume). A review: the position took the stop
for a lone leg and cancelled it 2 s after the take-profit ended, taking off the one exit in flight. The whole actor
system against the emulator (alpaca-py, SQLite on disk)."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Iterator

import pytest

from actors import position as position_module
from catalyst.sim.server import EmbeddedExchange
from tests.actors.conftest import START, exchange_at, logged_lines
from tests.actors.test_doctor_heals import position_of, protected


@pytest.fixture
def exchange() -> Iterator[EmbeddedExchange]:
    """The conftest's `trading` runs against this one."""
    with exchange_at(START, trigger_replaces_take_profit=True, participation=Decimal("0.1")) as ex:
        yield ex


def broker_orders(trading, **match) -> list[dict]:
    return [o for o in trading.broker_view()["orders"]
            if o["symbol"] == "AAPL" and all(o[k] == v for k, v in match.items())]


def test_a_stop_filling_over_minutes_after_its_take_profit_was_replaced_is_never_cancelled(trading, monkeypatch):
    monkeypatch.setattr(position_module, "LONE_LEG_GRACE_S", 0.3)
    monkeypatch.setattr(position_module, "TRIGGERED_STOP_LOOKS_S", (0.3, 0.3, 10.0))
    trading.exchange.set_price("AAPL", "149.95")
    trading.open(trading.plan())
    protected(trading)

    with logged_lines("actors.position", "WARNING") as warnings:
        trading.trade("AAPL", "146.00", volume=300)  # through the stop (147): 30 of its 100 sold this minute
        trading.wait_for(lambda: broker_orders(trading, type="limit", status="replaced"), "the take-profit replaced")
        trading.wait_for(lambda: (p := position_of(trading)) and p.quantity == Decimal(70), "the stop's first piece")
        time.sleep(1.5)  # past the lone-leg grace and two looks at the broker
        (stop,) = broker_orders(trading, type="stop")
        assert stop["status"] == "partially_filled" and stop["filled_qty"] == "30"  # still working: not cancelled
        assert not [o for o in trading.all_orders() if o.role == "flatten"]
        assert [o.status for o in trading.all_orders() if o.role == "stop_loss"] == ["partial_fill"]

        trading.trade("AAPL", "146.00", volume=1000)  # the other 70
        trading.wait_for(lambda: (p := position_of(trading)) and p.status == "closed", "the position closed")

    assert trading.broker_view()["positions"] == []
    assert [(o.role, o.status) for o in trading.all_orders()] == [
        ("entry", "filled"), ("take_profit", "replaced"), ("stop_loss", "filled")]  # nothing cancelled, nothing new
    assert any("as Alpaca reports a triggered stop: kept, not cancelled" in line for line in warnings), warnings
