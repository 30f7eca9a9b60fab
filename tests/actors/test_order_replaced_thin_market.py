"""Orders replaced at the broker in a thin market (an order takes a tenth of a minute's volume, so exits fill in
pieces), with triggered stops reported as Alpaca was seen to (the take-profit `replaced` by no order, alpaca-py #198).
Found by a review of following replacements (tests/actors/test_order_replaced_at_broker.py). The whole actor system
through alpaca-py against the emulator on loopback, SQLite on disk."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Iterator

import pytest
from alpaca.trading.requests import ReplaceOrderRequest

from actors import messages as m
from actors import position as position_module
from catalyst.sim.server import EmbeddedExchange
from tests.actors.conftest import START, exchange_at
from tests.actors.test_doctor_heals import position_of, protected
from tests.actors.test_order_replaced_at_broker import by_hand, leg
from tests.actors.test_protection_cancelled_elsewhere import legs, open_protected


@pytest.fixture
def exchange() -> Iterator[EmbeddedExchange]:
    """The conftest's `trading` runs against this one."""
    with exchange_at(START, trigger_replaces_take_profit=True, participation=Decimal("0.1")) as ex:
        yield ex


def test_a_stop_moved_after_its_take_profit_sold_some_protects_the_rest_once(trading, monkeypatch):
    """The take-profit sells 30 of 100, the stop (70 left) is moved by hand: the position counted 40 under the pair
    (the take-profit's 30 taken off twice) and sent OCO after OCO for the other 30, each refused."""
    monkeypatch.setattr(position_module, "LONE_LEG_GRACE_S", 0.3)
    actor = open_protected(trading)
    trading.trade("AAPL", "155.50", volume=300)  # through the 155.00 target: 30 of its 100 this minute
    trading.wait_for(lambda: (p := position_of(trading)) and p.quantity == Decimal(70), "the target's first piece")
    by_hand(trading).replace_order_by_id(leg(trading, "stop_loss").alpaca_order_id, ReplaceOrderRequest(stop_price=146))
    trading.wait_for(lambda: len(legs(trading)) == 3, "the new stop's row")
    time.sleep(0.8)  # past the lone-leg grace
    state = actor.proxy().state().get()
    assert state["qty"] == "70" and state["protected"] == "70", state
    assert len(legs(trading)) == 3  # no OCO sent for shares the pair covers


def test_a_rebuilt_position_whose_stop_was_triggered_flattens_at_once(trading, monkeypatch):
    """The take-profit `replaced` by no order (the stop triggered, 30 of 100 sold) is no leg to wait for after a
    restart: the router answers the rebuilt position's look at it, and the flatten's exit goes as soon as the stop's
    cancel is in (a review: it waited out the whole wait with 70 shares under neither a stop nor an exit)."""
    monkeypatch.setattr(position_module, "LONE_LEG_GRACE_S", 0.3)
    monkeypatch.setattr(position_module, "TRIGGERED_STOP_LOOKS_S", (0.3, 0.3, 10.0))
    trading.exchange.set_price("AAPL", "149.95")
    trading.open(trading.plan())
    protected(trading)
    trading.trade("AAPL", "146.00", volume=300)  # through the stop: the take-profit `replaced`, 30 sold this minute
    trading.wait_for(lambda: (p := position_of(trading)) and p.quantity == Decimal(70), "the stop's first piece")
    trading.stop()
    trading.start()
    (actor,) = trading.wait_for(lambda: trading.system.supervisor.live_refs().get(), "the position rebuilt")
    asked = time.monotonic()
    actor.tell(m.Flatten(reason="end of day"))
    trading.wait_for(lambda: [o for o in trading.all_orders() if o.role == "flatten"], "the market exit", timeout=20)
    assert time.monotonic() - asked < 3.0
