"""A rebuilt position waiting to hear what became of an order replaced before a restart asks the router (a broker read
each time) every 5 s for a minute, then less and less often, at most once a minute: a broker that cannot answer for
an hour spent 720 reads of the account's 200 a minute on it, and now about 70."""

from __future__ import annotations

from actors.position import replacement_ask_wait_s


def test_the_first_minute_of_asks_comes_every_5_s_then_the_waits_double_up_to_a_minute() -> None:
    waits = [replacement_ask_wait_s(asks) for asks in range(1, 20)]

    assert waits[:12] == [5.0] * 12
    assert waits[12:17] == [10.0, 20.0, 40.0, 60.0, 60.0]
    assert max(waits) == 60.0


def test_an_hour_without_an_answer_costs_about_70_reads_not_720() -> None:
    asks, elapsed = 0, 0.0
    while elapsed < 3600.0:
        asks += 1
        elapsed += replacement_ask_wait_s(asks)
    assert 65 <= asks <= 75
