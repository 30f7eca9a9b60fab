"""A position actor may stop between being listed and being told: the caller carries on (found by a crash test,
where the 15:55 flatten met a position that had just closed and the cycle actor died with the day unfinished)."""

from __future__ import annotations

from datetime import date
from types import SimpleNamespace
from typing import Any

import pykka

from actors import messages as m
from actors.cycle import CycleActor, DayState
from actors.refs import tell_if_alive
from catalyst.domain.cycle import CyclePhase, PhaseSchedule


class Recorder(pykka.ThreadingActor):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[Any] = []

    def on_receive(self, message: Any) -> None:
        self.messages.append(message)

    def received(self) -> list[Any]:
        return list(self.messages)


def test_telling_a_stopped_actor_says_so_instead_of_raising() -> None:
    stopped, live = Recorder.start(), Recorder.start()
    stopped.stop()
    try:
        assert tell_if_alive(stopped, m.Flatten(reason="end of day")) is False
        assert tell_if_alive(live, m.Flatten(reason="end of day")) is True
    finally:
        live.stop()


def test_the_end_of_day_flatten_skips_a_position_that_just_finished_and_flattens_the_others() -> None:
    finished, live = Recorder.start(), Recorder.start()
    finished.stop()
    system = SimpleNamespace(supervisor=SimpleNamespace(live_refs=lambda: SimpleNamespace(get=lambda: [finished, live])))
    cycle = CycleActor(writer=None, system=system, clock=None, schedule=PhaseSchedule(), hooks={})
    try:
        day = DayState(day=date(2026, 3, 2), cycle_id=1, phase=CyclePhase.TRADING)
        cycle._flatten_all("end of day", day)  # the handler's own code, on the test's thread

        assert day.flattened
        assert [type(x) for x in live.proxy().received().get()] == [m.Flatten]
    finally:
        live.stop()
