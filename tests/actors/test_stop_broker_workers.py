"""The system's stop lets its broker workers finish what the router asked of them while the router is there to record
the answers, within broker_drain_s, and leaves behind a call a broker outage hangs (TradingSystem._stop_broker_workers).
Real actors, alpaca-py against the embedded exchange, SQLite on disk."""

from __future__ import annotations

import sqlite3
import threading
import time
from decimal import Decimal
from typing import Any

from actors.system import TradingSystem, alpaca_factories
from catalyst.broker.ratelimit import RateLimiter
from tests.actors.conftest import Trading, logged_lines, wait_for
from tests.actors.test_stop_withdraws_entries import stopping_daemon

SYMBOLS = ("AAPL", "MSFT", "TSLA")


def _rows(harness: Trading) -> list[Any]:
    return [row for symbol in SYMBOLS for row in harness.all_orders(symbol)]


def _start(exchange, tmp_path, broker_factory: Any = None, **options: Any) -> Trading:
    harness = Trading(exchange, f"sqlite+aiosqlite:///{tmp_path / 'catalyst.db'}")
    broker, stream = alpaca_factories(harness.key, "secret", exchange.base_url, exchange.stream_url,
                                      timeout_s=10.0, limiter=RateLimiter(0))  # the daemon's broker.timeout_s
    harness.system = TradingSystem(harness.db_url, broker_factory(broker) if broker_factory else broker, stream,
                                   exchange.clock, **options).start()
    wait_for(lambda: exchange.stream_connected(harness.key), "the stream")
    return harness


def test_a_graceful_stop_in_a_deep_outage_leaves_hung_calls_behind_and_keeps_its_bound(exchange, tmp_path):
    """Three limit entries part filled, one protection worker, and the broker stops answering as the TERM comes: the
    three cancels queue behind one another, each hanging broker.timeout_s (10 s). The worker's stop waited for its
    whole line (15.2 s here; with both pools stuck in the daemon, past its 20 s bound: exit 1)."""
    harness = _start(exchange, tmp_path, protect_workers=1, general_workers=1)
    try:
        for symbol in SYMBOLS:
            exchange.set_price(symbol, "50.10")
            harness.open(harness.plan(symbol=symbol, qty="500", stop="48.00", target="55.00", order_type="limit",
                                      limit_price=Decimal("50.00")))
        wait_for(lambda: len([r for r in _rows(harness) if r.role == "entry" and r.alpaca_order_id]) == 3, "entries")
        for symbol in SYMBOLS:
            harness.trade(symbol, "49.90", volume=800)  # 200 of each 500 fill, and go under their OCO
        wait_for(lambda: len([r for r in _rows(harness) if r.role == "stop_loss" and r.alpaca_order_id]) == 3,
                 "the first pieces protected")
        exchange.set_faults("timeout=1.0,hang_s=30")
        system = harness.system
        with logged_lines("actors.system", "INFO") as lines:
            started = time.monotonic()
            stopping_daemon(20.0, parts=[system]).stop(graceful=True)
            took_s = time.monotonic() - started
        harness.system = None
    finally:
        exchange.set_faults("")
        harness.stop()
    # The withdrawal's 5 s, then the drain's share of what is left (3.7 s) and its 0.5 s grace: two cancels are
    # never sent.
    assert took_s < 11.0, (took_s, lines)
    left = [line for line in lines if "still busy with a broker call after 3.7 s" in line]
    assert len(left) == 1 and left[0].startswith("system stopping: broker worker protect-0 still busy") and \
        "(Cancel for o-" in left[0], lines
    unsent = [line for line in lines if line.startswith("system stopping with ")]
    assert len(unsent) == 1 and "order or cancel call(s) not sent (" in unsent[0] and "Cancel for o-" in unsent[0], lines
    assert lines[-1] == "system stopped"
    assert not [t for t in threading.enumerate() if t.name.startswith("BrokerWorker") and not t.daemon]


class SlowOcoSubmits:
    """The real broker adapter, whose OCO submits take `delay_s` longer once `slow` is set (a slow broker at the
    stop): the stop must let it finish and record its answer."""

    def __init__(self, broker: Any, slow: threading.Event, delay_s: float) -> None:
        self._broker, self._slow, self._delay_s = broker, slow, delay_s

    def submit_with_lookup(self, order: Any, **kw: Any) -> Any:
        if self._slow.is_set() and order.order_class == "oco":
            time.sleep(self._delay_s)
        return self._broker.submit_with_lookup(order, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._broker, name)


def test_an_oco_on_the_wire_as_the_system_stops_is_recorded_with_its_broker_ids(exchange, tmp_path):
    """The router stopped before the workers: an OCO the broker accepted during the stop was recorded only at the
    next start (a `duplicate client_order_id` WARNING there), and the rows said `created` meanwhile."""
    slow = threading.Event()
    harness = _start(exchange, tmp_path, broker_factory=lambda make: (lambda name: SlowOcoSubmits(make(name), slow,
                                                                                                  1.5)))
    try:
        exchange.set_price("AAPL", "50.10")
        harness.open(harness.plan(qty="500", stop="48.00", target="55.00", order_type="limit",
                                  limit_price=Decimal("50.00")))
        wait_for(lambda: [r for r in _rows(harness) if r.role == "entry" and r.alpaca_order_id], "the entry sent")
        slow.set()
        harness.trade("AAPL", "49.90", volume=800)  # 200 fill: their OCO goes out, slowly
        wait_for(lambda: [r for r in _rows(harness) if r.role == "stop_loss"], "the OCO's rows")
        system = harness.system
        system.stop()
        harness.system = None
    finally:
        harness.stop()
    database = sqlite3.connect(tmp_path / "catalyst.db")  # the rows as the stop left them, before any restart
    try:
        legs = database.execute("SELECT role, status, alpaca_order_id IS NOT NULL FROM orders "
                                "WHERE role IN ('stop_loss', 'take_profit') ORDER BY role").fetchall()
    finally:
        database.close()
    assert legs == [("stop_loss", "accepted", 1), ("take_profit", "accepted", 1)]
    assert sorted(o["status"] for o in exchange.account_snapshot(harness.key)["orders"]
                  if o["type"] in ("stop", "limit") and o["side"] == "sell") == ["held", "new"]
