"""A refusal for want of shares that a working order Catalyst did not place explains (a trader's limit sell holding 40
of a position's 100): the router hears of such orders (their stream events, the catch-ups' lists) and tells the
position, which caps protection at the shares free at once (actors/position.py `_cap_at_refusal`). Before, the 60 free
waited NO_SHARES_WINDOW_S (15 s) of tries kept for order entry's lag and a read of the broker, and a restart within
that began the wait again. End to end against the emulator with the shipped window; the broker's view asserted."""

from __future__ import annotations

import time
from datetime import timedelta
from decimal import Decimal

from alpaca.trading.enums import OrderSide, TimeInForce
from alpaca.trading.requests import LimitOrderRequest

from actors import position as position_module
from tests.actors.conftest import logged_lines
from tests.actors.test_doctor_heals import (broker_working_stop_qty, by_hand, open_protected, position_of,  # noqa: F401
                                            protected, trading, working_stop_ids)
from tests.actors.test_hand_sale_refusal import ten_sold_then_a_hand_limit_holding_40
from tests.actors.test_heal_review import broker_qty, hand_limit_sell, hand_market
from tests.actors.test_protection_order_entry_lag import lagging

# Well inside NO_SHARES_WINDOW_S (15 s, not patched here): a wait this long cannot be the window's end.
BEFORE_THE_WINDOW_S = 8.0
HELD_OUTSIDE = "being held by working orders Catalyst did not place"


def capped_beside_a_hand_limit_placed_while_down(trading, by_hand, tif: TimeInForce = TimeInForce.DAY) -> tuple:
    """AAPL 100 protected; the daemon stopped, the trader cancels its OCO and places a limit sell for 40 at 170 (it
    works, nothing sold); the daemon started again on the same database. Its position's OCO for the 100 is refused
    (60 free), and the 60 are protected at that refusal. The hand order, and the position's WARNINGs."""
    open_protected(trading)
    trading.exchange.set_price("AAPL", "151.00")
    trading.stop()
    by_hand.cancel_order_by_id(working_stop_ids(trading)[0])
    hand = by_hand.submit_order(LimitOrderRequest(symbol="AAPL", qty=40, side=OrderSide.SELL, limit_price=170,
                                                  time_in_force=tif))
    assert broker_working_stop_qty(trading) == 0
    with logged_lines("actors.position", "WARNING") as said:
        trading.start()
        trading.wait_for(lambda: broker_working_stop_qty(trading) == 60, "the 60 protected",
                         timeout=BEFORE_THE_WINDOW_S)
    return hand, said


def test_shares_beside_a_working_hand_limit_are_protected_at_the_refusal_not_after_the_window(trading, by_hand):
    assert position_module.NO_SHARES_WINDOW_S == 15.0
    open_protected(trading)
    filled_by = time.monotonic()
    trading.exchange.set_price("AAPL", "151.00")
    # The entry's fill further back than the window: order entry's lag behind it can no longer explain a refusal.
    time.sleep(max(filled_by + position_module.NO_SHARES_WINDOW_S + 0.5 - time.monotonic(), 0.0))
    with logged_lines("actors.position", "INFO") as said:
        hand = hand_limit_sell(trading, by_hand, 40, 170)  # the trader cancels the OCO, places the limit sell
        trading.wait_for(lambda: broker_working_stop_qty(trading) == 60, "the 60 protected",
                         timeout=BEFORE_THE_WINDOW_S)
    (capped,) = [line for line in said if HELD_OUTSIDE in line]
    assert ("protection for 100 refused: the broker has 60" in capped
            and f"40 AAPL {HELD_OUTSIDE} ({str(hand.id)[:8]} 40): 60.0 protected now; the other 40.0 left to the "
                "doctor's pass" in capped), capped
    assert not [line for line in said if "read for protection" in line or "after the first refusal" in line], said
    position = position_of(trading)
    assert (position.status, position.quantity) == ("open", 100)
    time.sleep(1.5)  # nothing more is sent for the other 40 while the hand order holds them
    assert broker_qty(trading) == 100 and broker_working_stop_qty(trading) == 60 and len(working_stop_ids(trading)) == 1


def test_after_a_restart_a_hand_limit_placed_before_it_has_the_60_protected_at_the_refusal(trading, by_hand):
    # The restart's router knows the hand order from the catch-up it reads at the start (the stream never told it):
    # the rebuilt position's OCO, refused, is capped at once, not after the window begun again at each restart.
    hand, said = capped_beside_a_hand_limit_placed_while_down(trading, by_hand)
    (capped,) = [line for line in said if HELD_OUTSIDE in line]
    assert f"40 AAPL {HELD_OUTSIDE} ({str(hand.id)[:8]} 40): 60.0 protected now" in capped, capped
    assert not [line for line in said if "order entry can lag a fill" in line or "after the first refusal" in line]
    time.sleep(1.5)
    assert broker_qty(trading) == 100 and broker_working_stop_qty(trading) == 60 and len(working_stop_ids(trading)) == 1


def test_a_hand_limit_placed_on_an_earlier_day_is_known_at_a_start(trading, by_hand):
    # The trader's limit sell is good till cancelled, placed the day before: the start's catch-up lists that day's
    # orders only, and it is known from the start's list of every order working. The rebuilt position tries the 40
    # its cap left (a cap is not kept across a restart): refused, capped at once beside the OCO for the 60 still
    # working, not after the window's tries.
    hand, _ = capped_beside_a_hand_limit_placed_while_down(trading, by_hand, tif=TimeInForce.GTC)
    first = working_stop_ids(trading)
    trading.stop()
    trading.exchange.advance(timedelta(days=1))  # Tuesday 09:45: the hand order still works, and the capped OCO
    with logged_lines("actors.position", "WARNING") as said:
        trading.start()
        trading.wait_for(lambda: [line for line in said if HELD_OUTSIDE in line], "the refusal capped",
                         timeout=BEFORE_THE_WINDOW_S)
    (capped,) = [line for line in said if HELD_OUTSIDE in line]
    assert f"40 AAPL {HELD_OUTSIDE} ({str(hand.id)[:8]} 40): 60.0 under its working stop already" in capped, capped
    # Its first OCO may go out before the start's catch-up is in: refused then, it is tried once more a second later.
    assert len([line for line in said if "order entry can lag a fill" in line]) <= 1, said
    assert not [line for line in said if "after the first refusal" in line], said
    time.sleep(1.0)
    assert working_stop_ids(trading) == first and broker_working_stop_qty(trading) == 60 and broker_qty(trading) == 100


def test_the_hand_limit_cancelled_afterwards_has_every_share_protected_again(trading, by_hand):
    hand, _ = capped_beside_a_hand_limit_placed_while_down(trading, by_hand)
    with logged_lines("actors.position", "INFO") as said:
        by_hand.cancel_order_by_id(hand.id)
        trading.wait_for(lambda: broker_working_stop_qty(trading) == 100, "all 100 protected",
                         timeout=BEFORE_THE_WINDOW_S)
    assert any(f"({str(hand.id)[:8]}) ended canceled at the broker" in line for line in said), said
    assert not [line for line in said if HELD_OUTSIDE in line], said
    time.sleep(1.0)
    assert broker_qty(trading) == 100 and broker_working_stop_qty(trading) == 100
    assert len(working_stop_ids(trading)) == 2


def test_a_refusal_just_after_the_positions_own_entry_fill_takes_the_windows_way(trading, by_hand):
    # The trader holds 150 AAPL of their own, 100 of them under a hand limit sell at 170. The position's entry fills
    # 100 while the broker's order entry lags fills by 2 s: its OCO is refused naming 50 free (the trader's 150, less
    # the 100 their order holds), which that hand order alone could explain. A fill of the position's own within the
    # window is the likelier cause: the OCO is tried again, and all 100 are protected once order entry has caught up.
    trading.exchange.set_price("AAPL", "150.00")
    hand_market(trading, by_hand, OrderSide.BUY, 150)
    trading.wait_for(lambda: broker_qty(trading) == 150, "the trader's 150 held")
    lagging(trading, 2.0)
    time.sleep(2.5)  # the trader's shares older than the lag: free for their own limit sell
    trading.open(trading.plan(order_type="limit", limit_price=Decimal("149.95")))
    trading.wait_for(lambda: [o for o in trading.all_orders() if o.role == "entry" and o.alpaca_order_id
                              and o.status in ("submitted", "accepted")],
                     "the entry resting")
    by_hand.submit_order(LimitOrderRequest(symbol="AAPL", qty=100, side=OrderSide.SELL, limit_price=170,
                                           time_in_force=TimeInForce.DAY))
    time.sleep(0.5)  # its events at the router, and the position told
    with logged_lines("actors.position", "INFO") as said:
        trading.trade("AAPL", "149.90", volume=100_000)  # through the entry: its 100 filled
        protected(trading, "100")
    assert any("available: 50" in line and "its order entry can lag a fill, trying the OCO again" in line
               for line in said), said
    assert not [line for line in said if HELD_OUTSIDE in line], said
    assert position_of(trading).quantity == 100 and broker_qty(trading) == 250


def test_a_hand_sale_and_a_working_hand_limit_explain_a_refusal_together(trading, by_hand, monkeypatch):
    # 10 sold by hand, then a hand limit sell holding 40 of the 90 left: the OCO for the 90 is refused with 50 free; the
    # 10 sold explain 10 of the 40 missing, the hand order the rest. Capped at the refusal, not read after the window.
    hand, said = ten_sold_then_a_hand_limit_holding_40(trading, by_hand, monkeypatch)
    (capped,) = [line for line in said if HELD_OUTSIDE in line]
    assert (f"40 AAPL {HELD_OUTSIDE} ({str(hand.id)[:8]} 40), and 10 sold outside Catalyst since this position's last "
            "entry fill: 50.0 protected now" in capped), capped
    assert not [line for line in said if "read for protection" in line or "after the first refusal" in line], said
    time.sleep(1.0)
    assert broker_qty(trading) == 90 and broker_working_stop_qty(trading) == 50 and len(working_stop_ids(trading)) == 1
