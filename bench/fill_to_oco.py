"""Issue 4: entry fill event → OCO acknowledged and rows committed, through the real actors, vs one raw submit."""

from __future__ import annotations

import time
from typing import Any

from bench import watch
from bench.common import LogProbe, goal, latency_ms, machine_facts, quiet_logs, ratio, scratch_dir, wait_for
from bench.remote_exchange import exchange_process
from bench.rig import SystemRig, market_buy, raw_client, symbols

NAME = "fill_to_oco"
ISSUE = "4"
# (mode, synchronous, defer_report_sync, daemon.cpu): the shipped settings first, then the same with the daemon's
# threads left on every CPU (next to it, so the machine's drift between blocks shows least), then every commit
# fsync'd, then no fsync at all.
MODES = (("FULL", "FULL", True, "auto"), ("FULL_ALL_CPUS", "FULL", True, "all"),
         ("FULL_EVERY_COMMIT", "FULL", False, "auto"), ("NORMAL", "NORMAL", True, "auto"))


def run(quick: bool) -> dict[str, Any]:
    trades, warmup = (20, 3) if quick else (150, 10)
    names = symbols(len(MODES) * (trades + warmup) + 1)
    raw_symbol, names = names[0], names[1:]
    probe = watch.new_probe()
    quiet_logs(probe)
    raw: list[float] = []
    modes: dict[str, Any] = {}
    with exchange_process([raw_symbol, *names]) as exchange, scratch_dir(NAME) as scratch:
        client = raw_client(exchange)
        for _ in range(warmup):
            client.submit_order(market_buy(raw_symbol, 1))
        for index, (mode, synchronous, defer, cpu_setting) in enumerate(MODES):
            mine = names[index * (trades + warmup):(index + 1) * (trades + warmup)]
            probe.clear()  # a new database numbers its orders from 1 again
            rig = SystemRig(exchange, scratch / f"catalyst-{mode}.db", synchronous=synchronous,
                            defer_report_sync=defer, cpu_setting=cpu_setting)
            rig.start()
            try:
                modes[mode] = measure_mode(rig, probe, client, raw_symbol, mine, warmup, raw)
            finally:
                rig.stop()
    raw_stats = latency_ms(raw)
    full = modes["FULL"]["fill_to_protected"]
    p50_ratio, p99_ratio = ratio(full["p50_ms"], raw_stats["p50_ms"]), ratio(full["p99_ms"], raw_stats["p99_ms"])
    return {
        "name": NAME, "issue": ISSUE, "quick": quick, "machine": machine_facts(),
        "figures": {
            "raw_submit_roundtrip": raw_stats,
            "synchronous_full": modes["FULL"], "synchronous_full_every_commit": modes["FULL_EVERY_COMMIT"],
            "synchronous_normal": modes["NORMAL"], "full_all_cpus": modes["FULL_ALL_CPUS"],
            "ratio_p50_full_vs_raw": p50_ratio, "ratio_p99_full_vs_raw": p99_ratio,
            "ratio_p50_full_every_commit_vs_raw": ratio(
                modes["FULL_EVERY_COMMIT"]["fill_to_protected"]["p50_ms"], raw_stats["p50_ms"]),
            "ratio_p50_normal_vs_raw": ratio(modes["NORMAL"]["fill_to_protected"]["p50_ms"], raw_stats["p50_ms"]),
            "ratio_p50_full_all_cpus_vs_raw": ratio(
                modes["FULL_ALL_CPUS"]["fill_to_protected"]["p50_ms"], raw_stats["p50_ms"]),
            "one_cpu_saves_p50_ms": round(modes["FULL_ALL_CPUS"]["fill_to_protected"]["p50_ms"] - full["p50_ms"], 3),
            "fsync_cost_p50_ms": round(full["p50_ms"] - modes["NORMAL"]["fill_to_protected"]["p50_ms"], 3),
            "deferred_report_sync_saves_p50_ms": round(
                modes["FULL_EVERY_COMMIT"]["fill_to_protected"]["p50_ms"] - full["p50_ms"], 3),
        },
        "goals": [
            goal("fill→OCO acked p50 / raw submit p50 (FULL)", "≤ 2×", p50_ratio, p50_ratio <= 2),
            goal("fill→OCO acked p99 / raw submit p99 (FULL)", "≤ 4×", p99_ratio, p99_ratio <= 4),
        ],
        "notes": [
            "Start: the entry's fill event leaves the trade stream thread for the router's mailbox (a stamp in the "
            "stream callback). End: the second OCO leg's 'created → submitted' log line, written after "
            "mark_submitted and update_order_status committed, i.e. both protection rows carry broker ids.",
            "One trade at a time, a raw submit interleaved before each, on the same emulator in the same run.",
            "Two commits on the path: the execution with the position row and its OCO rows (the router asks the "
            "position actor for its writes and commits them with the execution), then both acknowledgements. FULL "
            "is the shipped setting: the first, which the broker call waits on, is fsync'd; the second only records "
            "broker reports and is not waited on (sqlite_defer_report_sync): it reaches the disk with the next "
            "fsync. FULL_EVERY_COMMIT fsyncs both; NORMAL neither.",
            "daemon.cpu: the first three modes run as shipped (auto: every thread of the process on one CPU, the "
            "raw client's included); FULL_ALL_CPUS is FULL with the threads left on every CPU (daemon.cpu = all). "
            "The exchange process may always use every CPU.",
            "Market entries fill on submit in the emulator; each trade uses its own symbol.",
            "The exchange runs in its own process (bench/remote_exchange.py), as Alpaca is another machine: the raw "
            "client and the daemon reach it the same way, and its work does not take the GIL from either.",
        ],
    }


def measure_mode(rig: SystemRig, probe: LogProbe, client: Any, raw_symbol: str, names: list[str], warmup: int,
                 raw: list[float]) -> dict[str, Any]:
    rig.cycle_id()
    total: list[float] = []
    to_rows: list[float] = []
    rows_to_ack: list[float] = []
    for index, name in enumerate(names):
        sent = time.perf_counter()
        client.submit_order(market_buy(raw_symbol, 1))
        raw_sample = time.perf_counter() - sent
        rig.open(rig.plan(name))
        oco = wait_for(lambda: _acked(probe, name), f"{name}'s OCO to be acknowledged", timeout=30,
                       probe=probe)
        entry_cid = watch.entries(probe)[name][1]
        filled = wait_for(lambda: rig.stamps.get("fill", entry_cid), f"{name}'s entry fill event", timeout=10)
        if index < warmup:
            continue
        raw.append(raw_sample)
        assert oco.acknowledged_at is not None
        total.append(oco.acknowledged_at - filled)
        to_rows.append(oco.created_at - filled)
        rows_to_ack.append(oco.acknowledged_at - oco.created_at)
    return {
        "synchronous": rig.synchronous, "defer_report_sync": rig.defer_report_sync, "cpu": rig.cpu_placement,
        "fill_to_protected": latency_ms(total),
        "breakdown": {"fill_to_oco_rows_created": latency_ms(to_rows),
                      "oco_rows_created_to_both_acked": latency_ms(rows_to_ack)},
    }


def _acked(probe: LogProbe, symbol: str) -> watch.Protection | None:
    found = watch.protection_of(probe, symbol)
    return found if found is not None and found.acknowledged_at is not None else None
