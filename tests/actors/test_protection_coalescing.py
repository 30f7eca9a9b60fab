"""An entry's pieces that come while the OCO of an earlier piece is still on its way wait for its answer, then go in
one OCO, priced from their own fills (actors.position.PROTECTION_COALESCE_S).

Before, each piece sent its own OCO at once. Pieces recorded together (a restart's catch-up) put one OCO each on the
wire before the first answer: with Alpaca refusing an OCO while the entry works ("potential wash trade"), every one
was refused (chaos, seed 201: seven refused OCOs, fourteen calls); a thin stock's entry split into many small OCOs.

The position actor is driven message by message as the router would (tests/actors/test_position_flatten.py's Rig,
the real DbWriter on a SQLite file); the catch-up case runs the whole actor system against the emulator
(tests/actors/test_wash_trade.py).
"""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import pytest

from actors import messages as m
from actors import position as position_module
from actors.position import PROTECTION_COALESCE_S, PositionActor
from actors.system import TradingSystem
from catalyst.domain.orders import OrderStatus
from catalyst.sim.clock import SimClock
from catalyst.store.repository import Store
from tests.actors.conftest import logged_lines
from tests.actors.test_position_flatten import T0, Rig, wait_for


def piece(rig: Rig, cum: int, qty: int, price: str, status: OrderStatus = OrderStatus.PARTIAL_FILL) -> None:
    rig.update(rig.entry.order_id, "entry", status, str(cum),
               m.Execution(key=f"b-entry:{cum}", qty=Decimal(qty), price=Decimal(price), at=T0))


def acknowledge(rig: Rig, protection: Any) -> None:
    rig.update(protection.take_profit.order_id, "take_profit", OrderStatus.ACCEPTED)
    rig.update(protection.stop_loss.order_id, "stop_loss", OrderStatus.ACCEPTED)


def sized_at_50(rig: Rig) -> None:
    """The rig's position actor again, with a plan sized at 50.00 (stop 48, target 55): a piece that pays more moves
    its stop and target by the difference."""
    rig.position.stop()
    rig.position = PositionActor.start(rig.plan.model_copy(update={"entry_price": Decimal("50")}), rig.router,
                                       rig.writer, rig.system, SimClock(T0, 0))
    rig.position.tell(m.OrdersCreated(roles={"entry": rig.entry.order_id}))


def test_pieces_filled_while_an_oco_is_on_its_way_go_in_one_oco_once_it_is_answered(rig: Rig) -> None:
    sized_at_50(rig)
    piece(rig, 40, 40, "50.00")
    first = wait_for(lambda: rig.told(m.SubmitProtection), "the first piece's OCO")[0]
    piece(rig, 70, 30, "51.00")
    piece(rig, 90, 20, "52.00")
    state = rig.settled()
    assert state["qty"] == "90" and state["protected"] == "40"
    assert len(rig.told(m.SubmitProtection)) == 1  # nothing more on the wire before the first OCO's answer

    acknowledge(rig, first)
    second = wait_for(lambda: rig.told(m.SubmitProtection)[1:], "the held pieces' OCO")[0]
    assert second.take_profit.quantity == second.stop_loss.quantity == Decimal(50)
    # From their own average, 51.40: 1.40 above the 50.00 sized at, so 49.40 and 56.40 (the first piece's 48 and 55
    # would put these 50 shares 3.40 from their stop where the budget allowed 2.00).
    assert (second.stop_loss.stop_price, second.take_profit.limit_price) == (Decimal("49.40"), Decimal("56.40"))
    assert (first.stop_loss.stop_price, first.take_profit.limit_price) == (Decimal("48"), Decimal("55"))
    assert rig.settled()["protected"] == "90" and len(rig.told(m.SubmitProtection)) == 2


def test_pieces_are_protected_after_the_wait_when_the_oco_on_its_way_is_never_answered(rig: Rig) -> None:
    # Its answer lost or held back (a 429, a reply lost and left to the doctor): the pieces do not wait for it.
    rig.position.tell(m.OrdersCreated(roles={"entry": rig.entry.order_id}))
    piece(rig, 40, 40, "50.00")
    wait_for(lambda: rig.told(m.SubmitProtection), "the first piece's OCO")
    started = time.monotonic()
    piece(rig, 70, 30, "50.00")
    second = wait_for(lambda: rig.told(m.SubmitProtection)[1:], "the second piece's OCO",
                      timeout=PROTECTION_COALESCE_S * 5)[0]
    assert time.monotonic() - started >= PROTECTION_COALESCE_S * 0.9
    assert second.take_profit.quantity == Decimal(30) and rig.settled()["protected"] == "70"


def test_the_entrys_last_piece_is_protected_at_once_with_those_that_waited(rig: Rig) -> None:
    # The entry has ended: nothing more is coming to wait for, and no order of ours works against the OCO.
    rig.position.tell(m.OrdersCreated(roles={"entry": rig.entry.order_id}))
    piece(rig, 40, 40, "50.00")
    wait_for(lambda: rig.told(m.SubmitProtection), "the first piece's OCO")
    piece(rig, 70, 30, "50.00")
    piece(rig, 100, 30, "50.00", status=OrderStatus.FILLED)
    second = wait_for(lambda: rig.told(m.SubmitProtection)[1:], "the last pieces' OCO", timeout=0.5)[0]
    assert second.take_profit.quantity == Decimal(60) and rig.settled()["protected"] == "100"


def test_an_answered_oco_does_not_hold_the_next_piece(rig: Rig) -> None:
    rig.position.tell(m.OrdersCreated(roles={"entry": rig.entry.order_id}))
    piece(rig, 40, 40, "50.00")
    acknowledge(rig, wait_for(lambda: rig.told(m.SubmitProtection), "the first piece's OCO")[0])
    piece(rig, 70, 30, "50.00")
    second = wait_for(lambda: rig.told(m.SubmitProtection)[1:], "the second piece's OCO", timeout=0.5)[0]
    assert second.take_profit.quantity == Decimal(30)


def test_no_fast_path_plan_while_pieces_wait_so_an_answer_between_plan_and_commit_cannot_protect_them_twice(
        rig: Rig) -> None:
    # The router's fast path asks the owner's plan, then commits it. A plan made while pieces waited covered them
    # too; the in-flight OCO's answer, told between the plan and its commit, protected them as well: 130 of 100
    # shares under stops (a review's case). The owner answers None while shares are bare: commit, then told.
    rig.position.tell(m.OrdersCreated(roles={"entry": rig.entry.order_id}))
    piece(rig, 40, 40, "50.00")
    first = wait_for(lambda: rig.told(m.SubmitProtection), "the first piece's OCO")[0]
    piece(rig, 70, 30, "50.00")
    last = m.Execution(key="b-entry:100", qty=Decimal(30), price=Decimal("50"), at=T0)
    assert rig.position.ask(m.PrepareEntryFill(order_id=rig.entry.order_id, execution=last)) is None
    acknowledge(rig, first)  # the answer comes while the router commits the execution
    rig.update(rig.entry.order_id, "entry", OrderStatus.FILLED, "100", last)  # then the owner is told
    state = rig.settled()
    assert state["qty"] == "100" and state["protected"] == "100"
    assert [s.take_profit.quantity for s in rig.told(m.SubmitProtection)] == [Decimal(40), Decimal(30), Decimal(30)]


def test_the_wait_ends_a_second_after_the_oco_was_sent_however_many_pieces_come(rig: Rig) -> None:
    rig.position.tell(m.OrdersCreated(roles={"entry": rig.entry.order_id}))
    piece(rig, 40, 40, "50.00")
    wait_for(lambda: rig.told(m.SubmitProtection), "the first piece's OCO")  # never answered (a 429, a lost reply)
    rig.settled()
    held_at = time.monotonic()
    piece(rig, 50, 10, "50.00")
    rig.settled()
    time.sleep(PROTECTION_COALESCE_S * 0.8)
    piece(rig, 60, 10, "50.00")  # re-armed the timer for a full second before: the first piece waited ~1.8 s
    second = wait_for(lambda: rig.told(m.SubmitProtection)[1:], "the held pieces' OCO", timeout=5)[0]
    assert time.monotonic() - held_at < PROTECTION_COALESCE_S * 1.3
    assert second.take_profit.quantity == Decimal(20)


def test_pieces_waiting_when_the_daemon_stops_get_their_oco_before_the_actor_stops(rig: Rig) -> None:
    """A stop (TERM) within the wait cancelled the timer: the waiting piece had no OCO row at all while the daemon was
    down, nothing at the broker (found by a review). Its OCO is made as the actor stops."""
    rig.position.tell(m.OrdersCreated(roles={"entry": rig.entry.order_id}))
    piece(rig, 40, 40, "50.00")
    wait_for(lambda: rig.told(m.SubmitProtection), "the first piece's OCO")
    piece(rig, 70, 30, "50.00")
    rig.settled()
    assert sum(s.stop_loss.quantity for s in rig.told(m.SubmitProtection)) == Decimal(40)  # the second one waits
    rig.position.stop()
    assert [s.stop_loss.quantity for s in rig.told(m.SubmitProtection)] == [Decimal(40), Decimal(30)]


def test_a_stop_while_the_database_does_not_answer_still_stops_every_actor(
        rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    """The waiting pieces' OCO waits for the database at most STOP_WRITE_S; an actor that outlasts the system's stop
    timeout no longer leaves the router and the rest running (a review: another program holding the database locked
    made the writer wait, pykka.Timeout escaped TradingSystem.stop, and nothing after the positions was stopped)."""
    rig.position.tell(m.OrdersCreated(roles={"entry": rig.entry.order_id}))
    piece(rig, 40, 40, "50.00")
    wait_for(lambda: rig.told(m.SubmitProtection), "the first piece's OCO")
    piece(rig, 70, 30, "50.00")
    label = rig.settled()["position"]
    real = Store.create_orders

    async def locked_create_orders(self: Store, *args: Any, **kwargs: Any) -> Any:
        time.sleep(2.0)  # another program holds the database locked: the writer waits
        return await real(self, *args, **kwargs)

    monkeypatch.setattr(Store, "create_orders", locked_create_orders)
    monkeypatch.setattr(position_module, "STOP_WRITE_S", 0.3)
    system = TradingSystem("sqlite+aiosqlite:///unused.db", broker_factory=None, stream_factory=None, clock=None)
    system._positions, system.refs = [rig.position], [rig.writer_ref, rig.system, rig.router]
    with logged_lines("actors.position", "ERROR") as errors, logged_lines("actors.system", "WARNING") as warnings:
        system.stop(timeout=0.6)  # the writer, busy with the write, outlasts it
    assert not rig.position.is_alive() and not rig.router.is_alive() and not rig.system.is_alive()
    assert errors == [f"position {label} could not protect 30 shares while stopping (the database did "
                      "not answer within 0.3 s); the next start protects them"]
    assert warnings == ["system DbWriter did not stop within 0.6 s: going on with the others"]
    wait_for(lambda: not rig.writer_ref.is_alive(), "the writer, once its write is done")
