"""A graceful stop's withdrawal of the entries still working (catalyst.daemon._withdraw_working_entries) through the
real actors against the embedded exchange: who is told, who is waited for, and within what (cases from a review of
the first version; end to end with real processes in tests/e2e/test_stop_with_a_working_entry.py)."""

from __future__ import annotations

import threading
import time
from decimal import Decimal
from types import SimpleNamespace

import pykka

from actors import messages as m
from actors.order_router import OrderRouter
from catalyst.daemon import Daemon
from tests.actors.conftest import logged_lines, wait_for
from tests.actors.test_trade_scenarios import position_of, protected_qty

WORKING = {"new", "accepted", "pending_new", "held", "partially_filled"}


def stopping_daemon(shutdown_timeout_s: float = 20.0, parts: list | None = None) -> Daemon:
    config = SimpleNamespace(daemon=SimpleNamespace(shutdown_timeout_s=shutdown_timeout_s))
    daemon = Daemon(config, SimpleNamespace(), "sqlite+aiosqlite:///unused.db")  # type: ignore[arg-type]
    daemon.parts = parts or []
    return daemon


def test_a_pending_position_whose_entry_fills_as_its_cancel_is_refused_is_still_waited_for_and_named(trading):
    """Told while pending (`AAPL#o-1`), its entry fills 200 as the cancel is refused (`AAPL#p-1` now, no stop yet): the
    first version matched positions by label, counted it settled, and the stop went on with the entry still filling."""
    trading.exchange.set_price("AAPL", "50.10")
    trading.open(trading.plan(qty="500", stop="48.00", target="55.00", order_type="limit",
                              limit_price=Decimal("50.00")))
    wait_for(lambda: [o for o in trading.all_orders() if o.role == "entry" and o.alpaca_order_id], "the entry sent")

    trading.exchange.set_faults("http_5xx=1.0")  # the cancel (and the OCO) fail at the broker for now
    result: dict = {}

    def withdraw():
        started = time.monotonic()
        stopping_daemon()._withdraw_working_entries(trading.system)
        result["took_s"] = time.monotonic() - started

    with logged_lines("catalyst.daemon", "INFO") as lines:
        thread = threading.Thread(target=withdraw)
        thread.start()
        time.sleep(0.8)  # told, its cancel refused
        trading.trade("AAPL", "49.90", volume=800)  # 200 of the 500 fill: the pending position opens (p-1)
        thread.join(30)
    try:
        entry = next(o for o in trading.broker_view()["orders"] if o["side"] == "buy" and o["type"] == "limit")
        position = position_of(trading)
        assert entry["status"] in WORKING  # the entry still works at the broker
        assert position is not None and position.quantity > 0
        assert protected_qty(trading) < position.quantity  # shares not under a stop
        # The stop waits its bound (5 s) and names the position as not settled.
        assert not any("every working entry ended" in line for line in lines), lines
        assert any(line.startswith("system stopping with AAPL#p-1 not settled after 5 s") for line in lines), lines
        assert result["took_s"] >= 4.5, result
    finally:
        trading.exchange.set_faults("")


class Slow(pykka.ThreadingActor):
    """A position actor that answers state() only after `delay_s` (blocked on a slow write, say)."""

    def __init__(self, label: str, delay_s: float, entry: str) -> None:
        super().__init__()
        self.label, self.delay_s, self.entry, self.told = label, delay_s, entry, []

    def state(self):
        time.sleep(self.delay_s)
        return {"position": self.label, "qty": "100", "protected": "100", "flattening": None,
                "orders": {1: f"entry:{self.entry}"}, "entry": 1, "status": "open"}

    def on_receive(self, message):
        self.told.append(type(message).__name__)


class Supervisor(pykka.ThreadingActor):
    def __init__(self, refs):
        super().__init__()
        self.refs = refs

    def live_refs(self):
        return self.refs


def test_a_position_busy_when_the_stop_begins_is_told_too_and_the_wait_keeps_its_bound():
    # The first version told only the positions that answered the first listing, and waited 5 s per listing.
    busy = Slow.start("MSFT#p-2", 6.0, "partial_fill")  # busy at the first listing: STATE_ANSWER_S is 5 s
    quick = Slow.start("AAPL#p-1", 0.0, "partial_fill")  # told; its entry never ends (cancel lost)
    sup = Supervisor.start([busy, quick])
    try:
        started = time.monotonic()
        stopping_daemon(20.0)._withdraw_working_entries(SimpleNamespace(supervisor=sup.proxy()))
        took = time.monotonic() - started
        told_busy = busy.proxy().told.get(timeout=60)
        assert "WithdrawEntry" in told_busy
        assert took <= 5.5
    finally:
        for ref in (busy, quick, sup):
            ref.stop()


def _stop_duration(exchange, tmp_path, graceful: bool, name: str) -> tuple[float, list[str]]:
    from actors.system import TradingSystem, alpaca_factories
    from catalyst.broker.ratelimit import RateLimiter
    from tests.actors.conftest import Trading

    harness = Trading(exchange, f"sqlite+aiosqlite:///{tmp_path / (name + '.db')}")
    broker, stream = alpaca_factories(harness.key, "secret", exchange.base_url, exchange.stream_url,
                                      timeout_s=10.0, limiter=RateLimiter(0))  # the daemon's broker.timeout_s
    harness.system = TradingSystem(harness.db_url, broker, stream, exchange.clock).start()
    wait_for(lambda: exchange.stream_connected(harness.key), "the stream")
    exchange.set_price("AAPL", "50.10")
    harness.open(harness.plan(qty="500", stop="48.00", target="55.00", order_type="limit",
                              limit_price=Decimal("50.00")))
    wait_for(lambda: [o for o in harness.all_orders() if o.role == "entry" and o.alpaca_order_id], "entry sent")
    harness.trade("AAPL", "49.90", volume=800)
    wait_for(lambda: protected_qty(harness) == 200, "200 protected")
    exchange.set_faults("timeout=1.0,hang_s=30")  # the broker stops answering (an outage) as the TERM comes
    system = harness.system
    daemon = stopping_daemon(20.0, parts=[system])
    with logged_lines("catalyst.daemon", "INFO") as lines:
        started = time.monotonic()
        daemon.stop(graceful=graceful)
        took = time.monotonic() - started
    exchange.set_faults("")
    harness.system = None
    return took, lines


def test_a_graceful_stop_in_a_broker_outage_stays_inside_the_watchdog(exchange, tmp_path):
    # The first version waited 10 s and asked the cancel again every 2 s: each ask hung for broker.timeout_s at a
    # worker, whose stop waits for it, and the stop took 30 s, past daemon.shutdown_timeout_s (20): exit 1.
    without, _ = _stop_duration(exchange, tmp_path, graceful=False, name="a")
    exchange.set_price("AAPL", "50.10")
    took, lines = _stop_duration(exchange, tmp_path, graceful=True, name="b")
    assert took < 20.0, f"the stop took {took:.1f} s: past daemon.shutdown_timeout_s = 20 the watchdog exits 1"


class HoldRouter(m.Message):
    seconds: float


def test_an_entry_named_after_the_stop_asked_is_cancelled_once_named(trading, monkeypatch):
    # From a review: the router busy (a burst of fills at the open) as the cycle's last position starts, its
    # PlaceEntry waits in the router's mailbox and the stop's WithdrawEntry reaches the position first, its entry not
    # yet named. The request was dropped and the stop went on at once; the entry, created a moment later, went to
    # the broker and worked there with no one to protect what it filled.
    monkeypatch.setattr(OrderRouter, "_on_HoldRouter", lambda self, msg: time.sleep(msg.seconds), raising=False)
    trading.exchange.set_price("AAPL", "50.10")
    trading.system.router.tell(HoldRouter(seconds=1.5))
    actor = trading.open(trading.plan(qty="500", stop="48.00", target="55.00", order_type="limit",
                                      limit_price=Decimal("50.00")))
    wait_for(lambda: actor in trading.system.supervisor.live_refs().get(), "the position adopted")

    with logged_lines("catalyst.daemon", "INFO") as lines:
        stopping_daemon()._withdraw_working_entries(trading.system)

    (entry,) = wait_for(lambda: [o for o in trading.all_orders() if o.role == "entry" and o.status == "cancelled"],
                        "the entry ended")
    at_broker = [o["status"] for o in trading.broker_view()["orders"] if o["client_order_id"] == entry.client_order_id]
    assert at_broker in ([], ["canceled"])  # taken back before it was sent, or cancelled at the broker
    assert any("to have no entry working" in line and "AAPL#o-" in line for line in lines), lines
    assert lines[-1] == "system stopping: every working entry ended, every share bought is under a working stop"


def test_an_entry_the_router_has_not_sent_when_the_stop_begins_is_never_sent(trading):
    # From an end-to-end review: a TERM as the cycle opened its positions sent every entry after the signal (their
    # PlaceEntry already in the router's mailbox), three positions opened after the operator asked to stop.
    trading.exchange.set_price("AAPL", "50.10")
    trading.system.entries_closed.set()  # Daemon.stop's first step
    actor = trading.open(trading.plan(qty="500", stop="48.00", target="55.00", order_type="limit",
                                      limit_price=Decimal("50.00")))

    (entry,) = wait_for(lambda: [o for o in trading.all_orders() if o.role == "entry" and o.status == "cancelled"],
                        "the entry withdrawn")
    assert entry.alpaca_order_id is None and entry.submit_attempts == 0
    assert entry.cancel_reason == "the daemon is stopping; withdrawn before it was sent"
    assert trading.broker_view()["orders"] == []
    wait_for(lambda: not actor.is_alive(), "the pending position to end")


def test_a_cancel_the_broker_refuses_during_the_stop_is_asked_again_within_its_wait(trading):
    # From an end-to-end review: asked once, one 503 left the entry working and filling after an exit 0.
    trading.exchange.set_price("AAPL", "50.10")
    trading.open(trading.plan(qty="500", stop="48.00", target="55.00", order_type="limit",
                              limit_price=Decimal("50.00")))
    wait_for(lambda: [o for o in trading.all_orders() if o.role == "entry" and o.alpaca_order_id], "the entry sent")
    trading.trade("AAPL", "49.90", volume=800)  # 200 of 500
    wait_for(lambda: protected_qty(trading) == 200, "200 protected")
    trading.exchange.set_faults("http_5xx=1.0")
    threading.Timer(1.2, lambda: trading.exchange.set_faults("")).start()  # the broker back within the wait

    with logged_lines("catalyst.daemon", "INFO") as lines:
        stopping_daemon()._withdraw_working_entries(trading.system)

    entry = next(o for o in trading.broker_view()["orders"] if o["side"] == "buy" and o["type"] == "limit")
    assert entry["status"] == "canceled"
    assert lines[-1] == "system stopping: every working entry ended, every share bought is under a working stop"


def test_a_cancel_whose_event_is_lost_ends_the_wait_at_the_next_ask_without_a_false_warning(trading):
    """A review saw a lost `canceled` event hold the stop's wait for its whole 5 s and name an entry that had ended.
    The cancel asked again a second later meets the broker's "already canceled" (422), read at once as the order's
    end: the wait ends then, and nothing is named."""
    trading.exchange.set_price("AAPL", "50.10")
    trading.open(trading.plan(qty="500", stop="48.00", target="55.00", order_type="limit",
                              limit_price=Decimal("50.00")))
    wait_for(lambda: [o for o in trading.all_orders() if o.role == "entry" and o.alpaca_order_id], "the entry sent")
    trading.trade("AAPL", "49.90", volume=800)  # 200 of the 500 fill, and go under their OCO
    wait_for(lambda: protected_qty(trading) == 200, "the first 200 under their stop")
    trading.exchange.set_faults("drop=1.0")  # from here every stream event is lost, the cancel's too
    try:
        with logged_lines("catalyst.daemon", "INFO") as lines:
            started = time.monotonic()
            stopping_daemon()._withdraw_working_entries(trading.system)
            took_s = time.monotonic() - started
    finally:
        trading.exchange.set_faults("")
    entry = next(o for o in trading.all_orders() if o.role == "entry")
    assert entry.status == "cancelled" and entry.filled_qty == 200
    assert [o["status"] for o in trading.broker_view()["orders"] if o["type"] == "limit" and o["side"] == "buy"] == \
        ["canceled"]
    assert lines[-1] == "system stopping: every working entry ended, every share bought is under a working stop"
    assert took_s < 4.0, (took_s, lines)  # the second ask's answer, not the 5 s bound
