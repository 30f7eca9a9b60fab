"""Talking to a running daemon: `catalyst stop [--emergency]` signals the process that holds the lock."""

from __future__ import annotations

import os
import signal
import time

from catalyst.config import Config, sqlite_path
from catalyst.errors import CatalystError
from catalyst.instance import InstanceLock
from catalyst.runtime import sim_database_url


EMERGENCY_EXIT_WAIT_S = 5.0  # a daemon already flat exits at once; one flattening is followed in its log


class NotRunning(CatalystError):
    exit_code = 6


def running_daemon(config: Config) -> tuple[int, str] | None:
    """(pid, what) of the daemon holding this config's database (or its simulation database)."""
    for url in (config.daemon.database_url, sim_database_url(config)):
        path = sqlite_path(url)
        if path is None:
            continue
        lock = InstanceLock(path)
        try:
            info = lock.holder()
        except OSError as exc:
            raise CatalystError(f"{lock.lock_path}: cannot tell whether a daemon holds it: {exc.strerror or exc}") from None
        if info is None:
            continue  # a pid file without the lock held is a daemon's leftover: its pid is not ours to signal
        if info["pid"] is None or not _alive(info["pid"]):
            raise CatalystError(f"a catalyst daemon holds {lock.lock_path} but {lock.pid_path} does not say which "
                                "process; stop it by its supervisor")
        return info["pid"], info.get("what", "daemon")
    return None


def stop_daemon(config: Config, emergency: bool, wait_s: float = 60.0) -> int:
    found = running_daemon(config)
    if found is None:
        raise NotRunning(f"no running catalyst daemon for {config.source}")
    pid, what = found
    os.kill(pid, signal.SIGUSR2 if emergency else signal.SIGTERM)
    # An emergency stop may take the rest of the day (or until the next open): its exit is not waited for long.
    deadline = time.monotonic() + (min(wait_s, EMERGENCY_EXIT_WAIT_S) if emergency else wait_s)
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if emergency:
        # The daemon flattens everything and then exits by itself; a position the market will not take out now
        # (closed) keeps it running until it can, so not having exited yet is no error.
        if _alive(pid):
            # Not "flattening": after the close the positions are kept under their stops until the next open (a
            # review: said, after a minute's wait, of positions the daemon's own log kept overnight).
            print(f"emergency stop asked of pid {pid} ({what}): no new entry; it cancels the working entries and "
                  "flattens every position (while the market is closed, at the next open: kept under their stops "
                  "until then), and stops by itself once the broker holds nothing (`catalyst tail -f` to follow, "
                  "`catalyst status` for what is left)")
        else:
            print(f"pid {pid} ({what}) stopped after the emergency stop; `catalyst status` shows what is left (its "
                  "last lines in the log say whether it was flat)")
        return 0
    if _alive(pid):
        raise CatalystError(f"pid {pid} ({what}) still running after {wait_s:.0f} s")
    print(f"stopped pid {pid} ({what})")
    return 0


def _alive(pid: int) -> bool:
    """Running, and not a zombie: an exited daemon its parent has not reaped yet has stopped."""
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True
