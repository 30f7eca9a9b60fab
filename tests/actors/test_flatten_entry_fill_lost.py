"""A flatten while the entry's last fill event is lost: every share the broker bought is sold, none left bare.

Found by a review and reproduced end to end: the entry's rest filled at the broker, its stream event lost; the flatten
cancelled the entry ("already filled", read by REST) and its OCO, then sent a market exit of the shares recorded. The
exit closed the position and its actor stopped; the router's catch-up then recorded the lost execution for an actor
that was gone, and the broker kept those shares with no stop, the database saying closed.
"""

from __future__ import annotations

import time
from decimal import Decimal

from actors import messages as m
from tests.actors.test_trade_scenarios import broker_working_stop_qty, position_of, protected_qty


def test_a_flatten_while_the_entrys_last_fill_event_is_lost_leaves_no_share_behind(trading):
    trading.exchange.set_price("AAPL", "50.00", volume=800)  # 200 shares a minute may trade
    ref = trading.open(trading.plan(qty="500", stop="48.00", target="55.00"))
    trading.wait_for(lambda: (p := position_of(trading)) is not None and p.quantity == Decimal("200"),
                     "the entry's first 200")
    trading.wait_for(lambda: protected_qty(trading) == Decimal("200"), "their OCO")
    trading.exchange.set_faults("drop=1.0")
    trading.trade("AAPL", "50.00", volume=2000)  # the entry's other 300 fill; their event is lost
    trading.exchange.set_faults("")

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
