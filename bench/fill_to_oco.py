"""Issue 4: entry fill event → OCO acknowledged and rows committed, through the real actors, vs one raw submit."""

from __future__ import annotations

import time
from typing import Any

from bench import watch
from bench.common import LogProbe, goal, latency_ms, machine_facts, quiet_logs, ratio, scratch_dir, wait_for
from bench.remote_exchange import exchange_process
from bench.rig import SystemRig, market_buy, oco_sell, raw_client, symbols

NAME = "fill_to_oco"
ISSUE = "4"
# (mode, synchronous, defer_report_sync, daemon.cpu): the shipped settings first, then the same with the daemon's
# threads left on every CPU (next to it, so the machine's drift between blocks shows least), then every commit
# fsync'd, then no fsync at all.
MODES = (("FULL", "FULL", True, "auto"), ("FULL_ALL_CPUS", "FULL", True, "all"),
         ("FULL_EVERY_COMMIT", "FULL", False, "auto"), ("NORMAL", "NORMAL", True, "auto"))


def run(quick: bool) -> dict[str, Any]:
    trades, warmup = (20, 3) if quick else (150, 10)
    per_mode = trades + warmup
    names = symbols(2 * len(MODES) * per_mode)  # each trade's symbol, and the raw submits' beside it
    probe = watch.new_probe()
    quiet_logs(probe)
    modes: dict[str, Any] = {}
    with exchange_process(names) as exchange, scratch_dir(NAME) as scratch:
        for index, (mode, synchronous, defer, cpu_setting) in enumerate(MODES):
            mine = names[2 * index * per_mode:(2 * index + 1) * per_mode]
            raw = RawSamples(raw_client(exchange), names[(2 * index + 1) * per_mode:(2 * index + 2) * per_mode])
            probe.clear()  # a new database numbers its orders from 1 again
            rig = SystemRig(exchange, scratch / f"catalyst-{mode}.db", synchronous=synchronous,
                            defer_report_sync=defer, cpu_setting=cpu_setting)
            rig.start()
            try:
                modes[mode] = measure_mode(rig, probe, mine, warmup, raw)
            finally:
                rig.stop()
    full = modes["FULL"]
    raw_stats, market_stats = full["raw_oco_submit"], full["raw_market_buy"]

    def p50(mode: str) -> float:
        return modes[mode]["fill_to_protected"]["p50_ms"]

    def p50_vs_own_raw(mode: str) -> float:
        return ratio(p50(mode), modes[mode]["raw_oco_submit"]["p50_ms"])

    p50_ratio = p50_vs_own_raw("FULL")
    p99_ratio = ratio(full["fill_to_protected"]["p99_ms"], raw_stats["p99_ms"])
    return {
        "name": NAME, "issue": ISSUE, "quick": quick, "machine": machine_facts(),
        "figures": {
            "raw_submit_roundtrip": raw_stats, "raw_market_buy_roundtrip": market_stats,
            "ratio_p50_full_vs_raw_market_buy": ratio(p50("FULL"), market_stats["p50_ms"]),
            "ratio_p99_full_vs_raw_market_buy": ratio(full["fill_to_protected"]["p99_ms"], market_stats["p99_ms"]),
            "synchronous_full": modes["FULL"], "synchronous_full_every_commit": modes["FULL_EVERY_COMMIT"],
            "synchronous_normal": modes["NORMAL"], "full_all_cpus": modes["FULL_ALL_CPUS"],
            "ratio_p50_full_vs_raw": p50_ratio, "ratio_p99_full_vs_raw": p99_ratio,
            "ratio_p50_full_every_commit_vs_raw": p50_vs_own_raw("FULL_EVERY_COMMIT"),
            "ratio_p50_normal_vs_raw": p50_vs_own_raw("NORMAL"),
            "ratio_p50_full_all_cpus_vs_raw": p50_vs_own_raw("FULL_ALL_CPUS"),
            "one_cpu_saves_p50_ms": round(p50("FULL_ALL_CPUS") - p50("FULL"), 3),
            "fsync_cost_p50_ms": round(p50("FULL") - p50("NORMAL"), 3),
            "deferred_report_sync_saves_p50_ms": round(p50("FULL_EVERY_COMMIT") - p50("FULL"), 3),
        },
        "goals": [
            goal("fill→OCO acked p50 / raw OCO submit p50 (FULL)", "≤ 2×", p50_ratio, p50_ratio <= 2),
            goal("fill→OCO acked p99 / raw OCO submit p99 (FULL)", "≤ 4×", p99_ratio, p99_ratio <= 4),
            goal("fill→OCO acked p50 / raw 1-share market buy p50 (FULL)", "reported, not judged",
                 ratio(p50("FULL"), market_stats["p50_ms"]), None),
        ],
        "notes": [
            "Start: the entry's fill event leaves the trade stream thread for the router's mailbox (a stamp in the "
            "stream callback). End: the second OCO leg's 'created → submitted' log line, written after "
            "mark_submitted and update_order_status committed, i.e. both protection rows carry broker ids.",
            "The raw round trip (raw_submit_roundtrip, the goals' baseline) is the broker call the path itself "
            "makes: alpaca-py submitting an OCO sell (take-profit limit + stop-loss) of shares held, its reply "
            "parsed into alpaca-py's Order. Beside it, a market buy of one share that fills on submit "
            "(raw_market_buy_roundtrip, the baseline of the stops before this one; its ratios are reported, not "
            "judged). Before each trade, on a symbol of its own: the raw client buys one share (timed, the market "
            "buy), then sells it by OCO (timed, left working), as the daemon buys and then protects.",
            "Each mode has its own raw account beside the daemon's, so the exchange's books for both grow alike "
            "(the emulator's per-order work grows with an account's orders); each mode's ratio is to its own raw "
            "submits. One trade at a time, on the same emulator in the same run.",
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


def measure_mode(rig: SystemRig, probe: LogProbe, names: list[str], warmup: int, raw: RawSamples) -> dict[str, Any]:
    rig.cycle_id()
    total: list[float] = []
    to_rows: list[float] = []
    rows_to_ack: list[float] = []
    for index, name in enumerate(names):
        raw.take(index, keep=index >= warmup)
        rig.open(rig.plan(name))
        oco = wait_for(lambda: _acked(probe, name), f"{name}'s OCO to be acknowledged", timeout=30,
                       probe=probe)
        entry_cid = watch.entries(probe)[name][1]
        filled = wait_for(lambda: rig.stamps.get("fill", entry_cid), f"{name}'s entry fill event", timeout=10)
        if index < warmup:
            continue
        assert oco.acknowledged_at is not None
        total.append(oco.acknowledged_at - filled)
        to_rows.append(oco.created_at - filled)
        rows_to_ack.append(oco.acknowledged_at - oco.created_at)
    return {
        "synchronous": rig.synchronous, "defer_report_sync": rig.defer_report_sync, "cpu": rig.cpu_placement,
        "fill_to_protected": latency_ms(total),
        "raw_oco_submit": latency_ms(raw.oco), "raw_market_buy": latency_ms(raw.market),
        "breakdown": {"fill_to_oco_rows_created": latency_ms(to_rows),
                      "oco_rows_created_to_both_acked": latency_ms(rows_to_ack)},
    }


class RawSamples:
    """The raw round trips taken beside each trade, by a plain alpaca-py client on an account of its own: a market
    buy of one share (it fills on submit), then an OCO selling that share, on a symbol used for nothing else."""

    def __init__(self, client: Any, names: list[str]) -> None:
        self.client, self.names = client, names
        self.oco: list[float] = []
        self.market: list[float] = []

    def take(self, index: int, keep: bool) -> None:
        name = self.names[index]
        for samples, request in ((self.market, market_buy(name, 1)),
                                 (self.oco, oco_sell(name, 1, stop="9.00", target="11.00"))):
            sent = time.perf_counter()
            self.client.submit_order(request)
            took = time.perf_counter() - sent
            if keep:
                samples.append(took)


def _acked(probe: LogProbe, symbol: str) -> watch.Protection | None:
    found = watch.protection_of(probe, symbol)
    return found if found is not None and found.acknowledged_at is not None else None
