"""A restart that finds no candidates in a late scan uses the morning's persisted ones, and says when in New York
time (scan rows are stored in UTC)."""

from __future__ import annotations

from datetime import datetime, timezone
from types import SimpleNamespace

from loguru import logger

from catalyst.hooks import CycleHooks


def test_the_persisted_candidates_line_names_the_scan_in_exchange_time():
    scanned = datetime(2024, 3, 4, 14, 25, tzinfo=timezone.utc)  # 09:25 in New York
    row = SimpleNamespace(status="candidate", scanned_at=scanned, rank_in_scan=1, symbol="AAPL", scan_id=7,
                          score_parts={"price": "150.00", "stop": "147.00"})
    hooks = object.__new__(CycleHooks)  # only the writer is needed here
    hooks.writer = SimpleNamespace(scan_results=lambda cycle_id: SimpleNamespace(get=lambda: [row]))
    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(message.record["message"]), level="INFO")
    try:
        (picked,) = hooks.persisted_candidates(1)
    finally:
        logger.remove(sink)
    assert picked.symbol == "AAPL"
    assert lines == ["cycle using 1 candidates persisted at 09:25 (this scan found none)"]
