"""Issue 4's two latency measures again, with the broker a network away instead of on loopback.

Why: the goals are judged on loopback (fill_to_oco, simultaneous_entries), where a raw submit is 3–8 ms of local
CPU. Alpaca is never that close: the daemon's own work between a fill and its stop (two commits, the actors'
hand-offs) is a fixed cost, and what a trader sees is that cost beside a real round trip. The emulator delays every
request, reply and stream frame by `latency_ms` one way (its `--latency-ms`); the raw client pays the same delay.
These figures are reported, not judged: the judged goals stay the loopback ones.
"""

from __future__ import annotations

from typing import Any

from bench import watch
from bench.common import goal, machine_facts, quiet_logs, ratio, scratch_dir
from bench.fill_to_oco import RawSamples, measure_mode
from bench.remote_exchange import exchange_process
from bench.rig import SystemRig, raw_client, symbols
from bench.simultaneous_entries import burst, raw_sequential_ocos

NAME = "broker_distance"
ISSUE = "4"
# One way, ms: a server in Alpaca's own region (about 2 ms there and back), then a trader's machine on the US east
# coast (about 20 ms there and back).
DISTANCES_MS = (1.0, 10.0)


def run(quick: bool) -> dict[str, Any]:
    trades, warmup = (10, 2) if quick else (40, 5)
    positions = 50 if quick else 100
    per_distance = 2 * (trades + warmup) + positions
    names = symbols(len(DISTANCES_MS) * per_distance)
    probe = watch.new_probe()
    quiet_logs(probe)
    figures: dict[str, Any] = {}
    goals = []
    with scratch_dir(NAME) as scratch:
        for index, one_way_ms in enumerate(DISTANCES_MS):
            mine = names[index * per_distance:(index + 1) * per_distance]
            trade_names, raw_names = mine[:trades + warmup], mine[trades + warmup:2 * (trades + warmup)]
            burst_names = mine[2 * (trades + warmup):]
            with exchange_process(mine, latency_ms=one_way_ms) as exchange:
                probe.clear()
                rig = SystemRig(exchange, scratch / f"trades-{index}.db").start()
                try:
                    single = measure_mode(rig, probe, trade_names, warmup, RawSamples(raw_client(exchange), raw_names))
                finally:
                    rig.stop()
            # The burst and its raw submits on exchanges of their own, as in simultaneous_entries (which says why).
            with exchange_process(burst_names, price="10.05", latency_ms=one_way_ms) as exchange:
                shipped = burst(exchange, burst_names, probe, scratch / f"burst-{index}.db", "auto")
            with exchange_process(burst_names, price="10.05", latency_ms=one_way_ms) as exchange:
                raw_s, _ = raw_sequential_ocos(exchange, burst_names)
            p50 = ratio(single["fill_to_protected"]["p50_ms"], single["raw_oco_submit"]["p50_ms"])
            p99 = ratio(single["fill_to_protected"]["p99_ms"], single["raw_oco_submit"]["p99_ms"])
            burst_ratio = ratio(shipped.seconds, raw_s)
            label = f"one_way_{one_way_ms:g}_ms"
            figures[label] = {
                "fill_to_protected": single["fill_to_protected"], "raw_oco_submit": single["raw_oco_submit"],
                "breakdown": single["breakdown"], "ratio_p50_vs_raw": p50, "ratio_p99_vs_raw": p99,
                "burst_positions": len(burst_names), "burst_price_move_to_all_protected_s": round(shipped.seconds, 3),
                "raw_sequential_oco_submits_s": round(raw_s, 3), "ratio_burst_vs_raw": burst_ratio,
                "working_oco_legs_at_broker": shipped.working,
            }
            round_trip = f"{2 * one_way_ms:g} ms round trip"
            goals += [goal(f"fill→OCO acked p50 / raw OCO p50, {round_trip}", "reported (≤ 2× on loopback)", p50, None),
                      goal(f"fill→OCO acked p99 / raw OCO p99, {round_trip}", "reported (≤ 4× on loopback)", p99, None),
                      goal(f"{len(burst_names)} fills → working OCOs / raw sequential, {round_trip}",
                           "reported (≤ 1× on loopback)", burst_ratio, None)]
    return {
        "name": NAME, "issue": ISSUE, "quick": quick, "machine": machine_facts(), "figures": figures, "goals": goals,
        "notes": [
            "The exchange (its own process, as in fill_to_oco) sleeps latency_ms before handling each REST request "
            "and again before its reply goes out, and sends each stream frame latency_ms after it was produced, in "
            "the order produced. /sim/v1 control calls are not delayed.",
            "Per distance: fill → OCO as fill_to_oco's shipped mode (FULL, deferred report sync, daemon.cpu auto), "
            "one trade at a time with the raw market buy and raw OCO beside each, on one exchange; then the burst "
            "as simultaneous_entries' shipped run and its raw sequential OCO submits, each on a fresh exchange.",
            "The daemon does the same work at any distance, but its share of the time grew with it in traced "
            "trades (an entry's reply and its fill event now arrive together, and threads wake from idle). In the "
            "burst, as many OCO submits can be on the wire at once as there are protection workers "
            "(router.protection_workers).",
        ],
    }
