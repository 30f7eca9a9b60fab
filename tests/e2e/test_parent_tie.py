"""A harness killed from outside (a timeout's SIGKILL: no `finally` runs) leaves no exchange or daemon running.

The harnesses (this suite's fixtures, the chaos harness) start `catalyst` in sessions of their own with
CATALYST_EXIT_WITH_PARENT set; before it, two such orphans outlived a killed CI run, holding ports and CPU.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from catalyst.parent_tie import ENV, follow_parent_from_environment

# A stand-in harness: starts one `catalyst` command as the real ones do (its own session, output to files), from its
# main thread, tied to it or not, says the child's pid, and waits to be killed.
HARNESS = """
import os, subprocess, sys, time
from catalyst.parent_tie import tied
folder, tie, args = sys.argv[1], sys.argv[2] == "tied", sys.argv[3:]
env = {k: v for k, v in os.environ.items() if not k.startswith(("APCA_", "CATALYST_"))}
with open(f"{folder}/child.out", "wb") as out, open(f"{folder}/child.err", "wb") as err:
    child = subprocess.Popen([sys.executable, "-m", "catalyst.cli", *args], stdout=out, stderr=err, cwd=folder,
                             env=tied(env) if tie else env, stdin=subprocess.DEVNULL, start_new_session=True)
print(child.pid, flush=True)
time.sleep(600)
"""


def alive(pid: int) -> bool:
    """Running, not a zombie: an orphan is reaped by whoever adopts it, which in a container may be nobody."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def harness_with(folder: Path, tie: str, *args: str) -> tuple[subprocess.Popen, int]:
    harness = subprocess.Popen([sys.executable, "-c", HARNESS, str(folder), tie, *args], stdout=subprocess.PIPE,
                               text=True)
    assert harness.stdout is not None
    return harness, int(harness.stdout.readline())


def kill_harness(harness: subprocess.Popen) -> None:
    harness.kill()
    harness.wait(timeout=10)


@pytest.fixture
def orphans():
    """Whatever a test leaves running is killed at its end."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a parent-death signal is Linux's")


@pytest.mark.parametrize("tie", ["tied", "untied"])
def test_an_exchange_stops_when_the_harness_that_started_it_is_killed_and_only_if_tied(tmp_path, orphans, tie, e2e):
    harness, pid = harness_with(tmp_path, tie, "exchange", "--port", "0", "--speed", "60")
    orphans.append(pid)
    e2e.wait_until(lambda: "ready at" in (tmp_path / "child.out").read_text(), 60, "the exchange's ready line")

    kill_harness(harness)

    if tie == "tied":
        e2e.wait_until(lambda: not alive(pid), 15, f"the exchange (pid {pid}) to stop after its harness was killed")
    else:  # the control: without the tie nothing stops it, which is what the test above would see if it broke
        time.sleep(2)
        assert alive(pid)


def test_a_daemon_whose_harness_is_killed_stops_gracefully_as_on_sigterm(tmp_path, orphans, spawner, e2e):
    exchange = e2e.start_exchange(spawner)
    config = e2e.write_config(tmp_path / "daemon")
    harness, pid = harness_with(tmp_path / "daemon", "tied", "run", "--config", str(config), "--broker-url",
                                exchange.url)
    orphans.append(pid)
    err = tmp_path / "daemon" / "child.err"
    e2e.wait_until(lambda: re.search(r"doctor pass #1 \(start-up\)", err.read_text()), 60, "the daemon's start-up pass")

    kill_harness(harness)

    e2e.wait_until(lambda: not alive(pid), 30, f"the daemon (pid {pid}) to stop after its harness was killed")
    said = err.read_text()
    assert "SIGTERM: graceful stop" in said, said[-3000:]
    assert "system exiting with code 0" in said or "system stopped cleanly" in said, said[-3000:]


def test_the_tie_is_refused_in_one_line_when_its_value_is_not_a_process_id(monkeypatch):
    monkeypatch.setenv(ENV, "me")

    assert follow_parent_from_environment() == f"{ENV}='me' is not a process id: ignored"


FOLLOW = "import time; from catalyst.parent_tie import follow_parent_from_environment as f; print(f()); time.sleep(3)"


def test_a_child_whose_harness_died_before_it_was_tied_stops_at_once():
    # The harness gone before the tie was armed: the parent is then another process, and the signal would never come.
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait(timeout=20)
    done = subprocess.run([sys.executable, "-c", FOLLOW], env={**os.environ, ENV: str(gone.pid)}, timeout=20)

    assert done.returncode == -signal.SIGTERM


def test_a_tie_inherited_through_a_process_in_between_is_ignored_in_one_line():
    # A supervisord a test started passes its environment on: the daemon's parent is supervisord, not the harness,
    # and must run (supervisord stops its children itself). The first version stopped it at once.
    done = subprocess.run([sys.executable, "-c", FOLLOW], env={**os.environ, ENV: "1"}, capture_output=True,
                          text=True, timeout=20)

    assert done.returncode == 0
    assert done.stdout.strip() == f"{ENV}=1 names a process that is not this one's parent: ignored"
