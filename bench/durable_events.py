"""Issue 8: durable event throughput through the DbWriter actor vs raw sqlite3, one commit per event, same disk."""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from actors.db_writer import DbWriter
from bench.common import goal, machine_facts, quiet_logs, ratio, scratch_dir
from catalyst.store.migrate import upgrade

NAME = "durable_events"
ISSUE = "8"
MODES = ("FULL", "NORMAL")


def sample_update(index: int) -> dict[str, Any]:
    """A trade update shaped like the router records it (TradeUpdateReport.model_dump(mode="json"))."""
    broker_id = str(uuid.UUID(int=index))
    return {
        "event": "fill", "execution_id": str(uuid.UUID(int=10**9 + index)), "at": "2024-03-04T14:45:59+00:00",
        "qty": "100", "price": "10.00", "position_qty": "100",
        "order": {"broker_id": broker_id, "client_order_id": f"cat-bench-{index}", "symbol": "AAAA", "side": "buy",
                  "type": "market", "status": "filled", "qty": "100", "filled_qty": "100",
                  "filled_avg_price": "10.00", "submitted_at": "2024-03-04T14:45:00+00:00",
                  "updated_at": "2024-03-04T14:45:59+00:00", "legs": []},
    }


def run(quick: bool) -> dict[str, Any]:
    events, warmup = (300, 30) if quick else (3000, 100)
    quiet_logs()
    figures: dict[str, Any] = {"events": events}
    goals = []
    with scratch_dir(NAME) as scratch:
        for mode in MODES:
            writer = through_writer(scratch / f"writer-{mode.lower()}.db", mode, events, warmup)
            pipelined = through_writer(scratch / f"pipelined-{mode.lower()}.db", mode, events, warmup, wait_each=False)
            raw = raw_sqlite(scratch / f"raw-{mode.lower()}.db", mode, events, warmup)
            figures[mode.lower()] = {
                "writer_events_per_s": writer, "writer_pipelined_events_per_s": pipelined,
                "raw_sqlite3_events_per_s": raw, "ratio_writer_vs_raw": ratio(writer, raw),
                "ratio_pipelined_vs_raw": ratio(pipelined, raw),
            }
            # The goal is throughput; a lone caller waiting for each commit measures the latency of one durable
            # write instead (it can never share a commit), so it is reported beside the goal, not as it.
            goals.append(goal(f"DbWriter, one caller waiting each commit, events/s vs raw sqlite3 ({mode})",
                              "— (latency)", ratio(writer, raw), None))
            goals.append(goal(f"DbWriter pipelined (group commit) events/s vs raw sqlite3 ({mode})", "≥ 1×",
                              ratio(pipelined, raw), pipelined >= raw))
    return {
        "name": NAME, "issue": ISSUE, "quick": quick, "machine": machine_facts(),
        "figures": figures, "goals": goals,
        "notes": [
            "Writer: DbWriter.record_trade_update through the actor proxy, waiting for each commit (how the router "
            "calls it); 'pipelined' queues every call first and then waits (still one transaction per event).",
            "Raw: sqlite3 on a migrated file of the same schema, WAL, same synchronous level, "
            "BEGIN/INSERT INTO trade_updates/COMMIT per event with the same JSON payload.",
            "Group commit: calls waiting in the writer's mailbox share one transaction and one commit, so the "
            "pipelined figure gains from it; a lone caller waiting for each commit cannot (one event, one commit).",
        ],
    }


def through_writer(path: Path, synchronous: str, events: int, warmup: int, wait_each: bool = True) -> float:
    # Every event durable as its level says (FULL: fsync'd), as the raw side is: no deferred report sync here.
    ref = DbWriter.start(f"sqlite+aiosqlite:///{path}", synchronous=synchronous, defer_report_sync=False)
    writer = ref.proxy()
    try:
        for index in range(warmup):
            _record(writer, index).get()
        started = time.perf_counter()
        if wait_each:
            for index in range(warmup, warmup + events):
                _record(writer, index).get()
        else:
            futures = [_record(writer, index) for index in range(warmup, warmup + events)]
            for future in futures:
                future.get()
        return round(events / (time.perf_counter() - started), 1)
    finally:
        ref.stop()


def _record(writer: Any, index: int) -> Any:
    payload = sample_update(index)
    return writer.record_trade_update(
        event="fill", payload=payload, alpaca_order_id=payload["order"]["broker_id"],
        client_order_id=payload["order"]["client_order_id"], execution_id=payload["execution_id"],
    )


def raw_sqlite(path: Path, synchronous: str, events: int, warmup: int) -> float:
    upgrade(f"sqlite+aiosqlite:///{path}")  # the same schema and indexes the writer maintains
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={synchronous}")
        for index in range(warmup):
            _insert(db, index)
        started = time.perf_counter()
        for index in range(warmup, warmup + events):
            _insert(db, index)
        return round(events / (time.perf_counter() - started), 1)
    finally:
        db.close()


def _insert(db: sqlite3.Connection, index: int) -> None:
    payload = sample_update(index)
    db.execute("BEGIN")
    db.execute(
        "INSERT INTO trade_updates (received_at, event, alpaca_order_id, client_order_id, execution_id, payload) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (datetime.now(timezone.utc).isoformat(), "fill", payload["order"]["broker_id"],
         payload["order"]["client_order_id"], payload["execution_id"], json.dumps(payload, separators=(",", ":"))),
    )
    db.execute("COMMIT")
