"""An OCO answered `new` (or `pending_new`) tells its position it is acknowledged.

The router moves the row created → submitted as it records the broker id, and a report of `new` (submitted) then
moves nothing further, so its owner was never told: the position saw the take-profit `created`, an OCO on its way,
and held the entry's next piece for the whole coalescing wait instead of protecting it at once (found by a review;
the emulator answers `accepted`, which hid it)."""

from __future__ import annotations

import time
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pykka

from actors import messages as m
from actors.broker_worker import SubmitOco, SubmitOrder
from actors.db_writer import DbWriter
from actors.order_router import OrderRouter, RouterSettings
from actors.position import PROTECTION_COALESCE_S, PositionActor
from catalyst.broker.reports import OrderReport, TradeUpdateReport
from catalyst.domain.positions import PositionSide
from catalyst.sim.clock import SimClock
from tests.actors.test_write_path_router import T0, FixedClock, Recorded, wait_for


def report(row: Any, broker_id: str, status: str, filled: int, kind: str = "market",
           legs: tuple[OrderReport, ...] = ()) -> OrderReport:
    return OrderReport(
        broker_id=broker_id, client_order_id=row.client_order_id, symbol="AAPL", side=row.side, type=kind,
        order_class="oco" if legs else "simple", tif="day", qty=row.quantity, filled_qty=Decimal(filled),
        filled_avg_price=Decimal("50") if filled else None, limit_price=None, stop_price=None, status=status,
        created_at=T0, updated_at=T0, submitted_at=T0, filled_at=None, canceled_at=None, legs=legs)


def piece(router: Any, entry: Any, cum: int, qty: int, execution_id: str) -> None:
    router.tell(m.TradeUpdateReceived(update=TradeUpdateReport(
        event="partial_fill", order=report(entry, "b-e", "partially_filled", cum), at=T0, execution_id=execution_id,
        price=Decimal("50"), qty=Decimal(qty))))


def test_an_oco_answered_new_is_acknowledged_for_its_position_and_holds_no_piece(
        tmp_path: Path, recording_actor: Any) -> None:
    writer_ref = DbWriter.start(f"sqlite+aiosqlite:///{tmp_path / 'r.db'}")
    writer = writer_ref.proxy()
    protect, general, system = recording_actor(), recording_actor(), recording_actor()
    router = OrderRouter.start(writer, Recorded(protect), Recorded(general), FixedClock(),
                               RouterSettings(routine_update_wait_s=0))
    cycle_id = writer.get_or_create_cycle(date(2024, 3, 4), at=T0).get().cycle_id
    plan = m.TradePlan(symbol="AAPL", side=PositionSide.LONG, qty=Decimal(100), stop_loss=Decimal("48"),
                       take_profit=Decimal("55"), cycle_id=cycle_id)
    position = PositionActor.start(plan, router, writer, system, SimClock(T0, 0))

    def ocos() -> list[SubmitOco]:
        return [x for x in protect.proxy().received().get() if isinstance(x, SubmitOco)]

    try:
        entry = wait_for(lambda: [x for x in general.proxy().received().get() if isinstance(x, SubmitOrder)],
                         "the entry's submit")[0].row
        router.tell(m.SubmitResult(order_ids=(entry.order_id,), report=report(entry, "b-e", "new", 0)))
        piece(router, entry, 40, 40, "x1")
        tp, sl = (lambda first: (first.take_profit, first.stop_loss))(wait_for(ocos, "the first piece's OCO")[0])
        router.tell(m.SubmitResult(order_ids=(tp.order_id, sl.order_id), report=report(
            tp, "b-tp", "new", 0, "limit", legs=(report(sl, "b-sl", "held", 0, "stop"),))))
        wait_for(lambda: position.proxy().state().get()["orders"][tp.order_id] == "take_profit:submitted",
                 "the position to see its take-profit submitted")
        started = time.monotonic()
        piece(router, entry, 70, 30, "x2")
        wait_for(lambda: ocos()[1:], "the second piece's OCO", timeout=5)
        assert time.monotonic() - started < PROTECTION_COALESCE_S / 2
        assert [o.stop_loss.quantity for o in ocos()] == [Decimal(40), Decimal(30)]
    finally:
        for ref in (*pykka.ActorRegistry.get_by_class(PositionActor), router, writer_ref):
            if ref.is_alive():
                ref.stop()
