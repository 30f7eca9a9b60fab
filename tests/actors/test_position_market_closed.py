"""While the market is closed a position actor sends no market exit of its own accord: it would wait for the next open
with no stop under the shares. Its shares go under stops instead, and the next open's flatten sells them.

Three ways one used to go out after the close, found by reviews: an actor rebuilt after the close (a crash, late
entry shares) was never told of it (the cycle tells the actors live at the close); a late-shares seller asking the
broker what it holds ignored the close; and protection refused after the close was taken, as in the day, for a stop
already through the market. The position actor is driven as the router would drive it, with the real DbWriter on a
SQLite file (tests/actors/test_position_flatten.py's rig)."""

from __future__ import annotations

import time
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from actors import messages as m
from actors import position as position_module
from actors.position import OVERNIGHT_CANCEL, PositionActor
from actors.system import Restored, Supervisor
from catalyst.domain.orders import OrderStatus
from catalyst.sim.clock import SimClock
from tests.actors.conftest import Trading, logged_lines, with_market_hours
from tests.actors.test_late_entry_shares import asked_the_broker, rebuilt_with_late_shares
from tests.actors.test_position_flatten import T0, Rig, killed_with_the_entry_filled, wait_for
from tests.actors.test_position_overnight import killed_while_its_market_exit_works
from tests.actors.test_trade_scenarios import protected_qty

EXIT_ID = 90


def killed_while_its_exit_works(rig: Rig) -> Any:
    """What a rebuild finds after a crash while kept overnight whose exit cancel was lost: the position's OCO
    cancelled, its market exit accepted (queued for the next open). The book."""
    _, exit_row = killed_while_its_market_exit_works(rig)
    rig.exit_id = exit_row.order_id
    return rig.writer.position_book(rig.entry.order_id).get()


class Hours:
    """The daemon's MarketHours.closed, as a test sets it."""

    def __init__(self, closed: bool) -> None:
        self.closed, self.asked = closed, 0

    def __call__(self) -> bool:
        self.asked += 1
        return self.closed


def rebuilt(rig: Rig, book: Any, hours: Hours) -> Any:
    actor = PositionActor.start(rig.plan, rig.router, rig.writer, rig.system, SimClock(T0, 0),
                                restored=Restored.from_book(book), market_closed=hours)
    rig.position = actor  # stopped by the rig
    return actor


def test_an_actor_rebuilt_after_the_close_cancels_its_resumed_exit_and_protects_the_shares(rig: Rig) -> None:
    actor = rebuilt(rig, killed_while_its_exit_works(rig), Hours(closed=True))
    cancel = wait_for(lambda: [c for c in rig.told(m.CancelOrders) if rig.exit_id in c.order_ids], "the exit's cancel")
    assert cancel[0].reason == OVERNIGHT_CANCEL
    assert not rig.told(m.SubmitProtection)  # the exit still holds the shares: an OCO now would be refused

    actor.tell(m.OrderUpdated(order_id=rig.exit_id, role="flatten", status=OrderStatus.CANCELLED,
                              filled_qty=Decimal(0)))
    protection = wait_for(lambda: rig.told(m.SubmitProtection), "the shares under stops")[0]
    assert protection.stop_loss.quantity == Decimal(100)
    state = rig.settled()
    assert state["status"] == "open" and state["flattening"] is None
    assert not rig.told(m.PlaceExit)


def test_an_actor_rebuilt_while_the_market_is_open_still_waits_for_its_exit(rig: Rig) -> None:
    rebuilt(rig, killed_while_its_exit_works(rig), Hours(closed=False))
    state = rig.settled()
    time.sleep(0.2)
    assert state["flattening"].startswith("resumed after a restart")
    assert not rig.told(m.CancelOrders) and not rig.told(m.SubmitProtection)


def late_shares_found_at_night(rig: Rig) -> tuple[Any, Any, Any]:
    """A closed position's 40 late entry shares, its actor rebuilt while the market is closed and the broker saying
    it holds them: their OCO asked for. (book, actor, its SubmitProtection)"""
    book, actor = rebuilt_with_late_shares(rig, Hours(closed=True))
    asked_the_broker(rig, actor)
    actor.tell(m.BrokerPositionRead(symbol="AAPL", qty=Decimal(40)))
    protection = wait_for(lambda: [p for p in rig.told(m.SubmitProtection) if p.owner == actor], "their stops")[0]
    return book, actor, protection


def test_late_shares_found_after_the_close_go_under_stops_and_are_sold_at_the_next_open(rig: Rig) -> None:
    book, actor, protection = late_shares_found_at_night(rig)
    assert (protection.stop_loss.quantity, protection.stop_loss.position_id) == (Decimal(40), book.position.position_id)
    assert not rig.told(m.PlaceExit)

    tp, sl = protection.take_profit.order_id, protection.stop_loss.order_id
    actor.tell(m.OrderUpdated(order_id=tp, role="take_profit", status=OrderStatus.ACCEPTED, filled_qty=Decimal(0)))
    actor.tell(m.OrderUpdated(order_id=sl, role="stop_loss", status=OrderStatus.ACCEPTED, filled_qty=Decimal(0)))
    actor.tell(m.Flatten(reason="carried over from an earlier day", scheduled=True))  # the next open
    wait_for(lambda: [c for c in rig.told(m.CancelOrders) if set(c.order_ids) == {tp, sl}], "their stops cancelled")
    actor.tell(m.OrderUpdated(order_id=tp, role="take_profit", status=OrderStatus.CANCELLED, filled_qty=Decimal(0)))
    actor.tell(m.OrderUpdated(order_id=sl, role="stop_loss", status=OrderStatus.CANCELLED, filled_qty=Decimal(0)))
    exit_ = wait_for(lambda: [x for x in rig.told(m.PlaceExit) if x.owner == actor], "the market exit")[0]
    assert (exit_.qty, exit_.side) == (Decimal(40), "sell")


def test_the_close_reaching_a_late_shares_seller_while_it_asks_the_broker_keeps_them_under_stops(rig: Rig) -> None:
    _, actor = rebuilt_with_late_shares(rig)  # rebuilt while the market was open
    asked_the_broker(rig, actor)
    actor.tell(m.KeepOvernight())  # the close, before the broker's answer
    actor.tell(m.BrokerPositionRead(symbol="AAPL", qty=Decimal(40)))
    protection = wait_for(lambda: [p for p in rig.told(m.SubmitProtection) if p.owner == actor], "their stops")[0]
    assert protection.stop_loss.quantity == Decimal(40)
    actor.proxy().state().get()  # answered once every message told before it is handled
    assert not rig.told(m.PlaceExit)


def refused_after_the_close(rig: Rig, second_leg: OrderStatus) -> Any:
    """Open and protected, told of the close (nothing to keep: not flattening), then its OCO replaced (a leg
    cancelled by hand) and the new OCO refused: its stop rejected, its take-profit `second_leg`. The new OCO."""
    tp, sl = rig.open_and_protect()
    rig.position.tell(m.KeepOvernight())
    rig.update(sl.order_id, "stop_loss", OrderStatus.CANCELLED)
    rig.update(tp.order_id, "take_profit", OrderStatus.CANCELLED)
    again = wait_for(lambda: rig.told(m.SubmitProtection)[1:], "the shares protected again")[0]
    rig.update(again.stop_loss.order_id, "stop_loss", OrderStatus.REJECTED)
    rig.update(again.take_profit.order_id, "take_profit", second_leg)
    return again


@pytest.mark.parametrize("second_leg", [OrderStatus.REJECTED, OrderStatus.CANCELLED])
def test_protection_refused_after_the_close_is_asked_again_later_never_sold_at_market(
        rig: Rig, monkeypatch: pytest.MonkeyPatch, second_leg: OrderStatus) -> None:
    monkeypatch.setattr(position_module, "PROTECT_RETRY_FIRST_S", 0.5)
    with logged_lines("actors.position", "CRITICAL") as critical:
        refused_after_the_close(rig, second_leg)
        rig.settled()
        assert len(rig.told(m.SubmitProtection)) == 2  # not asked again at once, for either leg's report
        third = wait_for(lambda: rig.told(m.SubmitProtection)[2:], "the OCO asked again after the wait")[0]
    assert third.stop_loss.quantity == Decimal(100)
    assert not rig.told(m.PlaceExit) and rig.settled()["flattening"] is None
    assert len(critical) == 1 and "protection refused while the market is closed" in critical[0]
    assert "100 shares without a stop; no market exit" in critical[0] and "asking again in 0.5 s" in critical[0]


def test_protection_refused_in_the_day_is_still_a_market_exit(rig: Rig) -> None:
    protection = rig.fill_entry()
    rig.update(protection.stop_loss.order_id, "stop_loss", OrderStatus.REJECTED)
    rig.update(protection.take_profit.order_id, "take_profit", OrderStatus.REJECTED)
    assert wait_for(lambda: rig.told(m.PlaceExit), "the market exit")[0].qty == Decimal(100)


def test_the_next_opens_flatten_sells_shares_whose_protection_was_refused_overnight(
        rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(position_module, "PROTECT_RETRY_FIRST_S", 60.0)
    refused_after_the_close(rig, OrderStatus.REJECTED)
    rig.position.tell(m.Flatten(reason="carried over from an earlier day", scheduled=True))
    exit_ = wait_for(lambda: rig.told(m.PlaceExit), "the market exit")[0]
    assert exit_.qty == Decimal(100)


def test_the_hours_are_asked_at_the_moment_not_kept_from_the_rebuild(rig: Rig) -> None:
    """Rebuilt before the bell, its late shares confirmed once the market has opened: sold, not kept under stops
    (a review: an answer latched at the rebuild lasted the whole day)."""
    hours = Hours(closed=True)
    _, actor = rebuilt_with_late_shares(rig, hours)
    asked_the_broker(rig, actor)
    hours.closed = False  # the bell
    actor.tell(m.BrokerPositionRead(symbol="AAPL", qty=Decimal(40)))
    exit_ = wait_for(lambda: [x for x in rig.told(m.PlaceExit) if x.owner == actor], "the market exit")[0]
    assert exit_.qty == Decimal(40) and hours.asked >= 1


def test_a_stop_refused_in_the_day_after_a_night_rebuild_is_a_market_exit(rig: Rig) -> None:
    hours = Hours(closed=True)
    _, tp, sl = killed_with_the_entry_filled(rig)  # its OCO rows created, not yet sent
    rig.writer.update_order_status(rig.entry.order_id, "filled", "filled", Decimal(100), Decimal("50")).get()
    actor = rebuilt(rig, rig.writer.position_book(rig.entry.order_id).get(), hours)
    hours.closed = False  # the bell
    for leg in (tp, sl):
        actor.tell(m.OrderUpdated(order_id=leg.order_id, role=leg.role, status=OrderStatus.REJECTED,
                                  filled_qty=Decimal(0)))
    assert wait_for(lambda: rig.told(m.PlaceExit), "the market exit")[0].qty == Decimal(100)


@pytest.mark.parametrize("tries, wait_s", [(1, 2.0), (2, 4.0), (5, 32.0), (6, 60.0), (1025, 60.0), (10_000, 60.0)])
def test_the_wait_between_refused_protections_grows_to_a_minute_and_stays_there(tries: int, wait_s: float) -> None:
    # A refusal that lasts all night: 2.0 * 2 ** 1024 overflowed, and the actor crashed about 17 hours in.
    assert position_module.protect_retry_wait_s(tries) == wait_s
    assert position_module.protect_retry_wait_s(tries, 600.0) == min(2.0 * 2 ** min(tries - 1, 16), 600.0)


def test_a_refusal_that_lasts_is_said_now_and_then_not_every_minute(
        rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(position_module, "PROTECT_RETRY_FIRST_S", 0.001)
    monkeypatch.setattr(position_module, "PROTECT_RETRY_OVERNIGHT_MAX_S", 0.001)
    monkeypatch.setattr(position_module, "PROTECT_RETRY_OVERNIGHT_SAID_EVERY", 5)
    take_profit, stop_loss = rig.open_and_protect()
    rig.position.tell(m.KeepOvernight())
    with logged_lines("actors.position", "CRITICAL") as critical:
        for _ in range(12):  # refused, asked again after the wait, refused again …
            sent = len(rig.told(m.SubmitProtection))
            rig.update(stop_loss.order_id, "stop_loss", OrderStatus.REJECTED)
            rig.update(take_profit.order_id, "take_profit", OrderStatus.REJECTED)
            oco = wait_for(lambda: rig.told(m.SubmitProtection)[sent:], "the OCO asked again")[0]
            take_profit, stop_loss = oco.take_profit, oco.stop_loss
        assert rig.settled()["status"] == "open"
    assert [line.split("(")[1].split(")")[0] for line in critical] == [
        "no reason given", "no reason given, 5 times in a row", "no reason given, 10 times in a row"]
    assert not rig.told(m.PlaceExit)


@pytest.fixture
def trading_with_market_hours(exchange, tmp_path) -> Any:
    """The actor system as the daemon wires it: a rebuild asks the broker's calendar (through alpaca-py) whether the
    market is closed, on the exchange's clock."""
    harness = with_market_hours(Trading(exchange, f"sqlite+aiosqlite:///{tmp_path / 'catalyst.db'}"))
    yield harness.start()
    harness.stop()


def test_a_position_crashing_after_the_close_with_its_exit_queued_is_rebuilt_under_stops(
        trading_with_market_hours) -> None:
    trading = trading_with_market_hours
    trading.exchange.set_price("AAPL", "149.95")
    ref = trading.open(trading.plan())
    trading.wait_for(lambda: protected_qty(trading) == Decimal(100), "protection")
    trading.exchange.advance(timedelta(hours=6, minutes=20))  # 16:05: closed
    # The day's flatten, its exit reaching the broker a moment after the close (chaos seed 51: a restart at 15:59:59):
    # queued for the next open.
    ref.tell(m.Flatten(reason="end of day", scheduled=True))
    exit_row = trading.wait_for(lambda: [o for o in trading.all_orders() if o.role == "flatten"
                                         and o.status in ("submitted", "accepted")], "the exit at the broker")[0]

    entry = trading.all_orders()[0]
    bogus = m.Execution(key="bogus:1", qty=Decimal("999"), price=Decimal("1"), at=entry.updated_at)
    ref.tell(m.OrderUpdated(order_id=entry.order_id + 1, role="take_profit", status=OrderStatus.FILLED,
                            filled_qty=Decimal("999"), execution=bogus))  # crashes it: an exit larger than it holds
    trading.wait_for(lambda: not ref.is_alive(), "the poisoned actor to die")

    trading.wait_for(lambda: protected_qty(trading) == Decimal(100), "the rebuilt actor's stops", timeout=30)
    assert trading.writer.get_order(exit_row.order_id).get().status == "cancelled"
    at_broker = trading.broker_view()
    assert [o["status"] for o in at_broker["orders"] if o["id"] == exit_row.alpaca_order_id] == ["canceled"]
    assert [(p["symbol"], Decimal(p["qty"])) for p in at_broker["positions"]] == [("AAPL", Decimal(100))]
    stops = [o for o in at_broker["orders"] if o["type"] == "stop" and o["status"] in ("new", "accepted", "held")]
    assert sum(Decimal(o["qty"]) for o in stops) == Decimal(100)


def test_a_flatten_asked_by_others_while_the_market_is_closed_keeps_the_stops_until_it_opens(rig: Rig) -> None:
    """The doctor's flatten policy, or an emergency stop's last resort, at night: cancelling the stops for an exit
    queued until the open would leave the shares bare all night. Done once the market opens (a review: left to the
    cycle's flatten of earlier days' positions, a position adopted before the open was kept all day)."""
    hours = Hours(closed=True)
    _, tp, sl = killed_with_the_entry_filled(rig)
    rig.writer.update_order_status(rig.entry.order_id, "filled", "filled", Decimal(100), Decimal("50")).get()
    actor = rebuilt(rig, rig.writer.position_book(rig.entry.order_id).get(), hours)
    for leg in (tp, sl):
        actor.tell(m.OrderUpdated(order_id=leg.order_id, role=leg.role, status=OrderStatus.ACCEPTED,
                                  filled_qty=Decimal(0)))
    with logged_lines("actors.position", "WARNING") as warnings:
        actor.tell(m.Flatten(reason="doctor: orphan_position position AAPL"))
        actor.tell(m.Flatten(reason="doctor: orphan_position position AAPL"))  # the next pass: said once
        asked = hours.asked
        wait_for(lambda: hours.asked > asked + 2, "the hours looked at again")
        assert rig.settled()["flattening"] is None
    assert not rig.told(m.CancelOrders) and not rig.told(m.PlaceExit)
    assert warnings == ["position AAPL#p-1 doctor: orphan_position position AAPL: the market is closed, and a market "
                        "exit would wait for the open with no stop under the shares; kept under stops, flattened when "
                        "it opens"]

    hours.closed = False  # the bell
    cancel = wait_for(lambda: rig.told(m.CancelOrders), "its stops cancelled")[0]
    assert set(cancel.order_ids) == {tp.order_id, sl.order_id}
    assert rig.settled()["flattening"] == ("doctor: orphan_position position AAPL (asked while the market was "
                                           "closed)")


def test_late_shares_under_their_own_stops_are_not_given_up_on_when_the_broker_cannot_answer(
        rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    """Restored at a start with their stops (kept overnight): giving up after five failed reads cancelled those stops
    with the position's orders, and left the shares bare (a review)."""
    monkeypatch.setattr(position_module, "LATE_SHARES_RETRY_S", 0.01)
    book, actor, protection = late_shares_found_at_night(rig)
    for leg in (protection.take_profit, protection.stop_loss):
        actor.tell(m.OrderUpdated(order_id=leg.order_id, role=leg.role, status=OrderStatus.ACCEPTED,
                                  filled_qty=Decimal(0)))
    rig.writer.close_position(book.position.position_id, exit_price=Decimal("48"), exit_time=T0,
                              realized_pnl=Decimal("-120")).get()  # as the row stays: closed
    restarted = PositionActor.start(rig.plan, rig.router, rig.writer, rig.system, SimClock(T0, 0),
                                    Restored.from_book(rig.writer.position_book(rig.entry.order_id).get()),
                                    market_closed=Hours(closed=True))
    actor.stop()
    rig.rebuilt = restarted
    asked_the_broker(rig, restarted)
    for _ in range(8):
        restarted.tell(m.BrokerPositionRead(symbol="AAPL", error="HTTP 503"))
    state = restarted.proxy().state().get()
    assert restarted.is_alive() and state["protected"] == "40"
    assert not [c for c in rig.told(m.CancelOrders) if protection.stop_loss.order_id in c.order_ids]


def deferred_at_night(rig: Rig) -> Any:
    """Open under its OCO, the market closed, a doctor's flatten put off until it opens. The actor."""
    hours = Hours(closed=True)
    _, tp, sl = killed_with_the_entry_filled(rig)
    rig.writer.update_order_status(rig.entry.order_id, "filled", "filled", Decimal(100), Decimal("50")).get()
    actor = rebuilt(rig, rig.writer.position_book(rig.entry.order_id).get(), hours)
    actor.tell(m.Flatten(reason="doctor: orphan_position position AAPL"))
    rig.settled()
    return actor


def test_a_flatten_put_off_until_the_open_goes_to_the_actor_rebuilt_from_a_stale_book(rig: Rig) -> None:
    actor = deferred_at_night(rig)
    actor.tell(m.StaleBook(detail="the router's commit of o-9"))
    passed = wait_for(lambda: [x for x in rig.system.proxy().received().get() if isinstance(x, m.ForSuccessor)],
                      "the flatten passed on")
    assert passed[0].message == m.Flatten(reason="doctor: orphan_position position AAPL")


def test_a_flatten_put_off_until_the_open_goes_to_the_actor_rebuilt_after_a_crash(rig: Rig) -> None:
    actor = deferred_at_night(rig)
    actor.tell(m.OrderUpdated(order_id=rig.entry.order_id + 1, role="take_profit", status=OrderStatus.FILLED,
                              filled_qty=Decimal(999), execution=m.Execution(key="bogus:1", qty=Decimal(999),
                                                                             price=Decimal(1), at=T0)))
    crashed = wait_for(lambda: [x for x in rig.system.proxy().received().get() if isinstance(x, m.PositionCrashed)],
                       "the crash told")
    assert crashed[0].for_successor == m.Flatten(reason="doctor: orphan_position position AAPL")


def test_the_supervisor_tells_the_rebuilt_actor_what_the_crashed_one_passed_on(rig: Rig, recording_actor: Any) -> None:
    killed_with_the_entry_filled(rig)
    made: list[Any] = []

    def make_position(plan: Any, restored: Any = None) -> Any:
        made.append(recording_actor())
        return made[-1]

    supervisor = Supervisor.start(rig.writer, make_position)
    try:
        supervisor.tell(m.PositionCrashed(key="AAPL#p-1", entry_order_id=rig.entry.order_id, error="boom",
                                          for_successor=m.Flatten(reason="doctor: put off")))
        wait_for(lambda: made and made[0].proxy().received().get(), "the rebuilt actor told")
        assert made[0].proxy().received().get() == [m.Flatten(reason="doctor: put off")]
    finally:
        supervisor.stop()


def test_late_shares_whose_stops_are_refused_at_night_get_a_market_sell_queued_for_the_open(rig: Rig) -> None:
    """A review: late shares of a trade that stopped out have a stop through the last price, refused until the open;
    retried, they waited on their actor all night (a restart found no order of theirs working). Bare either way, a
    market sell queued for the open settles them there."""
    book, actor, protection = late_shares_found_at_night(rig)
    with logged_lines("actors.position", "ERROR") as errors:
        for leg in (protection.stop_loss, protection.take_profit):
            actor.tell(m.OrderUpdated(order_id=leg.order_id, role=leg.role, status=OrderStatus.REJECTED,
                                      filled_qty=Decimal(0), reason="rejected[other]: stop price through the market"))
        exit_ = wait_for(lambda: [x for x in rig.told(m.PlaceExit) if x.owner == actor], "the market sell")[0]
    assert (exit_.qty, exit_.side, exit_.position_id) == (Decimal(40), "sell", book.position.position_id)
    assert [p for p in rig.told(m.SubmitProtection) if p.owner == actor] == [protection]  # not asked again
    assert errors == [f"position AAPL#p-{book.position.position_id} protection for its late entry shares refused "
                      "while the market is closed (rejected[other]: stop price through the market): 40 shares without "
                      "a stop until the open; a market sell of them queued for the open instead"]


def restarted_at_night_with_the_sale_queued(rig: Rig) -> tuple[Any, Any]:
    """Late shares whose stops were refused at night, their sale queued for the open; the daemon restarted, the actor
    restored while the market is still closed. (the restored actor, the sale's row)"""
    book, actor, protection = late_shares_found_at_night(rig)
    for leg in (protection.stop_loss, protection.take_profit):
        actor.tell(m.OrderUpdated(order_id=leg.order_id, role=leg.role, status=OrderStatus.REJECTED,
                                  filled_qty=Decimal(0)))
    wait_for(lambda: [x for x in rig.told(m.PlaceExit) if x.owner == actor], "the sale queued for the open")
    for leg in (protection.stop_loss, protection.take_profit):
        rig.writer.update_order_status(leg.order_id, "rejected", "rejected", Decimal(0), None).get()
    sale = rig.writer.create_order(cycle_id=rig.entry.cycle_id, symbol="AAPL", role="flatten", side="sell",
                                   order_type="market", time_in_force="day", quantity=Decimal(40),
                                   position_id=book.position.position_id).get()
    rig.writer.mark_submitted(sale.order_id, "b-sale", "accepted").get()
    actor.stop()
    restarted = PositionActor.start(rig.plan, rig.router, rig.writer, rig.system, SimClock(T0, 0),
                                    Restored.from_book(rig.writer.position_book(rig.entry.order_id).get()),
                                    market_closed=Hours(closed=True))
    rig.rebuilt = restarted
    asked_the_broker(rig, restarted)
    return restarted, sale


def test_a_restart_at_night_keeps_the_sale_queued_for_late_shares_whose_stops_were_refused(rig: Rig) -> None:
    """A review: restored while closed, the queued sale was cancelled like any resumed exit, the stops tried again and
    refused, the sale queued again; a kill in between left the shares with neither, and no actor at the next start."""
    restarted, sale = restarted_at_night_with_the_sale_queued(rig)
    with logged_lines("actors.position", "WARNING") as warnings:
        restarted.tell(m.BrokerPositionRead(symbol="AAPL", qty=Decimal(40)))
        state = restarted.proxy().state().get()
    assert state["flattening"].startswith("resumed after a restart")
    assert not [c for c in rig.told(m.CancelOrders) if sale.order_id in c.order_ids]
    assert [p for p in rig.told(m.SubmitProtection) if p.owner == restarted] == []
    assert not [w for w in warnings if "go under stops" in w]  # the sale holds them: no stop is placed


def test_a_sale_kept_by_a_restart_at_night_is_not_given_up_when_the_broker_cannot_be_read(
        rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    """A review: five failed reads gave the late shares up, cancelling their kept sale: no stop, no exit, no actor."""
    monkeypatch.setattr(position_module, "LATE_SHARES_RETRY_S", 0.01)
    restarted, sale = restarted_at_night_with_the_sale_queued(rig)
    for _ in range(8):
        restarted.tell(m.BrokerPositionRead(symbol="AAPL", error="HTTP 503"))
    state = restarted.proxy().state().get()
    assert restarted.is_alive() and state["flattening"].startswith("resumed after a restart")
    assert not [c for c in rig.told(m.CancelOrders) if sale.order_id in c.order_ids]


def test_the_closes_keep_overnight_leaves_the_sale_a_restart_kept_for_late_shares(rig: Rig) -> None:
    """A review: the cycle resumed in `closed` tells every live actor KeepOvernight, which cancelled the sale the
    restart had kept: stops refused again, the sale queued again, and a kill in between left neither."""
    restarted, sale = restarted_at_night_with_the_sale_queued(rig)
    restarted.tell(m.BrokerPositionRead(symbol="AAPL", qty=Decimal(40)))
    restarted.tell(m.KeepOvernight())
    state = restarted.proxy().state().get()
    assert state["flattening"].startswith("resumed after a restart")
    assert not [c for c in rig.told(m.CancelOrders) if sale.order_id in c.order_ids]


def test_protection_held_after_a_refusal_at_night_is_asked_for_at_once_when_the_market_opens(
        rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    """A review: the hold lasted until the retry, up to 10 minutes past the bell, the doctor's CheckProtection ignored
    meanwhile (a position of today's cycle is not flattened at the open)."""
    monkeypatch.setattr(position_module, "PROTECT_RETRY_FIRST_S", 600.0)
    hours = Hours(closed=True)
    _, tp, sl = killed_with_the_entry_filled(rig)
    rig.writer.update_order_status(rig.entry.order_id, "filled", "filled", Decimal(100), Decimal("50")).get()
    actor = rebuilt(rig, rig.writer.position_book(rig.entry.order_id).get(), hours)
    for leg in (sl, tp):
        actor.tell(m.OrderUpdated(order_id=leg.order_id, role=leg.role, status=OrderStatus.REJECTED,
                                  filled_qty=Decimal(0)))
    actor.tell(m.CheckProtection())
    rig.settled()
    assert rig.told(m.SubmitProtection) == []  # held while closed
    hours.closed = False  # the bell
    actor.tell(m.CheckProtection())  # the doctor's heal
    assert wait_for(lambda: rig.told(m.SubmitProtection), "the OCO asked for")[0].stop_loss.quantity == Decimal(100)
