"""A review of the capped protection (actors/position.py `_protect_cap`, `_on_protection_read`): a position whose OCO
is refused for want of shares past NO_SHARES_WINDOW_S asks the broker what it holds and protects that many. End to
end against the emulator; the broker's view asserted."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import pytest
from alpaca.trading.enums import OrderSide, TimeInForce
from alpaca.trading.requests import MarketOrderRequest

from actors import messages as m
from catalyst.domain.positions import PositionSide
from catalyst.domain.reconcile import FindingType as T
from tests.actors.conftest import logged_lines
from tests.actors.test_doctor_heals import (broker_working_stop_qty, by_hand, doctor, open_protected,  # noqa: F401
                                            position_of, protected, sell_part_by_hand, trading, working_stop_ids)
from tests.actors.test_heal_review import (broker_qty, exits, hand_limit_sell, hand_market,  # noqa: F401
                                           protected_then_40_sold_by_hand, refusal_names_no_count, short_window)


def legs_acknowledged(trading) -> list[tuple[str, Decimal]]:
    return trading.wait_for(lambda: len(legs := sorted((o.role, o.quantity) for o in trading.all_orders()
                                                       if o.role in ("stop_loss", "take_profit")
                                                       and o.status in ("submitted", "accepted")
                                                       and o.alpaca_order_id)) == 2 and legs,
                            "both legs acknowledged")


def hand_limit_holding_40(trading, by_hand) -> None:
    """A limit sell for 40 at 170, far above the price: it works, holding 40 of the 100 the broker still holds."""
    hand_limit_sell(trading, by_hand, 40, 170)


def capped_at_60(trading, by_hand) -> Any:
    """AAPL 100 protected, 40 sold by hand; the position's OCO for the 100 refused past the window and the 60 the
    broker holds protected by a capped OCO (no doctor yet). The hand sale."""
    sale = protected_then_40_sold_by_hand(trading, by_hand)
    protected(trading, "60")
    assert legs_acknowledged(trading) == [("stop_loss", 60), ("take_profit", 60)]
    return sale


def healed_to_one_oco_for_the_60(trading, settle_s: float) -> None:
    """The hand sale of 40 written as the position's exit: 60 held, under one stop, and still so `settle_s` later."""
    trading.wait_for(lambda: (p := position_of(trading)) and p.quantity == 60 and p, "the sale applied")
    protected(trading, "60")
    time.sleep(settle_s)
    assert broker_working_stop_qty(trading) == 60 and len(working_stop_ids(trading)) == 1
    assert exits(trading) == [("sell", 40, "filled", 40)] and broker_qty(trading) == 60


def test_a_second_hand_sale_while_capped_has_what_is_left_protected(trading, by_hand, short_window):
    # The trader sells 20 more by hand while the capped OCO works: its OCO for 60 is refused in turn. 40 are held.
    capped_at_60(trading, by_hand)
    sell_part_by_hand(trading, by_hand, 20)
    trading.wait_for(lambda: broker_qty(trading) == 40, "40 left")
    protected(trading, "40")
    time.sleep(1.0)
    assert broker_working_stop_qty(trading) == 40 and len(working_stop_ids(trading)) == 1 and broker_qty(trading) == 40


def test_a_hand_round_trip_while_capped_is_protected_in_full_at_the_doctors_word(trading, doctor, by_hand,
                                                                               short_window):
    # Sold 40 by hand, capped at 60; then the trader buys the 40 back by hand. The broker holds the 100 recorded: the
    # doctor finds 40 of them without a stop (MISSING_PROTECTION) and has the position protect them.
    capped_at_60(trading, by_hand)
    hand_market(trading, by_hand, OrderSide.BUY, 40)
    trading.wait_for(lambda: broker_qty(trading) == 100, "100 held again")
    protected(trading, "60")  # the capped OCO put back after the hand buy's cancel
    time.sleep(1.0)
    report = doctor.run_pass(reason="test").get()
    assert T.MISSING_PROTECTION in [f.type for f in report.findings], report.findings
    protected(trading, "100")
    assert broker_qty(trading) == 100 and position_of(trading).quantity == 100


def test_the_capped_ocos_stop_filling_before_the_pass_sells_nothing_short(trading, doctor, by_hand, short_window):
    sale = capped_at_60(trading, by_hand)
    with logged_lines("actors.position", "INFO") as said:
        trading.trade("AAPL", "146.50")  # through the capped OCO's stop at 147: its 60 sold
        trading.wait_for(lambda: broker_qty(trading) == 0, "the stop's 60 sold")
        trading.wait_for(lambda: position_of(trading).quantity == 40, "the stop's fill applied")
        time.sleep(3.0)  # the position's OCO for its 40 recorded: refused (none held), given up on
    assert broker_qty(trading) == 0 and working_stop_ids(trading) == []
    assert [line for line in said if "those" in line and "protected now" in line] == []
    assert any("the broker holds none of its 40 shares free (it holds 0 AAPL)" in line for line in said), said
    assert not [line for line in said if "leaves no smaller number to protect" in line and "holds 0 AAPL" in line]
    doctor.run_pass(reason="test").get()
    closed = trading.wait_for(lambda: (p := position_of(trading)) and p.status == "closed" and p, "closed")
    time.sleep(1.0)
    price = Decimal(str(by_hand.get_order_by_id(sale.id).filled_avg_price))
    stop_fills = trading.writer.fills_for_order(next(o.order_id for o in trading.all_orders()
                                                     if o.role == "stop_loss" and o.filled_qty)).get()
    assert sum(f.qty for f in stop_fills) == 60
    assert closed.realized_pnl == (price - Decimal("149.95")) * 40 + sum((f.price - Decimal("149.95")) * f.qty
                                                                           for f in stop_fills)
    assert exits(trading) == [("sell", 40, "filled", 40)]
    assert broker_qty(trading) == 0 and working_stop_ids(trading) == []


def test_the_capped_ocos_take_profit_filling_before_the_pass_sells_nothing_short(trading, doctor, by_hand,
                                                                                 short_window):
    capped_at_60(trading, by_hand)
    trading.trade("AAPL", "155.50", volume=100_000)  # through the target at 155: the 60 sold
    trading.wait_for(lambda: broker_qty(trading) == 0, "the take-profit's 60 sold")
    trading.wait_for(lambda: position_of(trading).quantity == 40, "its fill applied")
    time.sleep(3.0)
    assert broker_qty(trading) == 0 and working_stop_ids(trading) == []
    doctor.run_pass(reason="test").get()
    trading.wait_for(lambda: (p := position_of(trading)) and p.status == "closed" and p, "closed")
    assert exits(trading) == [("sell", 40, "filled", 40)] and broker_qty(trading) == 0


def test_a_restart_while_capped_keeps_one_oco_for_the_60(trading, doctor_broker, by_hand, short_window):
    from tests.actors.test_doctor_heals import doctor_on
    capped_at_60(trading, by_hand)
    first = working_stop_ids(trading)
    trading.stop()
    trading.start()
    time.sleep(4.0)  # the rebuilt position's OCO for the other 40: refused (the 60 are held by the OCO)
    assert working_stop_ids(trading) == first and broker_working_stop_qty(trading) == 60 and broker_qty(trading) == 60
    with doctor_on(trading, doctor_broker) as doctor:
        doctor.run_pass(reason="test").get()
        trading.wait_for(lambda: (p := position_of(trading)) and p.quantity == 60 and p, "healed")
        time.sleep(1.0)
        assert working_stop_ids(trading) == first and broker_working_stop_qty(trading) == 60
        assert doctor.entries_allowed().get()
    assert exits(trading) == [("sell", 40, "filled", 40)] and broker_qty(trading) == 60


def test_a_flatten_while_capped_sells_the_60_and_the_heal_closes_it(trading, doctor, by_hand, short_window):
    capped_at_60(trading, by_hand)
    (actor,) = trading.system.supervisor.live_refs().get()
    actor.tell(m.Flatten(reason="end of day", scheduled=True))
    trading.wait_for(lambda: broker_qty(trading) == 0, "the flatten's exit filled")
    doctor.run_pass(reason="test").get()
    closed = trading.wait_for(lambda: (p := position_of(trading)) and p.status == "closed" and p, "closed",
                              timeout=60)
    assert [o.quantity for o in trading.all_orders() if o.role == "flatten"] == [60]
    assert closed.quantity == 0
    time.sleep(1.0)
    assert broker_qty(trading) == 0 and not working_stop_ids(trading)


def test_the_heal_just_as_the_window_ends_leaves_one_oco_for_the_60(trading, doctor, by_hand, short_window):
    protected_then_40_sold_by_hand(trading, by_hand)
    time.sleep(0.6)
    doctor.run_pass(reason="test").get()
    healed_to_one_oco_for_the_60(trading, settle_s=3.0)


def test_a_short_partly_covered_by_hand_has_the_rest_protected_before_any_pass(trading, by_hand, short_window):
    open_protected(trading, side=PositionSide.SHORT, stop="153.00", target="145.00")
    trading.exchange.set_price("AAPL", "149.00")
    hand_market(trading, by_hand, OrderSide.BUY, 40)
    trading.wait_for(lambda: broker_qty(trading) == -60, "60 short left")
    protected(trading, "60")
    time.sleep(1.0)
    assert broker_working_stop_qty(trading) == 60 and len(working_stop_ids(trading)) == 1
    assert broker_qty(trading) == -60
    assert [(o["side"], o["qty"]) for o in trading.broker_view()["orders"]
            if o["type"] == "stop" and o["status"] in ("new", "held", "accepted")] == [("buy", "60")]


def test_a_hand_limit_holding_40_leaves_the_60_free_protected(trading, by_hand, short_window, refusal_names_no_count):
    # The trader's limit sell for 40 works (not filled): the broker still holds 100, 60 of them free. Before the read
    # took Alpaca's qty_available, it saw 100 and the 100 stayed bare until the hand order filled or was cancelled.
    # The refusal names no free count here, so the read decides (one naming it is capped at once beside the hand
    # order the router heard of: test_hand_order_working_refusal.py).
    open_protected(trading)
    with logged_lines("actors.position", "WARNING") as said:
        hand_limit_holding_40(trading, by_hand)
        protected(trading, "60")
    assert broker_qty(trading) == 100
    assert any("the broker holds 60 of its 100 shares free (it holds 100 AAPL, 60 of them not promised to open "
               "orders): those 60 protected now; the other 40, held by an open order Catalyst did not place, or sold "
               "outside it?, left to the doctor's pass" in line for line in said), said


def two_positions_protected(trading) -> None:
    """Two AAPL positions of 100, each under its own OCO: two limit entries resting, filled by one print (neither's
    OCO in the way of the other's buy, a wash trade)."""
    trading.exchange.set_price("AAPL", "150.00")
    trading.open(trading.plan(order_type="limit", limit_price=Decimal("149.95")))
    trading.open(trading.plan(order_type="limit", limit_price=Decimal("149.95")))
    trading.wait_for(lambda: len([o for o in trading.all_orders() if o.role == "entry"
                                  and o.status in ("submitted", "accepted")]) == 2, "both entries resting")
    trading.trade("AAPL", "149.90", volume=100_000)
    protected(trading, "200")
    trading.wait_for(lambda: len([o for o in trading.all_orders() if o.role in ("stop_loss", "take_profit")
                                  and o.status in ("submitted", "accepted") and o.alpaca_order_id]) == 4,
                     "both OCOs acknowledged")
    trading.exchange.set_price("AAPL", "151.00")


def both_ocos_cancelled_and_sold_by_hand(trading, by_hand, qty: int) -> None:
    """The trader cancels every stop (clicked again while the positions put theirs back) and sells `qty` by hand."""
    for _ in range(200):
        for stop in working_stop_ids(trading):
            try:
                by_hand.cancel_order_by_id(stop)
            except Exception:
                pass
        if broker_working_stop_qty(trading) > 0:
            continue
        try:
            by_hand.submit_order(MarketOrderRequest(symbol="AAPL", qty=qty, side=OrderSide.SELL,
                                                    time_in_force=TimeInForce.DAY))
            return
        except Exception:
            continue
    pytest.fail("the hand sale never went through")


def working_stops_at_broker(trading) -> list[Decimal]:
    return sorted(Decimal(o["qty"]) for o in trading.broker_view()["orders"]
                  if o["type"] == "stop" and o["status"] in ("new", "held", "accepted"))


def test_two_positions_of_the_symbol_one_partly_sold_by_hand(trading, by_hand, short_window):
    two_positions_protected(trading)
    sell_part_by_hand(trading, by_hand, 40)  # one OCO cancelled: that position's 40 sold
    trading.wait_for(lambda: broker_qty(trading) == 160, "160 left")
    time.sleep(4.0)
    assert broker_qty(trading) == 160 and sum(working_stops_at_broker(trading)) == 160, working_stops_at_broker(trading)


def test_two_positions_of_the_symbol_both_refused_after_a_hand_sale(trading, by_hand, short_window):
    # Both OCOs cancelled by hand and 40 sold: each position reads the broker, net of the other's recorded 100.
    two_positions_protected(trading)
    both_ocos_cancelled_and_sold_by_hand(trading, by_hand, 40)
    trading.wait_for(lambda: broker_qty(trading) == 160, "160 left")
    time.sleep(5.0)
    assert broker_qty(trading) == 160 and sum(working_stops_at_broker(trading)) == 160, working_stops_at_broker(trading)


def protected_with_a_lagging_list(trading, monkeypatch, lag_s: float, settle_s: float) -> None:
    """AAPL 100 open and protected at 151; the broker's positions list answers as of `lag_s` wall seconds ago, and the
    position reads it again `settle_s` apart (POSITIONS_SETTLE_S)."""
    from actors import position as position_module
    monkeypatch.setattr(position_module, "POSITIONS_SETTLE_S", settle_s)
    open_protected(trading)
    for account in trading.exchange.state.engine.accounts.values():
        account.positions_lag_s = lag_s
    trading.exchange.set_price("AAPL", "151.00")


def test_a_positions_list_lagging_the_hand_sale_past_the_window(trading, by_hand, short_window, monkeypatch,
                                                                refusal_names_no_count):
    # The broker's positions list shows the 100 for 3 s after the hand sale (the window patched to 0.5 s): the first
    # read finds every share, and the position reads again POSITIONS_SETTLE_S later (1.5 s here) until it sees the 60.
    protected_with_a_lagging_list(trading, monkeypatch, lag_s=3.0, settle_s=1.5)
    with logged_lines("actors.position", "INFO") as said:
        sell_part_by_hand(trading, by_hand, 40)
        protected(trading, "60")
    assert any("(it holds 100 AAPL) leaves no smaller number to protect than its 100 shares: its positions can lag a "
               "sale, asking again in 1.5 s" in line for line in said), said
    assert any("the broker holds 60 of its 100 shares free (it holds 60 AAPL): those 60 protected now" in line
               for line in said), said


def test_a_list_that_keeps_showing_every_share_is_read_three_times_then_left(trading, by_hand, short_window,
                                                                             monkeypatch, refusal_names_no_count):
    # A positions list lagging the hand sale longer than the reads: each finds every share.
    protected_with_a_lagging_list(trading, monkeypatch, lag_s=60.0, settle_s=0.3)
    with logged_lines("actors.position", "INFO") as said:
        sell_part_by_hand(trading, by_hand, 40)
        trading.wait_for(lambda: any("left to the doctor's pass" in line and "read for protection" in line
                                     for line in said), "the reads to end")
        time.sleep(1.0)
    reads = [line for line in said if "read for protection" in line]
    assert len(reads) == 3, reads
    assert [line.endswith("asking again in 0.3 s") for line in reads] == [True, True, False], reads
    assert broker_working_stop_qty(trading) == 0 and broker_qty(trading) == 60  # live; its list shows 100 a minute


def test_after_a_restart_the_read_does_not_say_it_protects_shares_already_under_the_capped_oco(
        trading, by_hand, short_window, refusal_names_no_count):
    capped_at_60(trading, by_hand)
    first = working_stop_ids(trading)
    trading.stop()
    with logged_lines("actors.position", "WARNING") as said:
        trading.start()
        trading.wait_for(lambda: any("the broker holds 60 of its 100 shares" in line for line in said),
                         "the rebuilt position's read")
        time.sleep(1.0)
    assert working_stop_ids(trading) == first  # nothing sent for them: the restored OCO covers the 60
    (line,) = [line for line in said if "the broker holds 60 of its 100 shares" in line]
    assert "protected now" not in line, line
    assert "under its working stop already" in line, line


def test_the_capped_take_profits_partial_fill_then_the_heal(trading, doctor, by_hand, short_window):
    capped_at_60(trading, by_hand)
    trading.trade("AAPL", "155.10", volume=120)  # the capped take-profit fills a part of its 60
    take_profit = trading.wait_for(lambda: next((o for o in trading.all_orders() if o.role == "take_profit"
                                                 and o.filled_qty > 0), None), "a partial fill")
    part = take_profit.filled_qty
    assert 0 < part < 60, part
    trading.wait_for(lambda: position_of(trading).quantity == 100 - part, "its fill applied")
    time.sleep(3.0)
    assert broker_qty(trading) == 60 - part and broker_working_stop_qty(trading) == 60 - part
    assert len(working_stop_ids(trading)) == 1
    doctor.run_pass(reason="test").get()
    trading.wait_for(lambda: (p := position_of(trading)) and p.quantity == 60 - part, "healed")
    time.sleep(1.0)
    assert broker_working_stop_qty(trading) == 60 - part and len(working_stop_ids(trading)) == 1
    assert exits(trading) == [("sell", 40, "filled", 40)] and broker_qty(trading) == 60 - part


def test_two_positions_of_the_symbol_with_more_than_one_position_sold_by_hand(trading, by_hand, short_window):
    # 120 of the 200 sold by hand: each position netted the other's recorded 100 out of the 80 held and found none, the
    # 80 bare until an operator came (the doctor halts beside two open positions). Now the free 80 go under one of
    # the two positions' stops; the other finds none free.
    two_positions_protected(trading)
    both_ocos_cancelled_and_sold_by_hand(trading, by_hand, 120)
    trading.wait_for(lambda: broker_qty(trading) == 80, "80 left")
    time.sleep(5.0)
    assert broker_qty(trading) == 80 and broker_working_stop_qty(trading) == 80


def test_the_heal_while_the_capped_oco_is_on_its_way_leaves_one_oco_for_the_60(trading, doctor, by_hand,
                                                                               short_window, refusal_names_no_count):
    with logged_lines("actors.position", "WARNING") as said:
        protected_then_40_sold_by_hand(trading, by_hand)
        trading.wait_for(lambda: any("the broker holds 60 of its 100 shares" in line for line in said),
                         "the capped OCO decided", timeout=10)
        doctor.run_pass(reason="test").get()  # at once: the capped OCO on its way or just acknowledged
    healed_to_one_oco_for_the_60(trading, settle_s=3.0)
    assert not [f for f in doctor.run_pass(reason="test").get().findings if f.type is not T.ORPHAN_ORDER]
