"""daemon.cpu: every thread of the process on the CPUs the setting chooses (catalyst/cpu.py)."""

from __future__ import annotations

import json
import os
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
said = str(cpu.apply({setting!r}))
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


def test_a_system_that_refuses_the_call_leaves_the_daemon_running_unpinned_and_says_so(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(cpu.os, "sched_setaffinity", refuse)
    monkeypatch.setattr(cpu, "supported", lambda: True)
    monkeypatch.setattr(cpu, "allowed_at_start", lambda: frozenset({0, 1}))
    monkeypatch.setattr(cpu.os, "listdir", lambda _: ["1"])

    placement = cpu.apply("auto")

    assert str(placement) == ("on every CPU it may use, 0-1: CPU placement refused by the system "
                              "(Operation not permitted; daemon.cpu = auto)")
    assert not placement.as_asked  # the daemon logs it as a warning


@pytest.mark.skipif(not cpu.supported(), reason="thread CPU affinity is Linux's")
def test_a_cpu_the_machine_does_not_offer_stops_the_daemon_before_it_starts_with_exit_2(tmp_path: Path) -> None:
    beyond = max(cpu.allowed_at_start()) + 1
    env = {k: v for k, v in os.environ.items() if not k.startswith(("APCA_", "CATALYST_"))}
    env["CATALYST_DAEMON__CPU"] = str(beyond)
    (tmp_path / "config.toml").write_text((ROOT / "config.toml").read_text())
    done = subprocess.run([sys.executable, "-m", "catalyst.cli", "sim", "--days", "1", "--config",
                           str(tmp_path / "config.toml")], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)

    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        f"catalyst: error: daemon.cpu = {beyond}: this process may only use CPU {cpu._spans(cpu.allowed_at_start())}")
    assert "Traceback" not in done.stderr and not (tmp_path / "var" / "sim.db").exists()  # nothing started
