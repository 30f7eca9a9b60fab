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
from actors import position as position_module
from catalyst.domain.orders import OrderStatus
from catalyst.sim.server import EmbeddedExchange
from tests.actors.conftest import START, exchange_at, logged_lines
from tests.actors.test_doctor_heals import position_of, protected
from tests.actors.test_flatten_after_hand_sale import broker_qty, flatten, sold_by_hand

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


def long_protected_with_the_list_caught_up(trading, monkeypatch) -> TradingClient:
    """100 AAPL bought and protected, the entry long past and the lagging list showing them; the settle time after a
    sale outside Catalyst longer than the list's lag. The dashboard's client."""
    monkeypatch.setattr(position_module, "NO_SHARES_WINDOW_S", 0.5)
    monkeypatch.setattr(position_module, "POSITIONS_SETTLE_S", LAG_S + 1.5)
    trading.exchange.set_price("AAPL", "149.95")
    trading.open(trading.plan())
    protected(trading)
    trading.wait_for(lambda: any(p["symbol"] == "AAPL" for p in lagging_positions(trading)), "the list to catch up",
                     timeout=LAG_S + 10)
    by_hand = TradingClient(trading.key, "secret", paper=True, url_override=trading.exchange.base_url)
    return by_hand


def test_a_flatten_just_after_a_hand_sale_waits_for_the_list_to_show_it(trading, monkeypatch):
    """The OCO cancelled and the 100 sold by hand a moment before the flatten: the lagging list still shows them. Read
    at once, it sized an exit of 100, a short sale. The sale's fill (an order Catalyst did not place) puts the read off
    until the list can show it."""
    by_hand = long_protected_with_the_list_caught_up(trading, monkeypatch)
    with logged_lines("actors.position", "WARNING") as warnings:
        sold_by_hand(trading, by_hand, 100)
        assert any(p["symbol"] == "AAPL" for p in lagging_positions(trading))  # the list still shows the 100
        flatten(trading)
        trading.wait_for(lambda: [w for w in warnings if "holds none" in w], "the broker's word: none held",
                         timeout=LAG_S + 15)
    assert not [o for o in trading.all_orders() if o.role == "flatten"]
    assert broker_qty(trading) == 0  # not short
    said = [w for w in warnings if "has no row of" in w]
    assert len(said) == 1 and said[0].startswith("position AAPL#p-1 an order Catalyst has no row of (")
    assert said[0].endswith("filled sell 100 AAPL at the broker: placed by hand, this position's shares may be gone; "
                            "a market exit of it reads the broker's position 3.5 s after that at the earliest")


def test_an_actor_rebuilt_just_after_a_hand_sale_hears_of_it_again_from_the_router(trading, monkeypatch):
    """A review: the position actor crashed (rebuilt from the database) a moment after a hand sale it had heard of.
    The rebuilt actor knew nothing of it, read the lagging list at once and sold the 100 again, short. The router
    tells the actor registering the sale again, with how long ago it heard of it."""
    import pykka

    from actors.position import PositionActor

    by_hand = long_protected_with_the_list_caught_up(trading, monkeypatch)
    (first,) = trading.system.supervisor.live_refs().get()
    with logged_lines("actors.position", "WARNING") as warnings:
        sold_by_hand(trading, by_hand, 100)
        trading.wait_for(lambda: [w for w in warnings if "has no row of" in w], "the sale heard of")
        entry = trading.all_orders()[0]
        bogus = m.Execution(key="bogus:1", qty=Decimal("999"), price=Decimal("1"), at=entry.updated_at)
        first.tell(m.OrderUpdated(order_id=entry.order_id + 1, role="take_profit", status=OrderStatus.FILLED,
                                  filled_qty=Decimal("999"), execution=bogus))  # an exit too large: a crash
        rebuilt = trading.wait_for(lambda: [r for r in pykka.ActorRegistry.get_by_class(PositionActor)
                                            if r.is_alive() and r is not first], "the rebuilt actor")[0]
        rebuilt.tell(m.Flatten(reason="end of day", scheduled=True))
        trading.wait_for(lambda: [w for w in warnings if "holds none" in w], "the broker's word: none held",
                         timeout=LAG_S + 15)
    assert not [o for o in trading.all_orders() if o.role == "flatten"]
    assert broker_qty(trading) == 0  # not short
    assert len([w for w in warnings if "has no row of" in w]) == 2  # the first actor, then the rebuilt one


def test_a_hand_sale_the_stream_missed_is_heard_of_from_the_reconnects_catch_up(trading):
    """The trade stream down while the 100 were sold by hand: the reconnect's catch-up lists that fill (a FILL
    activity names no client_order_id), and the position hears of it as from the stream."""
    trading.exchange.set_price("AAPL", "149.95")
    trading.open(trading.plan())
    protected(trading)
    by_hand = TradingClient(trading.key, "secret", paper=True, url_override=trading.exchange.base_url)
    with logged_lines("actors.position", "WARNING") as warnings:
        trading.exchange.set_faults("drop=1.0")  # the daemon sees none of what follows
        sold_by_hand(trading, by_hand, 100)
        trading.exchange.set_faults("")
        trading.exchange.drop_stream_connections()
        said = trading.wait_for(lambda: [w for w in warnings if "has no row of" in w], "the sale heard of")
    assert len(said) == 1 and "filled sell 100 AAPL at the broker" in said[0]
