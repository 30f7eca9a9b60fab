"""A position actor may stop between being listed and being told: the caller carries on (found by a crash test,
where the 15:55 flatten met a position that had just closed and the cycle actor died with the day unfinished)."""

from __future__ import annotations

from datetime import date
from types import SimpleNamespace
from typing import Any


from actors import messages as m
from actors.cycle import CycleActor, DayState
from actors.refs import tell_if_alive
from catalyst.domain.cycle import CyclePhase, PhaseSchedule


def test_telling_a_stopped_actor_says_so_instead_of_raising(recording_actor: Any) -> None:
    stopped, live = recording_actor(), recording_actor()
    stopped.stop()
    try:
        assert tell_if_alive(stopped, m.Flatten(reason="end of day")) is False
        assert tell_if_alive(live, m.Flatten(reason="end of day")) is True
    finally:
        live.stop()


def test_the_end_of_day_flatten_skips_a_position_that_just_finished_and_flattens_the_others(
        recording_actor: Any) -> None:
    finished, live = recording_actor(), recording_actor()
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
