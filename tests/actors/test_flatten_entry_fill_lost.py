"""A flatten while the entry's last fill event is lost: every share the broker bought is sold, none left bare.

Found by a review and reproduced end to end: the entry's rest filled at the broker, its stream event lost; the flatten
cancelled the entry ("already filled", read by REST) and its OCO, then sent a market exit of the shares recorded. The
exit closed the position and its actor stopped; the router's catch-up then recorded the lost execution for an actor
that was gone, and the broker kept those shares with no stop, the database saying closed.
"""

from __future__ import annotations

import time
from decimal import Decimal

import pykka

from actors import messages as m
from actors.position import PositionActor
from tests.actors.test_late_entry_shares import bought_500_with_300_unrecorded
from tests.actors.test_trade_scenarios import broker_working_stop_qty, position_of


def test_a_flatten_while_the_entrys_last_fill_event_is_lost_leaves_no_share_behind(trading):
    bought_500_with_300_unrecorded(trading)
    (ref,) = [r for r in pykka.ActorRegistry.get_by_class(PositionActor) if r.is_alive()]

    ref.tell(m.Flatten(reason="emergency: test"))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not ((p := position_of(trading)) and p.status == "closed"
                                               and not trading.broker_view()["positions"]):
        trading.trade("AAPL", "50.00", volume=2000)  # minutes go by: the market exit can fill
        time.sleep(0.5)

    assert trading.broker_view()["positions"] == []  # nothing left at the broker, bare or not
    position = position_of(trading)
    assert (position.status, position.quantity) == ("closed", Decimal(0))
    exits = [o for o in trading.all_orders() if o.role == "flatten"]
    assert [(o.quantity, o.filled_qty) for o in exits] == [(Decimal(500), Decimal(500))]  # one exit, every share
    assert broker_working_stop_qty(trading) == 0
