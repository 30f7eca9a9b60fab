"""What a graceful stop waits for once it has asked the positions to cancel the rest of their working entries
(catalyst.daemon._withdraw_working_entries; through the actors in tests/actors/test_stop_withdraws_entries.py, end
to end in tests/e2e/test_stop_with_a_working_entry.py)."""

from __future__ import annotations

from typing import Any

from actors.messages import WithdrawEntry
from actors.refs import BUSY
from catalyst.daemon import _entry_working, _Withdrawal, _withdrawal_bound_s
from tests.actors.conftest import RecordingActor


Told = RecordingActor  # a position actor that keeps what the stop tells it


def state(label="AAPL#p-1", entry_id=1, entry="partial_fill", qty="283", protected="283", flattening=None):
    return {"position": label, "entry": entry_id, "qty": qty, "protected": protected, "flattening": flattening,
            "orders": {entry_id: f"entry:{entry}", 2: "take_profit:accepted", 3: "stop_loss:accepted"}}


def looks(*rounds: list[tuple[Any, Any]], asked: set[str]) -> list[list[str]]:
    withdrawal = _Withdrawal(asked)
    return [withdrawal.look(states) for states in rounds]


def test_an_entry_is_working_until_its_order_has_ended():
    assert [_entry_working(state(entry=s)) for s in ("created", "submitted", "accepted", "partial_fill")] == [True] * 4
    assert [_entry_working(state(entry=s)) for s in ("filled", "cancelled", "rejected", "expired")] == [False] * 4


def test_a_position_is_waited_for_while_its_entry_works_then_until_what_it_bought_is_under_stops():
    actor = Told.start()
    try:
        asked = {actor.actor_urn}
        assert looks([(actor, state())], [(actor, state(entry="cancelled", qty="400"))],  # a last OCO on its way
                     [(actor, state(entry="cancelled", qty="400", protected="400"))], asked=asked) == [
            ["AAPL#p-1"], ["AAPL#p-1"], []]
        # Flattening (its stops cancelled for a market exit): nothing more to wait for here.
        assert looks([(actor, state())], [(actor, state(entry="cancelled", protected="0", flattening="15:55"))],
                     asked=asked) == [["AAPL#p-1"], []]
    finally:
        actor.stop()


def test_a_position_renamed_by_its_first_fill_is_still_waited_for():
    # From a review: asked while pending (AAPL#o-1), its entry filled 200 as the cancel was refused (AAPL#p-1, no
    # stop yet): matched by label, it counted as settled and the stop went on with the entry still filling.
    actor = Told.start()
    try:
        assert looks([(actor, state(label="AAPL#o-1", qty="0", protected="0"))],
                     [(actor, state(label="AAPL#p-1", entry="cancelled", qty="200", protected="0"))],
                     asked={actor.actor_urn}) == [["AAPL#o-1"], ["AAPL#p-1"]]
    finally:
        actor.stop()


def test_a_position_with_no_entry_working_is_not_waited_for_even_with_shares_bare():
    # From a review: a position kept overnight whose protection was refused held the stop for its whole bound, named
    # as "an entry still working" though nothing of it could fill.
    actor = Told.start()
    try:
        assert looks([(actor, state(entry="filled", protected="0"))], asked={actor.actor_urn}) == [[]]
    finally:
        actor.stop()


def test_an_actor_with_an_entry_working_not_asked_yet_is_asked_and_waited_for():
    # From a review: an actor rebuilt after a crash is a new actor, neither asked nor waited for.
    rebuilt = Told.start()
    try:
        assert looks([(rebuilt, state())], asked=set()) == [["AAPL#p-1"]]
        assert [type(message) for message in rebuilt.proxy().received().get()] == [WithdrawEntry]
    finally:
        rebuilt.stop()


def test_an_asked_actor_that_does_not_answer_is_waited_for_and_one_gone_is_not():
    actor = Told.start()
    try:
        assert looks([(actor, BUSY)], asked={actor.actor_urn}) == [["a position actor that does not answer"]]
        assert looks("the position supervisor (gone)", asked={actor.actor_urn}) == [[]]
    finally:
        actor.stop()


def test_the_wait_stays_inside_the_stops_own_bound():
    assert _withdrawal_bound_s(20.0) == 5.0
    assert _withdrawal_bound_s(8.0) == 2.0


def test_positions_without_an_entry_id_are_followed_each_by_its_own_actor():
    # From a review: a state without an entry id (None) gave every such position the key None, so one position's
    # entry seen working held up another's bare shares, which had no entry working at all.
    a, b = Told.start(), Told.start()
    try:
        assert looks([(a, state(entry_id=None)), (b, state("MSFT#p-2", entry_id=None, entry="filled", protected="0"))],
                     [(a, state(entry_id=None, entry="cancelled")),
                      (b, state("MSFT#p-2", entry_id=None, entry="filled", protected="0"))],
                     asked={a.actor_urn, b.actor_urn}) == [["AAPL#p-1"], []]
    finally:
        a.stop()
        b.stop()


def test_a_pending_position_whose_entry_is_not_yet_named_is_waited_for():
    actor = Told.start()
    try:
        pending = {"position": "AAPL#o-?", "entry": None, "status": "pending", "qty": "0", "protected": "0",
                   "flattening": None, "orders": {}}
        assert looks([(actor, pending)], asked={actor.actor_urn}) == [["AAPL#o-?"]]
    finally:
        actor.stop()


def test_shares_under_an_oco_the_broker_has_not_answered_are_not_yet_under_a_stop():
    # From an end-to-end review: in a broker outage a piece's OCO, created and on its way, counted as protection; the
    # stop ended without naming the 981 shares it left bare.
    actor = Told.start()
    try:
        on_its_way = {**state(entry="cancelled", qty="981"), "protected": "981", "protected_at_broker": "0"}
        assert looks([(actor, state())], [(actor, on_its_way)], asked={actor.actor_urn}) == [["AAPL#p-1"],
                                                                                            ["AAPL#p-1"]]
    finally:
        actor.stop()


class Busy(RecordingActor):
    """Stands in for the doctor: one message keeps it on a broker read that does not answer until `release`."""

    use_daemon_thread = True

    def __init__(self, release: Any) -> None:
        super().__init__()
        self.release = release

    def on_receive(self, message: Any) -> None:
        self.release.wait(30)


def test_a_part_busy_on_a_hung_broker_call_gets_its_share_of_the_bound_and_is_left_behind():
    """From a review: the doctor, busy on a broker read in an outage, held the stop 10 s, and the fixed quarters of
    the entries' wait and the workers' drain came after it: 24.4 s, past the 20 s bound (exit 1)."""
    import threading
    import time
    from types import SimpleNamespace

    from catalyst.daemon import Daemon
    from tests.actors.conftest import logged_lines

    release = threading.Event()
    doctor = Busy.start(release)
    doctor.tell("a pass")
    config = SimpleNamespace(daemon=SimpleNamespace(shutdown_timeout_s=8.0))
    daemon = Daemon(config, SimpleNamespace(), "sqlite+aiosqlite:///unused.db")  # type: ignore[arg-type]
    daemon.parts = [doctor]
    try:
        with logged_lines("catalyst.daemon", "INFO") as lines:
            started = time.monotonic()
            daemon.stop(graceful=True)
            took_s = time.monotonic() - started
        assert 1.9 <= took_s < 3.0, took_s  # a quarter of the 8 s bound, not 10 s
        assert lines[-1] == ("system stopping: Busy is still busy (a broker call, or the day's report?); left behind, as after a "
                             "kill: the next start's doctor pass reconciles what it was doing")
    finally:
        release.set()
        doctor.stop()


def test_each_step_of_the_stop_gets_its_cap_or_a_quarter_of_what_is_left():
    from catalyst.daemon import _StopBudget

    budget = _StopBudget(20.0)
    assert budget.share(10.0) == 5.0 and budget.share(3.0) == 3.0
    budget.deadline -= 19.0  # a second left
    assert budget.share(5.0) == 0.5  # never less than STOP_STEP_MIN_S
