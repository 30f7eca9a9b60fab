"""A stop (TERM or INT) asked before the daemon is up, remembered for the process.

The signal handler raises StopDuringStartup in the main thread wherever start-up is, to unwind it. But Python
discards an exception raised inside a garbage-collection or weakref callback (SQLAlchemy's, say): it printed
"Exception ignored in ..." with a traceback, and start-up ran on to the end, its doctor pass and first entries
included, every later TERM ignored as "already stopping", a broker wait (up to broker.startup_wait_s) too (a review).
So the stop is also kept here, start-up's steps check it (`checkpoint`) and its waits end on it (`pause`).

Plain module variables, no lock and no threading.Event: the handlers run on the main thread between two of its
bytecodes, and one taking a lock the interrupted code holds (an Event's, inside its own `wait`) waits forever."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from catalyst.errors import StopDuringStartup

PAUSE_STEP_S = 0.1  # how soon a start-up wait sees a stop

_asked: str | None = None
_leaving = False
_held = False


def ask(name: str) -> None:
    global _asked
    _asked = name


def first(name: str) -> bool:
    """For the start-up handlers: True, the stop `name` kept, if it is the first asked and the exit is not already
    being said; a second must not interrupt the unwinding, nor one the line saying why the process exits (a
    traceback, exit 1)."""
    if _asked is not None or _leaving:
        return False
    ask(name)
    return True


def leaving() -> None:
    """The process is saying why it exits: a TERM from now on must not interrupt that (a traceback, exit 1)."""
    global _leaving
    _leaving = True


def forget() -> None:
    """A new start in this process (a test's daemon after another's): no stop asked yet, not leaving."""
    global _asked, _leaving, _held
    _asked, _leaving, _held = None, False, False


def asked() -> str | None:
    return _asked


def carried_by(error: BaseException) -> StopDuringStartup | None:
    """The stop asked during start-up that `error` is, or carries: a library whose code the handler's exception
    interrupted may wrap it in an error of its own. pydantic-core building a model's schema when a TERM landed (the
    modules loading) turned it into `SchemaError: ... validator: StopDuringStartup: SIGTERM`, text only, and the
    daemon said "internal error" and exited 1 (CI), its emergency marker not kept. None for any other error, and for
    every error when no stop was asked (a genuine failure is never taken for a stop)."""
    if isinstance(error, StopDuringStartup):
        return error
    if _asked is None:
        return None
    seen: BaseException | None = error
    for _ in range(32):  # a chain of causes is short; never loop on a strange one
        if seen is None:
            return None
        if isinstance(seen, StopDuringStartup) or f"{StopDuringStartup.__name__}: " in str(seen):
            return StopDuringStartup(_asked)
        seen = seen.__cause__ or seen.__context__
    return None


def held() -> bool:
    """True while a stop must be kept, not raised: the daemon's modules are being imported (`while_importing`)."""
    return _held


@contextmanager
def while_importing() -> Iterator[None]:
    """The daemon's modules imported with a stop asked meanwhile kept, then raised once they are in. An exception
    raised inside an import leaves half-made modules behind (Python drops the module it interrupted, not the
    packages that had imported part of it): the start's cleanup, which imports the daemon's module again to keep an
    emergency asked before the stop, then failed on them (`AttributeError: module 'sqlalchemy.sql' has no attribute
    'base'`, exit 1, the emergency lost: CI). Held at most as long as the import takes (under a second)."""
    global _held
    _held = True
    try:
        yield
    finally:
        _held = False
    checkpoint()


def checkpoint() -> None:
    """Between start-up's steps: unwind it now if a stop was asked and its exception did not get through."""
    if _asked is not None:
        raise StopDuringStartup(_asked)


def pause(seconds: float) -> None:
    """A start-up wait (tenacity's `sleep`) that a stop ends within PAUSE_STEP_S."""
    deadline = time.monotonic() + seconds
    while True:
        checkpoint()
        left = deadline - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(left, PAUSE_STEP_S))


def keep_discarded_stops_quiet() -> None:
    """A StopDuringStartup Python had to discard (see above) prints nothing: the next checkpoint carries the stop.
    Anything else discarded goes to the hook there was before (Python's, or pytest's)."""
    if getattr(sys.unraisablehook, "keeps_stops_quiet", False):
        return
    before = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        if not isinstance(unraisable.exc_value, StopDuringStartup):
            before(unraisable)

    hook.keeps_stops_quiet = True  # type: ignore[attr-defined]
    sys.unraisablehook = hook
