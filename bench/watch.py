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


class _Milestones:
    """What one probe's lines say so far, brought up to date from the new lines only.

    A benchmark waits by re-reading these on every line the probe catches, on its main thread, while the actors it
    times are running: re-reading every line so far each time took the GIL from them for longer and longer as a run
    went on (quadratic in lines), which is the harness's cost, not the daemon's."""

    def __init__(self) -> None:
        self.seen, self.generation = 0, -1
        self.entries: dict[str, tuple[int, str]] = {}
        self.acks: dict[int, float] = {}
        self.ocos: dict[int, Protection] = {}  # by take-profit id, in creation order
        self.by_symbol: dict[str, int] = {}  # symbol -> its latest OCO's take-profit id
        self.stop_legs: dict[int, int] = {}  # stop-loss id -> take-profit id
        self.acknowledged = 0

    def update(self, probe: LogProbe) -> _Milestones:
        lines, generation = probe.since(self.seen, self.generation)
        if generation != self.generation:
            self.__init__()  # type: ignore[misc]  # the probe was cleared: start over
            self.generation = generation
        self.seen += len(lines)
        for stamp, match in lines:
            if match.re is ENTRY_CREATED:
                self.entries[match["sym"]] = (int(match["id"]), match["cid"])
            elif match.re is OCO_CREATED:
                tp, sl = int(match["tp"]), int(match["sl"])
                self.ocos[tp] = Protection(match["sym"], tp, sl, stamp, None)
                self.by_symbol[match["sym"]] = tp
                self.stop_legs[sl] = tp
                self._settle(tp)
            elif match.re is ACKNOWLEDGED:
                order_id = int(match["id"])
                self.acks[order_id] = stamp
                self._settle(self.stop_legs.get(order_id, order_id))
        return self

    def _settle(self, tp: int) -> None:
        oco = self.ocos.get(tp)
        if oco is None or oco.acknowledged_at is not None or tp not in self.acks or oco.stop_loss not in self.acks:
            return
        self.ocos[tp] = Protection(oco.symbol, tp, oco.stop_loss, oco.created_at,
                                   max(self.acks[tp], self.acks[oco.stop_loss]))
        self.acknowledged += 1


_READERS: dict[int, _Milestones] = {}


def _read(probe: LogProbe) -> _Milestones:
    return _READERS.setdefault(id(probe), _Milestones()).update(probe)


def entries(probe: LogProbe) -> dict[str, tuple[int, str]]:
    """symbol -> (entry order id, client order id) for every entry created so far (last one per symbol)."""
    return dict(_read(probe).entries)


def protections(probe: LogProbe) -> list[Protection]:
    return list(_read(probe).ocos.values())


def protection_of(probe: LogProbe, symbol: str) -> Protection | None:
    """The latest OCO created for `symbol`, acknowledged or not yet (None before its rows exist)."""
    known = _read(probe)
    tp = known.by_symbol.get(symbol)
    return known.ocos[tp] if tp is not None else None


def acknowledged_count(probe: LogProbe) -> int:
    return _read(probe).acknowledged


def acknowledged_ids(probe: LogProbe) -> set[int]:
    return set(_read(probe).acks)


def entries_acknowledged(probe: LogProbe, count: int) -> bool:
    known = _read(probe)
    return len(known.entries) >= count and all(order_id in known.acks for order_id, _ in known.entries.values())
