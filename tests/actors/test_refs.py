"""A position actor may stop between being listed and being told: the caller carries on (found by a crash test,
where the 15:55 flatten met a position that had just closed and the cycle actor died with the day unfinished)."""

from __future__ import annotations

from datetime import date
from types import SimpleNamespace
from typing import Any

import threading
import time

from actors import messages as m
from actors.cycle import CycleActor, DayState
from actors.refs import tell_if_alive, tell_later
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
        cycle._flatten_all("end of day", day, scheduled=True)  # the handler's own code, on the test's thread

        assert day.flattened
        assert live.proxy().received().get() == [m.Flatten(reason="end of day", scheduled=True)]  # news, not a warning
    finally:
        live.stop()


def test_delayed_tells_arrive_in_due_order_and_a_cancelled_one_never_arrives(recording_actor: Any) -> None:
    target = recording_actor()
    late = tell_later(target, 0.30, m.Flatten(reason="late"))
    dropped = tell_later(target, 0.10, m.Flatten(reason="cancelled"))
    early = tell_later(target, 0.05, m.Flatten(reason="early"))  # due before the one the thread already waits for
    dropped.cancel()
    time.sleep(0.12)
    assert [x.reason for x in target.proxy().received().get()] == ["early"]
    time.sleep(0.35)
    assert [x.reason for x in target.proxy().received().get()] == ["early", "late"]
    assert not early.cancelled and not late.cancelled


def test_delayed_tells_share_one_thread_and_a_stopped_target_does_not_stop_it(recording_actor: Any) -> None:
    gone, live = recording_actor(), recording_actor()
    before = threading.active_count()
    tell_later(gone, 0.02, m.Flatten(reason="to a stopped actor"))
    for index in range(50):
        tell_later(live, 0.05, m.Flatten(reason=str(index)))
    gone.stop()
    assert threading.active_count() <= before + 1  # at most the one serving thread, never one per tell
    deadline = time.monotonic() + 5
    while len(live.proxy().received().get()) < 50 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sorted(int(x.reason) for x in live.proxy().received().get()) == list(range(50))
