"""Someone cancels a position's OCO at the broker (by hand in Alpaca's dashboard, another program on the key): the
position protects its shares again at once, and says so in a WARNING naming both legs, once, so whoever took the stop
off learns why it is back. A take-profit's fill (the broker cancelling its stop leg) and a flatten's own cancels say
nothing of the kind. Real actors, alpaca-py against the emulator on loopback, SQLite on disk."""

from __future__ import annotations

from decimal import Decimal
from typing import Iterator

import pytest
from alpaca.trading.client import TradingClient

from actors import messages as m
from tests.actors.conftest import logged_lines
from tests.actors.test_trade_scenarios import position_of, protected_qty

ELSEWHERE = "were cancelled at the broker, not by Catalyst"


@pytest.fixture
def warnings() -> Iterator[list[str]]:
    with logged_lines("actors.position", "WARNING") as said:
        yield said


def legs(trading) -> list:
    return [o for o in trading.all_orders() if o.role in ("take_profit", "stop_loss")]


def open_protected(trading):
    trading.exchange.set_price("AAPL", "149.95")
    actor = trading.open(trading.plan())
    trading.wait_for(lambda: protected_qty(trading) == Decimal("100"), "protection at the broker")
    return actor


def test_an_oco_cancelled_at_the_broker_is_placed_again_and_said_once(trading, warnings):
    open_protected(trading)
    take_profit = next(o for o in legs(trading) if o.role == "take_profit")
    by_hand = TradingClient("k", "s", url_override=trading.exchange.base_url)
    by_hand._api_key = trading.key  # the same account, as the dashboard would be
    by_hand.cancel_order_by_id(take_profit.alpaca_order_id)  # an OCO travels as its take-profit: both legs go

    trading.wait_for(lambda: len(legs(trading)) == 4 and protected_qty(trading) == Decimal("100"),
                     "a new OCO for the 100 shares")
    said = trading.wait_for(lambda: [w for w in warnings if ELSEWHERE in w], "the WARNING")
    assert said == [f"position AAPL#p-1 its stop o-3 and take-profit o-2 {ELSEWHERE} (by hand, or before a restart): "
                    f"protecting the shares again; to manage a position by hand, stop Catalyst first"]
    assert [(o.role, o.status) for o in legs(trading)][:2] == [("take_profit", "cancelled"), ("stop_loss", "cancelled")]
    stops = [o for o in trading.broker_view()["orders"] if o["type"] == "stop" and o["status"] == "held"]
    assert [o["qty"] for o in stops] == ["100"]
    assert position_of(trading).status == "open"


def test_a_take_profit_fill_and_a_flatten_say_nothing_of_it(trading, warnings):
    open_protected(trading)
    trading.trade("AAPL", "156.00")  # through the 155.00 take-profit: the broker cancels the stop leg
    trading.wait_for(lambda: position_of(trading).status == "closed", "the take-profit's fill")

    trading.exchange.set_price("MSFT", "50.00")
    second = trading.open(trading.plan(symbol="MSFT", stop="47.00", target="55.00"))
    trading.wait_for(lambda: any(o.role == "stop_loss" and o.status in ("submitted", "accepted")
                                 for o in trading.all_orders("MSFT")), "MSFT protected")
    second.tell(m.Flatten(reason="test"))
    trading.wait_for(lambda: any(o.role == "flatten" and o.status == "filled" for o in trading.all_orders("MSFT")),
                     "the flatten's exit filled")
    assert not [w for w in warnings if ELSEWHERE in w]


def test_an_oco_retired_before_it_reached_the_broker_is_not_said_cancelled_there(tmp_path, recording_actor, warnings):
    """Legs the router ends as cancelled without the broker ever having them (a submit found never to have arrived,
    retired) were not taken off by anyone: protected again without the line. Message by message, the router a
    recorder (tests/actors/test_position_flatten.py's rig)."""
    from catalyst.domain.orders import OrderStatus
    from tests.actors.test_position_flatten import Rig, wait_for

    rig = Rig(tmp_path, recording_actor)
    try:
        first = rig.fill_entry()
        rig.update(first.take_profit.order_id, "take_profit", OrderStatus.CANCELLED)
        rig.update(first.stop_loss.order_id, "stop_loss", OrderStatus.CANCELLED)
        again = wait_for(lambda: rig.told(m.SubmitProtection)[1:], "the shares protected again")
        rig.settled()
    finally:
        rig.stop()
    assert again[0].stop_loss.quantity == Decimal(100)
    assert not [w for w in warnings if ELSEWHERE in w]


def test_a_flattens_cancels_confirmed_to_the_actor_rebuilt_after_a_crash_are_not_said_cancelled_elsewhere(
        trading, warnings):
    """The flatten asked for the OCO's cancel; its actor crashed before the cancel events came (lost here, brought by
    a reconnect's catch-up). The rebuilt actor never asked for that cancel, but Catalyst did: no WARNING blaming the
    dashboard. (The shares are protected again: the flatten is the cycle's to ask again, in market hours.)"""
    import pykka

    from actors.position import PositionActor
    from catalyst.domain.orders import OrderStatus

    actor = open_protected(trading)
    trading.exchange.set_faults("drop=1.0")  # the cancel events are lost
    entry = trading.all_orders()[0]
    bogus = m.Execution(key="bogus:1", qty=Decimal("999"), price=Decimal("1"), at=entry.updated_at)
    actor.tell(m.Flatten(reason="test"))  # the OCO's cancel asked ...
    actor.tell(m.OrderUpdated(order_id=entry.order_id + 1, role="take_profit", status=OrderStatus.FILLED,
                              filled_qty=Decimal("999"), execution=bogus))  # ... then a crash (an exit too large)
    trading.wait_for(lambda: [r for r in pykka.ActorRegistry.get_by_class(PositionActor)
                              if r.is_alive() and r is not actor], "the rebuilt actor")
    trading.exchange.set_faults("")
    trading.exchange.drop_stream_connections()  # the catch-up brings the cancels, to the rebuilt actor

    trading.wait_for(lambda: [(o.role, o.status) for o in legs(trading)][:2]
                     == [("take_profit", "cancelled"), ("stop_loss", "cancelled")], "the cancels recorded")
    trading.wait_for(lambda: protected_qty(trading) == Decimal("100"), "the shares protected again")
    assert not [w for w in warnings if ELSEWHERE in w]
