"""Trading-cycle machine (spec §4), emergency stop and the phase schedule in New York time."""

from __future__ import annotations

import itertools
from datetime import datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from catalyst.domain.cycle import (
    CYCLE_MACHINE,
    CyclePhase,
    PhaseSchedule,
    emergency_stop,
    flatten_due,
    phase_due,
    schedule_for_close,
)
from catalyst.domain.errors import IllegalTransition, InvalidSchedule, NaiveDatetime

NEW_YORK = ZoneInfo("America/New_York")

# From the spec diagram (§4.1): the straight line, the two ways back to idle, emergency stops.
LEGAL_CYCLE_PAIRS = {
    ("idle", "scanning"), ("scanning", "evaluating"), ("evaluating", "trading"),
    ("trading", "monitoring"), ("monitoring", "closed"), ("closed", "completed"),
    ("completed", "idle"), ("closed", "idle"),
    ("scanning", "closed"), ("evaluating", "closed"), ("trading", "closed"),
}
CYCLE_PHASES = ["idle", "scanning", "evaluating", "trading", "monitoring", "closed", "completed"]
ACTIVE = ["scanning", "evaluating", "trading", "monitoring"]


@pytest.mark.parametrize(("current", "target"), list(itertools.product(CYCLE_PHASES, repeat=2)))
def test_every_cycle_phase_pair_is_legal_exactly_when_the_spec_says(current, target):
    legal = (current, target) in LEGAL_CYCLE_PAIRS

    assert CYCLE_MACHINE.can(CyclePhase(current), CyclePhase(target)) is legal
    if not legal:
        with pytest.raises(IllegalTransition):
            CYCLE_MACHINE.check(CyclePhase(current), CyclePhase(target))


def test_the_cycle_never_ends():
    assert CYCLE_MACHINE.terminal == frozenset()


@pytest.mark.parametrize("phase", ACTIVE)
def test_emergency_stop_closes_every_active_phase(phase):
    assert emergency_stop(CyclePhase(phase)) is CyclePhase.CLOSED


@pytest.mark.parametrize("phase", ["idle", "closed", "completed"])
def test_emergency_stop_outside_an_active_phase_is_illegal(phase):
    with pytest.raises(IllegalTransition, match=f"emergency stop: {phase} -> closed"):
        emergency_stop(CyclePhase(phase))


def test_a_conductor_that_slept_through_the_morning_catches_up_along_the_path():
    assert CYCLE_MACHINE.path(CyclePhase.IDLE, CyclePhase.TRADING) == (
        CyclePhase.SCANNING, CyclePhase.EVALUATING, CyclePhase.TRADING,
    )
    assert CYCLE_MACHINE.path(CyclePhase.COMPLETED, CyclePhase.SCANNING) == (CyclePhase.IDLE, CyclePhase.SCANNING)


def _ny(hour: int, minute: int, day: int = 10, month: int = 3) -> datetime:
    return datetime(2025, month, day, hour, minute, tzinfo=NEW_YORK)


@pytest.mark.parametrize(
    ("clock", "expected"),
    [
        ((4, 0), "idle"), ((9, 14), "idle"), ((9, 15), "scanning"), ((9, 29), "scanning"),
        ((9, 30), "evaluating"), ((9, 34), "evaluating"), ((9, 35), "trading"), ((9, 59), "trading"),
        ((10, 0), "monitoring"), ((15, 55), "monitoring"), ((15, 59), "monitoring"),
        ((16, 0), "closed"), ((23, 59), "closed"),
    ],
)
def test_default_schedule_gives_the_phase_at_sample_times(clock, expected):
    assert phase_due(PhaseSchedule(), _ny(*clock)) == expected


def test_schedule_reads_utc_clocks_in_new_york_time_across_daylight_saving():
    # 13:20 UTC is 9:20 in New York in summer (EDT) but 8:20 in winter (EST).
    assert phase_due(PhaseSchedule(), datetime(2025, 3, 10, 13, 20, tzinfo=timezone.utc)) == CyclePhase.SCANNING
    assert phase_due(PhaseSchedule(), datetime(2025, 1, 10, 13, 20, tzinfo=timezone.utc)) == CyclePhase.IDLE


def test_flatten_is_due_from_1555_new_york_time():
    assert not flatten_due(PhaseSchedule(), _ny(15, 54))
    assert flatten_due(PhaseSchedule(), _ny(15, 55))


def test_a_custom_schedule_moves_the_phases():
    schedule = PhaseSchedule(scanning_at=time(8, 0), evaluating_at=time(9, 30), trading_at=time(9, 31),
                             monitoring_at=time(11, 0), flatten_at=time(12, 0), closed_at=time(13, 0))

    assert phase_due(schedule, _ny(8, 0)) == CyclePhase.SCANNING
    assert phase_due(schedule, _ny(9, 31)) == CyclePhase.TRADING
    assert phase_due(schedule, _ny(13, 0)) == CyclePhase.CLOSED


def test_the_clock_never_says_completed():
    start = _ny(0, 0)
    phases = {phase_due(PhaseSchedule(), start + timedelta(minutes=m)) for m in range(0, 24 * 60, 1)}

    assert phases == {CyclePhase(p) for p in CYCLE_PHASES} - {CyclePhase.COMPLETED}


@pytest.mark.parametrize(
    "bad",
    [
        {"trading_at": time(9, 20)},
        {"closed_at": time(15, 55)},
        {"evaluating_at": time(9, 15)},
    ],
)
def test_a_schedule_out_of_order_is_refused_by_name(bad):
    with pytest.raises(InvalidSchedule, match="schedule out of order"):
        PhaseSchedule(**bad)


def test_a_schedule_time_with_a_zone_or_of_the_wrong_type_is_refused():
    with pytest.raises(InvalidSchedule, match="scanning_at"):
        PhaseSchedule(scanning_at=time(9, 15, tzinfo=timezone.utc))
    with pytest.raises(InvalidSchedule, match="closed_at"):
        PhaseSchedule(closed_at="16:00")  # type: ignore[arg-type]


def test_a_naive_clock_reading_is_refused():
    with pytest.raises(NaiveDatetime, match="timezone-aware"):
        phase_due(PhaseSchedule(), datetime(2025, 3, 10, 9, 30))


def test_an_early_close_moves_the_flatten_and_the_close_keeping_the_flattens_lead():
    half_day = schedule_for_close(PhaseSchedule(), time(13, 0))
    assert (half_day.flatten_at, half_day.closed_at) == (time(12, 55), time(13, 0))
    assert half_day.monitoring_at == time(10, 0) and half_day.scanning_at == time(9, 15)
    custom = schedule_for_close(PhaseSchedule(flatten_at=time(15, 45), closed_at=time(16, 0)), time(13, 0))
    assert custom.flatten_at == time(12, 45)
    regular = PhaseSchedule()
    assert schedule_for_close(regular, time(16, 0)) is regular


def test_a_close_too_early_for_the_entry_window_is_refused():
    with pytest.raises(InvalidSchedule, match="monitoring_at 10:00:00 must be before flatten_at 09:55:00"):
        schedule_for_close(PhaseSchedule(), time(10, 0))
    with pytest.raises(InvalidSchedule, match="no room"):
        schedule_for_close(PhaseSchedule(), time(0, 2))
