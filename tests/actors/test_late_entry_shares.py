"""Entry shares recorded after their position closed are sold, not left at the broker with no stop.

The entry's last fill event was lost; the stop then filled the shares recorded and the position closed, its actor
stopped. The router's catch-up (a stream reconnect) brought the lost execution for an actor that was gone: before,
those shares stayed at the broker with no stop until the doctor's pass halted entries over them.
"""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any, Callable

import pykka
import pytest
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderSide, TimeInForce
from alpaca.trading.requests import MarketOrderRequest

from actors import messages as m
from actors.db_writer import DbWriter
from actors.order_router import execution_key
from actors import position as position_module
from actors.position import PositionActor
from actors.system import Restored
from catalyst.domain.orders import OrderStatus
from catalyst.sim.clock import SimClock
from tests.actors.conftest import Trading, logged_lines
from tests.actors.test_position_flatten import T0, Rig, wait_for
from tests.actors.test_trade_scenarios import broker_working_stop_qty, position_of, protected_qty


def bought_500_with_300_unrecorded(trading: Any) -> None:
    """A long of 500 AAPL at 50 (stop 48): its first 200 recorded and protected, its other 300 filled at the broker
    with their fill event lost."""
    trading.exchange.set_price("AAPL", "50.00", volume=800)  # 200 shares a minute may trade
    trading.open(trading.plan(qty="500", stop="48.00", target="55.00"))
    trading.wait_for(lambda: (p := position_of(trading)) is not None and p.quantity == Decimal("200"),
                     "the entry's first 200")
    trading.wait_for(lambda: protected_qty(trading) == Decimal("200"), "their OCO")
    trading.exchange.set_faults("drop=1.0")
    trading.trade("AAPL", "50.00", volume=2000)  # the entry's other 300 fill; their event is lost
    trading.exchange.set_faults("")


def stopped_out(trading: Any) -> None:
    """Through the stop: it sells the 200 recorded, and the position closes."""
    trading.trade("AAPL", "47.50", volume=2000)
    trading.wait_for(lambda: (p := position_of(trading)) is not None and p.status == "closed", "the stop's close")


@pytest.mark.parametrize("reconnect", [False, True], ids=["router-alone", "stream-reconnect"])
def test_entry_shares_recorded_after_the_stop_closed_the_position_are_sold(trading, reconnect):
    # router-alone: the close cancels the entry's rest, the broker answers "already filled", and the router fetches
    # the executions that answer says it lacks. stream-reconnect: the reconnect's catch-up records them first.
    bought_500_with_300_unrecorded(trading)
    with logged_lines("actors.system", "WARNING") as system_lines:
        stopped_out(trading)
        assert trading.broker_view()["positions"][0]["qty"] == "300"  # bought, not recorded, no stop

        if reconnect:
            trading.exchange.drop_stream_connections()  # alpaca-py reconnects; its catch-up records the lost 300
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and trading.broker_view()["positions"]:
            trading.trade("AAPL", "47.50", volume=2000)  # minutes go by: the market exit can fill
            time.sleep(0.3)

    assert trading.broker_view()["positions"] == []
    assert any("300 entry shares recorded with no live position actor" in line for line in system_lines)
    position = position_of(trading)
    assert (position.status, position.quantity) == ("closed", Decimal(0))
    orders = trading.all_orders()
    entry = next(o for o in orders if o.role == "entry")
    stop = next(o for o in orders if o.role == "stop_loss")
    exits = [o for o in orders if o.role == "flatten"]
    assert (entry.filled_qty, stop.filled_qty) == (Decimal(500), Decimal(200))
    assert [(o.quantity, o.filled_qty) for o in exits] == [(Decimal(300), Decimal(300))]
    # Every share counted: what the sells brought in minus what the buys paid.
    bought = entry.filled_qty * entry.filled_avg_price
    sold = sum((o.filled_qty * o.filled_avg_price for o in (stop, *exits)), Decimal(0))
    assert position.realized_pnl == sold - bought
    assert broker_working_stop_qty(trading) == 0


def execution(key: str, qty: int, price: str) -> m.Execution:
    return m.Execution(key=key, qty=Decimal(qty), price=Decimal(price), at=T0)


def closed_by_its_stop_with_the_entry_working(rig: Rig) -> None:
    """The entry fills 60 of 100, protected; the stop sells the 60: closed while the entry still works."""
    entry_id = rig.entry.order_id
    rig.position.tell(m.OrdersCreated(roles={"entry": entry_id}))
    rig.update(entry_id, "entry", OrderStatus.PARTIAL_FILL, "60", execution("b-e:60", 60, "50"))
    protection = wait_for(lambda: rig.told(m.SubmitProtection), "the OCO rows")[0]
    tp, sl = protection.take_profit, protection.stop_loss
    rig.update(tp.order_id, "take_profit", OrderStatus.ACCEPTED)
    rig.update(sl.order_id, "stop_loss", OrderStatus.ACCEPTED)
    rig.update(sl.order_id, "stop_loss", OrderStatus.FILLED, "60", execution("b-s:60", 60, "48"))
    rig.update(tp.order_id, "take_profit", OrderStatus.CANCELLED)
    assert rig.settled()["status"] == "closed"
    rig.settled_position_id = int(rig.settled()["position"].split("#p-")[1])


def test_a_position_closed_while_its_entry_works_cancels_the_entrys_rest_at_once(rig: Rig) -> None:
    closed_by_its_stop_with_the_entry_working(rig)
    cancels = [c for c in rig.told(m.CancelOrders) if rig.entry.order_id in c.order_ids]
    assert [c.reason for c in cancels] == ["position closed"]  # not after the siblings' 30 s grace


def test_a_closed_actor_told_of_a_late_entry_execution_hands_the_position_over_without_crashing(rig: Rig) -> None:
    closed_by_its_stop_with_the_entry_working(rig)
    with logged_lines("actors.position", "WARNING") as lines:
        rig.update(rig.entry.order_id, "entry", OrderStatus.FILLED, "100", execution("b-e:100", 40, "49"))
        wait_for(lambda: not rig.position.is_alive(), "the closed actor to stop")

    received = rig.system.proxy().received().get()
    assert not [x for x in received if isinstance(x, m.PositionCrashed)]
    (handed,) = [x for x in received if isinstance(x, m.LateEntryShares)]
    assert (handed.entry_order_id, handed.qty) == (rig.entry.order_id, Decimal(40))
    assert handed.handed_over_by.actor_urn == rig.position.actor_urn
    assert any("execution of 40 @ 49 was recorded after the position closed" in line for line in lines)
    assert not [x for x in received if isinstance(x, m.PositionFinished)]  # its rebuilt successor says that


def rebuilt_with_late_shares(rig: Rig, market_closed: Callable[[], bool] | None = None) -> tuple[Any, Any]:
    """The book a rebuild reads after the stop closed 60 and the entry's other 40 were recorded late, and the actor
    rebuilt from it (the rig's router a recorder; `market_closed`: the daemon's MarketHours.closed). (book, actor)"""
    closed_by_its_stop_with_the_entry_working(rig)
    rig.position.stop()
    # The rows as the router would have left them: the entry filled 100, the stop 60, the take-profit cancelled.
    legs = [o for o in rig.writer.orders_for_position(rig.settled_position_id).get() if o.role != "entry"]
    for row, status, filled in ((rig.entry, "filled", 100), *((o, "filled" if o.role == "stop_loss" else "cancelled",
                                                               60 if o.role == "stop_loss" else 0) for o in legs)):
        rig.writer.update_order_status(row.order_id, status, status, Decimal(filled), None, at=T0).get()
    # The executions the router recorded: the entry's 60, the stop's 60, then (the closed actor gone) the late 40,
    # after the stop's in the book's order.
    stop_id = next(o.order_id for o in legs if o.role == "stop_loss")
    for key, order_id, side, qty, price, minute in (("b-e:60", rig.entry.order_id, "buy", 60, "50", 55),
                                                     ("b-s:60", stop_id, "sell", 60, "48", 56),
                                                     ("b-e:100", rig.entry.order_id, "buy", 40, "49", 57)):
        rig.writer.record_fill(execution_id=key, order_id=order_id, symbol="AAPL", side=side, qty=Decimal(qty),
                               price=Decimal(price), occurred_at=T0.replace(minute=minute), source="stream").get()
    book = rig.writer.position_book(rig.entry.order_id).get()
    assert book.position.status == "closed"
    rebuilt = PositionActor.start(rig.plan, rig.router, rig.writer, rig.system, SimClock(T0, 0),
                                  Restored.from_book(book), market_closed=market_closed)
    rig.rebuilt = rebuilt  # stopped by the rig's teardown if a test fails first
    return book, rebuilt


def asked_the_broker(rig: Rig, actor: Any, times: int = 1) -> None:
    wait_for(lambda: len([x for x in rig.told(m.ReadBrokerPosition) if x.reply_to == actor and not x.for_exit])
             >= times,
             f"the broker's position asked for ({times})")


def test_a_rebuild_whose_recorded_fills_hold_shares_its_closed_row_does_not_sells_them(rig: Rig) -> None:
    book, rebuilt = rebuilt_with_late_shares(rig)
    asked_the_broker(rig, rebuilt)
    assert not rig.told(m.PlaceExit) and not rig.told(m.SubmitProtection)[1:]  # nothing before the broker answers
    rebuilt.tell(m.BrokerPositionRead(symbol="AAPL", qty=Decimal(40)))
    exit_ = wait_for(lambda: [x for x in rig.told(m.PlaceExit) if x.owner == rebuilt], "the market exit")[0]
    assert (exit_.qty, exit_.side, exit_.position_id) == (Decimal(40), "sell", book.position.position_id)
    rebuilt.tell(m.OrdersCreated(roles={"flatten": 999}))
    rebuilt.tell(m.OrderUpdated(order_id=999, role="flatten", status=OrderStatus.FILLED, filled_qty=Decimal(40),
                                execution=execution("b-x:40", 40, "47")))
    wait_for(lambda: not rebuilt.is_alive(), "the rebuilt actor to finish")
    row = rig.writer.get_position(book.position.position_id).get()
    # Sells 60 @ 48 + 40 @ 47 minus buys 60 @ 50 + 40 @ 49: every share counted.
    assert (row.status, row.quantity, row.realized_pnl) == ("closed", Decimal(0), Decimal("-200"))


def answered_every_time(rig: Rig, actor: Any, qty: str, times: int) -> None:
    """The broker's position read `times` times (the actor asking again after each answer), `qty` each time."""
    for time_ in range(1, times + 1):
        asked_the_broker(rig, actor, time_)
        actor.tell(m.BrokerPositionRead(symbol="AAPL", qty=Decimal(qty)))


@pytest.mark.parametrize("held", ["0", "30", "-40"], ids=["sold-by-hand", "partly-sold", "short-instead"])
def test_late_shares_the_broker_does_not_hold_are_not_sold(rig: Rig, held: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Sold by hand meanwhile (the doctor's halt over them says to): selling them again would leave the account short.
    monkeypatch.setattr(position_module, "LATE_SHARES_RETRY_S", 0.05)
    book, rebuilt = rebuilt_with_late_shares(rig)
    with logged_lines("actors.position", "ERROR") as errors:
        answered_every_time(rig, rebuilt, held, position_module.LATE_SHARES_LAG_READS)
        wait_for(lambda: not rebuilt.is_alive(), "the rebuilt actor to stop")
    assert not rig.told(m.PlaceExit) and not rig.told(m.SubmitProtection)[1:]
    assert errors == [f"position AAPL#p-{book.position.position_id} its 40 late entry shares are not sold: the broker "
                      f"holds {held} AAPL and the open positions 0, so at most {max(Decimal(held), Decimal(0))} can "
                      "be these (sold by hand?); check AAPL at the broker"]
    assert rig.writer.get_position(book.position.position_id).get().status == "closed"


def test_reads_that_failed_do_not_use_up_the_reads_of_a_lagging_positions_list(rig: Rig,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    # From a review: two reads failing (503s), then a first answer from a list still lagging the fill, left the late
    # shares at once as sold by hand: the failed reads had used up the reads a lagging list is given.
    monkeypatch.setattr(position_module, "LATE_SHARES_RETRY_S", 0.05)
    _, rebuilt = rebuilt_with_late_shares(rig)
    for time_ in (1, 2):
        asked_the_broker(rig, rebuilt, time_)
        rebuilt.tell(m.BrokerPositionRead(symbol="AAPL", error="HTTP 503"))
    asked_the_broker(rig, rebuilt, 3)
    rebuilt.tell(m.BrokerPositionRead(symbol="AAPL", qty=Decimal(0)))  # the first answer: a list still lagging
    asked_the_broker(rig, rebuilt, 4)  # asked again, not left as sold by hand
    assert rebuilt.is_alive()
    rebuilt.tell(m.BrokerPositionRead(symbol="AAPL", qty=Decimal(40)))
    exit_ = wait_for(lambda: [x for x in rig.told(m.PlaceExit) if x.owner == rebuilt], "the market exit")[0]
    assert exit_.qty == Decimal(40)


def test_late_shares_count_only_what_the_broker_holds_beyond_the_other_open_positions(rig: Rig) -> None:
    book, rebuilt = rebuilt_with_late_shares(rig)
    other = rig.writer.create_order(
        cycle_id=rig.entry.cycle_id, symbol="AAPL", role="entry", side="buy", order_type="market",
        time_in_force="day", quantity=Decimal(25), at=T0).get()
    rig.writer.open_position_for_entry(entry_order_id=other.order_id, quantity=Decimal(25), entry_price=Decimal(50),
                                       entry_time=T0, stop_loss=Decimal(48), take_profit=Decimal(55)).get()
    # The other position's 25 and only 25 more, every time the broker is asked.
    answered_every_time(rig, rebuilt, "50", position_module.LATE_SHARES_LAG_READS)
    wait_for(lambda: not rebuilt.is_alive(), "the rebuilt actor to stop")
    assert not rig.told(m.PlaceExit)


def test_late_shares_a_lagging_positions_list_does_not_show_yet_are_sold_once_it_does(
        rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    # Alpaca's positions can lag its orders for several seconds after a fill (ALPACA.md §7): a review found the late
    # shares, just recorded, left unsold and without a stop at the first answer that did not show them.
    monkeypatch.setattr(position_module, "LATE_SHARES_RETRY_S", 0.05)
    book, rebuilt = rebuilt_with_late_shares(rig)
    asked_the_broker(rig, rebuilt)  # its start-up warning logged (it precedes the ask) before the lines are caught: CI
    with logged_lines("actors.position", "WARNING") as lines:
        answered_every_time(rig, rebuilt, "0", 1)
        asked_the_broker(rig, rebuilt, 2)
    assert rebuilt.is_alive() and not rig.told(m.PlaceExit)
    rebuilt.tell(m.BrokerPositionRead(symbol="AAPL", qty=Decimal(40)))
    exit_ = wait_for(lambda: [x for x in rig.told(m.PlaceExit) if x.owner == rebuilt], "the market exit")[0]
    assert exit_.qty == Decimal(40)
    assert lines == [f"position AAPL#p-{book.position.position_id} the broker holds 0 AAPL and the open positions 0, "
                     "so at most 0 can be these of its 40 late entry shares: the broker's positions can lag a fill; "
                     "asking again in 0.05 s"]


def test_a_broker_that_cannot_answer_is_asked_again(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(position_module, "LATE_SHARES_RETRY_S", 0.05)
    _, rebuilt = rebuilt_with_late_shares(rig)
    asked_the_broker(rig, rebuilt)
    rebuilt.tell(m.BrokerPositionRead(symbol="AAPL", error="HTTP 503"))
    asked_the_broker(rig, rebuilt, times=2)
    rebuilt.tell(m.BrokerPositionRead(symbol="AAPL", qty=Decimal(40)))
    wait_for(lambda: [x for x in rig.told(m.PlaceExit) if x.owner == rebuilt], "the market exit")


def test_the_supervisor_leaves_late_entry_shares_to_a_live_position_actor(trading):
    # The router tells of late shares whenever the owner it knows has stopped; after a crash, a rebuilt actor may be
    # live already, and it reads them from the database: a second actor would sell them twice.
    trading.exchange.set_price("AAPL", "149.95")
    trading.open(trading.plan())
    trading.wait_for(lambda: protected_qty(trading) == Decimal("100"), "protection")
    entry = next(o for o in trading.all_orders() if o.role == "entry")
    with logged_lines("actors.system", "WARNING") as lines:
        trading.system.supervisor_ref.tell(m.LateEntryShares(entry_order_id=entry.order_id, subject="order AAPL#o-1",
                                                             qty=Decimal(10)))
        assert trading.system.supervisor.live_count().get() == 1
    assert lines == []


def test_entry_shares_left_unsold_by_a_stop_of_the_daemon_are_sold_after_the_restart(trading):
    # Stopped just after the stop closed the position, the lost 300 not recorded yet: the restart's catch-up records
    # them with no actor to own them, and they go the same way.
    bought_500_with_300_unrecorded(trading)
    stopped_out(trading)
    trading.stop()

    trading.start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and trading.broker_view()["positions"]:
        trading.trade("AAPL", "47.50", volume=2000)
        time.sleep(0.3)
    assert trading.broker_view()["positions"] == []
    position = position_of(trading)
    assert (position.status, position.quantity) == ("closed", Decimal(0))
    assert [(o.quantity, o.filled_qty) for o in trading.all_orders() if o.role == "flatten"] == [
        (Decimal(300), Decimal(300))]


def test_a_crash_told_after_a_late_shares_rebuild_does_not_make_a_second_actor(trading):
    # pykka marks a failing actor stopped before its on_failure tells the supervisor of the crash: the router can find
    # it dead and tell of late entry shares first. That rebuild stands; the crash's must not make another beside it
    # (two actors would each sell the same shares). Found by a review, which reproduced it this way.
    trading.exchange.set_price("AAPL", "149.95")
    ref = trading.open(trading.plan())
    trading.wait_for(lambda: protected_qty(trading) == Decimal("100"), "protection")
    entry = next(o for o in trading.all_orders() if o.role == "entry")
    ref.stop()  # as a crash leaves it: dead, its PositionCrashed not yet told
    supervisor = trading.system.supervisor_ref
    supervisor.tell(m.LateEntryShares(entry_order_id=entry.order_id, subject="order AAPL#o-1", qty=Decimal(10)))
    supervisor.tell(m.PositionCrashed(key="AAPL#p-1", entry_order_id=entry.order_id, error="boom", owner=ref))
    live = trading.system.supervisor.live_refs().get()
    assert len(live) == 1 and live[0] is not ref
    assert protected_qty(trading) == Decimal("100")


def test_nothing_is_rebuilt_while_the_system_stops(exchange, tmp_path):
    # Late entry shares told while the system stops (its position actors stopped first): an actor rebuilt then would
    # outlive the stop and hold the process open. The next start rebuilds from the database. From the same review.
    harness = Trading(exchange, f"sqlite+aiosqlite:///{tmp_path / 'catalyst.db'}").start()
    leaked: list[Any] = []
    try:
        harness.exchange.set_price("AAPL", "149.95")
        harness.open(harness.plan())
        harness.wait_for(lambda: protected_qty(harness) == Decimal("100"), "protection")
        entry = next(o for o in harness.all_orders() if o.role == "entry")
        system = harness.system
        router = system.router

        class RouterStoppedLate:
            """The router as stop() meets it: one more entry execution for an owner stop() has just stopped."""

            actor_urn = router.actor_urn

            def stop(self, *args: Any, **kwargs: Any) -> Any:
                system.supervisor_ref.ask(m.LateEntryShares(entry_order_id=entry.order_id,
                                                            subject="order AAPL#o-1", qty=Decimal(1)))
                return router.stop(*args, **kwargs)

        system.refs[system.refs.index(router)] = RouterStoppedLate()
        harness.stop()
        leaked = [r for r in pykka.ActorRegistry.get_by_class(PositionActor) if r.is_alive()]
        assert leaked == []
    finally:
        for ref in leaked:
            ref.stop()


def test_late_shares_sold_by_hand_while_the_daemon_was_stopped_are_not_sold_again(trading, monkeypatch):
    # The operator saw the bare shares and sold them by hand while Catalyst was stopped; the restart's catch-up then
    # records the lost execution. Selling them again would leave the account 300 short. Found by a review.
    bought_500_with_300_unrecorded(trading)
    stopped_out(trading)
    trading.stop()
    by_hand = TradingClient(trading.key, "secret", paper=True, url_override=trading.exchange.base_url)
    by_hand.submit_order(MarketOrderRequest(symbol="AAPL", qty=300, side=OrderSide.SELL, time_in_force=TimeInForce.DAY))
    trading.trade("AAPL", "47.50", volume=2000)
    trading.wait_for(lambda: trading.broker_view()["positions"] == [], "the sale by hand")

    monkeypatch.setattr(position_module, "LATE_SHARES_RETRY_S", 0.2)  # asked again as a lagging list is
    with logged_lines("actors.position", "ERROR") as errors:
        trading.start()
        trading.wait_for(lambda: errors, "the rebuilt position's word on its late shares")
    for _ in range(3):
        trading.trade("AAPL", "47.50", volume=2000)  # minutes go by: a market exit sent would fill
    assert trading.broker_view()["positions"] == []
    assert [o for o in trading.all_orders() if o.role == "flatten"] == []
    assert errors == ["position AAPL#p-1 its 300 late entry shares are not sold: the broker holds 0 AAPL and the open "
                      "positions 0, so at most 0 can be these (sold by hand?); check AAPL at the broker"]


# --- from a second review ------------------------------------------------------------------------------------


def test_a_flatten_asked_while_the_broker_is_asked_waits_for_its_answer(rig: Rig,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # An end-of-day or emergency flatten arriving before the broker's answer sent an exit of shares maybe not there.
    monkeypatch.setattr(position_module, "LATE_SHARES_RETRY_S", 0.05)
    _, rebuilt = rebuilt_with_late_shares(rig)
    asked_the_broker(rig, rebuilt)
    rebuilt.tell(m.Flatten(reason="end of day"))
    rebuilt.proxy().state().get()
    assert not rig.told(m.PlaceExit)
    answered_every_time(rig, rebuilt, "0", position_module.LATE_SHARES_LAG_READS)  # sold by hand meanwhile
    wait_for(lambda: not rebuilt.is_alive(), "the rebuilt actor to stop")
    assert not rig.told(m.PlaceExit)


def test_an_entry_execution_while_the_broker_is_asked_places_no_oco_and_is_sold_with_the_rest(rig: Rig) -> None:
    book, rebuilt = rebuilt_with_late_shares(rig)
    asked_the_broker(rig, rebuilt)
    protections = len(rig.told(m.SubmitProtection))
    rebuilt.tell(m.OrderUpdated(order_id=rig.entry.order_id, role="entry", status=OrderStatus.FILLED,
                                filled_qty=Decimal(120), execution=execution("b-e:120", 20, "49")))
    assert rebuilt.proxy().state().get()["qty"] == "60"
    assert len(rig.told(m.SubmitProtection)) == protections  # no OCO for shares that may not be there
    rebuilt.tell(m.BrokerPositionRead(symbol="AAPL", qty=Decimal(60)))
    exit_ = wait_for(lambda: [x for x in rig.told(m.PlaceExit) if x.owner == rebuilt], "the market exit")[0]
    assert exit_.qty == Decimal(60)


def test_a_broker_holding_the_first_late_shares_but_not_the_later_ones_sells_none(
        rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(position_module, "LATE_SHARES_RETRY_S", 0.05)
    _, rebuilt = rebuilt_with_late_shares(rig)
    asked_the_broker(rig, rebuilt)
    rebuilt.tell(m.OrderUpdated(order_id=rig.entry.order_id, role="entry", status=OrderStatus.FILLED,
                                filled_qty=Decimal(120), execution=execution("b-e:120", 20, "49")))
    answered_every_time(rig, rebuilt, "40", position_module.LATE_SHARES_LAG_READS)  # still 40 once settled
    wait_for(lambda: not rebuilt.is_alive(), "the rebuilt actor to stop")
    assert not rig.told(m.PlaceExit)


def test_a_position_read_that_fails_unexpectedly_is_answered(recording_actor: Any) -> None:
    from actors.broker_worker import BrokerWorker, ReadPosition

    class Broken:
        def position(self, symbol: str, **_: Any) -> Any:
            raise ValueError("not a position")

    asker = recording_actor()
    worker = BrokerWorker.start(Broken(), "general-0")
    try:
        worker.tell(ReadPosition(symbol="AAPL", reply_to=asker))
        (answer,) = wait_for(lambda: asker.proxy().received().get(), "the answer")
    finally:
        worker.stop()
    assert answer.error == "unexpected ValueError: not a position"


def test_a_position_closed_while_its_entrys_last_shares_are_unrecorded_waits_for_them_and_hands_over(
        rig: Rig) -> None:
    # The entry reports 100 filled, its executions 60: the 40's fill event lost. Stopping at once, an execution told
    # in the instant before the stop was dropped with it. Found by the second review.
    closed_by_its_stop_with_the_entry_working(rig)
    rig.update(rig.entry.order_id, "entry", OrderStatus.FILLED, "100")  # its status, read after the close's cancel
    wait_for(lambda: [v for v in rig.told(m.VerifyOrders) if v.order_ids == (rig.entry.order_id,)],
             "the entry asked about")
    assert rig.position.is_alive()
    rig.update(rig.entry.order_id, "entry", OrderStatus.FILLED, "100", execution("b-e:100", 40, "49"))
    wait_for(lambda: not rig.position.is_alive(), "the hand-over")
    (handed,) = [x for x in rig.system.proxy().received().get() if isinstance(x, m.LateEntryShares)]
    assert handed.qty == Decimal(40)


def test_a_closed_position_waits_for_its_entrys_last_shares_only_so_long(rig: Rig, monkeypatch) -> None:
    monkeypatch.setattr(position_module, "ENTRY_FILLS_WAIT_S", 0.2)
    monkeypatch.setattr(position_module, "FLATTEN_RECHECK_S", 0.05)
    closed_by_its_stop_with_the_entry_working(rig)
    with logged_lines("actors.position", "ERROR") as errors:
        rig.update(rig.entry.order_id, "entry", OrderStatus.FILLED, "100")
        wait_for(lambda: not rig.position.is_alive(), "the closed actor to give up and stop")
    assert errors == [f"position AAPL#p-{rig.settled_position_id} closed; its entry's 40 shares the broker reports "
                      "bought have no recorded execution after 0 s: left to the doctor's pass (check them at the "
                      "broker)"]
    finished = [x for x in rig.system.proxy().received().get() if isinstance(x, m.PositionFinished)]
    assert [f.status for f in finished] == ["closed"]


def test_late_shares_recorded_but_left_unsold_by_a_stop_of_the_daemon_are_sold_by_the_doctors_heal(
        trading, doctor_broker):
    # Recorded, then the daemon stopped before their sale: the next start rebuilds no closed position, and the
    # restart's catch-up finds them known. The doctor's pass finds the broker's 300 explained by no open position, and
    # by one closed position's recorded fills exactly: it rebuilds that position, which sells them.
    from tests.actors.test_doctor_heals import doctor_on

    bought_500_with_300_unrecorded(trading)
    stopped_out(trading)
    entry = next(o for o in trading.all_orders() if o.role == "entry")
    trading.stop()
    writer_ref = DbWriter.start(trading.db_url)
    try:  # as the router records them, under the key its catch-up would use
        writer_ref.proxy().record_fill(
            execution_id=execution_key(entry.alpaca_order_id, Decimal(500)), order_id=entry.order_id,
            alpaca_order_id=entry.alpaca_order_id, symbol="AAPL", side="buy", qty=Decimal(300), price=Decimal("50.00"),
            occurred_at=entry.updated_at, source="activity").get()
    finally:
        writer_ref.stop()
    trading.start()
    trading.trade("AAPL", "47.50", volume=2000)
    trading.trade("AAPL", "47.50", volume=2000)  # minutes go by: settled, not being recorded right now
    assert trading.broker_view()["positions"][0]["qty"] == "300"

    with doctor_on(trading, doctor_broker) as doctor:
        report = doctor.run_pass(reason="test").get()
        (finding,) = [f for f in report.findings if f.type == "ORPHAN_POSITION"]
        assert (finding.position_id, finding.action) == (1, "rebuild and sell")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and trading.broker_view()["positions"]:
            trading.trade("AAPL", "47.50", volume=2000)
            time.sleep(0.3)
        assert doctor.halted.get() is False
    assert trading.broker_view()["positions"] == []
    assert [(o.quantity, o.filled_qty) for o in trading.all_orders() if o.role == "flatten"] == [
        (Decimal(300), Decimal(300))]
    assert position_of(trading).realized_pnl == Decimal("-1250.00")


def test_the_doctor_leaves_late_shares_to_a_live_actor_and_halts_after_three_rebuilds(monkeypatch) -> None:
    # From a review: each pass found the same shares and rebuilt (or called "healed") the position again, an actor
    # that gives up rebuilt every 5 minutes for good. One live is at it: reported. Three rebuilds and still there: halt.
    from actors.doctor import LATE_SHARE_REBUILDS, DoctorActor
    from catalyst.domain.reconcile import Finding, FindingType, Policy, Severity

    doctor = DoctorActor(writer=None, broker=None, router=None, supervisor=None, clock=None)
    finding = Finding(FindingType.ORPHAN_POSITION, Severity.CRITICAL, "position AAPL#p-1", "0", "300", Policy.ADOPT,
                      "rebuild and sell", symbol="AAPL", position_id=1, reason="AAPL: broker holds 300, …")
    live: list[Any] = ["an actor"]
    rebuilt: list[int] = []
    monkeypatch.setattr(doctor, "_live_position", lambda f: (live[0], {}) if live else None)
    monkeypatch.setattr(doctor, "_position_ref", lambda f: rebuilt.append(f.position_id) or "a new actor")

    assert doctor._rebuild_to_sell(finding) == "alerted" and rebuilt == []
    live.clear()
    assert [doctor._rebuild_to_sell(finding) for _ in range(LATE_SHARE_REBUILDS)] == ["healed"] * LATE_SHARE_REBUILDS
    assert doctor._rebuild_to_sell(finding) == "halted"
    assert rebuilt == [1] * LATE_SHARE_REBUILDS and doctor.halted
    assert doctor.halt_reason == "AAPL: broker holds 300, …; rebuilt 3 times and still not sold: check AAPL at the broker"


def test_the_doctor_looks_for_late_shares_wherever_the_broker_holds_other_than_our_open_positions() -> None:
    """Also beside an open position of the symbol (one opened after the closed one): read only where none was open,
    such shares made the doctor halt entries over a quantity mismatch (found by a review)."""
    from types import SimpleNamespace

    from actors.doctor import DoctorActor

    asked: list[list[str]] = []

    class Writer:
        def closed_positions_holding_shares(self, symbols: list[str], since: Any) -> Any:
            asked.append(symbols)
            return SimpleNamespace(get=lambda: [])

    doctor = DoctorActor(writer=Writer(), broker=None, router=None, supervisor=None, clock=None)
    ours = [SimpleNamespace(symbol="AAPL", side="long", quantity=Decimal(100)),
            SimpleNamespace(symbol="MSFT", side="long", quantity=Decimal(50)),
            SimpleNamespace(symbol="NVDA", side="short", quantity=Decimal(20))]
    broker = [SimpleNamespace(symbol="AAPL", side="long", qty=Decimal(140)),
              SimpleNamespace(symbol="MSFT", side="long", qty=Decimal(50)),
              SimpleNamespace(symbol="NVDA", side="short", qty=Decimal(20)),
              SimpleNamespace(symbol="TSLA", side="long", qty=Decimal(10))]
    doctor._closed_holding(ours, broker, T0)
    assert asked == [["AAPL", "TSLA"]]
    doctor._closed_holding(ours, broker[1:3], T0)  # the broker holds what our open positions do: nothing to read
    assert asked == [["AAPL", "TSLA"]]
