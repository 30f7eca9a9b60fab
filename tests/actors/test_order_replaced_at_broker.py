"""An OCO leg replaced at the broker (Alpaca's PATCH: a trader moving the stop or the target in the dashboard, another
program on the key) is followed (spec §2.2: `replaced` → track the new order). The old leg ends `replaced`, pointing to
a row of its own for the new order, and the position keeps its OCO whole with the new leg in it.

Before: told only that its leg ended, the position took the other leg for a lone one. A stop moved by hand was undone
2 s later (the take-profit cancelled, which took the new stop with it, and a fresh OCO at the old stop). A target
moved by hand was worse: its fill came as an unknown order's, the stop's OCO cancel looked like a cancel by hand, and
the position, sure it still held 100 shares, sent OCO after OCO for shares already sold (each refused), its row open
with the broker flat until the doctor's pass.

The whole actor system through alpaca-py against the emulator on loopback, SQLite on disk; the replace is made
through alpaca-py on the same account, as the dashboard would be."""

from __future__ import annotations

import threading
import time
from decimal import Decimal
from typing import Any, Callable

import pytest
from alpaca.trading.client import TradingClient
from alpaca.trading.requests import ReplaceOrderRequest

from actors import messages as m
from actors import order_router as router_module
from actors import position as position_module
from catalyst.broker.adapter import AlpacaBroker
from catalyst.broker.errors import NotFound, TransientError
from catalyst.domain.orders import OrderStatus
from tests.actors.conftest import logged_lines, wait_for
from tests.actors.test_protection_cancelled_elsewhere import legs, open_protected
from tests.actors.test_trade_scenarios import position_of, protected_qty

FOLLOWING = "was replaced at the broker by"
REAL_GET_ORDER = AlpacaBroker.get_order


def by_hand(trading) -> TradingClient:
    client = TradingClient("k", "s", url_override=trading.exchange.base_url)
    client._api_key = trading.key  # the same account, as the dashboard would be
    return client


def leg(trading, role: str, status: str | None = None) -> Any:
    return next(o for o in legs(trading) if o.role == role and (status is None or o.status == status))


def broker_orders(trading) -> list[dict]:
    return [o for o in trading.broker_view()["orders"] if o["symbol"] == "AAPL"]


def reads_of_new_orders_fail(trading, monkeypatch, error: Callable[[str], Exception],
                             times: int | None = None) -> list[str]:
    """The daemon's reads by id fail with `error(broker_id)` for every order the database does not hold now (a
    replacement, read before the test even knows its id): `times` times, or until REAL_GET_ORDER is put back. The ids
    of the reads that failed, in order."""
    ours = {o.alpaca_order_id for o in trading.all_orders()}
    failed: list[str] = []

    def get_order(self, broker_id, *args, **kwargs):
        if broker_id not in ours and (times is None or len(failed) < times):
            failed.append(broker_id)
            raise error(broker_id)
        return REAL_GET_ORDER(self, broker_id, *args, **kwargs)

    monkeypatch.setattr(AlpacaBroker, "get_order", get_order)
    return failed


def unavailable(_: str) -> Exception:
    return TransientError("503 from the broker", status=503)


def stopped_while_following_a_moved_stop(trading, monkeypatch) -> Any:
    """Protected, the stop moved to 146 by hand, the daemon stopped while the new stop's reads fail (its row not
    written: the old stop's row `replaced`, as a kill between the two commits leaves it). The old stop's row."""
    open_protected(trading)
    stop = leg(trading, "stop_loss")
    reads_of_new_orders_fail(trading, monkeypatch, unavailable)
    with logged_lines("actors.order_router", "WARNING") as warnings:
        by_hand(trading).replace_order_by_id(stop.alpaca_order_id, ReplaceOrderRequest(stop_price=146))
        trading.wait_for(lambda: [w for w in warnings if "could not be read" in w], "a failed read of the new stop")
    assert len(legs(trading)) == 2 and leg(trading, "stop_loss").status == "replaced"
    trading.stop()
    return stop


@pytest.fixture(autouse=True)
def quick_lone_legs(monkeypatch):
    """A lone leg is cancelled 0.3 s after its sibling ended, not 2 s: the tests wait past it."""
    monkeypatch.setattr(position_module, "LONE_LEG_GRACE_S", 0.3)


def test_a_take_profit_moved_by_hand_is_followed_and_its_fill_closes_the_position(trading):
    with logged_lines("actors.position", "WARNING") as warnings:
        open_protected(trading)
        target = leg(trading, "take_profit")
        new = by_hand(trading).replace_order_by_id(target.alpaca_order_id, ReplaceOrderRequest(limit_price=152))
        trading.wait_for(lambda: len(legs(trading)) == 3, "the new take-profit's row")
        time.sleep(0.8)  # past the lone-leg grace: nothing is cancelled, nothing sent
        assert [(o["type"], o["status"]) for o in broker_orders(trading)] == [
            ("market", "filled"), ("limit", "replaced"), ("stop", "held"), ("limit", "new")]

        trading.trade("AAPL", "152.50")  # through the new target (152), short of the old one (155)
        position = trading.wait_for(lambda: (p := position_of(trading)) and p.status == "closed" and p,
                                    "the new take-profit's fill closing the position")

    assert position.realized_pnl == Decimal("205.00") and position.exit_price == Decimal("152")
    rows = trading.all_orders()
    assert [(o.order_id, o.role, o.status) for o in rows] == [
        (1, "entry", "filled"), (2, "take_profit", "replaced"), (3, "stop_loss", "cancelled"),
        (4, "take_profit", "filled")]
    assert rows[1].replaced_by_order_id == 4
    assert rows[3].alpaca_order_id == str(new.id) and rows[3].client_order_id == new.client_order_id
    assert rows[3].limit_price == Decimal("152") and rows[3].position_id == rows[1].position_id
    assert rows[3].parent_order_id == rows[1].parent_order_id
    assert trading.broker_view()["positions"] == []
    assert len(broker_orders(trading)) == 4  # no OCO sent for shares already sold
    assert [w for w in warnings if FOLLOWING in w] == [
        f"position AAPL#p-1 its take-profit o-2 {FOLLOWING} o-4 (limit 155 → 152): following it"]


def test_a_stop_moved_by_hand_is_kept_and_its_fill_closes_the_position(trading):
    open_protected(trading)
    stop = leg(trading, "stop_loss")
    by_hand(trading).replace_order_by_id(stop.alpaca_order_id, ReplaceOrderRequest(stop_price=146))
    trading.wait_for(lambda: len(legs(trading)) == 3, "the new stop's row")
    time.sleep(0.8)  # past the lone-leg grace
    trading.trade("AAPL", "146.50")  # through the old stop (147), not the new one (146)
    time.sleep(0.5)
    assert position_of(trading).status == "open" and protected_qty(trading) == Decimal(100)
    assert [(o["type"], o["status"], o["stop_price"]) for o in broker_orders(trading) if o["type"] == "stop"] == [
        ("stop", "replaced", "147"), ("stop", "held", "146")]

    trading.trade("AAPL", "145.50")
    position = trading.wait_for(lambda: (p := position_of(trading)) and p.status == "closed" and p,
                                "the moved stop's fill closing the position")
    assert position.realized_pnl == Decimal("-445.00")  # the stop's market order at the bar's price below it
    assert [(o.role, o.status) for o in trading.all_orders()] == [
        ("entry", "filled"), ("take_profit", "cancelled"), ("stop_loss", "replaced"), ("stop_loss", "filled")]
    assert trading.broker_view()["positions"] == [] and len(broker_orders(trading)) == 4


def test_a_restart_pairs_the_take_profit_with_the_stop_that_replaced_its_first(trading):
    open_protected(trading)
    stop = leg(trading, "stop_loss")
    by_hand(trading).replace_order_by_id(stop.alpaca_order_id, ReplaceOrderRequest(stop_price=146))
    trading.wait_for(lambda: len(legs(trading)) == 3 and leg(trading, "stop_loss", "accepted"), "the new stop's row")
    trading.stop()
    with logged_lines("actors.position", "INFO") as lines:
        trading.start()
        trading.wait_for(lambda: any("restored open" in line for line in lines), "the position rebuilt")
        time.sleep(0.8)  # past the lone-leg grace
    assert any("restored open qty=100 protected=100" in line for line in lines), lines
    assert not [line for line in lines if "alone" in line or "cancel" in line], lines
    assert [(o["type"], o["status"]) for o in broker_orders(trading)] == [
        ("market", "filled"), ("limit", "new"), ("stop", "replaced"), ("stop", "held")]

    trading.trade("AAPL", "145.50")
    position = trading.wait_for(lambda: (p := position_of(trading)) and p.status == "closed" and p,
                                "the moved stop's fill closing the rebuilt position")
    assert position.realized_pnl == Decimal("-395.00") and len(broker_orders(trading)) == 4  # at the moved stop


def test_a_stop_moved_while_the_position_flattens_is_cancelled_before_the_market_exit(rig):
    tp, sl = rig.open_and_protect()
    rig.position.tell(m.Flatten(reason="end of day"))
    wait_for(lambda: rig.told(m.CancelOrders), "the flatten's cancels")
    rig.position.tell(m.OrderReplaced(replaced_order_id=sl.order_id, new_order_id=77, role="stop_loss",
                                      qty=Decimal(100), detail="stop 48 → 47"))
    rig.update(tp.order_id, "take_profit", OrderStatus.CANCELLED)
    cancels = wait_for(lambda: [c for c in rig.told(m.CancelOrders) if 77 in c.order_ids], "the new stop's cancel")
    assert cancels[0].reason == "flatten: end of day"
    time.sleep(0.2)
    assert not rig.told(m.PlaceExit)  # the new stop still works: no market exit beside it
    rig.update(77, "stop_loss", OrderStatus.CANCELLED)
    placed = wait_for(lambda: rig.told(m.PlaceExit), "the market exit")
    assert placed[0].qty == Decimal(100)


def test_a_replacement_the_broker_says_it_does_not_have_leaves_the_leg_ended_and_the_shares_protected_anew(
        trading, monkeypatch):
    """The broker answers the new order's read with 404 (no such order): the old leg is taken as ended, as before this
    was followed, and said on one ERROR line; the lone take-profit is cancelled (which takes the new stop with it at
    the broker) and the shares get an OCO of the position's own. (A read that fails otherwise is tried again, below.)"""
    open_protected(trading)
    stop = leg(trading, "stop_loss")
    reads_of_new_orders_fail(trading, monkeypatch,
                             lambda broker_id: NotFound("order not found", status=404, operation=f"order id={broker_id}"))
    with logged_lines("actors.order_router", "WARNING") as warnings:
        moved = by_hand(trading).replace_order_by_id(stop.alpaca_order_id, ReplaceOrderRequest(stop_price=146))
        said = trading.wait_for(lambda: [w for w in warnings if "not followed" in w], "the WARNING")
    assert said == [f"order AAPL#o-3 replaced at the broker by id={moved.id}, not followed: not found HTTP 404: "
                    f"order not found ({'order id=' + str(moved.id)}); its position takes it as ended, and the "
                    "doctor's pass looks at the new order"], said
    trading.wait_for(lambda: len(legs(trading)) == 4 and protected_qty(trading) == Decimal(100),
                     "an OCO of the position's own for the 100 shares")
    assert [(o.role, o.status) for o in legs(trading)][:2] == [("take_profit", "cancelled"), ("stop_loss", "replaced")]
    held = [o for o in broker_orders(trading) if o["type"] == "stop" and o["status"] == "held"]
    assert [(o["qty"], o["stop_price"]) for o in held] == [("100", "147")]


def test_a_replacement_left_unfollowed_when_the_daemon_stopped_is_followed_after_the_restart(trading, monkeypatch):
    """The stop's row says `replaced` with no replacement row (the daemon stopped while its reads failed; a kill
    between the two commits does the same): the rebuilt position asks the broker about that leg, whose report names
    the new order, followed then, before the lone-leg grace would cancel the take-profit."""
    monkeypatch.setattr(position_module, "LONE_LEG_GRACE_S", 60.0)  # the first daemon leaves the pair be
    monkeypatch.setattr(router_module, "REPLACEMENT_READ_RETRY_S", (0.1,))
    stopped_while_following_a_moved_stop(trading, monkeypatch)

    monkeypatch.setattr(AlpacaBroker, "get_order", REAL_GET_ORDER)
    monkeypatch.setattr(position_module, "LONE_LEG_GRACE_S", 1.0)
    trading.start()
    trading.wait_for(lambda: len(legs(trading)) == 3, "the replacement's row")
    time.sleep(1.5)  # past the lone-leg grace
    assert [(o["type"], o["status"]) for o in broker_orders(trading)] == [
        ("market", "filled"), ("limit", "new"), ("stop", "replaced"), ("stop", "held")]
    assert trading.all_orders()[2].replaced_by_order_id == 4

    trading.trade("AAPL", "145.50")
    position = trading.wait_for(lambda: (p := position_of(trading)) and p.status == "closed" and p,
                                "the moved stop's fill closing the rebuilt position")
    assert position.realized_pnl == Decimal("-395.00") and len(broker_orders(trading)) == 4


def test_while_a_replacement_cannot_be_read_its_position_sends_nothing_and_follows_it_once_read(trading, monkeypatch):
    """The broker fails the new order's first reads: the router reads it again after a wait, and meanwhile the replaced
    leg still counts as working, so the take-profit is not taken for a lone leg (0.3 s here) and no OCO goes out."""
    monkeypatch.setattr(router_module, "REPLACEMENT_READ_RETRY_S", (0.5, 0.5, 0.5))
    open_protected(trading)
    stop = leg(trading, "stop_loss")
    failed = reads_of_new_orders_fail(trading, monkeypatch, unavailable, times=2)
    with logged_lines("actors.order_router", "WARNING") as warnings:
        by_hand(trading).replace_order_by_id(stop.alpaca_order_id, ReplaceOrderRequest(stop_price=146))
        trading.wait_for(lambda: len(legs(trading)) == 3, "the replacement's row, at its third read", timeout=10)
    assert len(failed) == 2
    assert len([w for w in warnings if "could not be read" in w]) == 1  # the first; the next at INFO
    time.sleep(0.5)
    assert [(o["type"], o["status"]) for o in broker_orders(trading)] == [
        ("market", "filled"), ("limit", "new"), ("stop", "replaced"), ("stop", "held")]
    trading.trade("AAPL", "145.50")
    position = trading.wait_for(lambda: (p := position_of(trading)) and p.status == "closed" and p,
                                "the moved stop's fill closing the position")
    assert position.realized_pnl == Decimal("-395.00") and len(broker_orders(trading)) == 4


def test_a_rebuilt_position_sells_nothing_while_its_moved_stop_is_looked_for_and_closes_on_its_fill(trading,
                                                                                                    monkeypatch):
    """Chaos, seed 297: the daemon was killed while it followed a moved stop (the old stop's row `replaced`, the new
    one's not written), and the new stop filled while it was down. Rebuilt, the position took the old leg for ended,
    its 335 shares for bare: an OCO (refused, none free), then its flatten's market exit sold them a second time and
    left the account short. Now it asks the broker about the leg and sends nothing for those shares meanwhile; the
    router follows the replacement, whose fill closes the position."""
    monkeypatch.setattr(router_module, "REPLACEMENT_READ_RETRY_S", (60.0,))  # still reading it when stopped
    stopped_while_following_a_moved_stop(trading, monkeypatch)
    trading.trade("AAPL", "145.50")  # the moved stop fills while the daemon is down; the broker cancels the target
    assert trading.broker_view()["positions"] == []

    flatten_told = threading.Event()

    def read_once_the_flatten_is_told(self, broker_id, *args, **kwargs):
        # The restart's catch-up can follow the replacement and close the position before the test holds its actor;
        # the reads wait (bounded) until the flatten is told, so it is told while the position still waits.
        flatten_told.wait(10)
        return REAL_GET_ORDER(self, broker_id, *args, **kwargs)

    monkeypatch.setattr(AlpacaBroker, "get_order", read_once_the_flatten_is_told)
    with logged_lines("actors.position", "INFO") as lines:
        trading.start()
        (actor,) = trading.wait_for(lambda: trading.system.supervisor.live_refs().get(), "the position rebuilt")
        actor.tell(m.Flatten(reason="emergency: daily loss limit"))
        flatten_told.set()
        position = trading.wait_for(lambda: (p := position_of(trading)) and p.status == "closed" and p,
                                    "the moved stop's fill closing the rebuilt position")
    assert position.realized_pnl == Decimal("-395.00")
    assert trading.broker_view()["positions"] == []  # flat, not short
    assert [(o.role, o.status) for o in trading.all_orders()] == [
        ("entry", "filled"), ("take_profit", "cancelled"), ("stop_loss", "replaced"), ("stop_loss", "filled")]
    assert any("was replaced at the broker before a restart, by an order not recorded yet" in line for line in lines)


def test_a_stop_moved_while_the_daemon_was_down_is_found_by_the_doctor_and_followed(trading, doctor_broker):
    """Moved while the daemon was down, the old stop's `replaced` reaches no stream, and no listing shows it: a
    nested listing shows an OCO's legs under their parent only, and the old stop is its parent's leg no more. It stayed
    working in the database for every doctor pass (ORDER_NOT_AT_BROKER) while the new one sold the shares (chaos,
    seed 297). The doctor now reads such rows by id; the status it heals names the replacement, which is followed."""
    from tests.actors.test_doctor_heals import doctor_on

    open_protected(trading)
    stop = leg(trading, "stop_loss")
    trading.stop()
    by_hand(trading).replace_order_by_id(stop.alpaca_order_id, ReplaceOrderRequest(stop_price=146))
    trading.start()
    time.sleep(0.5)  # the restart's catch-up: it does not bring the old stop
    assert leg(trading, "stop_loss").status == "accepted" and len(legs(trading)) == 2
    with doctor_on(trading, doctor_broker) as doctor:
        found = doctor.run_pass(reason="test").get()
    assert [f.type for f in found.findings] == ["ORDER_STATUS_MISMATCH"], found.findings
    trading.wait_for(lambda: len(legs(trading)) == 3, "the replacement's row")
    assert [(o.role, o.status) for o in legs(trading)] == [
        ("take_profit", "accepted"), ("stop_loss", "replaced"), ("stop_loss", "accepted")]

    trading.trade("AAPL", "145.50")
    position = trading.wait_for(lambda: (p := position_of(trading)) and p.status == "closed" and p,
                                "the moved stop's fill closing the position")
    assert position.realized_pnl == Decimal("-395.00") and trading.broker_view()["positions"] == []


def test_a_rebuilt_position_asks_again_until_the_broker_answers_about_its_replaced_leg(trading, monkeypatch):
    """A review: the rebuilt position of the test above asked about its replaced leg once; that one read failing, its
    wait ran out and the flatten's market exit sold the shares the moved stop had sold (short 100). Now it asks again
    (every 5 s; 0.3 s here) until the router answers, and nothing is sent for those shares meanwhile."""
    monkeypatch.setattr(router_module, "REPLACEMENT_READ_RETRY_S", (60.0,))
    monkeypatch.setattr(position_module, "REPLACEMENT_ASK_S", 0.3)
    stop = stopped_while_following_a_moved_stop(trading, monkeypatch)
    trading.trade("AAPL", "145.50")  # the moved stop fills while the daemon is down

    failed: list[str] = []

    def first_look_fails(self, broker_id, *args, **kwargs):
        if broker_id == stop.alpaca_order_id and len(failed) < 3:  # the rebuilt position's first looks at the leg
            failed.append(broker_id)
            raise unavailable(broker_id)
        return REAL_GET_ORDER(self, broker_id, *args, **kwargs)

    monkeypatch.setattr(AlpacaBroker, "get_order", first_look_fails)
    trading.start()
    (actor,) = trading.wait_for(lambda: trading.system.supervisor.live_refs().get(), "the position rebuilt")
    actor.tell(m.Flatten(reason="emergency: daily loss limit"))
    position = trading.wait_for(lambda: (p := position_of(trading)) and p.status == "closed" and p,
                                "the moved stop's fill closing the rebuilt position")
    assert len(failed) == 3 and position.realized_pnl == Decimal("-395.00")
    assert trading.broker_view()["positions"] == []  # flat, not short
    assert not [o for o in trading.all_orders() if o.role == "flatten"]


def test_the_doctor_counts_a_stop_once_after_its_take_profit_was_moved(trading, doctor_broker):
    """A review: the replaced take-profit is still listed with its leg, which is its replacement's now; counted under
    both, the stop made every doctor pass report EXCESS_PROTECTION (100 held, 200 under stops)."""
    from tests.actors.test_doctor_heals import doctor_on

    open_protected(trading)
    target = leg(trading, "take_profit")
    by_hand(trading).replace_order_by_id(target.alpaca_order_id, ReplaceOrderRequest(limit_price=152))
    trading.wait_for(lambda: len(legs(trading)) == 3, "the new take-profit's row")
    time.sleep(0.5)
    with doctor_on(trading, doctor_broker) as doctor:
        assert doctor.run_pass(reason="test").get().findings == ()


def test_a_stop_leg_moved_before_its_id_was_recorded_is_read_back_to_the_first_and_followed(trading, monkeypatch):
    """Chaos with stops moved by hand (seed 298): an OCO's reply was lost, its stop leg not paired yet (only its
    take-profit, read by id, names it), and the stop was moved by hand meanwhile. The take-profit's read then named the
    new leg, and the row was paired with it: the leg first placed, now `replaced`, was in no row ("lost"). Now the
    router reads back to the first leg, records it as the row's, and follows its replacement from there."""
    from alpaca.trading.requests import GetOrderByIdRequest

    from tests.actors.test_oco_unpaired_leg import reads_by_id_down, settle_oco_by_lookup_with_its_read_failing

    down = reads_by_id_down(monkeypatch)
    settle_oco_by_lookup_with_its_read_failing(trading, down, faults_after="drop=1.0")  # no stream event pairs it
    down[0] = True  # the leg stays unpaired while it is moved
    client = by_hand(trading)
    target = leg(trading, "take_profit")
    first_id = str(client.get_order_by_id(target.alpaca_order_id, GetOrderByIdRequest(nested=True)).legs[0].id)
    assert leg(trading, "stop_loss").alpaca_order_id is None
    moved = client.replace_order_by_id(first_id, ReplaceOrderRequest(stop_price=146))
    down[0] = False
    trading.wait_for(lambda: len(legs(trading)) == 3, "the moved stop's row", timeout=15)
    first, new = legs(trading)[1:]
    assert (first.alpaca_order_id, first.status, first.replaced_by_order_id) == (first_id, "replaced", new.order_id)
    assert (new.alpaca_order_id, new.role, new.status) == (str(moved.id), "stop_loss", "accepted")

    trading.exchange.set_faults("")
    trading.trade("AAPL", "145.50")
    position = trading.wait_for(lambda: (p := position_of(trading)) and p.status == "closed" and p,
                                "the moved stop's fill closing the position")
    assert position.realized_pnl == Decimal("-395.00") and trading.broker_view()["positions"] == []


@pytest.mark.parametrize("first_read_back_fails", [False, True])
def test_a_stop_leg_moved_before_the_look_up_that_settles_its_oco_is_read_back_and_followed(
        trading, monkeypatch, first_read_back_fails):
    """Chaos with stops moved by hand (seed 298, again): the OCO's reply lost, the stop was moved before the look-up
    by client_order_id settled it; the look-up's nested read named the new leg, and the acknowledgement paired the
    row with it, the leg first placed in no row. The acknowledgement now reads back to the first leg too; a read-back
    that fails is made again with the take-profit's next read (every 5 s; 0.3 s here)."""
    from alpaca.trading.requests import GetOrderByIdRequest

    from tests.actors.test_oco_settled_by_lookup import open_with_an_oco_settled_by_lookup

    real_look_up = AlpacaBroker.get_order_by_client_id
    moved: list[Any] = []

    def look_up(self, client_order_id, *args, **kwargs):
        take_profit = real_look_up(self, client_order_id, *args, **kwargs)
        if take_profit is not None and take_profit.order_class == "oco" and not moved:  # the trader, just before
            trading.exchange.set_faults("")  # the trader's own requests answered
            client = by_hand(trading)
            first = client.get_order_by_id(take_profit.broker_id, GetOrderByIdRequest(nested=True)).legs[0]
            moved.append((str(first.id), client.replace_order_by_id(first.id, ReplaceOrderRequest(stop_price=146))))
            return real_look_up(self, client_order_id, *args, **kwargs)
        return take_profit

    monkeypatch.setattr(AlpacaBroker, "get_order_by_client_id", look_up)
    monkeypatch.setattr(router_module, "PAIR_LEGS_EVERY_S", 0.3)
    read_back: list[str] = []

    def get_order(self, broker_id, *args, **kwargs):
        if moved and broker_id == moved[0][0] and first_read_back_fails and not read_back:
            read_back.append(broker_id)
            raise unavailable(broker_id)
        return REAL_GET_ORDER(self, broker_id, *args, **kwargs)

    monkeypatch.setattr(AlpacaBroker, "get_order", get_order)
    open_with_an_oco_settled_by_lookup(trading)  # replies lost, stream events dropped: only the look-up pairs it
    ((first_id, new),) = moved
    trading.wait_for(lambda: len(legs(trading)) == 3, "the moved stop's row", timeout=15)
    first, replacement = legs(trading)[1:]
    assert (first.alpaca_order_id, first.status, first.replaced_by_order_id) == (
        first_id, "replaced", replacement.order_id)
    assert (replacement.alpaca_order_id, replacement.role) == (str(new.id), "stop_loss")
    assert read_back == ([first_id] if first_read_back_fails else [])

    trading.exchange.set_faults("")
    trading.trade("AAPL", "145.50")
    position = trading.wait_for(lambda: (p := position_of(trading)) and p.status == "closed" and p,
                                "the moved stop's fill closing the position")
    assert position.realized_pnl == Decimal("-395.00") and trading.broker_view()["positions"] == []


def test_a_replacements_event_before_the_replaced_one_is_held_as_ours_not_called_unknown(trading):
    # Seen in chaos (a restart's moment): the new stop's `new` came before the old stop's `replaced`, and the router
    # called it an unknown order (WARNING) until the `replaced` had it followed. The order names the one it replaces.
    open_protected(trading)
    stop = leg(trading, "stop_loss")
    with logged_lines("actors.order_router", "INFO") as lines:
        trading.exchange.set_faults("reorder=1.0")  # the `replaced` held back behind the `new` that follows it
        by_hand(trading).replace_order_by_id(stop.alpaca_order_id, ReplaceOrderRequest(stop_price=146))
        trading.wait_for(lambda: len(legs(trading)) == 3, "the new stop's row")
        trading.exchange.set_faults("")
    new_stop = leg(trading, "stop_loss", "accepted") or leg(trading, "stop_loss", "submitted")
    held = [line for line in lines if f"the order that replaces {stop.symbol}#o-{stop.order_id} at the broker" in line]
    assert held and f"id={new_stop.alpaca_order_id}" in held[0]
    assert not [line for line in lines if "unknown order" in line]
    trading.trade("AAPL", "145.50")
    position = trading.wait_for(lambda: (p := position_of(trading)) and p.status == "closed" and p,
                                "the moved stop's fill closing the position")
    assert position.realized_pnl == Decimal("-395.00")  # the moved stop's fill at 146
    assert trading.broker_view()["positions"] == []


def test_an_ocos_late_answer_naming_its_moved_leg_keeps_each_row_its_own_order(trading, monkeypatch):
    """Chaos, seed 352: an OCO's submit timed out, the stream named both legs meanwhile and the trader moved the stop
    (followed: o-3 replaced by o-4); the submit's look-up by client_order_id then answered with the OCO as it stood,
    its stop leg the replacement. The router gave o-3 the replacement's broker id: the database refused it (UNIQUE,
    `router failed handling SubmitResult`, ERROR), and in memory the replacement's id pointed at o-3. Now a row
    named already keeps its order, and the answer's other order is left to the row that follows it."""
    placed, release = threading.Event(), threading.Event()
    real_submit = AlpacaBroker.submit_order
    answered = threading.Event()

    def submit_answered_late_by_look_up(self, order, *args, **kwargs):
        report = real_submit(self, order, *args, **kwargs)
        if order.order_class == "oco" and not placed.is_set():
            placed.set()
            release.wait(30)
            report = self.get_order_by_client_id(order.client_order_id) or report
            answered.set()
        return report

    monkeypatch.setattr(AlpacaBroker, "submit_order", submit_answered_late_by_look_up)
    trading.exchange.set_price("AAPL", "149.95")
    with logged_lines("actors.order_router", "ERROR") as errors:
        trading.open(trading.plan())
        trading.wait_for(placed.is_set, "the OCO placed at the exchange, its answer held")
        stop = trading.wait_for(lambda: (o := leg(trading, "stop_loss")).alpaca_order_id and o, "the leg named")
        by_hand(trading).replace_order_by_id(stop.alpaca_order_id, ReplaceOrderRequest(stop_price=146))
        trading.wait_for(lambda: len(legs(trading)) == 3, "the moved stop followed")
        release.set()
        trading.wait_for(answered.is_set, "the late answer")
        time.sleep(1.0)  # the router applies it
        assert errors == []
    first, moved = leg(trading, "stop_loss", "replaced"), leg(trading, "stop_loss", "accepted")
    assert first.alpaca_order_id == stop.alpaca_order_id and moved.alpaca_order_id != stop.alpaca_order_id
    trading.trade("AAPL", "145.50")  # through the moved stop: its fill is the replacement's row's
    position = trading.wait_for(lambda: (p := position_of(trading)) and p.status == "closed" and p,
                                "the moved stop's fill closing the position")
    assert position.realized_pnl == Decimal("-395.00") and trading.broker_view()["positions"] == []
    assert [o.status for o in legs(trading)] == ["cancelled", "replaced", "filled"]
