"""Reads the actors' own log lines (stamped by a LogProbe) into per-position milestones: entry, OCO, acks."""

from __future__ import annotations

import re
from dataclasses import dataclass

from bench.common import LogProbe

# The exact lines actors/order_router.py and actors/position.py write; a change there breaks these loudly.
ENTRY_CREATED = re.compile(r"^order (?P<sym>\w+)#o-(?P<id>\d+) created entry \S+ \S+ \S+ cid=(?P<cid>\S+)")
OCO_CREATED = re.compile(r"^order (?P<sym>\w+)#o-(?P<tp>\d+)\+\w+#o-(?P<sl>\d+) created OCO")
ACKNOWLEDGED = re.compile(r"^order (?P<sym>\w+)#o-(?P<id>\d+) created → ")
POSITION_CLOSED = re.compile(r"^position (?P<sym>\w+)#p-(?P<pid>\d+) open → closed")
PATTERNS = (ENTRY_CREATED, OCO_CREATED, ACKNOWLEDGED, POSITION_CLOSED)


def new_probe() -> LogProbe:
    return LogProbe(PATTERNS)


@dataclass(frozen=True)
class Protection:
    """One OCO: when its rows were created and when both rows carried broker ids (committed, then logged)."""

    symbol: str
    take_profit: int
    stop_loss: int
    created_at: float
    acknowledged_at: float | None


def entries(probe: LogProbe) -> dict[str, tuple[int, str]]:
    """symbol -> (entry order id, client order id) for every entry created so far (last one per symbol)."""
    return {m["sym"]: (int(m["id"]), m["cid"]) for _, m in probe.matches(ENTRY_CREATED)}


def protections(probe: LogProbe) -> list[Protection]:
    acks = {int(m["id"]): t for t, m in probe.matches(ACKNOWLEDGED)}
    found = []
    for stamp, m in probe.matches(OCO_CREATED):
        tp, sl = int(m["tp"]), int(m["sl"])
        done = max(acks[tp], acks[sl]) if tp in acks and sl in acks else None
        found.append(Protection(m["sym"], tp, sl, stamp, done))
    return found


def acknowledged_count(probe: LogProbe) -> int:
    return sum(1 for p in protections(probe) if p.acknowledged_at is not None)


def acknowledged_ids(probe: LogProbe) -> set[int]:
    return {int(m["id"]) for _, m in probe.matches(ACKNOWLEDGED)}


def entries_acknowledged(probe: LogProbe, count: int) -> bool:
    known = entries(probe)
    return len(known) >= count and {order_id for order_id, _ in known.values()} <= acknowledged_ids(probe)
