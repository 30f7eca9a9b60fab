"""Alpaca refuses an order while one of the other side works in the symbol ("potential wash trade detected. use
complex orders"). A partly filled entry still working is such an order for the OCO protecting its first shares.

The whole actor system against the emulator with its wash-trade check on (alpaca-py, SQLite on disk). Before, the
refused OCO was taken for a stop already through the market: the position flattened, cancelling the entry and
selling its shares at market. Now the entry's rest is cancelled and the shares it bought are protected.
"""

from __future__ import annotations

import time
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterator

import pytest

from actors import messages as m
from actors.position import FLATTEN_RECHECK_S, STOP_CANCEL_RECHECK_S
from catalyst.domain.orders import OrderStatus
from catalyst.store.batch import unwrap_all
from tests.actors.conftest import START, Trading, exchange_at, logged_lines
from tests.actors.test_position_flatten import T0, Rig, wait_for
from tests.actors.test_trade_scenarios import broker_working_stop_qty, legs, position_of, protected_qty


@pytest.fixture
def trading(tmp_path: Path) -> Iterator[Trading]:
    with exchange_at(START, wash_trade_check="strict") as exchange:
        harness = Trading(exchange, f"sqlite+aiosqlite:///{tmp_path / 'catalyst.db'}").start()
        yield harness
        harness.stop()


def test_a_partly_filled_entry_whose_oco_is_refused_as_a_wash_trade_is_cut_short_and_its_shares_protected(
        trading: Trading) -> None:
    with logged_lines("actors.position", "INFO") as lines:
        trading.exchange.set_price("AAPL", "50.00", volume=800)  # 25% participation: 200 of the 500 a minute
        trading.open(trading.plan(qty="500", stop="48.00", target="55.00"))
        trading.wait_for(lambda: protected_qty(trading) == Decimal("200"), "the 200 bought to be protected")
        for _ in range(2):  # minutes in which the entry, were it still working, would fill more
            trading.trade("AAPL", "50.00", volume=800)

    entry = next(o for o in trading.all_orders() if o.role == "entry")
    position = position_of(trading)
    refused = [o for o in legs(trading) if o.status == "rejected"]
    assert entry.status == "cancelled" and entry.filled_qty == Decimal("200")
    assert position.status == "open" and position.quantity == Decimal("200")
    assert broker_working_stop_qty(trading) == Decimal("200")
    assert refused and all("wash trade" in (o.rejection_reason or "") for o in refused)
    assert not [o for o in trading.all_orders() if o.role == "flatten"]  # no market exit
    assert Decimal(next(p["qty"] for p in trading.broker_view()["positions"] if p["symbol"] == "AAPL")) == 200
    said = [line for line in lines if "potential wash trade" in line]
    assert len(said) == 1 and "cancelling the entry's rest, then protecting its 200 shares" in said[0]


def test_a_restarts_catch_up_of_several_pieces_sends_one_oco_not_one_per_piece(trading: Trading) -> None:
    # Pieces filled while an OCO is on its way wait for its answer (actors.position.PROTECTION_COALESCE_S): before,
    # one OCO per piece went out before the first refusal came back (chaos, seed 200: seven, all refused).
    trading.open(trading.plan(qty="800", stop="48.00", target="55.00"))  # rests: no trade in AAPL yet
    trading.wait_for(lambda: (rows := trading.all_orders()) and rows[0].alpaca_order_id, "the entry acknowledged")
    trading.stop()
    for _ in range(3):  # 25% participation, 200 a minute: three pieces while the daemon is down, 200 still to buy
        trading.trade("AAPL", "50.00", volume=800)
    trading.start()  # the catch-up records the three pieces at once

    trading.wait_for(lambda: protected_qty(trading) == Decimal("600"), "the 600 bought to be protected")
    entry = next(o for o in trading.all_orders() if o.role == "entry")
    refused = [o for o in legs(trading) if o.status == "rejected"]
    assert entry.status == "cancelled" and entry.filled_qty == Decimal("600")
    assert position_of(trading).quantity == Decimal("600") and broker_working_stop_qty(trading) == Decimal("600")
    assert len(refused) <= 2 and all("wash trade" in (o.rejection_reason or "") for o in refused)  # one OCO at most


# --- the position actor alone, driven message by message as the router would (tests/actors/test_position_flatten.py)

WASH = "rejected[wash_trade] HTTP 403 code 40310000: potential wash trade detected. use complex orders"


def refuse_as_wash_trade(rig: Rig, protection: Any) -> None:
    for order, role in ((protection.take_profit, "take_profit"), (protection.stop_loss, "stop_loss")):
        rig.position.tell(m.OrderUpdated(order_id=order.order_id, role=role, status=OrderStatus.REJECTED,
                                         filled_qty=Decimal(0), reason=WASH))


def entry_cancels(rig: Rig) -> list[Any]:
    return [c for c in rig.told(m.CancelOrders) if c.order_ids == (rig.entry.order_id,)]


def test_an_entry_cancel_that_does_not_land_is_asked_again_until_the_entry_ends(rig: Rig) -> None:
    # A cancel lost to a 5xx or a timeout is not retried by the router: the 40 bought would wait without a stop
    # for as long as the entry works (a resting limit: until the close).
    rig.position.tell(m.OrdersCreated(roles={"entry": rig.entry.order_id}))
    rig.update(rig.entry.order_id, "entry", OrderStatus.PARTIAL_FILL, "40",
               m.Execution(key="b-entry:40", qty=Decimal(40), price=Decimal("50"), at=T0))
    first = wait_for(lambda: rig.told(m.SubmitProtection), "the first OCO")[0]
    refuse_as_wash_trade(rig, first)

    asked_again = wait_for(lambda: len(entry_cancels(rig)) >= 2 and entry_cancels(rig), "the cancel asked again",
                           timeout=FLATTEN_RECHECK_S * 3)
    verified = [v for v in rig.told(m.VerifyOrders) if v.order_ids == (rig.entry.order_id,)]
    assert len(asked_again) >= 2 and verified and len(rig.told(m.SubmitProtection)) == 1  # none while it works

    rig.update(rig.entry.order_id, "entry", OrderStatus.CANCELLED, "40")
    again = wait_for(lambda: len(rig.told(m.SubmitProtection)) == 2 and rig.told(m.SubmitProtection)[1], "protection")
    assert again.take_profit.quantity == Decimal(40) and not rig.told(m.PlaceExit)


def test_a_stop_while_the_entry_cancel_waits_asks_it_again_at_the_stops_pace_without_reads(rig: Rig) -> None:
    # From a review: a position on the wash-trade path, the daemon stopping, asked its entry's cancel again every
    # 2 s, each time with a read queued behind a broker that may be hanging, where the stop asks every second.
    rig.position.tell(m.OrdersCreated(roles={"entry": rig.entry.order_id}))
    rig.update(rig.entry.order_id, "entry", OrderStatus.PARTIAL_FILL, "40",
               m.Execution(key="b-entry:40", qty=Decimal(40), price=Decimal("50"), at=T0))
    refuse_as_wash_trade(rig, wait_for(lambda: rig.told(m.SubmitProtection), "the first OCO")[0])
    wait_for(lambda: entry_cancels(rig), "the wash-trade path's cancel")
    rig.position.tell(m.WithdrawEntry(reason="the daemon is stopping"))
    wait_for(lambda: len(entry_cancels(rig)) >= 2, "the stop's cancel")
    asked_from = len(entry_cancels(rig))
    reads_before = len(rig.told(m.VerifyOrders))

    time.sleep(STOP_CANCEL_RECHECK_S * 2.5)
    assert len(entry_cancels(rig)) - asked_from >= 2  # at the stop's pace: every second, not every 2 s
    assert len(rig.told(m.VerifyOrders)) == reads_before  # and no read behind it
    assert all(c.reason == "its protection was refused as a potential wash trade" for c in entry_cancels(rig))


def test_a_refusal_handled_after_the_entry_filled_protects_again_once_and_then_exits(rig: Rig) -> None:
    # A market entry fills in a burst on Alpaca: its FILLED update can be handled before the 403 of the OCO sent
    # for its first piece. Protecting again now succeeds; a market exit instead sold a position just opened.
    first = rig.fill_entry()
    refuse_as_wash_trade(rig, first)

    again = wait_for(lambda: len(rig.told(m.SubmitProtection)) == 2 and rig.told(m.SubmitProtection)[1], "again")
    state = rig.settled()
    assert again.take_profit.quantity == Decimal(100) and state["status"] == "open" and not state["flattening"]
    assert not rig.told(m.PlaceExit) and not rig.told(m.CancelOrders)

    refuse_as_wash_trade(rig, again)  # refused again with no entry of ours working: someone else's order; exit
    assert rig.settled()["flattening"]
    assert wait_for(lambda: rig.told(m.PlaceExit), "the market exit")[0].qty == Decimal(100)


def test_a_fill_planned_while_protection_waited_for_the_cancel_is_protected_when_it_lands(rig: Rig) -> None:
    # The router's batch [entry cancelled with 70 filled, the last 30's execution]: it asks the fill's plan (no OCO:
    # protection waits for the cancel), the cancel is told first and protects the 40 applied, then the 30 arrive.
    rig.position.tell(m.OrdersCreated(roles={"entry": rig.entry.order_id}))
    rig.update(rig.entry.order_id, "entry", OrderStatus.PARTIAL_FILL, "40",
               m.Execution(key="b-entry:40", qty=Decimal(40), price=Decimal("50"), at=T0))
    refuse_as_wash_trade(rig, wait_for(lambda: rig.told(m.SubmitProtection), "the first OCO")[0])
    rig.settled()
    late = m.Execution(key="b-entry:70", qty=Decimal(30), price=Decimal("50"), at=T0)
    plan = rig.position.ask(m.PrepareEntryFill(order_id=rig.entry.order_id, execution=late))
    values = unwrap_all(rig.writer.batch(plan.calls).get())  # committed by the router, as it does
    rig.update(rig.entry.order_id, "entry", OrderStatus.CANCELLED, "70")
    rig.position.tell(m.EntryFillCommitted(
        update=m.OrderUpdated(order_id=rig.entry.order_id, role="entry", status=OrderStatus.CANCELLED,
                              filled_qty=Decimal(70), execution=late), plan=plan, values=tuple(values)))
    state = rig.settled()

    assert plan.protection_at is None  # planned while protection waited
    assert state["qty"] == "70" and state["protected"] == "70"
    assert [s.take_profit.quantity for s in rig.told(m.SubmitProtection)[1:]] == [Decimal(40), Decimal(30)]
