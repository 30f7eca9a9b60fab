"""A cycle step that waits on a busy actor fails with a line naming the actor, not pykka's bare `Timeout: 30 seconds`."""

from __future__ import annotations

import threading

import pykka
import pytest

from catalyst.hooks import answer_of


class Held(pykka.ThreadingActor):
    def hold(self, until: threading.Event) -> None:
        until.wait(10)

    def entries_allowed(self) -> bool:
        return True


def test_a_busy_actor_is_named_in_the_timeout():
    free = threading.Event()
    doctor = Held.start().proxy()
    doctor.hold(free)
    try:
        with pytest.raises(pykka.Timeout) as timed_out:
            answer_of("doctor", doctor.entries_allowed(), 0.2)
    finally:
        free.set()
    assert str(timed_out.value) == "the doctor did not answer within 0.2 s (busy: a broker call that hangs, a long pass)"
    assert answer_of("doctor", doctor.entries_allowed(), 5) is True
