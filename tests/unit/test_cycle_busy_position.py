"""The open's flatten of positions carried over from an earlier day asks each position actor its state; one too
busy to answer is said in a WARNING (it stays under its stops until the end-of-day flatten), and the others are
flattened all the same."""

from __future__ import annotations

import threading
from datetime import date
from types import SimpleNamespace
from typing import Any

import pykka
from loguru import logger

from actors import messages as m
from actors.cycle import CycleActor, DayState
from catalyst.domain.cycle import CyclePhase


class PositionStandIn(pykka.ThreadingActor):
    """Answers `state()` like a position actor; `hold` keeps it busy; records what it is told."""

    def __init__(self, state: dict[str, Any]) -> None:
        super().__init__()
        self._state = state
        self.told: list[Any] = []

    def state(self) -> dict[str, Any]:
        return self._state

    def hold(self, until: threading.Event) -> None:
        until.wait(10)

    def on_receive(self, message: Any) -> Any:
        self.told.append(message)
        return None

    def received(self) -> list[Any]:
        return self.told


def test_a_busy_position_is_named_and_the_other_carried_one_is_flattened(monkeypatch):
    monkeypatch.setattr("actors.cycle.POSITION_ANSWER_S", 1.0)
    carried = {"position": "KERB#p-3", "cycle_id": 1, "status": "open"}
    free = threading.Event()
    busy, idle = PositionStandIn.start(dict(carried, position="COBS#p-4")), PositionStandIn.start(carried)
    busy.proxy().hold(free)
    conductor = SimpleNamespace(system=SimpleNamespace(supervisor=SimpleNamespace(
        live_refs=lambda: SimpleNamespace(get=lambda: [busy, idle]))))
    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(message.record["message"]), level="WARNING")
    try:
        CycleActor._flatten_carried(conductor, DayState(date(2026, 3, 3), 2, CyclePhase.EVALUATING))  # type: ignore[arg-type]
    finally:
        logger.remove(sink)
        free.set()
    assert lines == ["cycle 2026-03-03 a position actor did not answer within 1 s: if it was carried over from an "
                     "earlier day, it stays under its stops until the end-of-day flatten"]
    told = idle.proxy().received().get(timeout=5)
    assert [type(t) for t in told] == [m.Flatten] and told[0].scheduled
