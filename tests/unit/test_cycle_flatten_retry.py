"""The conductor's tries at a flatten found undone, against position stand-ins: each one that is open and no longer
flattening is flattened again on the domain's waits, said once when first seen and once when given up; a position
still flattening, or of a day not flattened, is left alone; carried positions are tried again under their own
reason; nothing happens once the market has closed."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from types import SimpleNamespace
from typing import Any

from loguru import logger

from actors import messages as m
from actors.cycle import CycleActor, DayState
from catalyst.domain.cycle import FLATTEN_RETRY_WAITS, CyclePhase
from catalyst.sim.market import EXCHANGE_TZ
from tests.unit.test_cycle_busy_position import PositionStandIn

DAY = date(2026, 3, 3)
MIDDAY = datetime(2026, 3, 3, 11, 0, tzinfo=EXCHANGE_TZ)


def conductor_of(*positions: Any) -> Any:
    supervisor = SimpleNamespace(live_refs=lambda: SimpleNamespace(get=lambda: list(positions)),
                                 live_count=lambda: SimpleNamespace(get=lambda: len(positions)))
    return SimpleNamespace(system=SimpleNamespace(supervisor=supervisor), clock=SimpleNamespace(now=lambda: MIDDAY))


def stand_in(label: str, cycle_id: int = 2, flattening: str | None = None) -> Any:
    return PositionStandIn.start({"position": label, "cycle_id": cycle_id, "status": "open",
                                  "flattening": flattening})


def flattens(ref: Any) -> list[str]:
    return [t.reason for t in ref.proxy().received().get(timeout=5) if isinstance(t, m.Flatten)]


def ticks(conductor: Any, day: DayState, start: datetime, every: timedelta, count: int) -> datetime:
    now = start
    for _ in range(count):
        CycleActor._retry_undone_flattens(conductor, day, now)  # type: ignore[arg-type]
        now += every
    return now


def test_an_undone_flatten_is_tried_on_the_waits_then_given_up_with_one_error_line():
    undone, still_flattening = stand_in("KERB#p-3"), stand_in("COBS#p-4", flattening="emergency: test")
    day = DayState(DAY, 2, CyclePhase.CLOSED, flattened=True, flatten_reason="emergency: test")
    lines: list[tuple[str, str]] = []
    sink = logger.add(lambda message: lines.append((message.record["level"].name, message.record["message"])),
                      level="INFO")
    try:
        # ticks of 10 s for 30 minutes: through every wait (23.5 minutes in all), the market open throughout
        ticks(conductor_of(undone, still_flattening), day, MIDDAY, timedelta(seconds=10), 180)
        told, untouched = flattens(undone), flattens(still_flattening)
    finally:
        logger.remove(sink)
        undone.stop(), still_flattening.stop()
    assert told == [f"emergency: test; again, try {n} of {len(FLATTEN_RETRY_WAITS)}" for n in range(1, 6)]
    assert untouched == []
    assert lines == [
        ("WARNING", "cycle 2026-03-03 position KERB#p-3 still open after its flatten (emergency: test): its market "
                    "exit failed; flattening it again at 11:00:30 (up to 5 tries while the market is open)"),
        ("ERROR", "cycle 2026-03-03 position KERB#p-3 still open after 5 more flattens (emergency: test): left "
                  "under its stops; flatten it by hand at the broker"),
    ]


def test_a_carried_position_is_tried_again_under_its_own_reason_and_todays_are_left_alone():
    carried, todays = stand_in("KERB#p-3", cycle_id=1), stand_in("COBS#p-4", cycle_id=2)
    day = DayState(DAY, 2, CyclePhase.TRADING, carried={"KERB#p-3": "carried over from an earlier day (KERB#p-3)"})
    try:
        ticks(conductor_of(carried, todays), day, MIDDAY.replace(hour=9, minute=40), timedelta(seconds=30), 3)
        told, untouched = flattens(carried), flattens(todays)
    finally:
        carried.stop(), todays.stop()
    assert told == ["carried over from an earlier day (KERB#p-3); again, try 1 of 5"]
    assert untouched == []


def test_nothing_is_flattened_again_once_the_market_has_closed():
    undone = stand_in("KERB#p-3")
    day = DayState(DAY, 2, CyclePhase.MONITORING, flattened=True, flatten_reason="end of day")
    try:
        # 15:59:00 first seen, due 15:59:30; then ticks every 30 s: 15:59:30 tries, 16:00 and after do not
        ticks(conductor_of(undone), day, MIDDAY.replace(hour=15, minute=59), timedelta(seconds=30), 2)
        ticks(conductor_of(undone), day, MIDDAY.replace(hour=16), timedelta(minutes=5), 6)
        told = flattens(undone)
    finally:
        undone.stop()
    assert told == ["end of day; again, try 1 of 5"]


def test_an_emergency_stop_after_the_day_completed_is_asked_for_again_too():
    # The day completed early (an earlier emergency stop, or the report written), the market still open: a new
    # emergency stop flattens "anyway", and one whose exit fails is tried again like any other.
    undone = stand_in("KERB#p-3")
    conductor = conductor_of(undone)
    conductor.today = DayState(DAY, 2, CyclePhase.COMPLETED)
    try:
        CycleActor._emergency(conductor, "operator: catalyst stop --emergency")  # type: ignore[arg-type]
        ticks(conductor, conductor.today, MIDDAY, timedelta(seconds=30), 2)
        told = flattens(undone)
    finally:
        undone.stop()
    assert told == ["emergency: operator: catalyst stop --emergency",
                    "emergency: operator: catalyst stop --emergency; again, try 1 of 5"]


def test_an_emergency_stop_on_a_weekend_keeps_the_stops_even_at_midday():
    # `today` is still the last trading day (Tuesday, completed) and 11:00 is inside its session's hours: taken for
    # an open market, the stops were cancelled and market exits queued until Monday.
    held = stand_in("KERB#p-3")
    conductor = conductor_of(held)
    conductor.today = DayState(DAY, 2, CyclePhase.COMPLETED)
    conductor.clock = SimpleNamespace(now=lambda: MIDDAY + timedelta(days=4))  # Saturday 11:00
    try:
        CycleActor._emergency(conductor, "operator: catalyst stop --emergency")  # type: ignore[arg-type]
        told = flattens(held)
    finally:
        held.stop()
    assert told == []  # Monday's open flattens what earlier days left
