"""A stop (TERM or INT) asked before the daemon is up, remembered for the process.

The signal handler raises StopDuringStartup in the main thread wherever start-up is, to unwind it. But Python
discards an exception raised inside a garbage-collection or weakref callback (SQLAlchemy's, say): it printed
"Exception ignored in ..." with a traceback, and start-up ran on to the end, its doctor pass and first entries
included, every later TERM ignored as "already stopping", a broker wait (up to broker.startup_wait_s) too (a review).
So the stop is also kept here, start-up's steps check it (`checkpoint`) and its waits end on it (`pause`)."""

from __future__ import annotations

import sys
import threading
from typing import Any

from catalyst.errors import StopDuringStartup

_asked: str | None = None
_event = threading.Event()


def ask(name: str) -> None:
    """Called by the signal handlers (so: no lock, no log line)."""
    global _asked
    _asked = name
    _event.set()


def forget() -> None:
    """A new start in this process (a test's daemon after another's): no stop asked yet."""
    global _asked
    _asked = None
    _event.clear()


def asked() -> str | None:
    return _asked


def checkpoint() -> None:
    """Between start-up's steps: unwind it now if a stop was asked and its exception did not get through."""
    if _asked is not None:
        raise StopDuringStartup(_asked)


def pause(seconds: float) -> None:
    """A start-up wait (tenacity's `sleep`) that a stop ends at once."""
    if _event.wait(seconds):
        checkpoint()


def keep_discarded_stops_quiet() -> None:
    """A StopDuringStartup Python had to discard (see above) prints nothing: the next checkpoint carries the stop.
    Anything else discarded is printed as Python would."""
    default = sys.__unraisablehook__

    def hook(unraisable: Any) -> None:
        if not isinstance(unraisable.exc_value, StopDuringStartup):
            default(unraisable)

    sys.unraisablehook = hook
