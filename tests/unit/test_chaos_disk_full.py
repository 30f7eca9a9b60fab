"""`python -m chaos --disk-full N`: restarts on a disk that fills up. The cap really stops a write (RLIMIT_FSIZE set
on the started process), a daemon that stops by itself counts only when it was capped, exited 3 and said the storage
fault's line (the daemon's own text), and the restarts chosen leave a seed's kill moments as they were."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

from catalyst.daemon import Daemon
from chaos.__main__ import STORAGE_FAULT_LINE, ChaosSettings, RunResult, disk_full_restarts, kill_moments, \
    stopped_by_itself
from chaos.harness import COMMAND_ENV, DaemonProcess

# Stands in for `catalyst run`: writes past any cap it was given, then says what it met the way the daemon does.
FAKE_DAEMON = r'''
import sys, time
time.sleep(0.3)  # the harness caps a started process from outside
try:
    with open("big.bin", "wb") as out:
        out.write(b"x" * 200_000)
        out.flush()
    print("catalyst: error: wrote it all", file=sys.stderr)
    sys.exit(int(sys.argv[1]))
except OSError as exc:
    print(f"catalyst: error: {sys.argv[2]}", file=sys.stderr)
    sys.exit(3)
'''


def daemon_text() -> str:
    daemon = Daemon.__new__(Daemon)
    daemon.database_url = "sqlite+aiosqlite:////var/catalyst.db"
    return "catalyst: error: " + daemon._storage_failed("disk I/O error")


def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exit_code: int, said: str) -> DaemonProcess:
    script = tmp_path / "fake_daemon.py"
    script.write_text(FAKE_DAEMON, encoding="utf-8")
    monkeypatch.setenv(COMMAND_ENV, f"{sys.executable} {script} {exit_code} '{said}'")
    return DaemonProcess(tmp_path / "daemon", "http://127.0.0.1:9")


def finished(daemon: DaemonProcess) -> None:
    assert daemon.process is not None
    daemon.process.wait(timeout=30)


def test_the_storage_fault_line_is_the_daemons_own():
    assert STORAGE_FAULT_LINE.search(daemon_text())
    assert not STORAGE_FAULT_LINE.search("catalyst: error: the broker refused the keys")


def test_a_capped_start_whose_write_is_refused_stops_by_itself_and_counts(tmp_path, monkeypatch):
    daemon = fake(tmp_path, monkeypatch, 0, daemon_text()[len("catalyst: error: "):])
    daemon.start(wait_ready=False, file_size_cap=50_000)
    finished(daemon)
    result = RunResult(seed=1)

    assert stopped_by_itself(daemon, result)
    assert (result.disk_full_stops, result.violations) == (1, [])
    assert (tmp_path / "daemon" / "big.bin").stat().st_size <= 50_000
    assert not daemon.running and daemon.exit_codes == [3]


def test_without_a_cap_the_same_write_goes_through(tmp_path, monkeypatch):
    daemon = fake(tmp_path, monkeypatch, 0, "unused")
    daemon.start(wait_ready=False)
    finished(daemon)
    result = RunResult(seed=1)

    assert stopped_by_itself(daemon, result)  # it exited 0 on its own: not the harness's doing
    assert (tmp_path / "daemon" / "big.bin").stat().st_size == 200_000
    assert [v.kind for v in result.violations] == ["exit"] and result.disk_full_stops == 0
    assert "exit 0: catalyst: error: wrote it all" in result.violations[0].detail


def test_a_storage_exit_without_its_line_is_a_violation(tmp_path, monkeypatch):
    daemon = fake(tmp_path, monkeypatch, 0, "something else went wrong")
    daemon.start(wait_ready=False, file_size_cap=50_000)
    finished(daemon)
    result = RunResult(seed=1)

    assert stopped_by_itself(daemon, result)
    assert result.disk_full_stops == 0 and "on a filling disk" in result.violations[0].detail


def test_a_running_daemon_has_not_stopped_by_itself(tmp_path, monkeypatch):
    daemon = fake(tmp_path, monkeypatch, 0, "unused")
    daemon.start(wait_ready=False)
    try:
        assert not stopped_by_itself(daemon, RunResult(seed=1))
    finally:
        daemon.stop()


def test_disk_full_restarts_are_never_the_last_and_leave_the_kill_moments_alone():
    plain = ChaosSettings(kills=12, seed=5)
    filling = ChaosSettings(kills=12, seed=5, disk_full=3)
    chosen = disk_full_restarts(filling, 5)

    assert len(chosen) == 3 and max(chosen) < 11
    assert disk_full_restarts(plain, 5) == set()
    assert kill_moments(plain, random.Random(5)) == kill_moments(filling, random.Random(5))
    assert disk_full_restarts(ChaosSettings(kills=1, disk_full=3), 5) == set()
