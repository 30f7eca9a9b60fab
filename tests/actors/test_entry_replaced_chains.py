"""A limit entry replaced at the broker, followed: chains of several replacements, quantities changed by the trader,
withdrawals and flattens meeting a replacement, late shares of a replacement, the doctor's pass over a chain, a crash
and a kill while one is followed. Each asserts the database and the emulator's view."""

from __future__ import annotations

import threading
import time
from decimal import Decimal

import pytest
from alpaca.trading.requests import ReplaceOrderRequest

from actors import messages as m
from tests.actors.conftest import logged_lines
from tests.actors.test_entry_replaced_at_broker import entries, resting_entry, stops_at_broker
from tests.actors.test_order_replaced_at_broker import by_hand
from tests.actors.test_trade_scenarios import broker_working_stop_qty, position_of, protected_qty


def replace(trading, order_id: int, **changes) -> None:
    row = next(o for o in trading.all_orders() if o.order_id == order_id)
    by_hand(trading).replace_order_by_id(row.alpaca_order_id, ReplaceOrderRequest(**changes))


def working_entry(trading):
    return trading.wait_for(lambda: next((o for o in trading.all_orders() if o.role == "entry"
                                          and o.status in ("new", "accepted", "submitted") and o.alpaca_order_id), None),
                            "a working entry")


# --- 1. a chain of three entries ------------------------------------------------------------------------------------

def test_an_entry_moved_twice_is_followed_to_its_third_order_and_closes_with_the_right_pnl(trading):
    entry = resting_entry(trading)
    replace(trading, entry.order_id, limit_price=148.50)
    trading.wait_for(lambda: len(entries(trading)) == 2, "the second entry's row")
    second = entries(trading)[1][0]
    trading.wait_for(lambda: entries(trading)[1][1] in ("submitted", "accepted"), "the second entry acknowledged")
    replace(trading, second, limit_price=149.50)
    trading.wait_for(lambda: len(entries(trading)) == 3, "the third entry's row")
    trading.trade("AAPL", "149.40")
    trading.wait_for(lambda: protected_qty(trading) == Decimal("100"), "the third entry's fill protected")
    time.sleep(0.5)
    position = position_of(trading)
    assert (position.status, position.quantity, position.entry_price) == ("open", Decimal("100"), Decimal("149.5"))
    assert entries(trading) == [(1, "replaced", Decimal("0"), 1, None, 2), (2, "replaced", Decimal("0"), 1, 1, 3),
                                (3, "filled", Decimal("100"), 1, 1, None)]
    assert stops_at_broker(trading) == ["100"]
    assert len(trading.system.supervisor.live_refs().get()) == 1

    trading.stop()  # a restart with the chain of three
    trading.start()
    (actor,) = trading.wait_for(lambda: trading.system.supervisor.live_refs().get(), "the position rebuilt")
    time.sleep(0.5)
    assert actor.proxy().entries.get() == [1, 2, 3]
    assert stops_at_broker(trading) == ["100"]
    trading.trade("AAPL", "146.50")
    position = trading.wait_for(lambda: (p := position_of(trading)) and p.status == "closed" and p, "closed")
    assert position.realized_pnl == Decimal("-300.00")
    assert trading.broker_view()["positions"] == []


def test_a_chain_pending_over_a_restart_is_one_position_with_the_plan_of_its_last_entry(trading):
    entry = resting_entry(trading)
    replace(trading, entry.order_id, limit_price=148.50)
    trading.wait_for(lambda: len(entries(trading)) == 2, "the second entry's row")
    trading.wait_for(lambda: entries(trading)[1][1] in ("submitted", "accepted"), "the second entry acknowledged")
    replace(trading, 2, limit_price=149.50, qty=80)
    trading.wait_for(lambda: len(entries(trading)) == 3, "the third entry's row")
    trading.wait_for(lambda: entries(trading)[2][1] in ("submitted", "accepted"), "the third entry acknowledged")
    trading.stop()
    trading.start()
    (actor,) = trading.wait_for(lambda: trading.system.supervisor.live_refs().get(), "the position rebuilt")
    time.sleep(0.5)
    assert actor.proxy().entries.get() == [1, 2, 3]
    assert actor.proxy().plan.get().qty == Decimal("80")
    trading.trade("AAPL", "149.40")
    trading.wait_for(lambda: protected_qty(trading) == Decimal("80"), "the third entry's fill protected")
    time.sleep(0.5)
    assert stops_at_broker(trading) == ["80"]
    assert position_of(trading).quantity == Decimal("80")


# --- 2. the trader changes the qty ----------------------------------------------------------------------------------

def test_an_entry_whose_qty_was_cut_protects_exactly_the_shares_bought(trading):
    entry = resting_entry(trading)
    replace(trading, entry.order_id, limit_price=149.50, qty=60)
    trading.wait_for(lambda: len(entries(trading)) == 2, "the new entry's row")
    (actor,) = trading.system.supervisor.live_refs().get()
    trading.wait_for(lambda: actor.proxy().plan.get().qty == Decimal("60"), "the plan cut to 60")
    trading.trade("AAPL", "149.40")
    trading.wait_for(lambda: protected_qty(trading) == Decimal("60"), "60 protected")
    time.sleep(1.0)
    position = position_of(trading)
    assert (position.status, position.quantity) == ("open", Decimal("60"))
    assert stops_at_broker(trading) == ["60"]
    assert trading.broker_view()["positions"][0]["qty"] == "60"


def test_a_partly_filled_entry_whose_rest_was_cut_protects_every_share(trading):
    entry = resting_entry(trading)
    trading.trade("AAPL", "147.90", volume=160)  # 40 of 100 at 148
    trading.wait_for(lambda: protected_qty(trading) == Decimal("40"), "the first 40 protected")
    trading.exchange.set_price("AAPL", "149.95")
    replace(trading, entry.order_id, limit_price=149.50, qty=30)
    trading.wait_for(lambda: len(entries(trading)) == 2, "the new entry's row")
    trading.trade("AAPL", "149.40")
    trading.wait_for(lambda: protected_qty(trading) == Decimal("70"), "70 protected")
    time.sleep(1.0)
    position = position_of(trading)
    assert (position.status, position.quantity) == ("open", Decimal("70"))
    assert sorted(stops_at_broker(trading)) == ["30", "40"]
    assert trading.broker_view()["positions"][0]["qty"] == "70"
    (actor,) = trading.system.supervisor.live_refs().get()
    assert actor.proxy().plan.get().qty == Decimal("70")


# --- 3. the entry withdrawn while its replacement is followed ------------------------------------------------------

@pytest.mark.parametrize("told", [m.WithdrawEntry(reason="the daemon is stopping"),
                                   m.Flatten(reason="the cycle's end")], ids=["withdrawn", "flattened"])
def test_an_entry_withdrawn_or_flattened_as_it_is_moved_leaves_nothing_working(trading, told):
    entry = resting_entry(trading)
    (actor,) = trading.system.supervisor.live_refs().get()
    replace(trading, entry.order_id, limit_price=149.50)
    actor.tell(told)
    time.sleep(3.0)
    working = [o for o in trading.broker_view()["orders"] if o["status"] in ("new", "accepted", "held")]
    assert working == []
    trading.trade("AAPL", "149.40")
    time.sleep(1.0)
    assert trading.broker_view()["positions"] == []


# --- 4. late fills of a replacement after its position closed ------------------------------------------------------

def test_late_shares_of_a_replacement_entry_are_sold_after_the_close(trading):
    trading.exchange.set_price("AAPL", "50.00", volume=800)  # 200 a minute
    trading.open(trading.plan(qty="500", stop="48.00", target="55.00", order_type="limit",
                              limit_price=Decimal("50.00")))
    trading.wait_for(lambda: (p := position_of(trading)) is not None and p.quantity == Decimal("200"), "first 200")
    trading.wait_for(lambda: protected_qty(trading) == Decimal("200"), "their OCO")
    trading.exchange.set_price("AAPL", "50.50")  # the rest rests
    first = next(o for o in trading.all_orders() if o.role == "entry")
    replace(trading, first.order_id, limit_price=50.20)
    trading.wait_for(lambda: len(entries(trading)) == 2, "the new entry's row")
    new_id = entries(trading)[1][0]
    trading.wait_for(lambda: entries(trading)[1][1] in ("submitted", "accepted"), "the new entry acknowledged")
    trading.exchange.set_faults("drop=1.0")
    trading.trade("AAPL", "50.00", volume=2000)  # the new entry's 300 fill; their event is lost
    trading.exchange.set_faults("")
    with logged_lines("actors.system", "WARNING") as system_lines:
        trading.trade("AAPL", "47.50", volume=2000)
        trading.wait_for(lambda: (p := position_of(trading)) is not None and p.status == "closed", "the stop's close")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and trading.broker_view()["positions"]:
            trading.trade("AAPL", "47.50", volume=2000)
            time.sleep(0.3)
    assert trading.broker_view()["positions"] == [], system_lines
    position = position_of(trading)
    assert (position.status, position.quantity) == ("closed", Decimal(0))
    orders = trading.all_orders()
    new = next(o for o in orders if o.order_id == new_id)
    assert new.filled_qty == Decimal(300)
    sells = [o for o in orders if o.role in ("stop_loss", "flatten", "take_profit")]
    bought = sum((o.filled_qty * o.filled_avg_price for o in orders if o.role == "entry" and o.filled_qty), Decimal(0))
    sold = sum((o.filled_qty * o.filled_avg_price for o in sells if o.filled_qty), Decimal(0))
    assert position.realized_pnl == sold - bought
    assert broker_working_stop_qty(trading) == 0


# --- 5. the doctor's pass over a followed chain -------------------------------------------------------------------

def doctor_findings(trading, doctor_broker):
    from tests.actors.test_doctor_heals import doctor_on

    with doctor_on(trading, doctor_broker) as doctor:
        return [(str(f.type), f.subject, getattr(f, "reason", "")) for f in doctor.run_pass(reason="test").get().findings]


def test_the_doctor_finds_nothing_wrong_with_a_moved_entry_resting(trading, doctor_broker):
    entry = resting_entry(trading)
    replace(trading, entry.order_id, limit_price=148.50)
    trading.wait_for(lambda: len(entries(trading)) == 2, "the new entry's row")
    time.sleep(1.0)
    assert doctor_findings(trading, doctor_broker) == []
    assert [o["status"] for o in trading.broker_view()["orders"] if o["status"] in ("new", "accepted")] == ["new"]


def test_the_doctor_finds_nothing_wrong_with_a_partly_filled_entry_moved_then_filled_and_closed(trading,
                                                                                                doctor_broker):
    entry = resting_entry(trading)
    trading.trade("AAPL", "147.90", volume=160)  # 40 of 100 at 148
    trading.wait_for(lambda: protected_qty(trading) == Decimal("40"), "the first 40 protected")
    trading.exchange.set_price("AAPL", "149.95")
    replace(trading, entry.order_id, limit_price=149.50)
    trading.wait_for(lambda: len(entries(trading)) == 2, "the new entry's row")
    time.sleep(1.0)
    assert doctor_findings(trading, doctor_broker) == []
    trading.trade("AAPL", "149.40")
    trading.wait_for(lambda: protected_qty(trading) == Decimal("100"), "100 protected")
    time.sleep(1.0)
    assert doctor_findings(trading, doctor_broker) == []
    trading.trade("AAPL", "146.50")
    trading.wait_for(lambda: (p := position_of(trading)) and p.status == "closed" and p, "closed")
    time.sleep(1.0)
    assert doctor_findings(trading, doctor_broker) == []


# --- 6. killed between the old entry's `replaced` and the new row --------------------------------------------------

def killed_while_following_a_moved_entry(trading, monkeypatch):
    """A resting limit entry moved to 149.50 by hand, the daemon stopped while the new order's reads fail: the old
    entry's row `replaced`, the new one in no row, as a kill between the two commits leaves them."""
    from catalyst.broker.adapter import AlpacaBroker
    from tests.actors.test_order_replaced_at_broker import REAL_GET_ORDER, reads_of_new_orders_fail, unavailable

    entry = resting_entry(trading)
    reads_of_new_orders_fail(trading, monkeypatch, unavailable)
    with logged_lines("actors.order_router", "WARNING") as warnings:
        replace(trading, entry.order_id, limit_price=149.50)
        trading.wait_for(lambda: [w for w in warnings if "could not be read" in w], "a failed read of the new entry")
    assert [w for w in warnings if "could not be read" in w][0].endswith("; its fills wait until it is read")
    assert entries(trading) == [(1, "replaced", Decimal("0"), None, None, None)]
    trading.stop()
    monkeypatch.setattr(AlpacaBroker, "get_order", REAL_GET_ORDER)


def test_an_entry_moved_as_the_daemon_is_killed_is_followed_after_the_restart(trading, monkeypatch):
    """Rebuilt, the pending position asks the broker about its `replaced` entry and follows the new order: one actor,
    whose withdrawal (the daemon's graceful stop) cancels it. Before, no actor was rebuilt: the new order worked with
    no owner, the stop withdrew nothing, and its fill held shares with no stop."""
    killed_while_following_a_moved_entry(trading, monkeypatch)
    with logged_lines("actors.position", "WARNING") as warnings:
        trading.start()
        (actor,) = trading.wait_for(lambda: trading.system.supervisor.live_refs().get(), "the position rebuilt")
        trading.wait_for(lambda: len(entries(trading)) == 2, "the new entry's row, after the restart")
        trading.wait_for(lambda: actor.proxy().entries.get() == [1, 2], "the rebuilt position following it")
    assert entries(trading) == [(1, "replaced", Decimal("0"), None, None, 2), (2, "submitted", Decimal("0"), None, 1, None)]
    assert [w for w in warnings if "before a restart" in w] == [
        "position AAPL#o-1 its entry o-1 was replaced at the broker before a restart, by an order not recorded yet: "
        "asking the broker, to follow it"]
    actor.tell(m.WithdrawEntry(reason="the daemon is stopping"))
    trading.wait_for(lambda: not [o for o in trading.broker_view()["orders"] if o["status"] in ("new", "accepted")],
                     "the new entry cancelled")
    assert entries(trading)[1][1] == "cancelled"
    trading.trade("AAPL", "149.40")
    time.sleep(0.5)
    assert trading.broker_view()["positions"] == []


def test_an_entry_moved_as_the_daemon_is_killed_and_withdrawn_before_it_is_followed_is_cancelled_once_it_is(
        trading, monkeypatch):
    """The daemon's graceful stop reaches the rebuilt position before the broker's answer: nothing to cancel yet, so
    the new order is cancelled as soon as it is followed, not left working with no one to protect its fill."""
    from catalyst.broker.adapter import AlpacaBroker
    from tests.actors.test_order_replaced_at_broker import REAL_GET_ORDER

    killed_while_following_a_moved_entry(trading, monkeypatch)
    withdrawn = threading.Event()

    def read_once_withdrawn(self, broker_id, *args, **kwargs):
        withdrawn.wait(10)  # the broker's answer held (bounded) until the withdrawal is told
        return REAL_GET_ORDER(self, broker_id, *args, **kwargs)

    monkeypatch.setattr(AlpacaBroker, "get_order", read_once_withdrawn)
    with logged_lines("actors.position", "INFO") as lines:
        trading.start()
        (actor,) = trading.wait_for(lambda: trading.system.supervisor.live_refs().get(), "the position rebuilt")
        actor.tell(m.WithdrawEntry(reason="the daemon is stopping"))
        withdrawn.set()
        trading.wait_for(lambda: len(entries(trading)) == 2 and entries(trading)[1][1] == "cancelled",
                         "the new entry followed and cancelled")
    assert "position AAPL#o-1 the daemon is stopping: its entry o-1 was replaced by an order not followed yet, " \
           "cancelled once it is" in lines
    assert not [o for o in trading.broker_view()["orders"] if o["status"] in ("new", "accepted")]
    trading.wait_for(lambda: not trading.system.supervisor.live_refs().get(), "the cancelled position's actor gone")


def test_an_entry_moved_as_the_daemon_is_killed_and_filled_while_it_was_down_is_protected_at_the_restart(
        trading, monkeypatch):
    """The new order filled while the daemon was down: the rebuilt position follows it and protects its 100 shares."""
    killed_while_following_a_moved_entry(trading, monkeypatch)
    trading.trade("AAPL", "149.40")
    assert [(p["symbol"], p["qty"]) for p in trading.broker_view()["positions"]] == [("AAPL", "100")]
    trading.start()
    trading.wait_for(lambda: protected_qty(trading) == Decimal("100"), "the new entry's fill protected")
    time.sleep(0.5)
    assert entries(trading) == [(1, "replaced", Decimal("0"), 1, None, 2), (2, "filled", Decimal("100"), 1, 1, None)]
    assert stops_at_broker(trading) == ["100"]
    position = position_of(trading)
    assert (position.status, position.quantity, position.entry_price) == ("open", Decimal("100"), Decimal("149.5"))
    assert len(trading.system.supervisor.live_refs().get()) == 1


def test_a_chain_restored_pending_withdraws_its_working_entry(trading):
    entry = resting_entry(trading)
    replace(trading, entry.order_id, limit_price=148.50)
    trading.wait_for(lambda: len(entries(trading)) == 2, "the second entry's row")
    trading.wait_for(lambda: entries(trading)[1][1] in ("submitted", "accepted"), "the second entry acknowledged")
    replace(trading, 2, limit_price=148.80)
    trading.wait_for(lambda: len(entries(trading)) == 3, "the third entry's row")
    time.sleep(0.5)
    trading.stop()
    trading.start()
    (actor,) = trading.wait_for(lambda: trading.system.supervisor.live_refs().get(), "the position rebuilt")
    time.sleep(0.5)
    actor.tell(m.WithdrawEntry(reason="the daemon is stopping"))
    time.sleep(2.0)
    working = [o for o in trading.broker_view()["orders"] if o["status"] in ("new", "accepted", "held")]
    assert working == []


def test_an_entry_raised_in_qty_protects_every_share(trading):
    entry = resting_entry(trading)
    replace(trading, entry.order_id, limit_price=149.50, qty=150)
    trading.wait_for(lambda: len(entries(trading)) == 2, "the new entry's row")
    trading.trade("AAPL", "149.40", volume=1000)
    trading.wait_for(lambda: protected_qty(trading) == Decimal("150"), "150 protected")
    time.sleep(1.0)
    assert position_of(trading).quantity == Decimal("150")
    assert stops_at_broker(trading) == ["150"]


def test_a_position_crashed_while_its_moved_entry_rests_is_rebuilt_following_it(trading, monkeypatch):
    from actors.position import PositionActor

    entry = resting_entry(trading)
    replace(trading, entry.order_id, limit_price=149.50)
    trading.wait_for(lambda: len(entries(trading)) == 2, "the new entry's row")
    time.sleep(0.5)
    (actor,) = trading.system.supervisor.live_refs().get()
    crashed = []

    def boom(self, reason):
        if not crashed:
            crashed.append(reason)
            raise RuntimeError("boom")

    monkeypatch.setattr(PositionActor, "_withdraw_entry", boom)
    actor.tell(m.WithdrawEntry(reason="crash it"))
    rebuilt = trading.wait_for(lambda: [r for r in trading.system.supervisor.live_refs().get()
                                        if r.actor_urn != actor.actor_urn], "the position rebuilt")
    time.sleep(0.5)
    assert rebuilt[0].proxy().entries.get() == [1, 2]
    trading.trade("AAPL", "149.40")
    trading.wait_for(lambda: protected_qty(trading) == Decimal("100"), "the fill protected", timeout=10)
    time.sleep(1.0)
    assert stops_at_broker(trading) == ["100"]
    assert position_of(trading).quantity == Decimal("100")
