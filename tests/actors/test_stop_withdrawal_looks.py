"""The graceful stop's looks at the positions it asked to withdraw their entry: cases from a review of their first
version.

Fake position actors and supervisor, as in tests/actors/test_stop_withdraws_entries.py."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pykka

from tests.actors.conftest import logged_lines
from tests.actors.test_stop_withdraws_entries import Supervisor, stopping_daemon


class Position(pykka.ThreadingActor):
    def __init__(self, label: str, entry: str | None, qty: str = "100", protected: str = "100",
                 work_s: float = 0.0) -> None:
        super().__init__()
        self.label, self.entry, self.qty, self.protected, self.work_s, self.told = (label, entry, qty, protected,
                                                                                   work_s, [])

    def state(self):
        time.sleep(self.work_s)
        return {"position": self.label, "entry": 1 if self.entry else None, "status": "open", "qty": self.qty,
                "protected": self.protected, "flattening": None,
                "orders": {1: f"entry:{self.entry}"} if self.entry else {}}

    def on_receive(self, message):
        self.told.append(type(message).__name__)


class Changing(Supervisor):
    """A supervisor whose live positions change after the first listing (a crashed actor rebuilt)."""

    def __init__(self, first, then):
        super().__init__(first)
        self.then, self.calls = then, 0

    def live_refs(self):
        self.calls += 1
        return self.refs if self.calls == 1 else self.then


def test_the_last_look_names_the_position_not_a_busy_actor():
    """The entry's cancel is lost: the stop waits its bound and names the position. A review found the look after
    the last sleep clamped to 1 ms, so the warning named a busy actor instead of AAPL#p-1; a look waits 0.2 s at
    least."""
    names = []
    for _ in range(5):
        ref = Position.start("AAPL#p-1", "partial_fill", work_s=0.002)  # answers in 2 ms: an idle actor
        sup = Supervisor.start([ref])
        try:
            with logged_lines("catalyst.daemon", "INFO") as lines:
                stopping_daemon(2.0)._withdraw_working_entries(SimpleNamespace(supervisor=sup.proxy()))
            names.append(next(line for line in lines if line.startswith("system stopping with")))
        finally:
            ref.stop()
            sup.stop()
    wrong = [n for n in names if "AAPL#p-1" not in n]
    assert not wrong, f"{len(wrong)} of {len(names)} final warnings do not name the position: {wrong[0]!r}"


def test_a_position_with_no_entry_working_does_not_hold_up_the_stop():
    """An open position with no entry working whose shares are not all under a stop (its protection refused
    overnight and retried later, a stop cancelled by hand): nothing of it can fill while the daemon is down, so the
    stop does not wait for it (a review found it held for the whole bound and named as an entry still working)."""
    ref = Position.start("AAPL#p-1", entry=None, qty="100", protected="0")
    sup = Supervisor.start([ref])
    try:
        with logged_lines("catalyst.daemon", "INFO") as lines:
            started = time.monotonic()
            stopping_daemon(20.0)._withdraw_working_entries(SimpleNamespace(supervisor=sup.proxy()))
            took = time.monotonic() - started
    finally:
        ref.stop()
        sup.stop()
    assert took < 1.0 and not lines, f"waited {took:.1f} s: {lines}"


def test_an_actor_rebuilt_after_a_crash_with_its_entry_working_is_asked_and_waited_for():
    """Told, then crashed and rebuilt by the supervisor (a new actor, the same position, its entry still working at
    the broker): it is asked too, and waited for (a review found it, a new actor, neither asked nor waited for, the
    stop saying every working entry had ended)."""
    crashed = Position.start("AAPL#p-1", "partial_fill", qty="200", protected="200")
    rebuilt = Position.start("AAPL#p-1", "partial_fill", qty="200", protected="200")
    sup = Changing.start([crashed], [rebuilt])
    try:
        with logged_lines("catalyst.daemon", "INFO") as lines:
            stopping_daemon(20.0)._withdraw_working_entries(SimpleNamespace(supervisor=sup.proxy()))
        told_rebuilt = rebuilt.proxy().told.get()
    finally:
        for r in (crashed, rebuilt, sup):
            r.stop()
    assert "WithdrawEntry" in told_rebuilt or any("AAPL#p-1" in line for line in lines
                                                  if line.startswith("system stopping with")), (told_rebuilt, lines)
