"""A position actor rebuilt from a book read before the router committed rows of its position.

The router asks the position actor for the writes an entry fill calls for (the position row, its OCO rows) and commits
them with the execution. An actor that crashes right after answering is rebuilt by the supervisor from a book it
reads at the writer; when that read came before the router's commit, the book lacks the fill and the OCO the router
then sent. Told the execution, the rebuilt actor protected the same shares again: 200 of 100 under stops (found by a
review). It now hands the position over to be rebuilt from the database as it is, which holds them; what it asked
before it heard so is not sent."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pykka
import pytest

from actors import messages as m
from actors.broker_worker import SubmitOco, SubmitOrder
from actors.db_writer import DbWriter
from actors.order_router import STALE_BOOK_UNSENT, OrderRouter, RouterSettings
from actors.position import CheckLoneLegs, PositionActor
from actors.system import Restored, Supervisor, plan_from_entry
from catalyst.broker.reports import OrderReport, TradeUpdateReport
from catalyst.domain.orders import OrderStatus
from catalyst.domain.positions import PositionSide
from catalyst.sim.clock import SimClock
from tests.actors.test_position_flatten import Rig, exit_asked_at_the_end_of_the_day
from tests.actors.test_write_path_router import T0, FixedClock, Recorded, wait_for


def report(row: Any, broker_id: str, status: str, filled: int, kind: str = "market",
           legs: tuple[OrderReport, ...] = ()) -> OrderReport:
    return OrderReport(
        broker_id=broker_id, client_order_id=row.client_order_id, symbol="AAPL", side=row.side, type=kind,
        order_class="oco" if legs else "simple", tif="day", qty=row.quantity, filled_qty=Decimal(filled),
        filled_avg_price=Decimal("50") if filled else None, limit_price=None, stop_price=None, status=status,
        created_at=T0, updated_at=T0, submitted_at=T0, filled_at=None, canceled_at=None, legs=legs)


class RouterRig:
    """A real writer, router and supervisor; the router's broker pools record what they are given. Positions are
    made by `position` (the supervisor rebuilds with the same)."""

    def __init__(self, tmp_path: Path, recording_actor: Any, settings: RouterSettings | None = None) -> None:
        self.writer_ref = DbWriter.start(f"sqlite+aiosqlite:///{tmp_path / 'r.db'}")
        self.writer = self.writer_ref.proxy()
        self.protect, self.general = recording_actor(), recording_actor()
        self.router = OrderRouter.start(self.writer, Recorded(self.protect), Recorded(self.general), FixedClock(),
                                        settings or RouterSettings())
        self.started: list[Any] = []
        self.supervisor = Supervisor.start(self.writer, self.position)
        cycle_id = self.writer.get_or_create_cycle(date(2024, 3, 4), at=T0).get().cycle_id
        self.plan = m.TradePlan(symbol="AAPL", side=PositionSide.LONG, qty=Decimal(100), stop_loss=Decimal("48"),
                                take_profit=Decimal("55"), cycle_id=cycle_id)

    def position(self, plan: m.TradePlan, restored: Any = None) -> Any:
        self.started.append(PositionActor.start(plan, self.router, self.writer, self.supervisor, SimClock(T0, 0),
                                                restored))
        return self.started[-1]

    def ocos(self) -> list[SubmitOco]:
        return [x for x in self.protect.proxy().received().get() if isinstance(x, SubmitOco)]

    def exits(self) -> list[SubmitOrder]:
        return [x for x in self.protect.proxy().received().get() if isinstance(x, SubmitOrder)]

    def entry_acknowledged(self) -> Any:
        """The entry row once its submit went out, acknowledged `new`."""
        entry = wait_for(lambda: [x for x in self.general.proxy().received().get() if isinstance(x, SubmitOrder)],
                         "the entry's submit")[0].row
        self.router.tell(m.SubmitResult(order_ids=(entry.order_id,), report=report(entry, "b-e", "new", 0)))
        return entry

    def fill(self, entry: Any, cum: int, qty: int, execution_id: str) -> None:
        event, status = ("fill", "filled") if cum == entry.quantity else ("partial_fill", "partially_filled")
        self.router.tell(m.TradeUpdateReceived(update=TradeUpdateReport(
            event=event, order=report(entry, "b-e", status, cum), at=T0, execution_id=execution_id,
            price=Decimal("50"), qty=Decimal(qty))))

    def others_than(self, stale: Any) -> list[Any]:
        return [r for r in pykka.ActorRegistry.get_by_class(PositionActor) if r.actor_urn != stale.actor_urn]

    def stop(self) -> None:
        for ref in (*pykka.ActorRegistry.get_by_class(PositionActor), self.supervisor, self.router, self.writer_ref):
            if ref.is_alive():
                ref.stop()


@pytest.fixture
def live(tmp_path: Path, recording_actor: Any) -> Iterator[RouterRig]:
    rig = RouterRig(tmp_path, recording_actor)
    try:
        yield rig
    finally:
        rig.stop()


def test_an_actor_rebuilt_from_a_book_read_before_the_routers_commit_is_rebuilt_again_not_protecting_twice(
        live: RouterRig, monkeypatch: pytest.MonkeyPatch) -> None:
    books: list[Any] = []
    real_prepare = PositionActor._prepare_entry_fill

    def prepare_then_book_read(self: PositionActor, msg: m.PrepareEntryFill) -> Any:
        answer = real_prepare(self, msg)
        books.append(self.writer.position_book(self.entry_order_id).get())  # the supervisor's read, before the commit
        return answer

    monkeypatch.setattr(PositionActor, "_prepare_entry_fill", prepare_then_book_read)
    first = live.position(live.plan)
    live.fill(live.entry_acknowledged(), 100, 100, "x1")
    wait_for(live.ocos, "the OCO the router sent with the fill's commit")
    assert books and books[0].position is None, "the book read before the commit"
    first.stop()  # it crashed a moment after answering
    monkeypatch.setattr(PositionActor, "_prepare_entry_fill", real_prepare)
    stale = live.position(plan_from_entry(books[0].entry), restored=Restored.from_book(books[0]))
    rebuilt = wait_for(lambda: live.others_than(stale), "the position rebuilt from the database as it is now")[0]
    state = wait_for(lambda: (s := rebuilt.proxy().state().get())["protected"] == "100" and s, "its state")
    assert state["qty"] == "100" and state["status"] == "open"
    time.sleep(0.3)  # anything the stale actor or the rebuilt one would still send
    assert not stale.is_alive()
    assert [(o.take_profit.quantity, o.stop_loss.quantity) for o in live.ocos()] == [(Decimal(100), Decimal(100))]
    assert rebuilt.proxy().state().get()["protected"] == "100"
    # Not one of the position's crashes: those keep their own count (MAX_REBUILDS), a review found this one took one.
    assert live.supervisor.proxy().rebuilds.get() == {}
    assert live.supervisor.proxy().stale_rebuilds.get() == {books[0].entry.order_id: 1}


def test_a_rebuild_from_a_current_book_whose_restore_protects_bare_pieces_is_not_called_stale(
        live: RouterRig, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its restore writes an OCO for the piece that waited: rows the database holds and its book lacks, yet its own,
    not a commit it missed. Taken for one (a review of the first version), every such rebuild was made twice, and
    three used up a position's rebuilds."""
    first = live.position(live.plan)
    entry = live.entry_acknowledged()
    live.fill(entry, 40, 40, "x1")
    wait_for(live.ocos, "the first piece's OCO")
    live.fill(entry, 70, 30, "x2")
    wait_for(lambda: first.proxy().state().get()["qty"] == "70", "the second piece, waiting for the first's OCO")
    real_register = OrderRouter._on_Register

    def busy_register(self: OrderRouter, msg: m.Register) -> None:
        time.sleep(0.3)  # the router busy with other messages ahead of it: the restore's OCO is committed first
        real_register(self, msg)

    monkeypatch.setattr(OrderRouter, "_on_Register", busy_register)
    monkeypatch.setattr(PositionActor, "_check_lone_legs", lambda self: 1 / 0)
    first.tell(CheckLoneLegs())  # it crashes within the wait; the supervisor rebuilds it from the database
    wait_for(lambda: len(live.started) >= 2, "the rebuild")
    monkeypatch.setattr(PositionActor, "_check_lone_legs", lambda self: None)
    wait_for(lambda: len(live.ocos()) >= 2, "the waiting piece's OCO, sent by the rebuilt actor")
    time.sleep(0.6)
    assert live.supervisor.proxy().rebuilds.get() == {entry.order_id: 1}
    assert len(live.started) == 2 and live.started[1].is_alive()
    assert [o.stop_loss.quantity for o in live.ocos()] == [Decimal(40), Decimal(30)]


def test_a_rebuild_from_a_book_read_before_the_exit_row_sends_no_oco_beside_the_exit(
        live: RouterRig, monkeypatch: pytest.MonkeyPatch) -> None:
    """The crashed actor told the router its flatten's market exit, and the book was read before the router created
    the exit's row: the rebuilt actor saw its shares bare and wrote an OCO for them, which the router sent beside the
    exit selling the same shares (a review of the stale-book check: it came after the rebuilt actor had acted). What
    an actor told its book is stale asked before it heard so is not sent; its rows end cancelled."""
    books: list[Any] = []
    real_exit_when_clear = PositionActor._exit_when_clear
    real_place_exit = OrderRouter._on_PlaceExit

    def exit_then_book_read(self: PositionActor) -> None:
        sent = self.exit_sent
        real_exit_when_clear(self)
        if self.exit_sent and not sent and not books:  # the supervisor's read, before the router creates the row
            books.append(self.writer.position_book(self.entry_order_id).get())

    def busy_place_exit(self: OrderRouter, msg: m.PlaceExit) -> None:
        time.sleep(0.3)
        real_place_exit(self, msg)

    monkeypatch.setattr(PositionActor, "_exit_when_clear", exit_then_book_read)
    monkeypatch.setattr(OrderRouter, "_on_PlaceExit", busy_place_exit)
    first = live.position(live.plan)
    entry = live.entry_acknowledged()
    live.fill(entry, 100, 100, "x1")
    oco = wait_for(live.ocos, "the OCO sent with the fill")[0]
    # The OCO refused (the price ran through the stop): the position flattens at market.
    live.router.tell(m.SubmitResult(order_ids=(oco.take_profit.order_id, oco.stop_loss.order_id),
                                    rejected="stop price would trigger immediately"))
    wait_for(lambda: books, "the book read after PlaceExit, before the exit row")
    first.stop()  # crashed a moment after telling PlaceExit
    monkeypatch.setattr(PositionActor, "_exit_when_clear", real_exit_when_clear)
    assert not any(o.role == "flatten" for o in books[0].orders)
    stale = live.position(plan_from_entry(books[0].entry), restored=Restored.from_book(books[0]))
    wait_for(live.exits, "the market exit's submit")
    time.sleep(1.0)
    assert not stale.is_alive(), "told StaleBook"
    assert [(e.row.role, e.row.quantity) for e in live.exits()] == [("flatten", Decimal(100))]
    assert [o.stop_loss.quantity for o in live.ocos()] == [Decimal(100)]  # the first, rejected: none beside the exit
    (rebuilt,) = live.others_than(stale)
    state = rebuilt.proxy().state().get()
    assert state["flattening"] and state["qty"] == "100", state
    unsent = [o for o in live.writer.position_book(entry.order_id).get().orders
              if o.order_id > oco.stop_loss.order_id and o.role != "flatten"]
    assert unsent and {(o.status, o.cancel_reason) for o in unsent} == {("cancelled", STALE_BOOK_UNSENT)}


def test_an_actor_that_handed_its_position_over_acts_on_nothing_queued_behind(
        rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    """A flatten or a protection check already in its mailbox went on after the hand-over: cancels and a market exit
    decided on a book it no longer owned, beside the actor rebuilt from the database (a review). The cycle's word (a
    flatten, the close) goes to the supervisor for the actor rebuilt in its place."""
    rig.position.tell(m.OrdersCreated(roles={"entry": rig.entry.order_id}))
    rig.update(rig.entry.order_id, "entry", OrderStatus.FILLED, "100",
               m.Execution(key="b-entry:100", qty=Decimal(100), price=Decimal("50"), at=T0))
    wait_for(lambda: rig.told(m.SubmitProtection), "the OCO")
    rig.settled()
    told_before = len(rig.router.proxy().received().get())
    monkeypatch.setattr(PositionActor, "stop", lambda self, *a, **k: None)  # what is queued behind the hand-over
    rig.position.tell(m.StaleBook(detail="o-9 of its entry o-1 were committed"))
    rig.position.tell(m.Flatten(reason="end of day", scheduled=True))
    rig.position.tell(m.CheckProtection())
    rig.position.tell(m.KeepOvernight())
    rig.settled()
    assert rig.router.proxy().received().get()[told_before:] == []
    told = rig.system.proxy().received().get()
    rebuild = [i for i, x in enumerate(told) if isinstance(x, m.RebuildFromDatabase)]
    assert rebuild and [type(x.message).__name__ for x in told[rebuild[0]:] if isinstance(x, m.ForSuccessor)] == [
        "Flatten", "KeepOvernight"]
    assert all(x.entry_order_id == rig.entry.order_id for x in told if isinstance(x, m.ForSuccessor))


def test_the_supervisor_passes_the_cycles_word_to_the_actor_rebuilt_in_place_of_the_one_it_reached(
        live: RouterRig, monkeypatch: pytest.MonkeyPatch) -> None:
    first = live.position(live.plan)
    entry = live.entry_acknowledged()
    live.fill(entry, 100, 100, "x1")
    wait_for(live.ocos, "the OCO")
    wait_for(lambda: first.proxy().state().get()["status"] == "open", "the position open")
    live.supervisor.proxy().by_entry.get()[entry.order_id] = first  # as a supervisor-made actor is listed
    monkeypatch.setattr(PositionActor, "stop", lambda self, *a, **k: None)  # the flatten is queued behind the hand-over
    first.tell(m.StaleBook(detail="o-9 of its entry o-1 were committed"))
    first.tell(m.Flatten(reason="end of day", scheduled=True))
    successor = wait_for(lambda: live.others_than(first), "the actor rebuilt in its place")[0]
    wait_for(lambda: successor.proxy().state().get()["flattening"] == "end of day", "the flatten passed on to it")
    assert first.proxy().state().get()["flattening"] is None  # the one handed over did nothing with it


def test_a_flatten_begun_before_the_stale_book_is_taken_up_by_the_actor_rebuilt_in_its_place(
        live: RouterRig) -> None:
    """The cycle's flatten reached the rebuilt actor before the router's StaleBook: it began (its OCO's cancels went
    out), lived in that actor's memory only, and the actor read from the database in its place was not flattening
    (a review)."""
    first = live.position(live.plan)
    live.fill(live.entry_acknowledged(), 100, 100, "x1")
    wait_for(live.ocos, "the OCO")
    wait_for(lambda: first.proxy().state().get()["status"] == "open", "the position open")
    live.supervisor.proxy().by_entry.get()[first.proxy().entry_order_id.get()] = first  # as the supervisor lists it
    first.tell(m.Flatten(reason="end of day", scheduled=True))  # handled: its cancels go out
    first.tell(m.StaleBook(detail="o-9 of its entry o-1 were committed"))
    successor = wait_for(lambda: live.others_than(first), "the actor rebuilt in its place")[0]
    wait_for(lambda: successor.proxy().state().get()["flattening"] == "end of day", "the flatten taken up")


def test_an_actor_kept_overnight_passes_on_the_close_not_its_flatten(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    """A flatten passed on then would take the successor's stops off for the night (a review): the close is what
    such an actor carries."""
    exit_asked_at_the_end_of_the_day(rig)
    rig.position.tell(m.OrdersCreated(roles={"flatten": 999}))
    rig.position.tell(m.KeepOvernight())  # its exit's cancel asked
    monkeypatch.setattr(PositionActor, "stop", lambda self, *a, **k: None)
    rig.position.tell(m.StaleBook(detail="o-9 of its entry o-1 were committed"))
    rig.settled()
    passed = [x.message for x in rig.system.proxy().received().get() if isinstance(x, m.ForSuccessor)]
    assert [type(x).__name__ for x in passed] == ["KeepOvernight"]
