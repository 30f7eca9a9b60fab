"""A review of the doctor's HEAL of POSITION_QTY_MISMATCH (hand orders written as a position's exits) and of the
passes positions ask for: end to end against the emulator, the database and the broker's view asserted both."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import pytest
from alpaca.common.exceptions import APIError
from alpaca.trading.enums import OrderSide, TimeInForce
from alpaca.trading.requests import LimitOrderRequest, MarketOrderRequest

from catalyst.domain.positions import PositionSide
from catalyst.domain.reconcile import FindingType as T
from tests.actors.conftest import logged_lines
from tests.actors.test_doctor_heals import (broker_working_stop_qty, by_hand, doctor, open_protected,  # noqa: F401
                                            position_of, protected, sell_part_by_hand, trading, working_stop_ids)


def broker_qty(trading, symbol="AAPL") -> Decimal:
    return sum((Decimal(p["qty"]) for p in trading.broker_view()["positions"] if p["symbol"] == symbol), Decimal(0))


def hand_market(trading, by_hand, side: OrderSide, qty: int, symbol="AAPL") -> Any:
    """A market order by hand; the daemon's OCO in the way (wash trade, shares held) is cancelled and it clicked again."""
    for _ in range(50):
        for stop in working_stop_ids(trading, symbol)[:1]:
            by_hand.cancel_order_by_id(stop)
        try:
            return by_hand.submit_order(MarketOrderRequest(symbol=symbol, qty=qty, side=side,
                                                           time_in_force=TimeInForce.DAY))
        except APIError:
            continue
    pytest.fail("the hand order never went through")


def test_shares_bought_by_hand_on_top_of_a_position_halt_and_are_never_its_exit(trading, doctor, by_hand):
    open_protected(trading)
    hand_market(trading, by_hand, OrderSide.BUY, 40)
    trading.wait_for(lambda: broker_qty(trading) == 140, "140 held")
    report = doctor.run_pass(reason="test").get()
    mismatch = next(f for f in report.findings if f.type is T.POSITION_QTY_MISMATCH)
    assert mismatch.policy == "halt" and not doctor.entries_allowed().get()
    assert [o for o in trading.all_orders() if o.role == "exit"] == []
    assert position_of(trading).quantity == 100 and position_of(trading).status == "open"


def hand_limit_sell(trading, by_hand, qty: int, limit_price: float, symbol="AAPL") -> Any:
    """A limit sell by hand; the daemon's OCO in the way (shares held) is cancelled and it clicked again."""
    for _ in range(50):
        for stop in working_stop_ids(trading, symbol)[:1]:
            by_hand.cancel_order_by_id(stop)
        try:
            return by_hand.submit_order(LimitOrderRequest(symbol=symbol, qty=qty, side=OrderSide.SELL,
                                                          limit_price=limit_price, time_in_force=TimeInForce.DAY))
        except APIError:
            continue
    pytest.fail("the hand limit order never went through")


def bought_40_then_sold_80_by_hand(trading, by_hand) -> None:
    """AAPL 100 open and protected; the trader buys 40 more by hand, then sells 80 at 151: the broker holds 60."""
    open_protected(trading)
    trading.exchange.set_price("AAPL", "151.00")
    hand_market(trading, by_hand, OrderSide.BUY, 40)
    trading.wait_for(lambda: broker_qty(trading) == 140, "140 held")
    sell_part_by_hand(trading, by_hand, 80)
    trading.wait_for(lambda: broker_qty(trading) == 60, "60 left")


def test_a_hand_buy_then_a_larger_hand_sale_is_not_written_as_two_exits(trading, doctor, by_hand, monkeypatch):
    # Net, the two hand orders reduce the position by 40 (+40 - 80): the buy is no exit of a long position.
    from actors import position as position_module
    monkeypatch.setattr(position_module, "NO_SHARES_WINDOW_S", 0.5)
    bought_40_then_sold_80_by_hand(trading, by_hand)
    time.sleep(1.0)
    report = doctor.run_pass(reason="test").get()
    mismatch = next(f for f in report.findings if f.type is T.POSITION_QTY_MISMATCH)
    assert mismatch.policy == "halt" and not doctor.entries_allowed().get()
    time.sleep(1.0)  # before the fix: the buy's fill applied as a sale crashed the position actor at every rebuild
    assert [(o.side, o.quantity) for o in trading.all_orders() if o.role == "exit"] == []
    position = position_of(trading)
    assert (position.status, position.quantity, position.realized_pnl) == ("open", 100, 0)
    assert broker_qty(trading) == 60


def protected_then_40_sold_by_hand(trading, by_hand) -> Any:
    """AAPL 100 open and protected, then 40 of them sold by hand at 151 (60 left at the broker): the hand sale."""
    open_protected(trading)
    trading.exchange.set_price("AAPL", "151.00")
    sale = sell_part_by_hand(trading, by_hand, 40)
    trading.wait_for(lambda: broker_qty(trading) == 60, "60 left")
    return sale


def settle_refused_oco() -> None:
    time.sleep(1.0)  # the daemon's OCO for the 100, refused for want of shares, given up on (window patched to 0.5 s)


@pytest.fixture
def short_window(monkeypatch):
    from actors import position as position_module
    monkeypatch.setattr(position_module, "NO_SHARES_WINDOW_S", 0.5)


@pytest.fixture
def refusal_names_no_count(monkeypatch):
    """The broker's refusal for want of shares names no free count (its wording is Alpaca's to change): the position
    cannot cap protection at the refusal (_cap_at_refusal), and waits out the window, then reads the broker."""
    from actors import position as position_module
    monkeypatch.setattr(position_module, "shares_available_in", lambda reason: None)


def exits(trading):
    return [(o.side, o.quantity, o.status, o.filled_qty) for o in trading.all_orders() if o.role == "exit"]


def test_a_short_position_partly_covered_by_hand_is_reduced_and_its_rest_protected(trading, doctor, by_hand,
                                                                                   short_window):
    open_protected(trading, side=PositionSide.SHORT, stop="153.00", target="145.00")
    trading.exchange.set_price("AAPL", "149.00")
    cover = hand_market(trading, by_hand, OrderSide.BUY, 40)
    trading.wait_for(lambda: broker_qty(trading) == -60, "60 short left")
    settle_refused_oco()
    report = doctor.run_pass(reason="test").get()
    mismatch = next(f for f in report.findings if f.type is T.POSITION_QTY_MISMATCH)
    assert (mismatch.db_value, mismatch.broker_value, mismatch.policy) == ("-100", "-60", "heal")
    position = trading.wait_for(lambda: (p := position_of(trading)) and p.quantity == 60 and p, "the cover applied")
    protected(trading, "60")
    price = Decimal(str(by_hand.get_order_by_id(cover.id).filled_avg_price))
    assert position.status == "open" and position.realized_pnl == (Decimal("149.95") - price) * 40
    assert exits(trading) == [("buy", 40, "filled", 40)]
    assert broker_qty(trading) == -60 and doctor.entries_allowed().get()


def test_two_hand_sales_before_one_pass_are_both_its_exits(trading, doctor, by_hand, short_window):
    open_protected(trading)
    trading.exchange.set_price("AAPL", "151.00")
    sales = [sell_part_by_hand(trading, by_hand, 20)]
    trading.wait_for(lambda: broker_qty(trading) == 80, "80 left")
    sales.append(sell_part_by_hand(trading, by_hand, 20))
    trading.wait_for(lambda: broker_qty(trading) == 60, "60 left")
    settle_refused_oco()
    doctor.run_pass(reason="test").get()
    position = trading.wait_for(lambda: (p := position_of(trading)) and p.quantity == 60 and p, "both sales applied")
    protected(trading, "60")
    paid = sum((Decimal(str(by_hand.get_order_by_id(s.id).filled_avg_price)) - Decimal("149.95")) * 20 for s in sales)
    assert position.status == "open" and position.realized_pnl == paid
    assert sorted(exits(trading)) == [("sell", 20, "filled", 20)] * 2
    assert broker_qty(trading) == 60
    assert not [f for f in doctor.run_pass(reason="test").get().findings if f.type is not T.ORPHAN_ORDER]


def test_a_hand_sale_then_the_traders_own_stop_for_the_rest(trading, doctor, by_hand, short_window,
                                                           refusal_names_no_count):
    # The trader's stop placed while the position's OCO is still refused (not capped at the refusal: it names no
    # count). Capped at the refusal, the position's stop would be there first and the trader's refused.
    from alpaca.trading.requests import StopOrderRequest
    protected_then_40_sold_by_hand(trading, by_hand)
    settle_refused_oco()
    hand_stop = by_hand.submit_order(StopOrderRequest(symbol="AAPL", qty=60, side=OrderSide.SELL,
                                                      time_in_force=TimeInForce.GTC, stop_price=146))
    report = doctor.run_pass(reason="test").get()
    assert next(f for f in report.findings if f.type is T.POSITION_QTY_MISMATCH).policy == "heal"
    position = trading.wait_for(lambda: (p := position_of(trading)) and p.quantity == 60 and p, "the sale applied")
    time.sleep(2.0)  # the position's own OCO for its 60 tried (refused: the trader's stop holds them)
    assert exits(trading) == [("sell", 40, "filled", 40)]
    assert broker_working_stop_qty(trading) == 60  # the trader's stop, alone: never two stops for the same 60 shares
    assert by_hand.get_order_by_id(hand_stop.id).status.value in ("new", "accepted")
    assert position.status == "open" and broker_qty(trading) == 60
    later = doctor.run_pass(reason="test").get()
    assert [f.type for f in later.findings] == [T.ORPHAN_ORDER], later.findings  # the trader's stop
    # the trader's stop fills: written as the rest's exit, the position closed, the account flat
    trading.trade("AAPL", "145.50")
    trading.wait_for(lambda: broker_qty(trading) == 0, "the hand stop filled")
    doctor.run_pass(reason="test").get()
    closed = trading.wait_for(lambda: (p := position_of(trading)) and p.status == "closed" and p, "closed")
    assert closed.quantity == 0 and broker_qty(trading) == 0


def healed_beside_the_take_profits_part(trading, by_hand, sale: Any, part: Decimal) -> None:
    """After the pass: the position holds what is left after the take-profit's `part` and the hand sale of 40, under a
    stop; its realized P&L is both sales'; the hand sale is its one exit row; the broker agrees."""
    position = trading.wait_for(lambda: (p := position_of(trading)) and p.quantity == 60 - part and p, "healed")
    protected(trading, str(60 - part))
    price = Decimal(str(by_hand.get_order_by_id(sale.id).filled_avg_price))
    tp_fills = trading.writer.fills_for_order(next(o.order_id for o in trading.all_orders()
                                                   if o.role == "take_profit" and o.filled_qty)).get()
    assert sum(f.qty for f in tp_fills) == part
    assert position.realized_pnl == sum((f.price - Decimal("149.95")) * f.qty for f in tp_fills) \
        + (price - Decimal("149.95")) * 40
    assert exits(trading) == [("sell", 40, "filled", 40)]
    assert broker_qty(trading) == 60 - part


def test_a_hand_sale_and_the_take_profits_partial_fill_both_reduce_it(trading, doctor, by_hand, short_window):
    open_protected(trading)
    trading.trade("AAPL", "155.10", volume=120)  # the take-profit fills a part of its 100 (a thin print)
    take_profit = trading.wait_for(lambda: next((o for o in trading.all_orders() if o.role == "take_profit"
                                                 and o.filled_qty > 0), None), "the take-profit's partial fill")
    part = take_profit.filled_qty
    assert 0 < part < 100, part
    trading.wait_for(lambda: position_of(trading).quantity == 100 - part, "its fill applied")
    trading.exchange.set_price("AAPL", "154.00")
    sale = sell_part_by_hand(trading, by_hand, 40)
    trading.wait_for(lambda: broker_qty(trading) == 60 - part, "the rest after both")
    settle_refused_oco()
    doctor.run_pass(reason="test").get()
    healed_beside_the_take_profits_part(trading, by_hand, sale, part)
    assert doctor.entries_allowed().get()


def test_the_take_profits_lost_fill_and_a_hand_sale_at_once_are_each_counted_once(trading, doctor, by_hand):
    open_protected(trading)
    trading.exchange.set_faults("drop=1.0")  # the daemon hears nothing of what follows
    trading.trade("AAPL", "155.10", volume=120)
    part = trading.wait_for(lambda: 100 - broker_qty(trading), "the take-profit's partial fill, unheard")
    for stop in working_stop_ids(trading):
        by_hand.cancel_order_by_id(stop)
    trading.exchange.set_price("AAPL", "154.00")
    sale = hand_market(trading, by_hand, OrderSide.SELL, 40)
    trading.wait_for(lambda: broker_qty(trading) == 60 - part, "the rest after both")
    trading.exchange.set_faults("")
    assert position_of(trading).quantity == 100
    report = doctor.run_pass(reason="test").get()
    assert T.MISSING_FILL in [f.type for f in report.findings]
    mismatch = next(f for f in report.findings if f.type is T.POSITION_QTY_MISMATCH)
    assert mismatch.policy == "heal" and mismatch.broker_ids == (str(sale.id),)
    healed_beside_the_take_profits_part(trading, by_hand, sale, part)
    take_profit = next(o for o in trading.all_orders() if o.role == "take_profit" and o.filled_qty)
    assert take_profit.filled_qty == part


def test_a_hand_sale_healed_by_the_doctor_of_the_daemon_started_again(trading, doctor_broker, by_hand, short_window):
    from tests.actors.test_doctor_heals import doctor_on
    sale = protected_then_40_sold_by_hand(trading, by_hand)
    trading.stop()
    trading.start()
    settle_refused_oco()  # the rebuilt position's OCO for its 100, refused
    with doctor_on(trading, doctor_broker) as doctor:
        report = doctor.run_pass(reason="test").get()
        assert next(f for f in report.findings if f.type is T.POSITION_QTY_MISMATCH).policy == "heal"
        position = trading.wait_for(lambda: (p := position_of(trading)) and p.quantity == 60 and p, "healed")
        protected(trading, "60")
        assert doctor.entries_allowed().get()
        assert not [f for f in doctor.run_pass(reason="test").get().findings if f.type is not T.ORPHAN_ORDER]
    price = Decimal(str(by_hand.get_order_by_id(sale.id).filled_avg_price))
    assert position.status == "open" and position.realized_pnl == (price - Decimal("149.95")) * 40
    assert exits(trading) == [("sell", 40, "filled", 40)]
    assert broker_qty(trading) == 60


def test_a_flatten_meeting_the_doctors_heal_of_a_hand_sale_ends_flat(trading, doctor, by_hand, short_window):
    from actors import messages as m
    protected_then_40_sold_by_hand(trading, by_hand)
    settle_refused_oco()
    (actor,) = trading.system.supervisor.live_refs().get()
    actor.tell(m.Flatten(reason="end of day", scheduled=True))
    doctor.run_pass(reason="test").get()  # the hand sale written as its exit while the flatten goes on
    closed = trading.wait_for(lambda: (p := position_of(trading)) and p.status == "closed" and p, "closed",
                              timeout=60)
    assert [o.quantity for o in trading.all_orders() if o.role == "flatten"] == [60]
    assert closed.quantity == 0 and closed.realized_pnl == (Decimal("151.00") - Decimal("149.95")) * 100
    time.sleep(1.0)
    assert broker_qty(trading) == 0 and not working_stop_ids(trading)


def test_an_asked_pass_due_when_the_doctor_stops_never_runs(trading, doctor_broker, monkeypatch):
    from actors import doctor as doctor_module
    from actors.messages import PassWanted
    from tests.actors.conftest import logged_lines
    from tests.actors.test_doctor_heals import doctor_on
    monkeypatch.setattr(doctor_module, "ASKED_PASS_GAP_S", 1.0)
    with logged_lines("actors.doctor", "INFO") as said, logged_lines("pykka", "WARNING") as pykka_said:
        with doctor_on(trading, doctor_broker) as doctor:
            for i in range(20):
                doctor.actor_ref.tell(PassWanted(reason=f"position {i}"))
            trading.wait_for(lambda: any("(asked: position 0)" in line for line in said), "the first asked pass")
        time.sleep(1.5)
    asked = [line for line in said if line.startswith("doctor pass #")]
    assert len(asked) == 1, asked
    assert pykka_said == []


def test_shares_a_working_hand_order_holds_ask_the_doctor_once_not_at_every_refusal(exchange, tmp_path, monkeypatch):
    # From the review: the trader sells all 100 with a limit order that fills 40 and works on for the 60. The heal
    # writes it as the position's exit; each pass then finds the 60 without a stop and has the position protect them;
    # the broker refuses (the hand order holds them), the position gives up and asked the doctor again: a pass and a
    # refused OCO every doctor's gap, all day. It asks once each DOCTOR_ASKED_AGAIN_S now.
    from alpaca.trading.client import TradingClient

    from actors import doctor as doctor_module
    from actors import position as position_module
    from catalyst.broker.adapter import AlpacaBroker
    from catalyst.broker.ratelimit import RateLimiter
    from catalyst.router_settings import RouterSettings
    from tests.actors.conftest import Trading, logged_lines
    from tests.actors.test_doctor_heals import doctor_on

    monkeypatch.setattr(position_module, "NO_SHARES_WINDOW_S", 0.3)
    monkeypatch.setattr(doctor_module, "ASKED_PASS_GAP_S", 0.2)
    monkeypatch.setattr(position_module, "DOCTOR_ASKED_AGAIN_S", 60.0)
    doctors: list[Any] = []
    trading = Trading(exchange, f"sqlite+aiosqlite:///{tmp_path / 'catalyst.db'}",
                      router_settings=RouterSettings(unknown_resends=0), doctor_listeners=doctors).start()
    try:
        hand = TradingClient(trading.key, "secret", paper=True, url_override=trading.exchange.base_url)
        broker = AlpacaBroker(trading.key, "secret", trading_url=trading.exchange.base_url, timeout_s=5.0,
                              limiter=RateLimiter(0), name="doctor")
        with doctor_on(trading, broker) as doctor, logged_lines("actors.doctor", "INFO") as said:
            doctors.append(doctor.actor_ref)
            open_protected(trading)
            hand_limit_sell(trading, hand, 100, 150)
            trading.trade("AAPL", "151.00", volume=160)  # a quarter of the minute's volume: 40 of the 100
            trading.wait_for(lambda: broker_qty(trading) == 60, "40 sold by the hand limit, 60 held by it")
            trading.wait_for(lambda: (p := position_of(trading)) and p.quantity == Decimal(60),
                             "the hand order written as the position's exit by an asked pass")
            time.sleep(3.0)  # unbounded, the position would have asked a dozen times by now
            asked = [line for line in said if line.startswith("doctor pass #") and "(asked: " in line]
        assert len(asked) == 1, asked
        assert broker_qty(trading) == 60 and position_of(trading).status == "open"
        exits = [o for o in trading.all_orders() if o.role == "exit"]
        assert [(o.status, o.filled_qty) for o in exits] == [("partial_fill", Decimal(40))]
    finally:
        trading.stop()


def test_shares_left_by_a_hand_sale_are_protected_before_any_pass(trading, by_hand, short_window,
                                                                  refusal_names_no_count):
    # No doctor here: its pass may be minutes away, or halt (a sale no fill explains). Once its OCO for the 100 has
    # been refused past the window, the position asks the broker what it holds and protects those 60 meanwhile.
    protected_then_40_sold_by_hand(trading, by_hand)
    with logged_lines("actors.position", "WARNING") as said:
        protected(trading, "60")
    position = position_of(trading)
    assert (position.status, position.quantity) == ("open", 100)  # the sale is the doctor's to write as an exit
    assert any("the broker holds 60 of its 100 shares free (it holds 60 AAPL): those 60 protected now; the other 40, sold "
               "outside Catalyst?, left to the doctor's pass" in line for line in said), said
    working = trading.wait_for(lambda: len(legs := sorted((o.role, o.quantity) for o in trading.all_orders()
                                                          if o.role in ("stop_loss", "take_profit")
                                                          and o.status in ("submitted", "accepted")
                                                          and o.alpaca_order_id)) == 2 and legs,
                               "both legs acknowledged")
    assert working == [("stop_loss", 60), ("take_profit", 60)]
    time.sleep(1.5)  # nothing more is sent for the other 40: the cap holds until an execution changes the position
    assert broker_working_stop_qty(trading) == 60 and len(working_stop_ids(trading)) == 1


def test_a_halt_over_a_hand_sale_no_fill_explains_leaves_what_the_broker_holds_under_a_stop(trading, doctor, by_hand,
                                                                                           short_window):
    # Bought 40 by hand on top, then sold 80: the doctor halts (the buy is no exit of a long position). The 60 the
    # broker holds had no stop until an operator came; the position now protects them itself.
    bought_40_then_sold_80_by_hand(trading, by_hand)
    protected(trading, "60")
    report = doctor.run_pass(reason="test").get()
    mismatch = next(f for f in report.findings if f.type is T.POSITION_QTY_MISMATCH)
    assert mismatch.policy == "halt" and not doctor.entries_allowed().get()
    time.sleep(1.0)
    assert broker_working_stop_qty(trading) == 60 and broker_qty(trading) == 60
    assert (position_of(trading).status, position_of(trading).quantity) == ("open", 100)


def test_the_heal_after_the_rest_is_protected_keeps_one_oco_for_it(trading, doctor, by_hand, short_window):
    sale = protected_then_40_sold_by_hand(trading, by_hand)
    protected(trading, "60")
    first = working_stop_ids(trading)
    doctor.run_pass(reason="test").get()
    position = trading.wait_for(lambda: (p := position_of(trading)) and p.quantity == 60 and p, "the sale applied")
    time.sleep(1.0)
    assert working_stop_ids(trading) == first and broker_working_stop_qty(trading) == 60  # not sent again
    price = Decimal(str(by_hand.get_order_by_id(sale.id).filled_avg_price))
    assert position.status == "open" and position.realized_pnl == (price - Decimal("149.95")) * 40
    assert exits(trading) == [("sell", 40, "filled", 40)]
