"""Telling an actor that may have stopped a moment ago, now or after a delay."""

from __future__ import annotations

import threading
from typing import Any

import pykka


def tell_if_alive(ref: Any, message: Any) -> bool:
    """Tell `ref`; False if its actor has stopped. A position actor stops as soon as its position is done (or
    crashes, to be rebuilt from the database), so a reference listed an instant ago may be dead by the time it is
    told: that is a position with nothing left to do, never an error that may stop the caller."""
    try:
        ref.tell(message)
    except pykka.ActorDeadError:
        return False
    return True


def tell_later(ref: Any, delay_s: float, message: Any) -> threading.Timer:
    """Tell `ref` after `delay_s` wall seconds, if its actor is still alive then (an actor's own ticks, grace
    periods and rechecks). A daemon timer, so a pending one never holds the process open; cancel it to call it off."""
    timer = threading.Timer(delay_s, tell_if_alive, args=(ref, message))
    timer.daemon = True
    timer.start()
    return timer
