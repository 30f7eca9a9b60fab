"""Issue 4: 100 entries fill in the same minute → wall time to 100 working OCOs, vs 100 raw sequential OCO submits."""

from __future__ import annotations

import os
import time
from datetime import timedelta
from pathlib import Path
from typing import Any, NamedTuple

from catalyst import cpu
from catalyst.router_settings import RouterSettings

from bench import watch
from bench.common import CpuUse, GcPauses, LogProbe, goal, machine_facts, quiet_logs, ratio, scratch_dir, wait_for
from bench.remote_exchange import exchange_process
from bench.rig import SystemRig, market_buy, new_key, oco_sell, raw_client, symbols

NAME = "simultaneous_entries"
ISSUE = "4"
ENTRY_LIMIT = "10.00"  # the entries rest at 10.00 while the price is 10.05, then the price drops through them


def run(quick: bool) -> dict[str, Any]:
    positions = 50 if quick else 100
    names = symbols(positions)
    probe = watch.new_probe()
    quiet_logs(probe)
    with scratch_dir(NAME) as scratch:
        # Each run on an exchange of its own: the emulator's matching walks every account's orders at each bar, so a
        # run after others pays for their books (100 raw submits after four bursts: 12 % slower than before them).
        def fresh() -> Any:
            return exchange_process(names, price="10.05")

        with fresh() as exchange:
            shipped = burst(exchange, names, probe, scratch / "catalyst.db", "auto")
        with fresh() as exchange:
            raw_s, raw_cpu = raw_sequential_ocos(exchange, names)
        with fresh() as exchange:
            two_workers = burst(exchange, names, probe, scratch / "catalyst-2w.db", "auto", protect_workers=2)
        with fresh() as exchange:
            all_cpus = burst(exchange, names, probe, scratch / "catalyst-all.db", "all")
        with fresh() as exchange:
            gc_defaults = burst(exchange, names, probe, scratch / "catalyst-gc.db", "auto", gc_settled=False)
    system_s = shipped.seconds
    daemon_ms, exchange_ms = shipped.cpu_ms["daemon"], shipped.cpu_ms["exchange"]
    raw_ms = raw_s / positions * 1000
    return {
        "name": NAME, "issue": ISSUE, "quick": quick, "machine": machine_facts(),
        "figures": {
            "positions": positions, "system_price_move_to_all_protected_s": round(system_s, 3),
            "raw_sequential_oco_submits_s": round(raw_s, 3), "ratio_system_vs_raw": ratio(system_s, raw_s),
            "system_per_position_ms": round(system_s / positions * 1000, 2),
            "raw_per_submit_ms": round(raw_s / positions * 1000, 2),
            "working_oco_legs_at_broker": shipped.working, "system_cpu": shipped.placement,
            "system_gc_pauses": shipped.gc,
            "all_cpus_price_move_to_all_protected_s": round(all_cpus.seconds, 3), "all_cpus_cpu": all_cpus.placement,
            "ratio_all_cpus_vs_raw": ratio(all_cpus.seconds, raw_s),
            "python_gc_defaults_price_move_to_all_protected_s": round(gc_defaults.seconds, 3),
            "ratio_python_gc_defaults_vs_raw": ratio(gc_defaults.seconds, raw_s),
            "python_gc_defaults_gc_pauses": gc_defaults.gc,
            "two_protection_workers_price_move_to_all_protected_s": round(two_workers.seconds, 3),
            "ratio_two_protection_workers_vs_raw": ratio(two_workers.seconds, raw_s),
            "system_cpu_ms_per_position": shipped.cpu_ms, "raw_cpu_ms_per_submit": raw_cpu,
            "ratio_daemon_cpu_vs_raw_wall": ratio(daemon_ms, raw_ms),
            "ratio_both_cpus_floor_vs_raw_wall": ratio((daemon_ms + exchange_ms) / 2, raw_ms),
        },
        "goals": [goal(f"{positions} fills → {positions} working OCOs vs {positions} raw OCO submits",
                       "≤ 1× (no slower)", ratio(system_s, raw_s), system_s <= raw_s)],
        "notes": [
            "System: limit entries rest, every symbol prints below the limit, one advance(1 minute) fills them all; "
            "timed from that advance to the last OCO leg's 'created → submitted' line (rows committed).",
            "Raw: an account holding the same positions submits the same OCO exits one by one with alpaca-py, no "
            "database. Every run (the raw one and each system's) has an exchange process of its own, started fresh: "
            "the emulator's matching walks every account's orders, so a run on an exchange others used pays for "
            "their books.",
            "The system runs four times: as shipped (daemon.cpu = auto: every "
            "thread of the process on one CPU; start-up objects frozen out of garbage collection, catalyst/"
            "collector.py), then with its threads left on every CPU (daemon.cpu = all), then as shipped but with "
            "Python's garbage-collector defaults, and as shipped but with 2 protection workers. Order: shipped, raw, "
            "2 workers, all CPUs, collector defaults.",
            "gc_pauses: every garbage collection during the timed burst, in any thread (each holds the GIL).",
            "The exchange runs in its own process (bench/remote_exchange.py), as Alpaca is another machine.",
            f"The system has {RouterSettings().protection_workers} protection workers (router.protection_workers, "
            "shipped), so as many OCO submits can be in flight; the fourth run has 2 (the count before the eleventh "
            "session).",
            "CPU (psutil, user + system, 10 ms ticks) of the benchmark process (the daemon; its harness thread is idle during the burst) and of the exchange process, during the shipped burst and during the raw submits. ratio_daemon_cpu_vs_raw_wall: the daemon's CPU per position over a raw submit's wall time; its Python runs on one CPU (one GIL, and the pin), so the burst cannot beat that ratio. ratio_both_cpus_floor_vs_raw_wall: the daemon's and the exchange's CPU per position spread perfectly over both cores, the bound for any placement of the daemon's work on this machine.",
        ],
    }


class Burst(NamedTuple):
    seconds: float  # from the price move to the last OCO acknowledged
    working: int  # OCO legs working at the broker afterwards
    placement: str  # where the threads ran
    gc: dict[str, Any]  # garbage collections during the burst
    cpu_ms: dict[str, float]  # CPU per position of the daemon (this process) and of the exchange process


def burst(exchange: Any, names: list[str], probe: LogProbe, db_path: Path, cpu_setting: cpu.CpuSetting,
          gc_settled: bool = True, protect_workers: int | None = None) -> Burst:
    """One system on its own account: entries rest, the price crosses them all at once."""
    probe.clear()
    for name in names:
        exchange.set_price(name, "10.05")
    rig = SystemRig(exchange, db_path, cpu_setting=cpu_setting, gc_settled=gc_settled,
                    protect_workers=protect_workers).start()
    try:
        for name in names:
            rig.open(rig.plan(name, limit=ENTRY_LIMIT))
        wait_for(lambda: watch.entries_acknowledged(probe, len(names)), "every entry to rest at the broker",
                 timeout=120, probe=probe)
        for name in names:
            exchange.set_price(name, "9.98")
        with GcPauses() as pauses, CpuUse(daemon=os.getpid(), exchange=exchange.pid) as used:
            moved = time.perf_counter()
            exchange.advance(timedelta(minutes=1))  # the minute closes: every entry trades through its limit
            wait_for(lambda: watch.acknowledged_count(probe) >= len(names), f"{len(names)} OCOs acknowledged",
                     timeout=300, probe=probe)
        took = max(p.acknowledged_at or 0.0 for p in watch.protections(probe)) - moved
        return Burst(took, working_oco_legs(exchange, rig.key), rig.cpu_placement, pauses.figures(),
                     used.per_item_ms(len(names)))
    finally:
        rig.stop()


def working_oco_legs(exchange: Any, key: str) -> int:
    return sum(1 for o in exchange.account_snapshot(key)["orders"]
               if o["order_class"] == "oco" and o["status"] in ("new", "held", "accepted"))


def raw_sequential_ocos(exchange: Any, names: list[str]) -> tuple[float, dict[str, float]]:
    client = raw_client(exchange, new_key("rawoco"))
    for name in names:  # untimed setup: the same positions, held by a plain account
        client.submit_order(market_buy(name, 100))
    with CpuUse(client=os.getpid(), exchange=exchange.pid) as used:
        started = time.perf_counter()
        for name in names:
            client.submit_order(oco_sell(name, 100, stop="9.00", target="11.00"))
        took = time.perf_counter() - started
    return took, used.per_item_ms(len(names))
