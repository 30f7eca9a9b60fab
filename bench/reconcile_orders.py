"""Issue 5: one doctor pass over thousands of open orders (broker calls, wall time) vs the spec's §7.3 per-order loop."""

from __future__ import annotations

import math
import time
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from alpaca.trading.enums import OrderSide, TimeInForce
from alpaca.trading.requests import LimitOrderRequest

from actors.db_writer import DbWriter
from actors.doctor import DoctorActor
from bench.common import goal, machine_facts, quiet_logs, ratio, scratch_dir
from bench.rig import new_key, raw_client, scripted_exchange, symbols
from catalyst.broker.adapter import AlpacaBroker
from catalyst.broker.ratelimit import Priority, RateLimiter
from catalyst.domain.orders import status_from_broker
from catalyst.domain.reconcile import DoctorSettings
from catalyst.store.records import NewOrder

NAME = "reconcile_orders"
ISSUE = "5"
SYMBOL_COUNT = 50
FAR_LIMIT = Decimal("1.00")  # every symbol prints at 10.00: a buy limit at 1.00 rests all day
ROWS_PER_TRANSACTION = 500  # setup only: the rows exist before the pass, how fast they were made is not measured


class CountingLimiter(RateLimiter):
    """Every trading HTTP request the adapter makes takes one token, so tokens count the calls reaching the broker
    (each page of a list, each retry). The limit itself stays off, as the emulator's is."""

    def __init__(self) -> None:
        super().__init__(0)
        self.calls = 0

    def acquire(self, priority: Priority, timeout: float | None = None) -> None:
        self.calls += 1
        super().acquire(priority, timeout)


class CountingBroker:
    """A proxy around the AlpacaBroker counting the doctor's method calls by name."""

    def __init__(self, broker: AlpacaBroker) -> None:
        self._broker = broker
        self.calls: dict[str, int] = {}

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._broker, name)
        if not callable(target):
            return target

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] = self.calls.get(name, 0) + 1
            return target(*args, **kwargs)

        return counted


def run(quick: bool) -> dict[str, Any]:
    orders = 1000 if quick else 5000
    allowed = math.ceil(orders / 500) + 3
    quiet_logs()
    names = symbols(SYMBOL_COUNT)
    key = new_key("recon")
    with scripted_exchange(names) as exchange, scratch_dir(NAME) as scratch:
        ref = DbWriter.start(f"sqlite+aiosqlite:///{scratch / 'catalyst.db'}", clock=exchange.clock.now)
        writer = ref.proxy()
        try:
            setup_s = place_orders(exchange, writer, key, names, orders)
            doctor = doctor_pass(exchange, writer, key)
            loop = per_order_loop(exchange, writer, key)
        finally:
            ref.stop()
    calls = doctor["http_calls"]
    return {
        "name": NAME, "issue": ISSUE, "quick": quick, "machine": machine_facts(),
        "figures": {
            "open_orders": orders, "setup_s": round(setup_s, 1), "doctor_pass": doctor, "spec_7_3_loop": loop,
            "ratio_calls_loop_vs_doctor": ratio(loop["http_calls"], calls),
            "ratio_wall_doctor_vs_loop": ratio(doctor["wall_s"], loop["wall_s"]),
        },
        "goals": [
            goal(f"doctor pass broker HTTP calls over {orders} open orders", f"≤ ⌈N/500⌉+3 = {allowed}", calls,
                 calls <= allowed),
            goal("doctor pass wall s / §7.3 per-order loop wall s", "baseline (no goal set)",
                 ratio(doctor["wall_s"], loop["wall_s"]), None),
        ],
        "notes": [
            "Setup: far buy limits (1.00 under a 10.00 print) placed with raw alpaca-py on one key, rate limit off, "
            "the exchange clock advanced 1 ms per order so submission times are distinct (pages walk by time); "
            "order rows made through the DbWriter (create_orders, then mark_submitted with each broker id).",
            "Doctor: DoctorActor.run_pass(dry_run=True) with default DoctorSettings over an AlpacaBroker whose "
            "rate limiter counts a token per HTTP request (pages and retries included); no router or supervisor "
            "is needed for a dry run. Expected findings: none (database and broker agree).",
            "§7.3 loop: the spec's reconcile_with_alpaca step 1 and 2 as written: the working orders from the "
            "database, one alpaca-py get_order_by_id per order comparing statuses, then get_all_positions.",
            "Both run in the same process as the emulator (one GIL, 2 cores), one after the other on the same data.",
        ],
    }


def place_orders(exchange: Any, writer: Any, key: str, names: list[str], count: int) -> float:
    started = time.perf_counter()
    cycle_id = writer.get_or_create_cycle(date(2024, 3, 4)).get().cycle_id
    rows: list[Any] = []
    for first in range(0, count, ROWS_PER_TRANSACTION):
        batch = [NewOrder(cycle_id=cycle_id, symbol=names[i % len(names)], role="entry", side="buy",
                          order_type="limit", quantity=Decimal(1), limit_price=FAR_LIMIT)
                 for i in range(first, min(count, first + ROWS_PER_TRANSACTION))]
        rows += writer.create_orders(batch).get()
    client = raw_client(exchange, key)
    pending = []
    for row in rows:
        placed = client.submit_order(LimitOrderRequest(
            symbol=row.symbol, qty=1, side=OrderSide.BUY, limit_price=float(FAR_LIMIT),
            time_in_force=TimeInForce.DAY, client_order_id=row.client_order_id))
        pending.append(writer.mark_submitted(row.order_id, str(placed.id), placed.status.value))
        exchange.advance(timedelta(milliseconds=1))
    for future in pending:
        future.get()
    working = len(writer.working_orders().get())
    if working != count:
        raise RuntimeError(f"setup made {working} working order rows, expected {count}")
    return time.perf_counter() - started


def doctor_pass(exchange: Any, writer: Any, key: str) -> dict[str, Any]:
    limiter = CountingLimiter()
    broker = CountingBroker(AlpacaBroker(key, "secret", trading_url=exchange.base_url, timeout_s=30.0,
                                         limiter=limiter, name="doctor"))
    ref = DoctorActor.start(writer, broker, None, None, exchange.clock, DoctorSettings())
    try:
        started = time.perf_counter()
        report = ref.proxy().run_pass(dry_run=True, reason="benchmark").get()
        wall_s = time.perf_counter() - started
    finally:
        ref.stop()
    if report.error is not None:
        raise RuntimeError(f"the doctor pass failed: {report.error}")
    return {"wall_s": round(wall_s, 3), "http_calls": limiter.calls, "calls_by_method": dict(broker.calls),
            "findings": len(report.findings), "finding_types": sorted({str(f.type) for f in report.findings})}


def per_order_loop(exchange: Any, writer: Any, key: str) -> dict[str, Any]:
    client = raw_client(exchange, key)
    started = time.perf_counter()
    pending = writer.working_orders().get()
    mismatches = 0
    for row in pending:
        broker_order = client.get_order_by_id(row.alpaca_order_id)
        seen = status_from_broker(broker_order.status, Decimal(broker_order.filled_qty or 0), Decimal(row.quantity))
        mismatches += seen != row.status
    client.get_all_positions()
    wall_s = time.perf_counter() - started
    return {"wall_s": round(wall_s, 3), "http_calls": len(pending) + 1, "orders_checked": len(pending),
            "status_mismatches": mismatches, "per_order_ms": round(wall_s * 1000 / max(1, len(pending)), 3)}
