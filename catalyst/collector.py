"""Python's cyclic garbage collector, set for a daemon whose every thread waits on the same interpreter lock.

Why: a collection runs on whichever thread happens to allocate, holding the GIL, so it stalls every actor at once:
fill routing, protection, the writer. Measured during 100-fill bursts with Python's defaults (docs/BENCHMARKS.md):
20-29 young collections a burst (8.5-27 ms in all), and in 2 bursts of 16 a full collection of 102-113 ms, as it
scans every object the process ever made: the imported libraries, the actor system, a simulation's exchange.
Nearly all of those live as long as the process, so scanning them again and again finds nothing.

After start-up, `settle` collects once, then freezes what is left (`gc.freeze`): those objects are never scanned
again, and a full collection only walks what was made since. It also raises the young generation's threshold from
700 to YOUNG_THRESHOLD allocations: the same garbage is found, about fourteen times less often, for a pause of a
few milliseconds. Reference counting frees everything that is not a cycle as before; only cycles wait a little
longer, and there are few (a burst of 100 fills made 0-1 young collection instead of 20-29).
What it buys is the absence of those pauses, not a faster burst: bursts taken in turns with Python's defaults
were within the noise of each other (median 0.445 s against 0.460 s, docs/BENCHMARKS.md).
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 10_000  # allocations between young collections (Python's default: 700)
PYTHON_DEFAULTS = (700, 10, 10)


def settle(young_threshold: int = YOUNG_THRESHOLD) -> str:
    """Freeze what start-up made and space out young collections; returns the line the daemon logs."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(young_threshold, middle, old)
    return (f"gc: {gc.get_freeze_count():,} start-up objects frozen out of collection, young collections every "
            f"{young_threshold:,} allocations (Python's default {PYTHON_DEFAULTS[0]})")


def restore() -> None:
    """Python's own settings again (a benchmark harness that starts several systems in one process)."""
    gc.unfreeze()
    gc.set_threshold(*PYTHON_DEFAULTS)
