"""Issues 4/8: 1,000 open positions (1,000 actors): fill routing p99, RSS and threads, and a restart that rebuilds them."""

from __future__ import annotations

import sqlite3
import time
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from bench import watch
from bench.common import goal, latency_ms, machine_facts, process_facts, quiet_logs, scratch_dir, wait_for
from bench.rig import SystemRig, scripted_exchange, symbols

NAME = "many_positions"
ISSUES = "4/8"
PER_SYMBOL = 10  # positions per symbol: one price move fills ten take-profits at once


def run(quick: bool) -> dict[str, Any]:
    positions = 100 if quick else 1000
    moved_symbols = 2 if quick else 10
    names = symbols(positions // PER_SYMBOL)
    probe = watch.new_probe()
    quiet_logs(probe)
    before = process_facts()
    # Several positions a symbol: Alpaca's wash-trade rule would refuse a symbol's second entry while its first
    # position's stop works. What is measured is the actors at scale, not that rule: off here.
    with scripted_exchange(names, wash_trade_check="off") as exchange, scratch_dir(NAME) as scratch:
        rig = SystemRig(exchange, scratch / "catalyst.db").start()
        try:
            opened_s = open_all(rig, probe, names, positions)
            loaded = process_facts()
            routing = route_fills(rig, probe, exchange, names[:moved_symbols], scratch / "catalyst.db")
        finally:
            stop_started = time.perf_counter()
            rig.stop()
            stop_s = time.perf_counter() - stop_started
        restart = restart_and_protect(exchange, rig, positions - moved_symbols * PER_SYMBOL)
    p99 = routing["latency"].get("p99_ms")
    return {
        "name": NAME, "issue": ISSUES, "quick": quick, "machine": machine_facts(),
        "figures": {
            "positions": positions, "symbols": len(names), "open_all_s": round(opened_s, 2),
            "process_before": before, "process_with_positions": loaded,
            "rss_per_position_kb": round((loaded["rss_mb"] - before["rss_mb"]) * 1024 / positions, 1),
            "fill_routing": routing, "stop_s": round(stop_s, 2), "restart": restart,
        },
        "goals": [
            goal(f"fill routing p99 ms with {positions} live actors", "baseline (no goal set)", p99, None),
            goal(f"restart: {restart['restored']} actors rebuilt and protected, s", "baseline (no goal set)",
                 restart["rebuilt_and_protected_s"], None),
        ],
        "notes": [
            "RSS and threads are the whole benchmark process, which also hosts the emulator (a few MB, 2-3 threads).",
            f"{PER_SYMBOL} positions a symbol, so the emulator's wash-trade check is off (Alpaca's rule would refuse "
            "a symbol's second entry while its first position's stop works).",
            "Fill routing: from the take-profit's fill event leaving the stream thread to the position actor's "
            "'open → closed' line (execution recorded, position row closed). All moved symbols fill in one minute, "
            "so the later fills queue behind the earlier ones: p99 is the burst's tail.",
            "Restart: TradingSystem.stop(), then a new TradingSystem on the same database and account; timed from "
            "start() to every rebuilt actor reporting protected quantity == position quantity.",
        ],
    }


def open_all(rig: SystemRig, probe: Any, names: list[str], positions: int) -> float:
    rig.cycle_id()
    started = time.perf_counter()
    for index in range(positions):
        rig.open(rig.plan(names[index % len(names)]))
    wait_for(lambda: watch.acknowledged_count(probe) >= positions, f"{positions} positions protected",
             timeout=900, interval=0.05)
    return time.perf_counter() - started


def route_fills(rig: SystemRig, probe: Any, exchange: Any, moved: list[str], db_path: Path) -> dict[str, Any]:
    expected = len(moved) * PER_SYMBOL
    for name in moved:
        exchange.set_price(name, "11.05")  # through every take-profit at 11.00
    moved_at = time.perf_counter()
    exchange.advance(timedelta(minutes=1))
    closed = wait_for(lambda: (found := probe.matches(watch.POSITION_CLOSED)) and len(found) >= expected and found,
                      f"{expected} positions to close", timeout=300, interval=0.01)
    closed_at = {int(m["pid"]): stamp for stamp, m in closed}
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as db:
        legs = db.execute("SELECT client_order_id, position_id FROM orders WHERE role = 'take_profit'").fetchall()
    samples = []
    for client_order_id, position_id in legs:
        filled = rig.stamps.get("fill", client_order_id)
        if filled is not None and position_id in closed_at:
            samples.append(closed_at[position_id] - filled)
    return {"positions_closed": len(closed_at), "latency": latency_ms(samples),
            "price_move_to_last_close_s": round(max(closed_at.values()) - moved_at, 3)}


def restart_and_protect(exchange: Any, old: SystemRig, expected: int) -> dict[str, Any]:
    rig = SystemRig(exchange, old.db_path, key=old.key)
    started = time.perf_counter()
    rig.start()
    started_s = time.perf_counter() - started
    try:
        assert rig.system is not None
        refs = rig.system.supervisor.live_refs().get()
        wait_for(lambda: all_protected(refs), "every rebuilt actor to be protected", timeout=300, interval=0.05)
        total_s = time.perf_counter() - started
        facts = process_facts()
    finally:
        rig.stop()
    return {"restored": len(refs), "expected": expected, "start_returned_s": round(started_s, 2),
            "rebuilt_and_protected_s": round(total_s, 2), "process_after_restart": facts}


def all_protected(refs: list[Any]) -> bool:
    states = [ref.proxy().state() for ref in refs]
    return all(Decimal(s.get()["protected"]) == Decimal(s.get()["qty"]) > 0 for s in states)
