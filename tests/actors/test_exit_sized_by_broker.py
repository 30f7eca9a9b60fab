"""The broker's position read before a market exit, its answers played message by message: a read that fails, a
positions list lagging the entry's fill, and a broker that holds none of the shares. The position actor with the real
DbWriter on a SQLite file, the router a recorder (tests/actors/test_position_flatten.py's rig); the whole flow against
the emulator is tests/actors/test_flatten_after_hand_sale.py."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import pytest

from actors import messages as m
from actors import position as position_module
from catalyst.domain.orders import OrderStatus
from tests.actors.conftest import logged_lines
from tests.actors.test_position_flatten import T0, Rig, wait_for


@pytest.fixture(autouse=True)
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(position_module, "FLATTEN_RECHECK_S", 0.05)
    monkeypatch.setattr(position_module, "EXIT_NONE_RECHECK_S", 0.1)


def exit_reads(rig: Rig) -> list[Any]:
    return [x for x in rig.told(m.ReadBrokerPosition) if x.for_exit]


def flattened_with_the_oco_ended(rig: Rig) -> None:
    """Open with 100 and protected, flattened, its OCO's cancels confirmed: the broker's position is asked for."""
    rig.broker_holds = None  # answered by the test
    tp, sl = rig.open_and_protect()
    rig.position.tell(m.Flatten(reason="end of day", scheduled=True))
    rig.update(tp.order_id, "take_profit", OrderStatus.CANCELLED)
    rig.update(sl.order_id, "stop_loss", OrderStatus.CANCELLED)
    asked(rig, 1)


def asked(rig: Rig, times: int) -> None:
    wait_for(lambda: len(exit_reads(rig)) >= times, f"the broker's position asked for ({times})")


def answer(rig: Rig, qty: str = "0", error: str | None = None) -> None:
    rig.position.tell(m.BrokerPositionRead(symbol="AAPL", qty=Decimal(qty), error=error, for_exit=True))


def test_a_read_that_fails_is_made_again_then_the_exit_goes_for_the_shares_recorded(rig: Rig) -> None:
    with logged_lines("actors.position", "WARNING") as warnings:
        flattened_with_the_oco_ended(rig)
        for time_ in range(1, position_module.EXIT_READ_TRIES):
            answer(rig, error="HTTP 503")
            asked(rig, time_ + 1)
            assert not rig.told(m.PlaceExit)
        answer(rig, error="HTTP 503")
        (exit_,) = wait_for(lambda: rig.told(m.PlaceExit), "the market exit")
    assert exit_.qty == Decimal(100)
    assert warnings[-2:] == [
        "position AAPL#p-1 could not read the broker's AAPL position before its market exit (HTTP 503): asking again "
        "in 0.05 s",
        "position AAPL#p-1 could not read the broker's AAPL position 3 times (HTTP 503): market exit of the 100 shares "
        "recorded without it"]


def test_a_positions_list_lagging_the_entrys_fill_is_read_again_before_the_exit(rig: Rig) -> None:
    # The entry filled a moment ago (Rig.fill_entry): Alpaca's positions can lag a fill for seconds (ALPACA.md §7).
    with logged_lines("actors.position", "WARNING") as warnings:
        flattened_with_the_oco_ended(rig)
        answer(rig, "0")
        asked(rig, 2)
        assert not rig.told(m.PlaceExit)
        answer(rig, "100")
        (exit_,) = wait_for(lambda: rig.told(m.PlaceExit), "the market exit")
    assert exit_.qty == Decimal(100)
    assert [w for w in warnings if "the broker" in w] == [
        "position AAPL#p-1 the broker lists 0 of its 100 shares (it holds 0 AAPL); its positions can lag a fill: "
        "asking again in 0.05 s before the market exit"]  # no ERROR, nothing said sold outside Catalyst


def test_none_held_sends_no_exit_and_asks_again_until_the_shares_are_there(
        rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(position_module, "NO_SHARES_WINDOW_S", 0.0)  # the entry's fill long past
    with logged_lines("actors.position", "ERROR") as errors:
        flattened_with_the_oco_ended(rig)
        answer(rig, "0")
        asked(rig, 2)
        answer(rig, "0")
        asked(rig, 3)
        assert not rig.told(m.PlaceExit)
        answer(rig, "100")  # bought back by hand, say: the flatten sells them
        (exit_,) = wait_for(lambda: rig.told(m.PlaceExit), "the market exit")
    assert exit_.qty == Decimal(100)
    assert len(errors) == 1 and "the broker holds none of its 100 shares (it holds 0 AAPL)" in errors[0]  # said once


def other_open_position(rig: Rig, qty: int) -> None:
    """Another open AAPL position of `qty` in the database (one per symbol is the rule; late entry shares, a hand
    adoption are the exceptions): the broker nets its shares with the rig's."""
    other = rig.writer.create_order(
        cycle_id=rig.entry.cycle_id, symbol="AAPL", role="entry", side="buy", order_type="market",
        time_in_force="day", quantity=Decimal(qty), at=T0).get()
    rig.writer.open_position_for_entry(entry_order_id=other.order_id, quantity=Decimal(qty), entry_price=Decimal(50),
                                       entry_time=T0, stop_loss=Decimal(48), take_profit=Decimal(55)).get()


def test_an_exit_cut_to_what_the_broker_held_asks_about_the_rest_only_after_a_wait(
        rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    """The other position's exit sold 30 of its 50 at the broker, not recorded yet: the broker nets 120, so 70 of ours
    seem held and the exit is cut to 70. Our other 30 are at the broker after all: asked about again once a list
    read can no longer show the 70 just sold, and sold then; not left with no stop and no exit (a review)."""
    monkeypatch.setattr(position_module, "NO_SHARES_WINDOW_S", 0.0)
    monkeypatch.setattr(position_module, "EXIT_NONE_RECHECK_S", 0.5)
    other_open_position(rig, 50)
    with logged_lines("actors.position", "INFO") as lines:
        flattened_with_the_oco_ended(rig)
        answer(rig, "120")
        (exit_,) = wait_for(lambda: rig.told(m.PlaceExit), "the market exit of 70")
        assert exit_.qty == Decimal(70)
        rig.position.tell(m.OrdersCreated(roles={"flatten": 999}))
        rig.update(999, "flatten", OrderStatus.FILLED, "70",
                   m.Execution(key="b-x:70", qty=Decimal(70), price=Decimal("49"), at=T0))
        rig.settled()
        assert len(exit_reads(rig)) == 1  # not at once: the list can still show the 70 just sold
        asked(rig, 2)
        answer(rig, "80")  # the other position's exit recorded meanwhile (its 20 left): our 30 are there
        exits = wait_for(lambda: rig.told(m.PlaceExit)[1:], "the market exit of the other 30")
    assert [e.qty for e in exits] == [Decimal(30)]
    assert ("position AAPL#p-2 market exit o-999 filled; its other 30 shares, which the broker did not hold, are "
            "asked about again in 0.5 s") in lines


def test_reads_that_fail_after_the_broker_said_none_never_sell_the_shares_recorded(
        rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    """A review: the broker said it holds none (sold by hand), then its positions endpoint failed three times in a
    row; the exit went for the 100 recorded, a short sale of 100. A failed read never goes past the last answer."""
    monkeypatch.setattr(position_module, "NO_SHARES_WINDOW_S", 0.0)
    flattened_with_the_oco_ended(rig)
    answer(rig, "0")
    for time_ in range(2, 2 + position_module.EXIT_READ_TRIES):
        asked(rig, time_)
        answer(rig, error="HTTP 503")
    asked(rig, 2 + position_module.EXIT_READ_TRIES)  # asked again, as for none held
    answer(rig, "0")
    rig.settled()
    assert not rig.told(m.PlaceExit)


def test_late_entry_shares_gone_by_the_exits_read_are_left_not_asked_about_for_good(
        rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    """A review: late entry shares the broker held a moment ago, gone by the exit's read (sold by hand between): their
    row is closed, so no doctor's finding settles them; the actor leaves them with an ERROR and stops."""
    from tests.actors.test_late_entry_shares import asked_the_broker, rebuilt_with_late_shares

    monkeypatch.setattr(position_module, "NO_SHARES_WINDOW_S", 0.0)  # not a list lagging the rebuild
    rig.broker_holds = None
    book, rebuilt = rebuilt_with_late_shares(rig)
    asked_the_broker(rig, rebuilt)
    with logged_lines("actors.position", "ERROR") as errors:
        rebuilt.tell(m.BrokerPositionRead(symbol="AAPL", qty=Decimal(40)))
        wait_for(lambda: [x for x in rig.told(m.ReadBrokerPosition) if x.reply_to == rebuilt and x.for_exit],
                 "the exit's read")
        rebuilt.tell(m.BrokerPositionRead(symbol="AAPL", qty=Decimal(0), for_exit=True))
        wait_for(lambda: not rebuilt.is_alive(), "the rebuilt actor to stop")
    assert not rig.told(m.PlaceExit)
    assert rig.writer.get_position(book.position.position_id).get().status == "closed"
    assert errors == ["position AAPL#p-1 its 40 late entry shares are not sold: the broker holds 0 of them now (it "
                      "holds 0 AAPL; sold by hand?); check AAPL at the broker"]


def test_an_answer_after_the_close_kept_the_shares_under_stops_sends_nothing(rig: Rig) -> None:
    flattened_with_the_oco_ended(rig)
    rig.position.tell(m.KeepOvernight())
    protection = wait_for(lambda: rig.told(m.SubmitProtection)[1:], "the shares protected again")
    answer(rig, "100")
    rig.settled()
    assert not rig.told(m.PlaceExit) and protection[0].stop_loss.quantity == Decimal(100)


def test_an_answer_asked_before_a_sale_outside_catalyst_is_not_used(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    """A hand sale's fill while the read was on its way: the broker's list may still show the shares it sold. The
    answer is set aside and the broker asked again once the list can show the sale (POSITIONS_SETTLE_S)."""
    monkeypatch.setattr(position_module, "NO_SHARES_WINDOW_S", 0.0)
    monkeypatch.setattr(position_module, "POSITIONS_SETTLE_S", 0.3)
    flattened_with_the_oco_ended(rig)
    rig.position.tell(m.FilledOutside(symbol="AAPL", side="buy", qty=Decimal(5), broker_id="hand-buy"))  # not ours
    rig.position.tell(m.FilledOutside(symbol="AAPL", side="sell", qty=Decimal(100), broker_id="hand-sell"))
    answer(rig, "100")  # read before the sale reached the list
    rig.settled()
    assert not rig.told(m.PlaceExit)
    asked(rig, 2)
    answer(rig, "0")
    rig.settled()
    assert not rig.told(m.PlaceExit)


def test_a_buy_outside_catalyst_does_not_hold_a_long_positions_exit(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(position_module, "POSITIONS_SETTLE_S", 60.0)
    flattened_with_the_oco_ended(rig)
    rig.position.tell(m.FilledOutside(symbol="AAPL", side="buy", qty=Decimal(5), broker_id="hand-buy"))
    answer(rig, "105")
    (exit_,) = wait_for(lambda: rig.told(m.PlaceExit), "the market exit")
    assert exit_.qty == Decimal(100)


def test_a_rebuild_while_a_cut_exit_works_reads_the_rest_only_once_the_list_can_show_that_exit(
        rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    """A review: 40 of 100 sold by hand, the exit cut to 60, the daemon restarted while it worked. The rebuilt actor
    does not know it was cut; read at once after its fill, a list still showing the 60 it sold sized an exit of the
    40 that are not there (short 40). Any exit that fills with shares left waits POSITIONS_SETTLE_S for the read."""
    from actors.position import PositionActor
    from actors.system import Restored
    from catalyst.sim.clock import SimClock
    from tests.actors.test_position_flatten import killed_with_the_entry_filled

    monkeypatch.setattr(position_module, "NO_SHARES_WINDOW_S", 0.0)
    monkeypatch.setattr(position_module, "POSITIONS_SETTLE_S", 0.6)
    writer = rig.writer
    position, tp, sl = killed_with_the_entry_filled(rig)
    writer.update_order_status(rig.entry.order_id, "filled", "filled", Decimal(100), Decimal(50)).get()
    writer.update_order_status(tp.order_id, "cancelled", "canceled", Decimal(0), None).get()
    writer.update_order_status(sl.order_id, "cancelled", "canceled", Decimal(0), None).get()
    exit_row = writer.create_order(cycle_id=rig.entry.cycle_id, symbol="AAPL", role="flatten", side="sell",
                                   order_type="market", time_in_force="day", quantity=Decimal(60),
                                   position_id=position.position_id, at=T0).get()
    writer.mark_submitted(exit_row.order_id, "b-exit", "accepted").get()
    restored = Restored.from_book(writer.position_book(rig.entry.order_id).get())
    rig.broker_holds = None
    actor = rig.rebuilt = PositionActor.start(rig.plan, rig.router, writer, rig.system, SimClock(T0, 0),
                                              restored=restored)
    assert actor.proxy().state().get()["flattening"]
    actor.tell(m.OrderUpdated(order_id=exit_row.order_id, role="flatten", status=OrderStatus.FILLED,
                              filled_qty=Decimal(60),
                              execution=m.Execution(key="b-exit:60", qty=Decimal(60), price=Decimal(49), at=T0)))
    actor.proxy().state().get()
    time.sleep(0.3)
    assert not exit_reads(rig)  # not while the list can still show the 60 just sold
    wait_for(lambda: exit_reads(rig), "the exit's read once the list can show that fill")
    actor.tell(m.BrokerPositionRead(symbol="AAPL", qty=Decimal(0), for_exit=True))
    actor.proxy().state().get()
    assert not rig.told(m.PlaceExit)


def flattened_after_a_fill_outside(rig: Rig, monkeypatch: pytest.MonkeyPatch, broker_id: str) -> float:
    """Protected, a sale outside Catalyst heard of (`broker_id`), then flattened and its OCO's cancels confirmed; the
    settle time 0.3 s, the broker's answers the test's. When the flatten was asked (time.monotonic())."""
    monkeypatch.setattr(position_module, "NO_SHARES_WINDOW_S", 0.0)
    monkeypatch.setattr(position_module, "POSITIONS_SETTLE_S", 0.3)
    rig.broker_holds = None
    tp, sl = rig.open_and_protect()
    rig.position.tell(m.FilledOutside(symbol="AAPL", side="sell", qty=Decimal(1), broker_id=broker_id))
    started = time.monotonic()
    rig.position.tell(m.Flatten(reason="end of day", scheduled=True))
    rig.update(tp.order_id, "take_profit", OrderStatus.CANCELLED)
    rig.update(sl.order_id, "stop_loss", OrderStatus.CANCELLED)
    return started


def test_fills_outside_catalyst_that_keep_coming_put_the_exit_off_only_so_long(
        rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    """A review: a hand limit sell filling in pieces, or another program trading the symbol, each fill moving the read
    off again, kept shares with no stop from their exit for good. The put-off ends OUTSIDE_FILLS_MAX_WAITS settle
    times past the first fill."""
    started = flattened_after_a_fill_outside(rig, monkeypatch, "hand-limit")
    while not exit_reads(rig) and time.monotonic() - started < 5.0:
        rig.position.tell(m.FilledOutside(symbol="AAPL", side="sell", qty=Decimal(1), broker_id="hand-limit"))
        time.sleep(0.1)
    assert exit_reads(rig), "still put off"
    assert time.monotonic() - started < (position_module.OUTSIDE_FILLS_MAX_WAITS + 1) * 0.3 + 0.5


def test_a_list_lagging_the_entry_is_not_the_flattens_last_word_when_reads_then_fail(rig: Rig) -> None:
    """A review: the list lagging the entry's fill (0 listed), then three failed reads: the lagging answer was taken
    as the last word, the shares called sold outside and left bare 30 s more. It is not: the exit goes for the shares
    recorded, as with no answer at all."""
    with logged_lines("actors.position", "ERROR") as errors:
        flattened_with_the_oco_ended(rig)
        answer(rig, "0")  # within NO_SHARES_WINDOW_S of the entry's fill: a lag
        for time_ in range(2, 2 + position_module.EXIT_READ_TRIES):
            asked(rig, time_)
            answer(rig, error="HTTP 503")
        (exit_,) = wait_for(lambda: rig.told(m.PlaceExit), "the market exit")
    assert exit_.qty == Decimal(100) and not errors


def test_a_rebuilt_actor_told_of_a_recent_sale_outside_catalyst_puts_its_read_off(
        rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    """The router tells an actor rebuilt just after a hand sale of it again, with how long ago it heard of it: the read
    waits for the rest of the settle time only."""
    monkeypatch.setattr(position_module, "POSITIONS_SETTLE_S", 1.0)
    flattened_with_the_oco_ended(rig)  # asked at once: no sale heard of
    rig.position.tell(m.FilledOutside(symbol="AAPL", side="sell", qty=Decimal(40), broker_id="hand", seconds_ago=0.5))
    answer(rig, "100")  # asked before the sale showed: set aside
    rig.settled()
    assert not rig.told(m.PlaceExit)
    asked(rig, 2)  # about 0.5 s later, not 1 s
    answer(rig, "60")


def test_a_sale_outside_catalyst_long_after_an_earlier_one_puts_the_read_off_in_full(
        rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    """The cap on the put-off counts from the first of a run of such fills, not from one heard of hours before."""
    monkeypatch.setattr(position_module, "POSITIONS_SETTLE_S", 0.5)
    rig.broker_holds = None
    tp, sl = rig.open_and_protect()
    rig.position.tell(m.FilledOutside(symbol="AAPL", side="sell", qty=Decimal(1), broker_id="morning", seconds_ago=60))
    rig.position.tell(m.FilledOutside(symbol="AAPL", side="sell", qty=Decimal(1), broker_id="now"))
    rig.position.tell(m.Flatten(reason="end of day", scheduled=True))
    rig.update(tp.order_id, "take_profit", OrderStatus.CANCELLED)
    rig.update(sl.order_id, "stop_loss", OrderStatus.CANCELLED)
    rig.settled()
    assert not exit_reads(rig)  # put off for the fill just now
    asked(rig, 1)


def test_fills_outside_catalyst_inside_every_reads_round_trip_set_its_answer_aside_only_so_long(
        rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    """A review: a sliced sale by another program filling inside each read's round trip began a new run of put-offs
    each time, and every answer was set aside for as long as the fills came, the shares with no stop. The whole wait
    is capped from when the exit's read was first put off."""
    started = flattened_after_a_fill_outside(rig, monkeypatch, "slice-0")
    answered = 0
    while not rig.told(m.PlaceExit) and time.monotonic() - started < 5.0:
        if len(exit_reads(rig)) > answered:
            answered += 1
            rig.position.tell(m.FilledOutside(symbol="AAPL", side="sell", qty=Decimal(1), broker_id=f"slice-{answered}"))
            answer(rig, "100")  # asked before that fill: set aside, until the cap
        time.sleep(0.02)
    assert rig.told(m.PlaceExit), f"every answer set aside ({answered} reads)"
    assert time.monotonic() - started < (position_module.OUTSIDE_FILLS_MAX_WAITS + 1) * 0.3 + 1.0
