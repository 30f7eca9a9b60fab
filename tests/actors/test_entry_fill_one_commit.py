"""An entry fill's hot path: the router asks the position actor for its writes and commits them WITH the execution
(one transaction: execution, position row, OCO rows, in the golden rule's order), then sends the OCO on itself."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from actors import messages as m
from actors.broker_worker import SubmitOco, SubmitOrder
from actors.position import PositionActor
from catalyst.store.batch import call
from tests.actors.test_write_path_router import FixedClock, Rig, fill_event, order_report, wait_for

ONE_FILL = ("record_trade_update", "record_fill", "update_order_status")


class PlansAWriteThatFails(PositionActor):
    """A position actor whose planned writes cannot commit (a call the Store does not have)."""

    def _prepare_entry_fill(self, msg: m.PrepareEntryFill) -> m.EntryFillPlan | None:
        planned = super()._prepare_entry_fill(msg)
        assert planned is not None
        return m.EntryFillPlan(calls=(call("no_such_store_call"), *planned.calls), protection_at=1)


@pytest.fixture
def rig(tmp_path: Path, recording_actor: Any) -> Iterator[Rig]:
    made = Rig(tmp_path, grace_s=3600, recording_actor=recording_actor)
    yield made
    made.stop()


def start_position(rig: Rig, actor: type[PositionActor] = PositionActor, qty: int = 100) -> tuple[Any, Any]:
    plan = m.TradePlan(symbol="AAPL", side="long", qty=Decimal(qty), stop_loss=Decimal("9"),
                       take_profit=Decimal("11"), cycle_id=rig.cycle_id)
    position = actor.start(plan, rig.router, rig.writer, rig.owner, FixedClock())
    entry = rig.told(rig.general, SubmitOrder)[0].row
    rig.router.tell(m.SubmitResult(order_ids=(entry.order_id,), report=order_report(entry, "accepted")))
    wait_for(lambda: rig.writer.get_order(entry.order_id).get().status == "accepted", "the acknowledgement")
    rig.served()
    return position, entry


def protection_rows(rig: Rig, entry: Any) -> list[Any]:
    return [rig.writer.get_order(entry.order_id + i).get() for i in (1, 2)]


def test_the_execution_its_position_and_its_oco_rows_are_one_commit_and_the_oco_goes_out_at_once(rig: Rig) -> None:
    position, entry = start_position(rig)
    try:
        rig.router.tell(fill_event(entry))
        oco = rig.told(rig.protect, SubmitOco)[0]

        assert rig.served() == [("batch", *ONE_FILL, "together")]
        take_profit, stop_loss = protection_rows(rig, entry)
        assert (oco.take_profit.order_id, oco.stop_loss.order_id) == (take_profit.order_id, stop_loss.order_id)
        assert {r.role for r in (take_profit, stop_loss)} == {"take_profit", "stop_loss"}
        assert {r.parent_order_id for r in (take_profit, stop_loss)} == {entry.order_id}
        linked = rig.writer.get_order(entry.order_id).get()
        assert linked.status == "filled" and linked.position_id is not None
        assert take_profit.position_id == stop_loss.position_id == linked.position_id
        assert take_profit.quantity == Decimal(100)
        state = wait_for(lambda: (s := position.proxy().state().get())["status"] == "open" and s, "the position open")
        assert state["qty"] == "100" and state["protected"] == "100"
        assert len(rig.writer.fills_for_order(entry.order_id).get()) == 1
    finally:
        position.stop()


def test_owner_writes_that_fail_leave_the_execution_recorded_and_the_owner_writes_them_itself(rig: Rig) -> None:
    position, entry = start_position(rig, PlansAWriteThatFails)
    try:
        rig.router.tell(fill_event(entry))
        oco = rig.told(rig.protect, SubmitOco)[0]

        served = [s for s in rig.served() if s[0] == "batch"]
        assert served[0] == ("batch", *ONE_FILL, "together")  # the owner's writes failed: none of them stayed
        assert served[1] == ("batch", "open_position_with_orders")  # ...so the owner wrote them itself, once
        assert len(rig.writer.fills_for_order(entry.order_id).get()) == 1  # the router's writes stood on their own
        state = wait_for(lambda: (s := position.proxy().state().get())["status"] == "open" and s, "the position open")
        assert state["qty"] == "100" and state["protected"] == "100"
        take_profit, stop_loss = protection_rows(rig, entry)
        assert (oco.take_profit.order_id, oco.stop_loss.order_id) == (take_profit.order_id, stop_loss.order_id)
        assert len([x for x in rig.protect.proxy().received().get() if isinstance(x, SubmitOco)]) == 1
    finally:
        position.stop()


def test_a_second_fill_in_the_same_batch_is_told_after_the_commit_and_protected_by_its_own_oco(rig: Rig) -> None:
    position, entry = start_position(rig)
    try:
        whole = fill_event(entry)
        part = whole.update.model_copy(update={
            "qty": Decimal(40), "order": whole.update.order.model_copy(update={"filled_qty": Decimal(40)})})
        rest = whole.update.model_copy(update={"qty": Decimal(60)})  # cum 100
        new = part.model_copy(update={"event": "new", "qty": None, "price": None, "execution_id": None})
        rig.gate.clear()  # the writer holds the router on the "new" event's commit...
        rig.router.tell(m.TradeUpdateReceived(update=new))
        assert rig.held.wait(10)
        rig.router.tell(m.TradeUpdateReceived(update=part))  # ...while both partial fills queue up behind it
        rig.router.tell(m.TradeUpdateReceived(update=rest))
        rig.gate.set()

        ocos = rig.told(rig.protect, SubmitOco, count=2)
        assert sorted(o.take_profit.quantity for o in ocos) == [Decimal(40), Decimal(60)]
        state = wait_for(lambda: (s := position.proxy().state().get())["qty"] == "100" and s, "both fills")
        assert state["protected"] == "100"
        assert len(rig.writer.fills_for_order(entry.order_id).get()) == 2
        batches = [s for s in rig.served() if s[0] == "batch"]
        both = batches[1]  # both executions in one commit, the owner asked once (its plan assumes its state)
        assert (both.count("record_fill"), both.count("together")) == (2, 1)
        assert both.index("together") < both.index("record_fill", both.index("record_fill") + 1)
        assert batches[2] == ("batch", "update_position", "create_orders")  # the second fill, by the owner
    finally:
        position.stop()


class FlattenedWhileAsked(PositionActor):
    """A flatten reaches the position between its answer to the router and the router's commit."""

    def _prepare_entry_fill(self, msg: m.PrepareEntryFill) -> m.EntryFillPlan | None:
        planned = super()._prepare_entry_fill(msg)
        if self.position_id is not None:  # the second fill: the position is open, so a flatten takes effect
            self.actor_ref.tell(m.Flatten(reason="loss limit"))
        return planned


def test_an_oco_committed_after_a_flatten_began_is_called_off_not_left_working(rig: Rig) -> None:
    position, entry = start_position(rig, FlattenedWhileAsked)
    try:
        whole = fill_event(entry)
        part = whole.update.model_copy(update={
            "qty": Decimal(40), "order": whole.update.order.model_copy(update={"filled_qty": Decimal(40)})})
        rig.router.tell(m.TradeUpdateReceived(update=part))
        first = rig.told(rig.protect, SubmitOco)[0]
        rig.router.tell(m.TradeUpdateReceived(update=whole.update.model_copy(update={"qty": Decimal(60)})))
        second = rig.told(rig.protect, SubmitOco, count=2)[1]

        def called_off() -> bool:
            tracked = rig.router.proxy().by_order.get()
            return all(tracked[o.order_id].pending_cancel for o in (second.take_profit, second.stop_loss))

        assert wait_for(called_off, "the second OCO called off")  # cancelled as soon as the broker acknowledges it
        assert second.take_profit.quantity == Decimal(60) and first.take_profit.quantity == Decimal(40)
        state = position.proxy().state().get()
        assert state["qty"] == "100" and state["status"] == "open"
    finally:
        position.stop()
