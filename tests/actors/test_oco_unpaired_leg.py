"""An OCO settled by its look-up (its submit reply lost) whose stop leg stays unpaired because the one read that would
pair it failed too. Alpaca makes up the leg's client_order_id, so only its take-profit, read by id and nested, names it.

Before: one read, no retry. A verify or cancel asked of the leg was dropped (it has no broker id). The leg's fill was
"not ours" to the router, and to the doctor, which called the closed position an unexplained phantom and halted
entries. Now the router reads the take-profit again until the leg is paired (actors.order_router.PAIR_LEGS_EVERY_S),
a verify asked of the leg reads its take-profit, and the doctor's reconciliation pairs the leg under its matched
take-profit (catalyst.domain.reconcile._pair_stop_legs).

The whole actor system against the emulator (alpaca-py, SQLite on disk). GET /v2/orders/{id} is made to fail by
patching the adapter's read by id for a while: an outage of the one endpoint, as a 503 would be.
(Found by a review helper, each case failing on the code before.)
"""

from __future__ import annotations

import time
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from actors.doctor import DoctorActor
from actors.order_router import PAIR_LEGS_EVERY_S
from catalyst.broker.adapter import AlpacaBroker
from catalyst.broker.errors import ServerError
from catalyst.domain.reconcile import DoctorSettings
from catalyst.sim import engine as sim_engine
from tests.actors.conftest import Trading, logged_lines
from tests.actors.test_oco_settled_by_lookup import open_with_an_oco_settled_by_lookup
from tests.actors.test_trade_scenarios import broker_working_stop_qty, legs, position_of


def reads_by_id_down(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """GET /v2/orders/{id} answers 503 while `down[0]`; everything else works."""
    down = [True]
    real = AlpacaBroker.get_order

    def get_order(self: AlpacaBroker, broker_id: str, **kwargs: Any) -> Any:
        if down[0]:
            raise ServerError("service unavailable (injected)", status=503, operation="order id")
        return real(self, broker_id, **kwargs)

    monkeypatch.setattr(AlpacaBroker, "get_order", get_order)
    return down


def settle_oco_by_lookup_with_its_read_failing(trading: Trading, down: list[bool], faults_after: str) -> None:
    """The OCO's reply lost: settled by its look-up (un-nested), its re-read by id and the router's first verify
    failing; then reads by id work again."""
    with logged_lines("actors.broker_worker", "WARNING") as broker:
        open_with_an_oco_settled_by_lookup(trading)
        trading.exchange.set_faults(faults_after)
        trading.wait_for(lambda: any("broker verify" in line for line in broker), "the first verify to fail")
    down[0] = False


def stop_leg(trading: Trading) -> Any:
    return next(o for o in legs(trading) if o.role == "stop_loss")


def a_doctor(trading: Trading, doctor_broker: Any) -> Any:
    system = trading.system
    return DoctorActor.start(system.writer, doctor_broker, system.router, system.supervisor, trading.exchange.clock,
                             DoctorSettings(stuck_after_s=60))


def test_the_router_reads_the_take_profit_again_until_its_stop_leg_is_paired(trading: Trading,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    down = reads_by_id_down(monkeypatch)
    settle_oco_by_lookup_with_its_read_failing(trading, down, faults_after="drop=1.0")  # no stream event pairs it
    paired = trading.wait_for(lambda: (leg := stop_leg(trading)).alpaca_order_id and leg, "the stop leg paired",
                              timeout=15)
    assert broker_working_stop_qty(trading) == Decimal("100")

    trading.exchange.set_faults("")
    trading.trade("AAPL", "146.50")  # through the stop at 147: its fill event names the leg's broker id
    position = trading.wait_for(lambda: (p := position_of(trading)) and p.status == "closed" and p,
                                "the stop's fill recorded and the position closed", timeout=30)
    assert position.realized_pnl == Decimal("-295.00")
    assert len(trading.writer.fills_for_order(paired.order_id).get()) == 1


def test_the_doctor_pairs_an_unpaired_stop_leg_and_applies_its_fill_without_halting(
        trading: Trading, monkeypatch: pytest.MonkeyPatch, doctor_broker: Any) -> None:
    down = reads_by_id_down(monkeypatch)
    settle_oco_by_lookup_with_its_read_failing(trading, down, faults_after="drop=1.0")
    trading.trade("AAPL", "146.50")  # the stop fills at once; its events lost
    assert not any(p["symbol"] == "AAPL" and Decimal(p["qty"]) for p in trading.broker_view()["positions"])
    trading.exchange.set_faults("")
    ref = a_doctor(trading, doctor_broker)
    try:
        report = ref.proxy().run_pass(reason="test").get()
        position = trading.wait_for(lambda: (p := position_of(trading)) and p.status == "closed" and p,
                                    "the stop's fill applied", timeout=20)
        assert position.realized_pnl == Decimal("-295.00")
        assert "PHANTOM_POSITION" not in [str(f.type) for f in report.findings]
        assert ref.proxy().entries_allowed().get()
        assert stop_leg(trading).alpaca_order_id is not None
    finally:
        ref.stop()


def test_a_leg_whose_stream_events_name_no_legs_is_paired_and_its_fill_recorded(
        trading: Trading, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stream events as the look-up answers (`legs: null`): only a REST read by id, nested, pairs the leg. Before,
    the lone-leg check's verify of the leg was dropped, and the position stayed open over a flat account."""

    def emit(self: Any, account: Any, event: str, order: Any, **extra: Any) -> None:
        self._sink(account.key_id, {"event": event, "order": self.order_json(account, order, nested=False),
                                    "timestamp": sim_engine.iso_z(self.clock.now()), **extra})

    monkeypatch.setattr(sim_engine.Engine, "emit", emit)
    down = reads_by_id_down(monkeypatch)
    settle_oco_by_lookup_with_its_read_failing(trading, down, faults_after="")
    trading.trade("AAPL", "146.50")
    assert not any(p["symbol"] == "AAPL" and Decimal(p["qty"]) for p in trading.broker_view()["positions"])
    position = trading.wait_for(lambda: (p := position_of(trading)) and p.status == "closed" and p,
                                "the stop's fill recorded and the position closed", timeout=20)
    assert position.realized_pnl == Decimal("-295.00") and position.quantity == 0
    assert stop_leg(trading).status == "filled"
    time.sleep(0.2)
    assert not [o for o in trading.broker_view()["orders"] if o["status"] in ("new", "accepted", "held")]


def test_a_restart_on_a_later_day_pairs_a_leg_left_unpaired(trading: Trading,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed before any read paired the leg, started the next morning: the start's catch-up lists that day's orders
    only, and the OCO (good till cancelled) is the day before's. The rebuilt position's registration reads it."""
    down = reads_by_id_down(monkeypatch)
    settle_oco_by_lookup_with_its_read_failing(trading, down, faults_after="")
    down[0] = True  # still failing when the daemon stops
    assert stop_leg(trading).alpaca_order_id is None
    trading.stop()
    down[0] = False
    trading.exchange.advance(timedelta(hours=23, minutes=46))  # Tuesday 09:31
    with logged_lines("actors.order_router", "WARNING") as router:
        trading.start()
        paired = trading.wait_for(lambda: (leg := stop_leg(trading)).alpaca_order_id and leg, "the leg paired",
                                  timeout=PAIR_LEGS_EVERY_S * 2)
    assert any("acknowledged without its stop leg: asking the broker for it" in line for line in router)
    trading.trade("AAPL", "146.50")  # through the stop at 147
    position = trading.wait_for(lambda: (p := position_of(trading)) and p.status == "closed" and p,
                                "the stop's fill recorded and the position closed", timeout=20)
    assert position.realized_pnl == Decimal("-345.00")
    assert len(trading.writer.fills_for_order(paired.order_id).get()) == 1
