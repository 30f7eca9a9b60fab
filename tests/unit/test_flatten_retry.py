"""A flatten the conductor asked for and found undone (the market exit failed, the shares back under their stops) is
asked for again after growing waits while the market is open, then left to a human: never a loop."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from catalyst.domain.cycle import (
    FLATTEN_RETRY_WAITS, FlattenStep, PhaseSchedule, market_open, undone_flatten,
)

NEW_YORK = ZoneInfo("America/New_York")
T0 = datetime(2024, 3, 4, 15, 55, 30, tzinfo=NEW_YORK)


def test_first_seen_undone_it_waits_thirty_seconds_before_the_first_retry():
    retry, step = undone_flatten(None, T0)
    assert step is FlattenStep.NOTED and retry.due_at == T0 + timedelta(seconds=30) and retry.attempts == 0

    assert undone_flatten(retry, T0 + timedelta(seconds=29))[1] is FlattenStep.WAIT
    again, step = undone_flatten(retry, T0 + timedelta(seconds=30))
    assert step is FlattenStep.RETRY and again.attempts == 1 and again.due_at == T0 + timedelta(seconds=90)


def test_the_waits_double_and_after_the_last_the_flatten_is_given_up_once():
    retry, _ = undone_flatten(None, T0)
    now, steps, gaps = T0, [], []
    while True:
        now = retry.due_at
        before = retry
        retry, step = undone_flatten(retry, now)
        steps.append(step)
        if step is FlattenStep.GIVE_UP:
            break
        gaps.append(retry.due_at - before.due_at)
    assert steps == [FlattenStep.RETRY] * len(FLATTEN_RETRY_WAITS) + [FlattenStep.GIVE_UP]
    assert gaps == [timedelta(minutes=m) for m in (1, 2, 4, 8, 8)]
    assert retry.given_up
    # given up: nothing more, ever
    assert undone_flatten(retry, now + timedelta(hours=1)) == (retry, FlattenStep.WAIT)


def test_the_market_is_open_from_the_bell_to_the_close_only():
    schedule = PhaseSchedule()
    day = T0.replace(hour=0, minute=0, second=0)
    assert not market_open(schedule, day.replace(hour=9, minute=29, second=59))
    assert market_open(schedule, day.replace(hour=9, minute=30))
    assert market_open(schedule, day.replace(hour=15, minute=59, second=59))
    assert not market_open(schedule, day.replace(hour=16))
