"""Telling a position actor that may have stopped a moment ago."""

from __future__ import annotations

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
