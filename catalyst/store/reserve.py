"""DiskReserve: space set aside beside the database, given back the moment the disk fills up.

Why: with the database refusing writes no order may be sent (order first), so a fill whose commit meets a full disk
cannot have its stop placed: its shares stay unprotected until someone frees space and restarts the daemon. The disk
usually fills because of something else (another program's log, a download), so no amount of care in our own writes
prevents it. A file of real blocks (allocated, not sparse) kept next to the database is space that nothing else can
take: when a write is refused for a full disk, the writer deletes it and tries that write again, so what was in
flight (a fill, its stop and take-profit rows) is recorded and protected; the daemon then stops, as before, but with
every filled share under a stop. The space given back is shared with whatever filled the disk, so it is used for the
minimum, once: a restart on a disk with room sets the reserve aside again.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

MB = 1024 * 1024


def reserve_path(database: Path) -> Path:
    """`var/catalyst.db` → `var/catalyst.db-reserve`, beside SQLite's own `-wal` and `-shm` files."""
    return Path(f"{database}-reserve")


@dataclass
class DiskReserve:
    path: Path
    size_bytes: int
    released: bool = False

    @classmethod
    def beside(cls, database: Path, size_mb: int) -> DiskReserve:
        return cls(reserve_path(database), size_mb * MB)

    @property
    def size(self) -> str:
        return f"{self.size_bytes / MB:g} MB"

    def set_aside(self) -> tuple[bool, str]:
        """Make sure the reserve exists at its full size: (all well, a phrase for the start-up line).

        Never raises: a disk without room for it is said (the daemon runs as it did before the reserve existed), so
        a start-up is never refused for it; a write it cannot make then fails as a storage fault would anyway. A
        disk left with less free space than the reserve holds is said too: a restart on a disk still full retakes
        the space the last stop gave back, and runs until the next write refused gives it back again."""
        try:
            if not (self.path.exists() and self.path.stat().st_size >= self.size_bytes):
                with open(self.path, "wb") as file:
                    # Real blocks: a sparse file (truncate) would free nothing when deleted.
                    os.posix_fallocate(file.fileno(), 0, self.size_bytes)
                    os.fsync(file.fileno())
        except OSError as exc:
            self.path.unlink(missing_ok=True)
            free = free_bytes(self.path.parent)
            room = f", {free / MB:.1f} MB free" if free is not None else ""
            return False, (f"NO disk reserve: {self.path} could not be set aside ({exc.strerror or exc}{room}); a fill "
                           "whose commit meets a full disk will have no stop until the disk is freed and the daemon "
                           "restarted")
        said = f"a disk reserve of {self.size} is set aside at {self.path}"
        free = free_bytes(self.path.parent)
        if free is not None and free < self.size_bytes:
            return False, (f"{said}, but the disk has only {free / MB:.1f} MB free beside it: free disk space (when "
                           "it is full, the reserve records what is in flight and the daemon stops)")
        return True, said

    def release(self) -> bool:
        """Delete the reserve, giving its space back to the filesystem; True if there was one to give."""
        if self.released:
            return False
        self.released = True
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        return True

    def may_help(self, sqlite_code: str | None) -> bool:
        """Whether a write refused with this SQLite error code is one the reserve's space can let through: the disk
        is full (SQLITE_FULL), or an I/O error with the filesystem out of room (SQLite reports a write the kernel
        refused with ENOSPC while growing its files as SQLITE_IOERR_*). A read-only or failing disk: no."""
        if self.released or not sqlite_code:
            return False
        if sqlite_code.startswith("SQLITE_FULL"):
            return True
        free = free_bytes(self.path.parent)
        return sqlite_code.startswith("SQLITE_IOERR") and free is not None and free < self.size_bytes


def free_bytes(directory: Path) -> int | None:
    """Bytes an unprivileged writer may still use on the disk under `directory`; None if it cannot be read."""
    try:
        return shutil.disk_usage(directory).free  # f_bavail: the root-reserved blocks are not ours
    except OSError:
        return None
