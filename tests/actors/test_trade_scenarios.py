"""Issue 4's scenarios: partial fills, stop-loss, short, rejection, lost replies, bad streams, a crashing actor.

Each asserts the database AND the emulator's own view of the account.
"""

from __future__ import annotations

import time
from datetime import timedelta
from decimal import Decimal

import pykka

from actors import messages as m
from actors.position import PositionActor
from catalyst.domain.orders import OrderStatus
from catalyst.domain.positions import PositionSide
from catalyst.router_settings import RouterSettings
from tests.actors.conftest import Trading


def position_of(trading, symbol="AAPL"):
    entry = next((o for o in trading.all_orders(symbol) if o.role == "entry"), None)
    return trading.writer.get_position(entry.position_id).get() if entry and entry.position_id else None


def legs(trading, symbol="AAPL"):
    return [o for o in trading.all_orders(symbol) if o.role in ("take_profit", "stop_loss")]


def protected_qty(trading, symbol="AAPL"):
    return sum((o.quantity - o.filled_qty for o in legs(trading, symbol)
                if o.role == "stop_loss" and o.status in ("submitted", "accepted") and o.alpaca_order_id), Decimal(0))


def broker_working_stop_qty(trading, symbol="AAPL"):
    return sum((Decimal(o["qty"]) - Decimal(o["filled_qty"]) for o in trading.broker_view()["orders"]
                if o["symbol"] == symbol and o["type"] == "stop" and o["status"] in ("new", "held", "accepted")),
               Decimal(0))


def wait_closed(trading, symbol="AAPL"):
    return trading.wait_for(lambda: (p := position_of(trading, symbol=symbol)) and p.status == "closed"
                            and not any(o.status in ("submitted", "accepted") for o in legs(trading, symbol)) and p,
                            f"{symbol} to close with no working protection")


def test_partial_entry_fills_are_each_protected_so_protection_always_equals_the_position(trading):
    trading.exchange.set_price("AAPL", "50.00", volume=800)  # 25% participation: 200 shares a minute
    trading.open(trading.plan(qty="500", stop="48.00", target="55.00"))
    trading.wait_for(lambda: (p := position_of(trading)) and p.quantity == Decimal("200"), "the first partial fill")
    for _ in range(3):
        trading.trade("AAPL", "50.00", volume=800)
    position = trading.wait_for(lambda: (p := position_of(trading)) and p.quantity == Decimal("500") and p,
                                "the entry to fill completely")
    trading.wait_for(lambda: protected_qty(trading) == Decimal("500"), "protection to cover all 500 shares")
    assert position.entry_price == Decimal("50.00")
    assert broker_working_stop_qty(trading) == Decimal("500")
    assert len(legs(trading)) >= 4  # one OCO per batch of fills, never a cancel-and-replace gap


def test_a_stop_loss_exit_closes_the_position_at_a_loss_and_cancels_the_take_profit(trading):
    trading.exchange.set_price("AAPL", "149.95")
    trading.open(trading.plan())
    trading.wait_for(lambda: protected_qty(trading) == Decimal("100"), "protection")
    trading.trade("AAPL", "146.50")
    position = wait_closed(trading)
    stop = next(o for o in legs(trading) if o.role == "stop_loss")
    take_profit = next(o for o in legs(trading) if o.role == "take_profit")
    assert stop.status == "filled" and take_profit.status == "cancelled" and take_profit.cancel_reason == "OCO"
    assert position.realized_pnl == (stop.filled_avg_price - Decimal("149.95")) * 100 < 0
    assert all(Decimal(p["qty"]) == 0 for p in trading.broker_view()["positions"])


def test_a_short_position_is_protected_above_and_closed_by_a_buy_to_cover(trading):
    trading.exchange.set_price("TSLA", "50.00")
    trading.open(trading.plan(symbol="TSLA", side=PositionSide.SHORT, stop="52.00", target="48.00"))
    trading.wait_for(lambda: protected_qty(trading, "TSLA") == Decimal("100"), "protection of the short")
    entry = next(o for o in trading.all_orders("TSLA") if o.role == "entry")
    assert entry.side == "sell" and all(o.side == "buy" for o in legs(trading, "TSLA"))
    trading.trade("TSLA", "47.90")
    position = wait_closed(trading, "TSLA")
    assert position.side == "short" and position.realized_pnl == Decimal("200.00")


def test_an_entry_rejected_for_buying_power_fails_the_position_with_the_reason(trading):
    trading.exchange.set_price("AAPL", "149.95")
    ref = trading.open(trading.plan(qty="100000"))
    entry = trading.wait_for(lambda: (o := trading.all_orders()) and o[0].status == "rejected" and o[0],
                             "the entry to be rejected")
    assert "buying power" in (entry.rejection_reason or "")
    assert entry.position_id is None and legs(trading) == []
    trading.wait_for(lambda: not ref.is_alive(), "the failed position's actor to stop")
    assert trading.broker_view()["orders"] == [] or all(o["status"] == "rejected" for o in trading.broker_view()["orders"])


def test_a_lost_reply_on_submit_yields_exactly_one_broker_order(trading):
    trading.exchange.set_price("AAPL", "149.95")
    trading.exchange.set_faults("reply_lost=1.0")
    trading.open(trading.plan())
    trading.wait_for(lambda: (o := trading.all_orders()) and o[0].alpaca_order_id, "the lookup to settle the entry",
                     timeout=30)
    trading.exchange.set_faults("")
    trading.wait_for(lambda: protected_qty(trading) == Decimal("100"), "protection", timeout=30)
    entry = trading.all_orders()[0]
    broker_entries = [o for o in trading.broker_view()["orders"] if o["client_order_id"] == entry.client_order_id]
    assert len(broker_entries) == 1 and entry.status == "filled"
    assert position_of(trading).quantity == Decimal("100")


def test_duplicated_fill_events_are_applied_once(trading):
    trading.exchange.set_price("AAPL", "149.95")
    trading.exchange.set_faults("duplicate=1.0")
    trading.open(trading.plan())
    trading.wait_for(lambda: protected_qty(trading) == Decimal("100"), "protection")
    trading.trade("AAPL", "155.05")
    position = wait_closed(trading)
    assert position.realized_pnl == Decimal("505.00")
    entry = trading.all_orders()[0]
    assert len(trading.writer.fills_for_order(entry.order_id).get()) == 1


def test_a_short_entrys_fill_lost_on_the_stream_is_recovered_over_rest_and_protected(trading):
    # Alpaca's FILL activities name a short sale's side `sell_short`, where its order says `sell`: the recovered
    # execution is recorded on the order's side and the short is protected above, as with its stream event.
    trading.exchange.set_price("TSLA", "50.00")
    trading.exchange.set_faults("drop=1.0")
    trading.open(trading.plan(symbol="TSLA", side=PositionSide.SHORT, stop="52.00", target="48.00"))
    trading.wait_for(lambda: protected_qty(trading, "TSLA") == Decimal("100"), "protection of the short without the stream")
    entry = next(o for o in trading.all_orders("TSLA") if o.role == "entry")
    fills = trading.writer.fills_for_order(entry.order_id).get()
    assert [(f.source, f.side, f.qty) for f in fills] == [("activity", "sell", Decimal("100"))]
    assert [f["side"] for f in trading.broker_view()["fills"]] == ["sell_short"]
    assert broker_working_stop_qty(trading, "TSLA") == Decimal("100")
    trading.exchange.set_faults("")


def test_fill_events_lost_on_the_stream_are_recovered_over_rest(trading, router_lines):
    # Alpaca answers a market order `accepted` and tells its fill only by the stream: with every event lost and no
    # disconnect (so no catch-up), only the router's own look at the unfilled market order finds the fill.
    trading.exchange.set_price("AAPL", "149.95")
    trading.exchange.set_faults("drop=1.0")
    trading.open(trading.plan())
    position = trading.wait_for(lambda: (p := position_of(trading)) and p.status == "open" and p,
                                "the entry fill to arrive by REST catch-up")
    trading.wait_for(lambda: protected_qty(trading) == Decimal("100"), "protection without the stream")
    assert position.quantity == Decimal("100")
    fills = trading.writer.fills_for_order(trading.all_orders()[0].order_id).get()
    assert [f.source for f in fills] == ["activity"]
    entry = trading.all_orders()[0]
    assert any(line.startswith(f"order AAPL#o-{entry.order_id} market order with no fill 2s after its "
                               "acknowledgement (accepted, 0 of 100): asking the broker") for line in router_lines)


def test_a_fill_the_market_order_look_finds_is_fetched_at_once_not_after_the_usual_grace(exchange, tmp_path):
    # The usual wait for a reported fill's stream event is longer than this test waits for protection: only a fill
    # found by the look at a silent market order, its event overdue for seconds already, skips it.
    slow_grace = RouterSettings(missing_execution_grace_s=60.0)
    trading = Trading(exchange, f"sqlite+aiosqlite:///{tmp_path / 'catalyst.db'}", router_settings=slow_grace).start()
    try:
        trading.exchange.set_price("AAPL", "149.95")
        trading.exchange.set_faults("drop=1.0")
        trading.open(trading.plan())
        trading.wait_for(lambda: protected_qty(trading) == Decimal("100"), "protection without the stream", timeout=20)
        entry = trading.all_orders()[0]
        assert [f.source for f in trading.writer.fills_for_order(entry.order_id).get()] == ["activity"]
    finally:
        trading.stop()


def test_a_market_entry_whose_fill_event_arrives_costs_no_extra_broker_call(trading, router_lines):
    trading.exchange.set_price("AAPL", "149.95")
    trading.open(trading.plan())
    trading.wait_for(lambda: protected_qty(trading) == Decimal("100"), "protection")
    time.sleep(RouterSettings().market_fill_check_s + 0.5)  # past the moment a look would be due

    assert not [line for line in router_lines if "asking the broker" in line]


def test_a_stream_disconnect_mid_trade_is_caught_up(trading):
    trading.exchange.set_price("AAPL", "149.95")
    trading.open(trading.plan())
    trading.wait_for(lambda: protected_qty(trading) == Decimal("100"), "protection")
    trading.exchange.set_faults("drop=1.0")
    trading.trade("AAPL", "155.05")  # the exit happens while its events are lost
    trading.exchange.set_faults("")
    trading.exchange.drop_stream_connections()  # alpaca-py reconnects; the router catches up over REST
    position = wait_closed(trading)
    take_profit = next(o for o in legs(trading) if o.role == "take_profit")
    broker_tp = next(o for o in trading.broker_view()["orders"] if o["id"] == take_profit.alpaca_order_id)
    assert take_profit.filled_avg_price == Decimal(broker_tp["filled_avg_price"])
    assert position.realized_pnl == (take_profit.filled_avg_price - Decimal("149.95")) * 100


def test_a_crashed_position_actor_is_rebuilt_from_the_database_and_still_closes(trading):
    trading.exchange.set_price("AAPL", "149.95")
    ref = trading.open(trading.plan())
    trading.wait_for(lambda: protected_qty(trading) == Decimal("100"), "protection")
    entry = trading.all_orders()[0]
    bogus = m.Execution(key="bogus:1", qty=Decimal("999"), price=Decimal("1"), at=entry.updated_at)
    ref.tell(m.OrderUpdated(order_id=entry.order_id + 1, role="take_profit", status=OrderStatus.FILLED,
                            filled_qty=Decimal("999"), execution=bogus))  # an exit larger than the position
    trading.wait_for(lambda: not ref.is_alive(), "the poisoned actor to die")
    rebuilt = trading.wait_for(
        lambda: [r for r in pykka.ActorRegistry.get_by_class(PositionActor) if r.is_alive()], "a rebuilt actor")
    assert rebuilt[0] is not ref
    assert position_of(trading).quantity == Decimal("100") and protected_qty(trading) == Decimal("100")
    trading.trade("AAPL", "155.05")
    assert wait_closed(trading).realized_pnl == Decimal("505.00")


def test_restoring_a_position_whose_actor_is_live_gives_that_actor_not_a_second_one(trading):
    """Two actors for one position would each place stops and exits for it: whoever asks the supervisor to rebuild
    a position (the doctor, healing) gets the live actor back while there is one."""
    trading.exchange.set_price("AAPL", "149.95")
    ref = trading.open(trading.plan())
    trading.wait_for(lambda: protected_qty(trading) == Decimal("100"), "protection")
    entry = trading.all_orders()[0]
    assert trading.system.supervisor.restore(entry.order_id).get() == ref
    assert [r for r in pykka.ActorRegistry.get_by_class(PositionActor) if r.is_alive()] == [ref]
    trading.trade("AAPL", "155.05")
    assert wait_closed(trading).realized_pnl == Decimal("505.00")
    assert len([o for o in trading.broker_view()["orders"] if o["symbol"] == "AAPL"]) == 3  # entry + one OCO


def test_a_take_profit_filled_on_submit_closes_the_position_without_a_second_oco(trading):
    # The entry fills above its target, so the OCO's take-profit is marketable and fills the moment it is sent:
    # the submit reply (TP filled, stop leg cancelled) reaches the position before the fill's execution does.
    # Those shares are leaving; protecting them again sent a second OCO for shares already sold (make sim, seed 2).
    trading.exchange.set_price("AAPL", "156.00")
    trading.open(trading.plan(stop="147.00", target="155.00"))

    closed = wait_closed(trading)

    assert closed.quantity == Decimal(0) or closed.status == "closed"
    rows = trading.all_orders()
    assert sorted(o.role for o in rows) == ["entry", "stop_loss", "take_profit"], [(o.role, o.status) for o in rows]
    assert not [o for o in rows if o.status == "rejected"]
    at_broker = [o for o in trading.broker_view()["orders"] if o["symbol"] == "AAPL"]
    assert len(at_broker) == 3  # the entry and one OCO (two legs): nothing sent twice
    assert not [o for o in trading.broker_view()["positions"] if o["symbol"] == "AAPL" and Decimal(o["qty"]) != 0]


def test_a_rebuild_that_fails_leaves_the_supervisor_alive():
    """Found filling the disk under a running daemon: a position crashed on the refused write, its rebuild's read
    failed too, and the supervisor died of it; the system's stop then asked the dead supervisor for the live
    positions, stopped none, and their threads kept the process from exiting after `catalyst: error: …`."""
    from actors.system import Supervisor

    class DiskGone:
        """A writer failing every call, as the DbWriter does on a disk that refuses it."""

        def __getattr__(self, name):
            def refuse(*args, **kwargs):
                raise OSError(28, "No space left on device")
            return refuse

    started: list[object] = []
    supervisor = Supervisor.start(DiskGone(), lambda *args, **kwargs: started.append(args))
    try:
        supervisor.tell(m.PositionCrashed(entry_order_id=1, key="AAPL#p-1", error="database or disk is full"))
        assert supervisor.proxy().live_count().get() == 0  # answered after the failed rebuild: still alive
        assert supervisor.is_alive() and started == []
    finally:
        supervisor.stop()


def test_the_systems_stop_ends_every_position_actor_even_with_its_supervisor_gone(exchange, tmp_path):
    from tests.actors.conftest import Trading

    harness = Trading(exchange, f"sqlite+aiosqlite:///{tmp_path / 'catalyst.db'}").start()
    try:
        harness.exchange.set_price("AAPL", "149.95")
        ref = harness.open(harness.plan())
        harness.wait_for(lambda: protected_qty(harness) == Decimal("100"), "protection")
        harness.system.supervisor_ref.stop()
    finally:
        harness.stop()
    assert not ref.is_alive(), "a position actor outlived the system's stop: its thread would hold the process"


def test_protection_outlives_a_daemon_down_across_the_close(trading):
    # A day OCO expired at the close: a daemon down across it (a crash, a machine off) left the shares with no stop
    # at the next open until it started again and its doctor noticed. The legs are good till cancelled now.
    trading.exchange.set_price("AAPL", "149.95")
    trading.open(trading.plan())
    trading.wait_for(lambda: protected_qty(trading) == Decimal("100"), "protection")
    assert {o.time_in_force for o in legs(trading)} == {"gtc"}
    trading.stop()
    trading.exchange.advance(timedelta(hours=23, minutes=46))  # Tuesday 09:31, the market open again
    assert broker_working_stop_qty(trading) == Decimal("100")  # still there, through the close and the night
    oco_orders = [o for o in trading.broker_view()["orders"] if o["type"] in ("limit", "stop")]
    trading.start()
    trading.trade("AAPL", "146.50")  # through the stop at 147
    position = wait_closed(trading)
    assert position.realized_pnl == Decimal("-345.00")  # the morning's print at 146.50 was the stop's first chance
    assert len([o for o in trading.broker_view()["orders"] if o["type"] in ("limit", "stop")]) == len(oco_orders) == 2
