"""The router's write path: one commit per step, announcements after the commit, a grace period before REST catch-up."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import pytest

from actors import messages as m
from actors.broker_worker import CatchUp, ReadPosition, SubmitOco, SubmitOrder, Verify
from actors.db_writer import DbWriter
from actors.order_router import CheckExecutions, OrderRouter, RouterSettings
from catalyst.broker.reports import OrderReport, TradeUpdateReport
from catalyst.domain.orders import OrderStatus
from catalyst.domain.positions import PositionSide
from catalyst.store.records import NewOrder

T = TypeVar("T")
T0 = datetime(2024, 3, 4, 14, 45, tzinfo=timezone.utc)


class RecordingWriter(DbWriter):
    """The real DbWriter that also remembers every call it served, in order (batches by their inner methods)."""

    def __init__(self, database_url: str, gate: threading.Event, held: threading.Event) -> None:
        super().__init__(database_url)
        self.served: list[tuple[str, ...]] = []
        self.gate, self.held = gate, held  # a test closes the gate to make the router wait on its commit

    def _run(self, method: str, /, *args: Any, **kwargs: Any) -> Any:
        if not self.gate.is_set():
            self.held.set()
            self.gate.wait(timeout=30)
        self._remember(method, args)
        return super()._run(method, *args, **kwargs)

    def _drain_waiting_calls(self) -> list[Any]:
        waiting = super()._drain_waiting_calls()  # calls that join this one's group commit
        for envelope in waiting:
            self._remember(envelope.message.attr_path[0], envelope.message.args)
        return waiting

    def _remember(self, method: str, args: tuple[Any, ...]) -> None:
        if method == "batch":
            self.served.append(("batch", *(one.method for one in args[0])))
        elif method not in ("get_order", "fills_for_order"):  # the test's own reads
            self.served.append((method,))

    def take_served(self) -> list[tuple[str, ...]]:
        served, self.served = self.served, []
        return served


class FixedClock:
    speed = 0.0

    def now(self) -> datetime:
        return T0


def wait_for(predicate: Callable[[], T], what: str, timeout: float = 15.0) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


class Recorded:
    """A broker pool standing in for the router's two: each job goes straight to a recording actor, none is ever
    waiting to be taken back. A read of the broker's position before a market exit is answered as well: the broker
    holds `held` (signed) of the symbol, plenty for a long by default."""

    def __init__(self, ref: Any, held: Decimal = Decimal(1_000_000)) -> None:
        self.ref, self.held = ref, held

    def tell(self, job: Any) -> None:
        self.ref.tell(job)
        if isinstance(job, ReadPosition) and job.for_exit:
            job.reply_to.tell(m.BrokerPositionRead(symbol=job.symbol, qty=self.held, for_exit=True))

    def withdraw(self, order_id: int) -> bool:
        return False


class Rig:
    def __init__(self, tmp_path: Path, grace_s: float, recording_actor: Any, fill_wait_s: float = 0.002,
                 routine_wait_s: float = 1.0) -> None:
        self.gate, self.held = threading.Event(), threading.Event()
        self.gate.set()
        self.writer_ref = RecordingWriter.start(f"sqlite+aiosqlite:///{tmp_path / 'router.db'}", self.gate, self.held)
        self.writer = self.writer_ref.proxy()
        self.protect, self.general, self.owner = recording_actor(), recording_actor(), recording_actor()
        self.router = OrderRouter.start(self.writer, Recorded(self.protect), Recorded(self.general), FixedClock(),
                                        RouterSettings(missing_execution_grace_s=grace_s,
                                                       fill_event_wait_s=fill_wait_s,
                                                       routine_update_wait_s=routine_wait_s))
        self.path = tmp_path / "router.db"
        self.cycle_id = self.writer.get_or_create_cycle(date(2024, 3, 4), at=T0).get().cycle_id

    def told(self, inbox: Any, kind: type, count: int = 1) -> list[Any]:
        return wait_for(lambda: (found := [x for x in inbox.proxy().received().get() if isinstance(x, kind)])
                        and len(found) >= count and found, f"{count} {kind.__name__}")

    def served(self) -> list[tuple[str, ...]]:
        return self.writer.take_served().get()

    def stop(self) -> None:
        self.gate.set()
        for ref in (self.router, self.protect, self.general, self.owner, self.writer_ref):
            if ref.is_alive():
                ref.stop()


@pytest.fixture
def rig(tmp_path: Path, recording_actor: Any) -> Iterator[Rig]:
    made = Rig(tmp_path, grace_s=0.2, recording_actor=recording_actor)
    yield made
    made.stop()


def order_report(row: Any, status: str, filled: str = "0", broker_id: str = "b-entry", **extra: Any) -> OrderReport:
    return OrderReport(
        broker_id=broker_id, client_order_id=row.client_order_id, symbol=row.symbol, side=row.side,
        type=row.order_type, order_class=row.order_class, tif="day", qty=row.quantity, filled_qty=Decimal(filled),
        filled_avg_price=Decimal("10") if filled != "0" else None, limit_price=row.limit_price,
        stop_price=row.stop_price, status=status, created_at=T0, updated_at=T0, submitted_at=T0, filled_at=None,
        canceled_at=None, **extra,
    )


def enter(rig: Rig) -> Any:
    plan = m.TradePlan(symbol="AAPL", side=PositionSide.LONG, qty=Decimal(100), stop_loss=Decimal("9"),
                       take_profit=Decimal("11"), cycle_id=rig.cycle_id)
    rig.router.tell(m.PlaceEntry(owner=rig.owner, plan=plan))
    return rig.told(rig.general, SubmitOrder)[0].row


def fill_event(row: Any, broker_id: str = "b-entry") -> m.TradeUpdateReceived:
    order = order_report(row, "filled", filled="100", broker_id=broker_id)
    return m.TradeUpdateReceived(update=TradeUpdateReport(
        event="fill", order=order, at=T0, execution_id="exec-1", price=Decimal("10"), qty=Decimal(100)))


def test_a_stream_fill_is_one_commit_of_update_execution_and_status(rig: Rig) -> None:
    row = enter(rig)
    rig.router.tell(m.SubmitResult(order_ids=(row.order_id,), report=order_report(row, "accepted")))
    rig.told(rig.general, SubmitOrder)
    wait_for(lambda: rig.writer.get_order(row.order_id).get().status == "accepted", "the acknowledgement")
    rig.served()

    rig.router.tell(fill_event(row))
    update = wait_for(lambda: next((u for u in rig.owner.proxy().received().get()
                                    if isinstance(u, m.OrderUpdated) and u.execution), None), "the execution")

    assert rig.served() == [("batch", "record_trade_update", "record_fill", "update_order_status")]
    assert update.status is OrderStatus.FILLED and update.execution is not None
    stored = rig.writer.get_order(row.order_id).get()
    assert (stored.status, stored.filled_qty) == ("filled", Decimal(100))
    assert len(rig.writer.fills_for_order(row.order_id).get()) == 1


def test_the_same_fill_twice_is_recorded_once_and_announced_once(rig: Rig) -> None:
    row = enter(rig)
    rig.router.tell(m.SubmitResult(order_ids=(row.order_id,), report=order_report(row, "accepted")))

    rig.router.tell(fill_event(row))
    rig.router.tell(fill_event(row))
    rig.told(rig.owner, m.OrderUpdated)
    rig.router.proxy().by_order.get()  # the router has handled both events once this answers

    executions = [u for u in rig.owner.proxy().received().get() if isinstance(u, m.OrderUpdated) and u.execution]
    assert len(executions) == 1
    assert len(rig.writer.fills_for_order(row.order_id).get()) == 1


def oco_in_flight(rig: Rig) -> SubmitOco:
    """An entry, its position and OCO rows committed, the OCO handed to the protection worker (no reply yet)."""
    entry = enter(rig)
    common = dict(cycle_id=rig.cycle_id, symbol="AAPL", side="sell", quantity=Decimal(100),
                  parent_order_id=entry.order_id, order_class="oco")
    _, (take_profit, stop_loss) = rig.writer.open_position_with_orders(
        entry.order_id, Decimal(100), Decimal(10), T0, Decimal("9"), Decimal("11"), [
            NewOrder(role="take_profit", order_type="limit", limit_price=Decimal("11"), **common),
            NewOrder(role="stop_loss", order_type="stop", stop_price=Decimal("9"), **common),
        ]).get()
    rig.router.tell(m.SubmitProtection(owner=rig.owner, take_profit=take_profit, stop_loss=stop_loss))
    return rig.told(rig.protect, SubmitOco)[0]


def test_an_oco_acknowledgement_is_one_commit_for_both_legs(rig: Rig) -> None:
    oco = oco_in_flight(rig)
    rig.served()
    stop_leg = order_report(oco.stop_loss, "accepted", broker_id="b-sl")
    report = order_report(oco.take_profit, "accepted", broker_id="b-tp", legs=(stop_leg,))

    rig.router.tell(m.SubmitResult(order_ids=(oco.take_profit.order_id, oco.stop_loss.order_id), report=report))
    wait_for(lambda: rig.writer.get_order(oco.stop_loss.order_id).get().alpaca_order_id == "b-sl", "both legs")

    served = [s for s in rig.served() if s[0] == "batch"]
    assert served == [("batch", "mark_submitted", "mark_submitted")]  # each leg's id and new state: one write
    legs = [rig.writer.get_order(i).get() for i in (oco.take_profit.order_id, oco.stop_loss.order_id)]
    assert [(leg.alpaca_order_id, leg.status, leg.broker_status) for leg in legs] == [
        ("b-tp", "accepted", "accepted"), ("b-sl", "accepted", "accepted")]
    assert all(leg.submitted_at is not None and not leg.outcome_unknown for leg in legs)


def test_a_filled_submit_response_waits_for_the_stream_before_asking_the_broker(tmp_path: Path,
                                                                                 recording_actor: Any) -> None:
    rig = Rig(tmp_path, grace_s=3600, recording_actor=recording_actor)  # the test plays the timer itself, below
    try:
        row = enter(rig)
        rig.router.tell(m.SubmitResult(order_ids=(row.order_id,), report=order_report(row, "filled", filled="100")))
        rig.router.tell(fill_event(row))  # the stream's event lands within the grace period
        rig.told(rig.owner, m.OrderUpdated)
        no_catch_up_yet = not [x for x in rig.general.proxy().received().get() if isinstance(x, CatchUp)]

        rig.router.tell(CheckExecutions(order_id=row.order_id))  # the grace period ends
        rig.router.proxy().by_order.get()  # answered once the check above was handled

        assert no_catch_up_yet
        assert not [x for x in rig.general.proxy().received().get() if isinstance(x, CatchUp)]
    finally:
        rig.stop()


def test_a_fill_the_stream_never_delivers_is_fetched_after_the_grace_period(rig: Rig) -> None:
    row = enter(rig)

    rig.router.tell(m.SubmitResult(order_ids=(row.order_id,), report=order_report(row, "filled", filled="100")))

    catch_up = rig.told(rig.general, CatchUp)[0]
    assert catch_up.since < T0


def catch_ups(rig: Rig) -> list[CatchUp]:
    rig.router.proxy().by_order.get()  # answered once every message told before it is handled
    return [x for x in rig.general.proxy().received().get() if isinstance(x, CatchUp)]


def test_a_fill_missing_while_a_catch_up_runs_is_fetched_once_it_is_back(tmp_path: Path,
                                                                         recording_actor: Any) -> None:
    # A second entry's execution goes missing while the first's catch-up is with the broker worker. That read may
    # have been taken before the second fill: the second is asked for once it is back, not dropped (its shares would
    # wait for a doctor pass for their stop), and not sent beside it either (the doctor's own healing batch, which
    # used to clear the router's flag, is not the answer to it).
    rig = Rig(tmp_path, grace_s=3600, recording_actor=recording_actor)  # the test plays the timers itself
    try:
        first = enter(rig)
        rig.router.tell(m.PlaceEntry(owner=rig.owner, plan=m.TradePlan(
            symbol="MSFT", side=PositionSide.LONG, qty=Decimal(100), stop_loss=Decimal("9"), take_profit=Decimal("11"),
            cycle_id=rig.cycle_id)))
        second = rig.told(rig.general, SubmitOrder, count=2)[1].row
        rig.router.tell(m.SubmitResult(order_ids=(first.order_id,), report=order_report(first, "filled", "100")))
        rig.router.tell(CheckExecutions(order_id=first.order_id))
        assert len(catch_ups(rig)) == 1

        rig.router.tell(m.CatchUpResult(orders=(), fills=(), since=T0, from_doctor=True))
        rig.router.tell(m.SubmitResult(order_ids=(second.order_id,),
                                       report=order_report(second, "filled", "100", broker_id="b-second")))
        rig.router.tell(CheckExecutions(order_id=second.order_id))
        while_the_first_runs = len(catch_ups(rig))

        rig.router.tell(m.CatchUpResult(orders=(), fills=(), since=catch_ups(rig)[0].since))  # the first's answer
        after_it = catch_ups(rig)

        assert while_the_first_runs == 1
        assert len(after_it) == 2 and after_it[1].since <= T0
    finally:
        rig.stop()

def test_a_rebuilt_position_missing_executions_has_the_router_fetch_them_from_the_moment_it_names(rig: Rig) -> None:
    # A kill on a Friday before a stop's last execution was recorded: the stream's catch-up on Monday covers Monday.
    row = enter(rig)
    friday = T0 - timedelta(days=3)
    rig.router.tell(m.Register(owner=rig.owner, order_ids=(row.order_id,), executions_missing_since=friday,
                               executions_missing=f"o-{row.order_id} 60 of 100"))

    assert [c.since for c in catch_ups(rig)] == [friday]

def test_the_owner_hears_of_a_status_only_once_it_is_committed(rig: Rig) -> None:
    row = enter(rig)
    order = ["created", "submitted", "accepted", "filled"]
    rig.router.tell(m.SubmitResult(order_ids=(row.order_id,), report=order_report(row, "accepted")))
    rig.router.tell(fill_event(row))

    seen: list[tuple[str, str]] = []
    for _ in range(200):  # read the row as each announcement arrives: it is never behind what was announced
        for update in [u for u in rig.owner.proxy().received().get() if isinstance(u, m.OrderUpdated)]:
            seen.append((str(update.status), rig.writer.get_order(row.order_id).get().status))
        if any(told == "filled" for told, _ in seen):
            break
        time.sleep(0.005)

    assert any(told == "filled" for told, _ in seen)
    assert all(order.index(stored) >= order.index(told) for told, stored in seen)


def test_updates_waiting_together_are_committed_together_and_each_announced(rig: Rig) -> None:
    symbols = ("AAPL", "MSFT", "NVDA")
    for symbol in symbols:
        rig.router.tell(m.PlaceEntry(owner=rig.owner, plan=m.TradePlan(
            symbol=symbol, side=PositionSide.LONG, qty=Decimal(100), stop_loss=Decimal("9"),
            take_profit=Decimal("11"), cycle_id=rig.cycle_id)))
    rows = [s.row for s in rig.told(rig.general, SubmitOrder, count=3)]
    for row, symbol in zip(rows, symbols):
        rig.router.tell(m.SubmitResult(order_ids=(row.order_id,), report=order_report(row, "accepted", broker_id=symbol)))
    rig.router.proxy().by_order.get()  # answered once the acknowledgements are handled
    rig.served()

    rig.gate.clear()  # the writer stops serving: the router's first commit waits...
    rig.router.tell(fill_event(rows[0], broker_id=symbols[0]))
    assert rig.held.wait(10)
    for row, symbol in zip(rows[1:], symbols[1:]):  # ...while two more fills queue up behind it
        rig.router.tell(fill_event(row, broker_id=symbol))
    rig.gate.set()

    executions = wait_for(lambda: len(found := [u for u in rig.owner.proxy().received().get()
                                                if isinstance(u, m.OrderUpdated) and u.execution]) >= 3 and found,
                          "three executions announced")
    one_fill = ("record_trade_update", "record_fill", "update_order_status")
    assert rig.served() == [("batch", *one_fill), ("batch", *one_fill, *one_fill)]
    assert sorted(u.order_id for u in executions) == [row.order_id for row in rows]
    assert {rig.writer.get_order(row.order_id).get().status for row in rows} == {"filled"}


def reply_filled(rig: Rig) -> Any:
    """An entry whose submit reply says it filled (a marketable order at the emulator); the writer's log cleared."""
    row = enter(rig)
    rig.served()
    rig.router.tell(m.SubmitResult(order_ids=(row.order_id,), report=order_report(row, "filled", filled="100")))
    return row


def test_a_filled_submit_result_waits_briefly_for_its_fill_event_and_both_are_one_commit(
        tmp_path: Path, recording_actor: Any) -> None:
    rig = Rig(tmp_path, grace_s=3600, recording_actor=recording_actor, fill_wait_s=0.5)
    try:
        row = reply_filled(rig)
        time.sleep(0.05)  # the stream's event lands a moment after the reply, as it does for a marketable entry
        rig.router.tell(fill_event(row))
        update = wait_for(lambda: next((u for u in rig.owner.proxy().received().get()
                                        if isinstance(u, m.OrderUpdated) and u.execution), None), "the execution")

        assert rig.served() == [("batch", "mark_submitted", "record_trade_update", "record_fill")]
        assert update.status is OrderStatus.FILLED
        stored = rig.writer.get_order(row.order_id).get()
        assert (stored.status, stored.alpaca_order_id, stored.filled_qty) == ("filled", "b-entry", Decimal(100))
        assert len(rig.writer.fills_for_order(row.order_id).get()) == 1
    finally:
        rig.stop()


def test_a_filled_submit_result_whose_event_never_comes_is_committed_after_the_wait(
        tmp_path: Path, recording_actor: Any) -> None:
    rig = Rig(tmp_path, grace_s=3600, recording_actor=recording_actor, fill_wait_s=0.3)
    try:
        sent = time.monotonic()
        row = reply_filled(rig)
        wait_for(lambda: rig.writer.get_order(row.order_id).get().status == "filled", "the result committed")
        waited = time.monotonic() - sent

        assert 0.25 <= waited < 5  # held for the event, then committed on its own
        assert rig.served() == [("batch", "mark_submitted")]  # the broker id and "filled" in one write
    finally:
        rig.stop()


def test_an_accepted_market_entry_waits_briefly_for_its_fill_event_and_both_are_one_commit(
        tmp_path: Path, recording_actor: Any) -> None:
    """Alpaca answers a market order `accepted`; its fill follows on the stream a moment later. Committed apart, the
    fill (whose protection waits on its commit) would queue behind the acknowledgement's own commit."""
    rig = Rig(tmp_path, grace_s=3600, recording_actor=recording_actor, fill_wait_s=0.5)
    try:
        row = enter(rig)
        rig.served()
        rig.router.tell(m.SubmitResult(order_ids=(row.order_id,), report=order_report(row, "accepted")))
        time.sleep(0.05)
        rig.router.tell(fill_event(row))
        wait_for(lambda: any(isinstance(u, m.OrderUpdated) and u.execution for u in rig.owner.proxy().received().get()),
                 "the execution")

        assert rig.served() == [("batch", "mark_submitted", "record_trade_update", "record_fill",
                                  "update_order_status")]
        stored = rig.writer.get_order(row.order_id).get()
        assert (stored.status, stored.alpaca_order_id, stored.filled_qty) == ("filled", "b-entry", Decimal(100))
    finally:
        rig.stop()


def test_an_accepted_limit_entry_is_committed_without_waiting(tmp_path: Path, recording_actor: Any) -> None:
    rig = Rig(tmp_path, grace_s=3600, recording_actor=recording_actor, fill_wait_s=1.0)
    try:
        plan = m.TradePlan(symbol="AAPL", side=PositionSide.LONG, qty=Decimal(100), stop_loss=Decimal("9"),
                           take_profit=Decimal("11"), cycle_id=rig.cycle_id, order_type="limit",
                           limit_price=Decimal("10"))
        rig.router.tell(m.PlaceEntry(owner=rig.owner, plan=plan))
        row = rig.told(rig.general, SubmitOrder)[0].row
        sent = time.monotonic()
        rig.router.tell(m.SubmitResult(order_ids=(row.order_id,), report=order_report(row, "accepted")))
        wait_for(lambda: rig.writer.get_order(row.order_id).get().status == "accepted", "the acknowledgement")

        assert time.monotonic() - sent < 0.5  # a resting limit order's fill may be hours away: never held for it
    finally:
        rig.stop()


def test_a_catch_up_through_several_states_is_one_log_line(rig: Rig, router_lines: list[str]) -> None:
    row = enter(rig)
    rig.router.tell(m.SubmitResult(order_ids=(row.order_id,), report=order_report(row, "new")))
    wait_for(lambda: rig.writer.get_order(row.order_id).get().status == "submitted", "the acknowledgement")

    rig.router.tell(fill_event(row))  # submitted → (accepted) → filled: the machine walks through accepted
    wait_for(lambda: rig.writer.get_order(row.order_id).get().status == "filled", "the fill")
    rig.router.proxy().by_order.get()  # handled, logged

    moves = [line for line in router_lines if line.startswith(f"order AAPL#o-{row.order_id} ") and "→" in line]
    assert moves == [f"order AAPL#o-{row.order_id} created → submitted",
                     f"order AAPL#o-{row.order_id} submitted → accepted → filled"]


def test_a_stop_leg_acknowledged_as_held_is_one_log_line(rig: Rig, router_lines: list[str]) -> None:
    oco = oco_in_flight(rig)
    rig.router.tell(acknowledged_as_held(oco))
    wait_for(lambda: rig.writer.get_order(oco.stop_loss.order_id).get().alpaca_order_id == "b-sl", "both legs")
    rig.router.proxy().by_order.get()

    def moves(order_id: int) -> list[str]:
        return [line for line in router_lines if line.startswith(f"order AAPL#o-{order_id} ") and "→" in line]

    assert moves(oco.take_profit.order_id) == [f"order AAPL#o-{oco.take_profit.order_id} created → submitted"]  # "new"
    assert moves(oco.stop_loss.order_id) == [f"order AAPL#o-{oco.stop_loss.order_id} created → submitted → accepted"]
    assert rig.writer.get_order(oco.stop_loss.order_id).get().status == "accepted"


def test_an_oco_acknowledged_without_its_leg_learns_the_leg_and_what_it_did_from_the_take_profits_verify(
        rig: Rig, router_lines: list[str]) -> None:
    # A look-up's answer read un-nested: the stop row has no broker id. The take-profit is verified (by id, nested),
    # and by then the stop has filled with its events lost: the leg's id AND its fill are taken from that report
    # (a verify's reports are the take-profits' alone), and its execution is fetched.
    oco = oco_in_flight(rig)
    rig.router.tell(m.SubmitResult(order_ids=(oco.take_profit.order_id, oco.stop_loss.order_id),
                                   report=order_report(oco.take_profit, "new", broker_id="b-tp")))
    verify = rig.told(rig.general, Verify)[0]
    assert verify.orders == ((oco.take_profit.order_id, "b-tp"),)
    assert rig.writer.get_order(oco.stop_loss.order_id).get().alpaca_order_id is None
    stop_leg = order_report(oco.stop_loss, "filled", filled="100", broker_id="b-sl")
    rig.router.tell(m.OrdersVerified(reports=(order_report(oco.take_profit, "canceled", broker_id="b-tp",
                                                           legs=(stop_leg,)),)))
    stop = wait_for(lambda: (row := rig.writer.get_order(oco.stop_loss.order_id).get()).status == "filled" and row,
                    "the stop leg's fill from the verify")
    assert stop.alpaca_order_id == "b-sl"
    assert rig.told(rig.general, CatchUp)  # its execution, which no event brought, fetched over REST
    assert f"order AAPL#o-{oco.take_profit.order_id} acknowledged without its stop leg: asking the broker for it" \
        in router_lines


def acknowledged_as_held(oco: SubmitOco) -> m.SubmitResult:
    stop_leg = order_report(oco.stop_loss, "held", broker_id="b-sl")
    report = order_report(oco.take_profit, "new", broker_id="b-tp", legs=(stop_leg,))
    return m.SubmitResult(order_ids=(oco.take_profit.order_id, oco.stop_loss.order_id), report=report)
