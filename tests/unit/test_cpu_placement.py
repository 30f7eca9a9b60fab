"""daemon.cpu: every thread of the process on the CPUs the setting chooses (catalyst/cpu.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from catalyst import cpu
from catalyst.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_auto_is_the_last_cpu_the_process_may_use_and_all_is_every_one() -> None:
    assert cpu.chosen("auto", frozenset({0, 1, 2, 3})) == {3}
    assert cpu.chosen("auto", frozenset({2, 5})) == {5}
    assert cpu.chosen("all", frozenset({0, 1})) == {0, 1}
    assert cpu.chosen(1, frozenset({0, 1})) == {1}


def test_a_cpu_the_process_may_not_use_is_a_config_error_naming_the_key_and_the_cpus_it_may() -> None:
    with pytest.raises(ConfigError) as caught:
        cpu.chosen(7, frozenset({0, 1, 2, 4}))
    assert str(caught.value) == "daemon.cpu = 7: this process may only use CPU 0-2,4"
    assert caught.value.exit_code == 2


PROBE = """
import json, os, threading, time
from catalyst import cpu
started = threading.Event()
def idle():
    started.set()
    time.sleep(30)
before = threading.Thread(target=idle, daemon=True)
before.start(); started.wait()
said = cpu.apply({setting!r})
after = threading.Thread(target=idle, daemon=True)
after.start()
print(json.dumps({{"said": said, "allowed": sorted(cpu.allowed_at_start()),
                  "main": sorted(os.sched_getaffinity(0)),
                  "before": sorted(os.sched_getaffinity(before.native_id)),
                  "after": sorted(os.sched_getaffinity(after.native_id))}}))
"""


def placement(setting: object) -> dict[str, object]:
    """In a child process: pinning the test runner would slow every test after this one."""
    done = subprocess.run([sys.executable, "-c", PROBE.format(setting=setting)], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.skipif(not cpu.supported(), reason="thread CPU affinity is Linux's")
def test_auto_puts_threads_already_running_and_threads_started_later_on_one_cpu() -> None:
    seen = placement("auto")
    last = [max(seen["allowed"])]  # type: ignore[type-var]
    assert seen["main"] == seen["before"] == seen["after"] == last
    expected = (f"pinned to CPU {last[0]} of" if len(seen["allowed"]) > 1 else f"on CPU {last[0]} ")  # type: ignore[arg-type]
    assert str(seen["said"]).startswith(expected) and "(daemon.cpu = auto)" in str(seen["said"])


@pytest.mark.skipif(not cpu.supported(), reason="thread CPU affinity is Linux's")
def test_all_leaves_every_thread_on_every_cpu_the_process_may_use() -> None:
    seen = placement("all")
    assert seen["main"] == seen["before"] == seen["after"] == seen["allowed"]
