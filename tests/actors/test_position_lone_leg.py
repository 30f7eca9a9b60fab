"""An OCO leg that ends while its sibling still works: the sibling is usually filling, so its shares wait for it.

Found in a faults-only trading day (exchange seed 19): the broker cancelled the stop leg because its take-profit had
filled, the cancel's event reached the position before the fill's, and the position placed a second OCO for the
1,111 shares already sold. The emulator refused it (the shares were gone); had it been refused while the take-profit
still held them, the position would have flattened them: a market sell of shares already sold.

Driven message by message as the router would, with the real DbWriter on a SQLite file (tests/actors/
test_position_flatten.py's rig): what is under test is what the position asks of the router, and when.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from actors import messages as m
from actors import position as position_module
from catalyst.domain.orders import OrderStatus
from tests.actors.conftest import logged_lines
from tests.actors.test_position_flatten import T0, Rig, wait_for


@pytest.fixture
def rig(tmp_path: Path, recording_actor: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Rig]:
    monkeypatch.setattr(position_module, "LONE_LEG_GRACE_S", 0.3)
    made = Rig(tmp_path, recording_actor)
    yield made
    made.stop()


def test_a_stop_leg_cancelled_before_its_take_profits_fill_arrives_draws_no_second_oco(rig: Rig) -> None:
    tp, sl = rig.open_and_protect()

    rig.update(sl.order_id, "stop_loss", OrderStatus.CANCELLED)  # the broker's OCO cancel, ahead of the fill
    rig.settled()
    assert len(rig.told(m.SubmitProtection)) == 1  # only the first OCO
    rig.update(tp.order_id, "take_profit", OrderStatus.FILLED, "100",
               m.Execution(key="b-tp:100", qty=Decimal(100), price=Decimal("55"), at=T0))

    wait_for(lambda: not rig.position.is_alive(), "the closed position's actor to stop")
    assert len(rig.told(m.SubmitProtection)) == 1
    assert not rig.told(m.PlaceExit) and not rig.told(m.CancelOrders)
    position_id = rig.writer.get_order(rig.entry.order_id).get().position_id
    assert sorted(o.role for o in rig.writer.orders_for_position(position_id).get()) == \
        ["entry", "stop_loss", "take_profit"]  # no rows of a second OCO either
    position = rig.writer.get_position(position_id).get()
    assert position.status == "closed" and position.realized_pnl == Decimal("500.00")


def test_a_leg_still_working_alone_after_the_grace_is_cancelled_and_the_shares_protected_anew(rig: Rig) -> None:
    tp, sl = rig.open_and_protect()

    rig.update(sl.order_id, "stop_loss", OrderStatus.CANCELLED)  # cancelled at the broker for some other reason
    cancels = wait_for(lambda: rig.told(m.CancelOrders), "the lone take-profit to be cancelled")
    assert cancels[0].order_ids == (tp.order_id,)
    assert rig.told(m.VerifyOrders)[0].order_ids == (tp.order_id,)
    assert len(rig.told(m.SubmitProtection)) == 1  # nothing new while the lone leg may still sell the shares

    rig.update(tp.order_id, "take_profit", OrderStatus.CANCELLED)
    renewed = wait_for(lambda: rig.told(m.SubmitProtection)[1:], "a new OCO")
    assert renewed[0].take_profit.quantity == renewed[0].stop_loss.quantity == Decimal(100)
    assert rig.settled()["protected"] == "100"  # counted at once, so no third OCO is asked for the same shares


def test_a_stop_whose_take_profit_was_replaced_is_asked_about_never_cancelled(
        rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    """Alpaca reports a triggered stop by its take-profit turning `replaced` (alpaca-py #198). A review: after the grace
    the stop, the one exit in flight, was cancelled; a halt holding its fill would have left the shares bare. Now the
    broker is asked about it, and its fill closes the position; the stop is never cancelled, no second OCO sent."""
    monkeypatch.setattr(position_module, "TRIGGERED_STOP_LOOKS_S", (0.2, 0.2, 0.2))
    tp, sl = rig.open_and_protect()

    rig.update(tp.order_id, "take_profit", OrderStatus.REPLACED)
    wait_for(lambda: len([v for v in rig.told(m.VerifyOrders) if v.order_ids == (sl.order_id,)]) >= 3,
             "the broker asked about the stop, again and again")
    assert not rig.told(m.CancelOrders) and not rig.told(m.PlaceExit)
    assert len(rig.told(m.SubmitProtection)) == 1 and rig.settled()["protected"] == "0"

    rig.update(sl.order_id, "stop_loss", OrderStatus.FILLED, "100",
               m.Execution(key="b-sl:100", qty=Decimal(100), price=Decimal("48"), at=T0))
    wait_for(lambda: not rig.position.is_alive(), "the closed position's actor to stop")
    assert not rig.told(m.CancelOrders) and not rig.told(m.PlaceExit) and len(rig.told(m.SubmitProtection)) == 1


def test_a_stop_still_working_long_after_its_take_profit_was_replaced_is_kept_alone(
        rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    """A replace for another reason (a corporate action): the looks end, the stop stays, its shares under it; no OCO
    beside it (it would sell them twice), and nothing asked again."""
    monkeypatch.setattr(position_module, "TRIGGERED_STOP_LOOKS_S", (0.1, 0.1))
    tp, sl = rig.open_and_protect()

    with logged_lines("actors.position", "WARNING") as lines:
        rig.update(tp.order_id, "take_profit", OrderStatus.REPLACED)
        wait_for(lambda: any("kept alone" in line for line in lines), "the stop kept alone")
    asked = len(rig.told(m.VerifyOrders))
    rig.update(sl.order_id, "stop_loss", OrderStatus.ACCEPTED)  # the broker's answer: still working
    time.sleep(0.6)  # past every wait above: nothing more comes of it
    assert len(rig.told(m.VerifyOrders)) == asked == 2
    assert not rig.told(m.CancelOrders) and not rig.told(m.PlaceExit) and len(rig.told(m.SubmitProtection)) == 1
    assert rig.settled()["status"] == "open"
    label = f"position AAPL#p-{rig.writer.get_order(rig.entry.order_id).get().position_id}"
    assert [line for line in lines if "replaced" in line] == [
        f"{label} stop o-{sl.order_id} still works 0.3 s after its take-profit was replaced at the broker, as Alpaca "
        "reports a triggered stop: kept, not cancelled (it is the exit in flight); asking the broker about it",
        f"{label} stop o-{sl.order_id} still works 0.5 s after its take-profit was replaced at the broker: kept alone, "
        "its shares stay under it with no take-profit"]


def test_each_triggered_stop_gets_its_own_looks(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    """A review: the looks were counted per actor, so a second OCO's stop, its take-profit replaced after the first's
    stop had been kept alone, was kept at once with no look at the broker (its fill event lost, never asked about)."""
    monkeypatch.setattr(position_module, "TRIGGERED_STOP_LOOKS_S", (0.1,))
    tp, sl = rig.open_and_protect()
    with logged_lines("actors.position", "WARNING") as lines:
        rig.update(tp.order_id, "take_profit", OrderStatus.REPLACED)
        wait_for(lambda: any("kept alone" in line for line in lines), "the first stop kept alone")
    rig.update(sl.order_id, "stop_loss", OrderStatus.CANCELLED)  # taken off by hand: protected anew
    renewed = wait_for(lambda: rig.told(m.SubmitProtection)[1:], "a new OCO")[0]
    tp2, sl2 = renewed.take_profit, renewed.stop_loss
    rig.update(tp2.order_id, "take_profit", OrderStatus.ACCEPTED)
    rig.update(sl2.order_id, "stop_loss", OrderStatus.ACCEPTED)

    rig.update(tp2.order_id, "take_profit", OrderStatus.REPLACED)
    wait_for(lambda: [v for v in rig.told(m.VerifyOrders) if v.order_ids == (sl2.order_id,)], "the second stop asked about")
    assert not [c for c in rig.told(m.CancelOrders) if sl2.order_id in c.order_ids]
