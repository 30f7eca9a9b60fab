"""A rebuild whose exit rows report more filled than the recorded executions (chaos, seed 153): the real router,
position actor and DbWriter on a SQLite file; the broker workers are recorders, the catch-up's answer is played.

The stop's row says 100 filled, 60 are recorded: the 40 were sold at the broker and their stream event was lost
before a kill. They must be neither protected again (an OCO the broker refuses, then a market exit that sold short)
nor counted twice when the stream or the catch-up delivers what is recorded already. And an execution the router
records while a crashed position is being rebuilt, after its book was read, reaches the rebuilt actor.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pykka
import pytest

from actors import messages as m
from actors.broker_worker import CatchUp, SubmitOco, SubmitOrder
from actors.db_writer import DbWriter
from actors.order_router import OrderRouter, RouterSettings
from actors.position import PositionActor
from actors.system import Restored, plan_from_entry
from catalyst.broker.reports import FillReport, OrderReport, TradeUpdateReport
from catalyst.sim.clock import SimClock
from catalyst.store.records import NewOrder
from tests.actors.test_write_path_router import T0, FixedClock, Recorded, wait_for


@dataclass
class Restart:
    writer: Any
    router: Any
    position: Any
    protect: Any
    general: Any
    position_id: int
    stop_loss: Any


def protected_long(writer: Any) -> tuple[Any, int, Any, Any]:
    """Long 100 at 50, its fill recorded, under an acknowledged OCO (55 / 48): entry, position id, the two legs."""
    cycle_id = writer.get_or_create_cycle(date(2024, 3, 4), at=T0).get().cycle_id
    entry = writer.create_order(
        cycle_id=cycle_id, symbol="AAPL", role="entry", side="buy", order_type="market", time_in_force="day",
        quantity=Decimal(100), planned_stop_loss=Decimal("48"), planned_take_profit=Decimal("55"), at=T0).get()
    position, (take_profit, stop_loss) = writer.open_position_with_orders(
        entry.order_id, Decimal(100), Decimal("50"), T0, Decimal("48"), Decimal("55"), [
            NewOrder(cycle_id=cycle_id, symbol="AAPL", role=role, side="sell", order_type=kind, quantity=Decimal(100),
                     order_class="oco", parent_order_id=entry.order_id, **price)
            for role, kind, price in (("take_profit", "limit", {"limit_price": Decimal("55")}),
                                      ("stop_loss", "stop", {"stop_price": Decimal("48")}))]).get()
    for order, broker_id in ((entry, "b-e"), (take_profit, "b-tp"), (stop_loss, "b-sl")):
        writer.mark_submitted(order.order_id, broker_id, "accepted", T0).get()
    writer.update_order_status(entry.order_id, "filled", "filled", Decimal(100), Decimal("50")).get()
    writer.record_fill(execution_id="b-e:100", order_id=entry.order_id, symbol="AAPL", side="buy", qty=Decimal(100),
                       price=Decimal("50"), occurred_at=T0, source="stream").get()
    return entry, position.position_id, take_profit, stop_loss


def the_database_a_kill_left(writer: Any) -> tuple[Any, int, Any]:
    """protected_long's, then the stop filled 100 at 48, of which 60 are recorded."""
    entry, position_id, take_profit, stop_loss = protected_long(writer)
    writer.record_fill(execution_id="b-sl:60", order_id=stop_loss.order_id, symbol="AAPL", side="sell",
                       qty=Decimal(60), price=Decimal("48"), occurred_at=T0, source="stream").get()
    writer.update_position(position_id, quantity=Decimal(40), entry_price=Decimal("50"),
                           realized_pnl=Decimal("-120")).get()
    writer.update_order_status(stop_loss.order_id, "filled", "filled", Decimal(100), Decimal("48")).get()
    writer.update_order_status(take_profit.order_id, "cancelled", "canceled", Decimal(0), None).get()
    return entry, position_id, stop_loss


@pytest.fixture
def restart(tmp_path: Path, recording_actor: Any) -> Iterator[Restart]:
    writer_ref = DbWriter.start(f"sqlite+aiosqlite:///{tmp_path / 'restart.db'}")
    writer = writer_ref.proxy()
    entry, position_id, stop_loss = the_database_a_kill_left(writer)
    protect, general, system = recording_actor(), recording_actor(), recording_actor()
    router = OrderRouter.start(writer, Recorded(protect), Recorded(general), FixedClock(),
                               RouterSettings(missing_execution_grace_s=0.05))
    book = writer.position_book(entry.order_id).get()
    position = PositionActor.start(plan_from_entry(book.entry), router, writer, system, SimClock(T0, 0),
                                   restored=Restored.from_book(book))
    yield Restart(writer, router, position, protect, general, position_id, stop_loss)
    for ref in (position, router, protect, general, system, writer_ref):
        if ref.is_alive():
            ref.stop()


def activity(broker_id: str, cum: int, qty: int, price: str, side: str) -> FillReport:
    return FillReport(execution_id=f"act-{broker_id}-{cum}", broker_order_id=broker_id, client_order_id=None,
                      symbol="AAPL", side=side, qty=Decimal(qty), price=Decimal(price), cum_qty=Decimal(cum),
                      leaves_qty=None, order_status="filled", at=T0)


def stop_report(stop: Any, status: str, filled: int) -> OrderReport:
    return OrderReport(
        broker_id="b-sl", client_order_id=stop.client_order_id, symbol="AAPL", side="sell", type="stop",
        order_class="oco", tif="day", qty=Decimal(100), filled_qty=Decimal(filled), filled_avg_price=Decimal("48"),
        limit_price=None, stop_price=Decimal("48"), status=status, created_at=T0, updated_at=T0, submitted_at=T0,
        filled_at=None, canceled_at=None)


def sent_to_broker(inbox: Any) -> list[Any]:
    return [x for x in inbox.proxy().received().get() if isinstance(x, (SubmitOco, SubmitOrder))]


def test_the_rebuild_asks_the_router_to_fetch_the_missing_execution_and_protects_none_of_its_shares(
        restart: Restart) -> None:
    state = restart.position.proxy().state().get()
    restart.router.proxy().by_order.get()  # the Register handled

    assert state["status"] == "open" and state["qty"] == "40" and state["protected"] == "0"
    assert [c.since < T0 for c in restart.general.proxy().received().get() if isinstance(c, CatchUp)] == [True]
    assert sent_to_broker(restart.protect) == [] and sent_to_broker(restart.general) == []


def test_the_catch_up_closes_the_position_once_and_a_redelivered_execution_changes_nothing(restart: Restart) -> None:
    stop = restart.stop_loss
    restart.router.tell(m.TradeUpdateReceived(update=TradeUpdateReport(  # the recorded 60 again, from the stream
        event="partial_fill", order=stop_report(stop, "partially_filled", 60), at=T0, execution_id="again",
        price=Decimal("48"), qty=Decimal(60))))
    restart.router.proxy().by_order.get()
    after_the_redelivery = restart.position.proxy().state().get()["qty"]

    restart.router.tell(m.CatchUpResult(orders=(), fills=(  # the day's activities: two recorded, the lost 40
        activity("b-e", 100, 100, "50", "buy"), activity("b-sl", 60, 60, "48", "sell"),
        activity("b-sl", 100, 40, "48", "sell")), since=T0))
    closed = wait_for(lambda: (p := restart.writer.get_position(restart.position_id).get()).status == "closed" and p,
                      "the lost execution to close the position")

    assert after_the_redelivery == "40"
    assert closed.realized_pnl == Decimal("-200") and closed.quantity == 0
    assert sum(f.qty for f in restart.writer.fills_for_order(stop.order_id).get()) == Decimal(100)
    wait_for(lambda: not restart.position.is_alive(), "the closed position's actor to stop")
    assert sent_to_broker(restart.protect) == [] and sent_to_broker(restart.general) == []



@dataclass
class Crashed:
    """A long protected by its OCO (protected_long) whose position actor has crashed after registering its orders: the
    router still routes to the dead actor until a rebuilt one registers."""
    writer: Any
    router: Any
    protect: Any
    general: Any
    system: Any
    entry: Any
    position_id: int
    take_profit: Any
    stop: Any

    def rebuild(self, book: Any) -> Any:
        """The new actor, started from `book` (the supervisor read it before whatever the test did since)."""
        return PositionActor.start(plan_from_entry(book.entry), self.router, self.writer, self.system,
                                   SimClock(T0, 0), restored=Restored.from_book(book))


@pytest.fixture
def crashed(tmp_path: Path, recording_actor: Any) -> Iterator[Crashed]:
    writer_ref = DbWriter.start(f"sqlite+aiosqlite:///{tmp_path / 'rebuild.db'}")
    writer = writer_ref.proxy()
    entry, position_id, take_profit, stop = protected_long(writer)
    protect, general, system, dead = recording_actor(), recording_actor(), recording_actor(), recording_actor()
    router = OrderRouter.start(writer, Recorded(protect), Recorded(general), FixedClock(),
                               RouterSettings(missing_execution_grace_s=60))
    router.tell(m.Register(owner=dead, order_ids=(entry.order_id, take_profit.order_id, stop.order_id)))
    dead.stop()
    yield Crashed(writer, router, protect, general, system, entry, position_id, take_profit, stop)
    for ref in (*pykka.ActorRegistry.get_by_class(PositionActor), router, protect, general, system, writer_ref):
        if ref.is_alive():
            ref.stop()


def test_an_execution_recorded_while_the_position_is_rebuilt_reaches_the_rebuilt_actor(crashed: Crashed) -> None:
    # A crash rebuild reads the position's book; a stop's fill the router records before the new actor's Register
    # is handled goes to the crashed actor. The rebuilt one must apply it, not keep 100 shares where 40 are left.
    writer, router, stop = crashed.writer, crashed.router, crashed.stop
    book = writer.position_book(crashed.entry.order_id).get()  # the supervisor reads the book ...
    router.tell(m.TradeUpdateReceived(update=TradeUpdateReport(  # ... the stop fills 60 ...
        event="partial_fill", order=stop_report(stop, "partially_filled", 60), at=T0, execution_id="x-60",
        price=Decimal("48"), qty=Decimal(60))))
    router.proxy().by_order.get()
    assert sum(f.qty for f in writer.fills_for_order(stop.order_id).get()) == 60  # recorded, told to no one alive
    rebuilt = crashed.rebuild(book)  # ... and the new actor starts from it

    left = wait_for(lambda: (p := writer.get_position(crashed.position_id).get()).quantity == 40 and p,
                    "the rebuilt actor to apply the 60")
    state = rebuilt.proxy().state().get()
    assert state["qty"] == "40" and state["protected"] == "40" and left.status == "open"
    assert sent_to_broker(crashed.protect) == [] and sent_to_broker(crashed.general) == []  # the OCO left covers 40


def leg_report(leg: Any, broker_id: str, status: str) -> OrderReport:
    return OrderReport(
        broker_id=broker_id, client_order_id=leg.client_order_id, symbol="AAPL", side="sell", type=leg.order_type,
        order_class="oco", tif="day", qty=Decimal(100), filled_qty=Decimal(0), filled_avg_price=None,
        limit_price=leg.limit_price, stop_price=leg.stop_price, status=status, created_at=T0, updated_at=T0,
        submitted_at=T0, filled_at=None, canceled_at=T0)


def test_a_leg_cancelled_while_its_position_is_rebuilt_reaches_the_rebuilt_actor(crashed: Crashed) -> None:
    # As above, with a move that carries no execution: both legs cancelled at the broker after the book was read.
    # The rebuilt actor would count the cancelled OCO as its 100 shares' protection, and no later report of the same
    # status would tell it otherwise (found by a review).
    writer, legs = crashed.writer, (crashed.take_profit, crashed.stop)
    book = writer.position_book(crashed.entry.order_id).get()
    for leg, broker_id in zip(legs, ("b-tp", "b-sl")):
        crashed.router.tell(m.TradeUpdateReceived(update=TradeUpdateReport(
            event="canceled", order=leg_report(leg, broker_id, "canceled"), at=T0)))
    wait_for(lambda: all(writer.get_order(leg.order_id).get().status == "cancelled" for leg in legs),
             "both legs recorded cancelled")
    crashed.rebuild(book)

    again = wait_for(lambda: sent_to_broker(crashed.protect), "the 100 shares protected again")
    assert len(again) == 1 and isinstance(again[0], SubmitOco)
    assert again[0].take_profit.quantity == Decimal(100)
