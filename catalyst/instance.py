"""One daemon per database: an OS lock beside the database file, released by the kernel even after `kill -9`."""

from __future__ import annotations

import errno
import fcntl
import json
import os
from pathlib import Path

from filelock import FileLock, Timeout

from catalyst.errors import AlreadyRunning, DatabaseError


PROBED_FOR_S = 1.0  # how long a start waits out another command's look at the lock


def owner_only_files() -> None:
    """Every file this process creates from now on readable by its owner only, whatever the umask it started with:
    the database, its WAL, logs, snapshots and reports may name positions and P&L."""
    os.umask(0o077)


def real_path(database_path: Path) -> Path:
    """The database's real file, whatever symlink or `..` names it; a symlink loop is a database problem in one
    line (Path.resolve raises RuntimeError, an internal error the supervisor would restart forever)."""
    try:
        return database_path.resolve()
    except RuntimeError as exc:
        raise DatabaseError(f"{database_path}: cannot be opened: {exc}") from None


def emergency_path(database_path: Path) -> Path:
    """`<db>.emergency`: an operator's emergency stop under way, kept until the daemon is flat and stops (beside the
    lock and pid files, read by the daemon at start and by `catalyst status`)."""
    database_path = real_path(database_path)  # one database, one marker, whatever symlink or `..` names it
    return database_path.with_name(database_path.name + ".emergency")


class InstanceLock:
    """`<db>.lock` held for the daemon's life; `<db>.pid` says who holds it, for `catalyst stop` and the error."""

    def __init__(self, database_path: Path) -> None:
        # Beside the real file: a symlink or a `..` path to a locked database took a lock of its own, and two
        # daemons ran on one database.
        database_path = real_path(database_path)
        self.lock_path = database_path.with_name(database_path.name + ".lock")
        self.pid_path = database_path.with_name(database_path.name + ".pid")
        self.database_path = database_path
        self._lock = FileLock(str(self.lock_path), timeout=0)
        self._database_fd: int | None = None

    def acquire(self, what: str) -> InstanceLock:
        try:
            self.lock_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise DatabaseError(f"{self.lock_path.parent}: cannot create the database folder: {exc.strerror}") from None
        try:
            # Not at once: `catalyst status` and `catalyst stop` probe the lock by taking it for a moment, and a start
            # landing in that moment would be refused as if a daemon ran.
            self._lock.acquire(timeout=PROBED_FOR_S)
        except Timeout:
            raise AlreadyRunning(f"another catalyst daemon holds {self.lock_path} ({describe(self.pid_path)}); "
                                 "stop it first (`catalyst stop`)") from None
        except OSError as exc:
            raise DatabaseError(f"{self.lock_path}: cannot take the instance lock: {exc.strerror}") from None
        try:
            self.pid_path.write_text(json.dumps({"pid": os.getpid(), "what": what}))
            self.pid_path.chmod(0o600)
        except OSError as exc:  # a full or read-only disk under the database: the database cannot be written either
            self._lock.release()
            raise DatabaseError(f"{self.pid_path}: cannot write the pid file: {exc.strerror or exc}; free disk "
                                "space or repair the disk, then start again") from None
        try:
            self._hold_database_file()
        except BaseException:
            self.release()
            raise
        return self

    def hold_database_file_again(self) -> None:
        """After the database file was removed and is to be made anew (the simulation's wipe), before any connection
        to it is open: the lock moves to the new file."""
        if self._database_fd is not None:
            os.close(self._database_fd)
            self._database_fd = None
        self._hold_database_file()

    def _hold_database_file(self) -> None:
        """A lock on the database file itself too: a hard link names the same file under another name, whose
        `<name>.lock` is another file, and a second daemon ran on one database through it (a review).

        flock, not fcntl: SQLite's own locks are fcntl (POSIX) locks, which flock neither sees nor disturbs on Linux.
        The descriptor stays open until release, after the process's SQLite connections have closed: closing any
        descriptor of the file drops every POSIX lock this process holds on it, SQLite's included."""
        if self.database_path.is_dir():
            return  # refused at start-up as "is a directory", a clearer line than one from here
        try:
            # Created if missing (empty is a valid new database): a hard link made to it later is covered too.
            fd = os.open(self.database_path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise DatabaseError(f"{self.database_path}: cannot open the database file: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise AlreadyRunning(f"another catalyst daemon holds {self.database_path} under another name (a hard "
                                 "link to the same file); stop it first (`catalyst stop` with its config)") from None
        except OSError as exc:  # a filesystem without flock: the `.lock` file beside it still guards its own name
            os.close(fd)
            if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
                raise DatabaseError(f"{self.database_path}: cannot lock the database file: {exc.strerror}") from None
            return
        self._database_fd = fd

    def holder(self) -> dict | None:
        """Who holds the lock now, from `<db>.pid`; None when nobody does. The lock decides, not the pid file: a
        daemon killed with `kill -9` leaves its pid file behind, and that pid may belong to any process by now."""
        if not self.lock_path.exists():
            return None
        probe = FileLock(str(self.lock_path), timeout=0)
        try:
            probe.acquire()
        except Timeout:
            return read_pid(self.pid_path) or {"pid": None}
        probe.release()
        return None

    def release(self) -> None:
        if self._database_fd is not None:
            os.close(self._database_fd)
            self._database_fd = None
        if self._lock.is_locked:
            self.pid_path.unlink(missing_ok=True)
            self._lock.release()


def describe(pid_path: Path) -> str:
    info = read_pid(pid_path)
    return f"pid {info['pid']}, {info.get('what', 'daemon')}" if info else "pid unknown"


def read_pid(pid_path: Path) -> dict | None:
    try:
        info = json.loads(pid_path.read_text())
        return info if isinstance(info, dict) and isinstance(info.get("pid"), int) else None
    except (OSError, ValueError):
        return None
