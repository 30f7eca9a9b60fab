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
from tests.actors.test_capped_protection_review import healed_to_one_oco_for_the_60, legs_acknowledged
from tests.actors.test_doctor_heals import (broker_working_stop_qty, by_hand, doctor, open_protected,  # noqa: F401
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


def test_a_hand_limit_replaced_by_a_smaller_one_has_the_shares_let_go_of_protected_at_once(trading, by_hand,
                                                                                           monkeypatch):
    # The trader's replacement holds 15 of the 40 the hand limit held: the 25 it let go of go under a stop at once.
    (hand,) = capped_beside_hand_limits(trading, by_hand, monkeypatch, 40)
    with logged_lines("actors.position", "INFO") as said:
        by_hand.replace_order_by_id(hand.id, ReplaceOrderRequest(qty=15))
        trading.wait_for(lambda: broker_working_stop_qty(trading) == 85, "the 25 let go of protected",
                         timeout=BEFORE_THE_WINDOW_S)
    assert any("refused after an order Catalyst did not place ended: the broker has 25" in line and
               "85.0 protected now; the other 15.0, held by other orders Catalyst did not place" in line
               for line in said), said
    time.sleep(1.0)
    assert broker_qty(trading) == 100 and broker_working_stop_qty(trading) == 85 and len(working_stop_ids(trading)) == 2


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
    (capped,) = [line for line in said if "outside Catalyst since this position's last entry fill" in line]
    assert "40 AAPL having been bought outside Catalyst" in capped, capped
    time.sleep(1.0)
    assert broker_qty(trading) == -60 and len(working_stop_ids(trading)) == 1
    assert [(o["side"], Decimal(o["qty"])) for o in trading.broker_view()["orders"]
            if o["type"] == "stop" and o["status"] in ("new", "held", "accepted")] == [("buy", 60)]


def test_a_hand_sale_whose_stream_events_come_twice_is_counted_once(trading, by_hand):
    # The emulator sends every stream event twice: the hand sale's fill is told twice, one execution.
    open_protected(trading)
    trading.exchange.set_price("AAPL", "151.00")
    with logged_lines("actors.position", "INFO") as said:
        trading.exchange.set_faults("duplicate=1.0")
        sell_part_by_hand(trading, by_hand, 40)
        trading.wait_for(lambda: broker_working_stop_qty(trading) == 60, "the 60 protected", timeout=8.0)
        trading.exchange.set_faults("")
    (capped,) = [line for line in said if "having been sold outside Catalyst" in line]
    assert "40 AAPL having been sold outside Catalyst" in capped, capped
    time.sleep(1.0)
    assert broker_qty(trading) == 60 and len(working_stop_ids(trading)) == 1


def test_a_hand_limit_placed_and_cancelled_beside_a_sale_cap_ends_at_the_60_with_no_loop(trading, by_hand):
    # 40 sold by hand (60 capped at the refusal), then a hand limit for 10 (the 50 left free capped), then cancelled:
    # the position tries the 50 it lacks, is refused naming 10 free, and protects those: one try for the end, not a
    # loop of OCOs, and never a stop beside the ones working for the same shares.
    protected_then_40_sold_by_hand(trading, by_hand)
    protected(trading, "60")
    hand = hand_limit_sell(trading, by_hand, 10, 170)
    protected(trading, "50")
    legs_acknowledged(trading)
    refused_before = len([o for o in trading.all_orders() if o.role == "stop_loss" and o.status == "rejected"])
    with logged_lines("actors.position", "INFO") as said:
        by_hand.cancel_order_by_id(hand.id)
        trading.wait_for(lambda: broker_working_stop_qty(trading) == 60, "the 10 let go of protected", timeout=8.0)
        time.sleep(2.0)
    refused = [o.quantity for o in trading.all_orders() if o.role == "stop_loss" and o.status == "rejected"]
    assert refused[refused_before:] == [50], refused
    assert len([line for line in said if "ended canceled at the broker" in line]) == 1, said
    assert broker_qty(trading) == 60 and broker_working_stop_qty(trading) == 60
    assert sorted(Decimal(o["qty"]) for o in trading.broker_view()["orders"]
                  if o["type"] == "stop" and o["status"] in ("new", "held", "accepted")) == [10, 50]


def test_the_heal_as_the_capped_oco_goes_leaves_one_oco_for_the_60(trading, doctor, by_hand):
    # The doctor's pass (here the test's) lands as the OCO capped at the refusal is on its way: the sale written as the
    # position's exit, and one OCO for the 60, not a second beside it.
    from catalyst.domain.reconcile import FindingType as T
    with logged_lines("actors.position", "WARNING") as said:
        protected_then_40_sold_by_hand(trading, by_hand)
        trading.wait_for(lambda: any("having been sold outside Catalyst" in line for line in said), "capped",
                         timeout=8.0)
        doctor.run_pass(reason="test").get()
    healed_to_one_oco_for_the_60(trading, settle_s=2.0)
    assert not [f for f in doctor.run_pass(reason="test").get().findings if f.type is not T.ORPHAN_ORDER]


def test_two_positions_of_the_symbol_both_refused_after_a_hand_sale_never_protect_more_than_held(trading, by_hand):
    # Both OCOs cancelled by hand and 40 sold (the shipped window): each position is told of the sale and may cap at
    # its refusal. Watched throughout: the stops at the broker never cover more than it holds; all 160 are covered.
    from tests.actors.test_capped_protection_review import (both_ocos_cancelled_and_sold_by_hand,
                                                            two_positions_protected)
    two_positions_protected(trading)
    both_ocos_cancelled_and_sold_by_hand(trading, by_hand, 40)
    deadline, seen = time.monotonic() + 8.0, []
    while time.monotonic() < deadline:
        seen.append((broker_qty(trading), broker_working_stop_qty(trading)))
        time.sleep(0.1)
    assert all(stops <= held for held, stops in seen), seen
    assert seen[-1] == (160, 160), seen[-1]


def test_the_capped_take_profits_partial_fill_does_not_forget_the_hand_sale(trading, by_hand):
    # Capped at the refusal (40 sold by hand); the capped take-profit then fills part of its 60. Its own fill records
    # nothing of the hand sale: the OCO the position tries for the 40 is refused as before, and the same sale explains
    # it at once. Before, the tally went with the fill: the window's tries said as order entry's lag (shipped 15 s),
    # then an ERROR that the shares had no stop, and a read.
    protected_then_40_sold_by_hand(trading, by_hand)
    protected(trading, "60")
    legs_acknowledged(trading)
    with logged_lines("actors.position", "INFO") as said:
        trading.trade("AAPL", "155.10", volume=120)  # the capped take-profit fills a part of its 60
        position = trading.wait_for(lambda: (p := position_of(trading)) and p.quantity < 100 and p, "its fill applied")
        part = 100 - position.quantity
        trading.wait_for(lambda: any("under its working stop already" in line for line in said),
                         "the refusal explained by the hand sale", timeout=8.0)
    assert 0 < part < 60, part
    assert not [line for line in said if "order entry can lag a fill" in line or "still refused" in line], said
    (recapped,) = [line for line in said if "under its working stop already" in line]
    assert f"40 AAPL having been sold outside Catalyst since this position's last entry fill: {60 - part}" in recapped, \
        recapped
    time.sleep(1.0)
    assert broker_qty(trading) == 60 - part and broker_working_stop_qty(trading) == 60 - part
    assert len(working_stop_ids(trading)) == 1
