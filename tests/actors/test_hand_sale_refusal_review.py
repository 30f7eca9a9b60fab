"""A review of the protection capped at a refusal a hand sale explains (actors/position.py `_cap_at_refusal`) and of a
hand order's end freeing shares for a stop (`_on_order_outside_ended`): end to end against the emulator with the
shipped NO_SHARES_WINDOW_S unless a set-up says otherwise; the broker's view asserted."""

from __future__ import annotations

import time
from decimal import Decimal

from alpaca.trading.enums import OrderSide
from alpaca.trading.requests import ReplaceOrderRequest

from actors import position as position_module
from catalyst.domain.positions import PositionSide
from tests.actors.conftest import logged_lines
from tests.actors.test_capped_protection_review import legs_acknowledged
from tests.actors.test_doctor_heals import (broker_working_stop_qty, by_hand, open_protected,  # noqa: F401
                                            position_of, protected, sell_part_by_hand, trading, working_stop_ids)
from tests.actors.test_heal_review import (broker_qty, hand_limit_sell, hand_market,  # noqa: F401
                                           protected_then_40_sold_by_hand)

# NO_SHARES_WINDOW_S once the set-up below is done: the entry's fill further back than that (order entry's lag behind
# it over), and BEFORE_THE_WINDOW_S well inside it.
WINDOW_AFTER_SET_UP_S = 6.0
BEFORE_THE_WINDOW_S = 3.0


def capped_beside_hand_limits(trading, by_hand, monkeypatch, *sizes: int) -> list:
    """AAPL 100 protected; the trader's limit sells of `sizes` at 170 work (nothing sold): past the window (patched
    short for the set-up) the position reads the broker and protects the rest. Then the window is
    WINDOW_AFTER_SET_UP_S, and the entry filled longer ago than that."""
    monkeypatch.setattr(position_module, "NO_SHARES_WINDOW_S", 0.5)
    open_protected(trading)
    filled_by = time.monotonic()
    trading.exchange.set_price("AAPL", "151.00")
    hands = [hand_limit_sell(trading, by_hand, size, 170) for size in sizes]
    protected(trading, str(100 - sum(sizes)))
    legs_acknowledged(trading)
    time.sleep(max(filled_by + WINDOW_AFTER_SET_UP_S + 0.5 - time.monotonic(), 1.0))
    monkeypatch.setattr(position_module, "NO_SHARES_WINDOW_S", WINDOW_AFTER_SET_UP_S)
    return hands


def test_one_of_two_hand_limits_cancelled_has_the_shares_it_let_go_of_protected_at_once(trading, by_hand,
                                                                                        monkeypatch):
    # Two hand limit sells hold 20 each: 60 protected. The trader cancels one: its 20 are free, the other's 20 not.
    # The OCO for the 40 is refused naming 20 free; nothing was sold to explain it, but order entry's lag cannot either
    # (no fill of the position's within the window): the 20 are protected at once, not after the window's tries and
    # an ERROR.
    first, _ = capped_beside_hand_limits(trading, by_hand, monkeypatch, 20, 20)
    with logged_lines("actors.position", "INFO") as said:
        by_hand.cancel_order_by_id(first.id)
        trading.wait_for(lambda: broker_working_stop_qty(trading) == 80, "the 20 let go of protected",
                         timeout=BEFORE_THE_WINDOW_S)
    assert not [line for line in said if "order entry can lag a fill" in line or "still refused" in line], said
    time.sleep(1.0)
    assert broker_qty(trading) == 100 and broker_working_stop_qty(trading) == 80 and len(working_stop_ids(trading)) == 2


def test_a_hand_limit_replaced_by_the_trader_is_not_said_to_leave_the_shares_bare(trading, by_hand, monkeypatch):
    # The trader moves the hand limit's price (a PATCH): its replacement holds the 40 again. The position tries them
    # once, is refused naming none free, and keeps the 60 capped: no tries as if order entry lagged, no ERROR telling
    # the operator the shares are without a stop.
    (hand,) = capped_beside_hand_limits(trading, by_hand, monkeypatch, 40)
    with logged_lines("actors.position", "INFO") as said:
        by_hand.replace_order_by_id(hand.id, ReplaceOrderRequest(limit_price=171))
        trading.wait_for(lambda: any("ended replaced" in line for line in said), "the replace heard of")
        time.sleep(BEFORE_THE_WINDOW_S)
    assert not [line for line in said if "order entry can lag a fill" in line or "still refused" in line], said
    refused = [o for o in trading.all_orders() if o.role == "stop_loss" and o.status == "rejected" and o.quantity == 40]
    assert len(refused) == 1, refused
    assert broker_qty(trading) == 100 and broker_working_stop_qty(trading) == 60 and len(working_stop_ids(trading)) == 1


def test_a_hand_sale_heard_on_the_stream_and_again_from_a_catch_up_is_counted_once(trading, by_hand):
    # The reconnect's catch-up lists the hand sale the stream already told (a FILL activity's id is not the stream's
    # execution id): it is the same 40, not 80 more. Then a hand limit holding 10 of the 60 refuses the OCO put back.
    with logged_lines("actors.position", "INFO") as said:
        protected_then_40_sold_by_hand(trading, by_hand)
        protected(trading, "60")
        trading.exchange.drop_stream_connections()
        time.sleep(3.0)  # reconnected, caught up
        hand_limit_sell(trading, by_hand, 10, 170)
        protected(trading, "50")
    capped = [line for line in said if "having been sold outside Catalyst" in line]
    assert len(capped) == 2 and all("40 AAPL having been sold outside Catalyst" in line for line in capped), capped
    time.sleep(1.0)
    assert broker_qty(trading) == 60 and broker_working_stop_qty(trading) == 50 and len(working_stop_ids(trading)) == 1


def test_a_short_partly_covered_by_hand_is_protected_at_the_refusal_and_said_as_bought(trading, by_hand):
    # A short of 100; the trader buys 40 back by hand. The position's buy OCO for 100 is refused naming 60 free: the 60
    # protected at once (the shipped window), by one buy stop, and the WARNING says the 40 were bought, not sold.
    open_protected(trading, side=PositionSide.SHORT, stop="153.00", target="145.00")
    trading.exchange.set_price("AAPL", "149.00")
    with logged_lines("actors.position", "INFO") as said:
        hand_market(trading, by_hand, OrderSide.BUY, 40)
        trading.wait_for(lambda: broker_working_stop_qty(trading) == 60, "the 60 protected", timeout=8.0)
    (capped,) = [line for line in said if "outside Catalyst since this position's last fill" in line]
    assert "40 AAPL having been bought outside Catalyst" in capped, capped
    time.sleep(1.0)
    assert broker_qty(trading) == -60 and len(working_stop_ids(trading)) == 1
    assert [(o["side"], Decimal(o["qty"])) for o in trading.broker_view()["orders"]
            if o["type"] == "stop" and o["status"] in ("new", "held", "accepted")] == [("buy", 60)]
