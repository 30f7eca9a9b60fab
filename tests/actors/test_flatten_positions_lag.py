"""A flatten right after the entry's fill, against a broker whose positions list lags its orders (Alpaca's can for
several seconds, ALPACA.md §7; the emulator's `positions_lag_s`). The market exit is sized by the broker's position
(tests/actors/test_flatten_after_hand_sale.py): a list that does not show the shares bought a moment ago is read
again, never taken for shares sold outside Catalyst, and the exit sells all of them. The whole actor system against
the emulator (alpaca-py, SQLite on disk)."""

from __future__ import annotations

from decimal import Decimal
from typing import Iterator

import pytest
from alpaca.trading.client import TradingClient

from actors import messages as m
from catalyst.sim.server import EmbeddedExchange
from tests.actors.conftest import START, exchange_at, logged_lines
from tests.actors.test_doctor_heals import position_of, protected
from tests.actors.test_flatten_after_hand_sale import broker_qty, flatten

LAG_S = 2.0


@pytest.fixture
def exchange() -> Iterator[EmbeddedExchange]:
    """The conftest's `trading` runs against this one."""
    with exchange_at(START, positions_lag_s=LAG_S) as ex:
        yield ex


def test_a_flatten_right_after_the_fill_waits_for_the_positions_list_and_sells_every_share(trading):
    trading.exchange.set_price("AAPL", "149.95")
    trading.open(trading.plan())
    protected(trading)  # filled and protected a moment ago: the lagging list shows none yet
    with logged_lines("actors.position", "WARNING") as warnings:
        flatten(trading)
        closed = trading.wait_for(lambda: (p := position_of(trading)) and p.status == "closed" and p, "the flatten")
    assert [(o.quantity, o.status) for o in trading.all_orders() if o.role == "flatten"] == [(Decimal(100), "filled")]
    assert closed.quantity == 0 and broker_qty(trading) == 0
    assert any("its positions can lag a fill: asking again" in w for w in warnings), warnings
    assert not [w for w in warnings if "outside Catalyst" in w or "holds none" in w]


def test_an_emergency_flatten_long_after_the_fill_goes_at_once(trading):
    trading.exchange.set_price("AAPL", "149.95")
    trading.open(trading.plan())
    protected(trading)
    trading.wait_for(lambda: any(p["symbol"] == "AAPL" for p in lagging_positions(trading)), "the list to catch up",
                     timeout=LAG_S + 10)
    with logged_lines("actors.position", "WARNING") as warnings:
        (actor,) = trading.system.supervisor.live_refs().get()
        actor.tell(m.Flatten(reason="emergency: operator"))
        trading.wait_for(lambda: (p := position_of(trading)) and p.status == "closed", "the flatten")
    assert not [w for w in warnings if "lag" in w]  # read once, the shares there
    assert broker_qty(trading) == 0


def lagging_positions(trading) -> list:
    """The broker's positions as a client reads them (lagged), not the exchange's own view."""
    client = TradingClient(trading.key, "secret", paper=True, url_override=trading.exchange.base_url)
    return [{"symbol": p.symbol} for p in client.get_all_positions()]
