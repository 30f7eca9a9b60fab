"""`catalyst stop` signals the process holding the database's lock, and nothing else: a pid file left behind by a
daemon killed with `kill -9` may name any process by now."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from catalyst.config import load_config
from catalyst.control import NotRunning, running_daemon, stop_daemon
from catalyst.instance import InstanceLock

PROJECT = Path(__file__).resolve().parents[2]


def config_for(tmp_path: Path):
    path = tmp_path / "config.toml"
    path.write_text('[daemon]\ndatabase_url = "sqlite+aiosqlite:///catalyst.db"\n')
    return load_config(path)


def test_a_pid_file_left_by_a_killed_daemon_does_not_get_its_pid_signalled(tmp_path):
    config = config_for(tmp_path)
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock = InstanceLock(tmp_path / "catalyst.db")
        lock.lock_path.write_text("")  # as the daemon that was killed left them: the lock file, and its pid file
        lock.pid_path.write_text(json.dumps({"pid": bystander.pid, "what": "catalyst run"}))

        assert running_daemon(config) is None
        with pytest.raises(NotRunning):
            stop_daemon(config, emergency=False, wait_s=1)
        with pytest.raises(NotRunning):
            stop_daemon(config, emergency=True, wait_s=1)
        time.sleep(0.2)
        assert bystander.poll() is None  # still running: nobody sent it TERM or USR2
    finally:
        bystander.kill()
        bystander.wait()


@contextmanager
def holding_the_lock(tmp_path: Path, ignoring_usr2: bool = False) -> Iterator[subprocess.Popen]:
    """A process holding the database's instance lock, as a running daemon does (USR2 ignored, if asked, as a daemon
    that takes it and stays up)."""
    ignore = "signal.signal(signal.SIGUSR2, lambda *_: None); " if ignoring_usr2 else ""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import signal, time; from pathlib import Path; from catalyst.instance import "
         f"InstanceLock; held = InstanceLock(Path({str(tmp_path / 'catalyst.db')!r})).acquire('catalyst run'); "
         f"{ignore}print('held', flush=True); time.sleep(60)"],
        cwd=PROJECT, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        yield holder
    finally:
        holder.kill()
        holder.wait()


def test_the_process_holding_the_lock_is_the_one_stopped(tmp_path):
    config = config_for(tmp_path)
    with holding_the_lock(tmp_path) as holder:
        assert running_daemon(config) == (holder.pid, "catalyst run")
        assert stop_daemon(config, emergency=False, wait_s=10) == 0
        assert holder.wait(5) != 0  # SIGTERM's default action: it was this process that got it


def test_an_emergency_stop_not_done_at_once_is_not_waited_for_a_minute_nor_said_to_be_flattening(tmp_path, capsys):
    # From a review: after the close `catalyst stop --emergency` waited 60 s and then said "positions flattening" of
    # positions the daemon keeps under their stops until the next open.
    config = config_for(tmp_path)
    with holding_the_lock(tmp_path, ignoring_usr2=True) as holder:
        started = time.monotonic()
        assert stop_daemon(config, emergency=True) == 0
        assert time.monotonic() - started < 30
        said = capsys.readouterr().out
        assert f"emergency stop asked of pid {holder.pid}" in said and "flattening" not in said
        assert "while the market is closed, at the next open" in said
        assert holder.poll() is None  # USR2 asks; the daemon stops by itself once flat
