"""catalyst.collector: start-up objects frozen out of garbage collection, young collections spaced out."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# In a child process: freezing the test runner's own heap would change every test that runs after this one.
PROBE = """
import gc, json
from catalyst import collector

class Node:
    def __init__(self):
        self.me = self  # a cycle: only the collector can free it

before = [Node() for _ in range(50_000)]  # start-up objects that live as long as the process
line = collector.settle()
settled = {"line": line, "frozen": gc.get_freeze_count(), "threshold": gc.get_threshold()}

# After settling, a collection only walks what was made since (the frozen are in no generation).
settled["walked"] = len(gc.get_objects())

# Garbage cycles made after start-up are still found.
import weakref
probe = Node(); alive = weakref.ref(probe); del probe
gc.collect()
settled["cycle_freed"] = alive() is None

collector.restore()
print(json.dumps({**settled, "restored_frozen": gc.get_freeze_count(), "restored_threshold": gc.get_threshold(),
                  "restored_walked": len(gc.get_objects())}))
"""


def test_settle_freezes_start_up_objects_spaces_young_collections_and_still_frees_new_cycles() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["frozen"] >= 50_000  # the start-up objects (and the interpreter's own) are out of collection
    assert seen["threshold"][0] == 10_000
    assert seen["line"].startswith(f"gc: {seen['frozen']:,} start-up objects frozen out of collection")
    assert seen["cycle_freed"] is True
    assert seen["walked"] < 5_000  # what a full collection walks now: not the 50,000 start-up objects
    assert seen["restored_frozen"] == 0 and seen["restored_threshold"] == [700, 10, 10]
    assert seen["restored_walked"] > 50_000
