"""The instance lock beside the database: a pid file that cannot be written (a full or read-only disk) is one line
naming it, exit 3, and the lock is let go."""

from __future__ import annotations

import pytest

from catalyst.errors import DatabaseError
from catalyst.instance import InstanceLock


def test_a_pid_file_that_cannot_be_written_is_a_database_error_and_the_lock_is_released(tmp_path):
    database = tmp_path / "catalyst.db"
    (tmp_path / "catalyst.db.pid").mkdir()  # stands in for a disk that refuses the write (EISDIR, as ENOSPC would)
    with pytest.raises(DatabaseError) as refused:
        InstanceLock(database).acquire("daemon")
    assert str(refused.value) == (f"{tmp_path / 'catalyst.db.pid'}: cannot write the pid file: Is a directory; free "
                                  "disk space or repair the disk, then start again")
    assert refused.value.exit_code == 3
    (tmp_path / "catalyst.db.pid").rmdir()
    again = InstanceLock(database).acquire("daemon")  # the lock was let go
    again.release()


def test_a_start_during_another_commands_look_at_the_lock_waits_it_out_instead_of_being_refused(tmp_path):
    """`catalyst status` and `stop` find the running daemon by taking the lock for a moment: a daemon starting in
    that moment was refused with `another catalyst daemon holds … (pid unknown)`."""
    import threading
    import time

    from filelock import FileLock

    database = tmp_path / "catalyst.db"
    looking = threading.Event()

    def look() -> None:  # as InstanceLock.holder() does, in a thread of its own (filelock's locks are per thread)
        probe = FileLock(str(tmp_path / "catalyst.db.lock"), timeout=0)
        probe.acquire()
        looking.set()
        time.sleep(0.2)
        probe.release()

    looker = threading.Thread(target=look)
    looker.start()
    looking.wait(timeout=10)
    started = InstanceLock(database).acquire("daemon")  # waits the 0.2 s out, in this thread
    looker.join(timeout=10)
    try:
        refused = threading.Thread(target=lambda: _expect_refused(database))  # a second daemon still is
        refused.start()
        refused.join(timeout=10)
        assert not _failures
    finally:
        started.release()
    again = InstanceLock(database).acquire("daemon")  # released for real: taken at once
    again.release()


_failures: list[str] = []


def _expect_refused(database) -> None:
    from catalyst.errors import AlreadyRunning

    try:
        InstanceLock(database).acquire("daemon").release()
        _failures.append("a second daemon was let in")
    except AlreadyRunning:
        pass


def test_a_second_lock_through_a_symlink_or_dotdot_path_to_a_locked_database_is_refused(tmp_path):
    """Config A's database_url named var/catalyst.db, config B's an absolute path to a symlink of that file: each took
    its own lock beside the path as written, and two daemons ran on one database."""
    from catalyst.errors import AlreadyRunning
    from catalyst.instance import emergency_path

    (tmp_path / "var").mkdir()
    (tmp_path / "other").mkdir()
    database = tmp_path / "var" / "catalyst.db"
    database.touch()
    symlink = tmp_path / "other" / "catalyst.db"
    symlink.symlink_to(database)
    held = InstanceLock(database).acquire("daemon")
    try:
        for other_name in (symlink, tmp_path / "other" / ".." / "var" / "catalyst.db"):
            with pytest.raises(AlreadyRunning):
                InstanceLock(other_name).acquire("daemon")
            assert InstanceLock(other_name).holder() is not None  # `catalyst status` / `stop` find it too
            assert emergency_path(other_name) == emergency_path(database)  # and its emergency stop
    finally:
        held.release()


def test_a_database_path_in_a_symlink_loop_is_one_line_not_an_internal_error(tmp_path):
    # Path.resolve() raised RuntimeError: `catalyst: internal error`, exit 1, restarted forever by a supervisor.
    from catalyst.config import load_config
    from catalyst.errors import ConfigError, DatabaseError
    from catalyst.instance import InstanceLock

    (tmp_path / "a.db").symlink_to(tmp_path / "b.db")
    (tmp_path / "b.db").symlink_to(tmp_path / "a.db")
    with pytest.raises(DatabaseError) as absolute:
        InstanceLock(tmp_path / "a.db")
    assert str(absolute.value) == f"{tmp_path / 'a.db'}: cannot be opened: Symlink loop from '{tmp_path / 'a.db'}'"
    config = tmp_path / "config.toml"
    config.write_text('[daemon]\ndatabase_url = "sqlite+aiosqlite:///a.db"\n')
    with pytest.raises(ConfigError) as relative:
        load_config(config)
    assert str(relative.value).startswith(f"{config}: a path it names cannot be resolved: Symlink loop from")


def test_a_second_daemon_through_a_hard_link_to_a_locked_database_is_refused(tmp_path):
    """From a review: a hard link names the same file under another name, whose `<name>.lock` is another file, and a
    second daemon ran on one database through it. Held here by another process, as a running daemon does."""
    import os

    from catalyst.errors import AlreadyRunning
    from tests.unit.test_control_stop import holding_the_lock

    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "catalyst.db").touch()
    link = tmp_path / "elsewhere" / "same.db"
    os.link(tmp_path / "catalyst.db", link)
    with holding_the_lock(tmp_path):
        with pytest.raises(AlreadyRunning) as refused:
            InstanceLock(link).acquire("daemon")
        assert str(refused.value) == (f"another catalyst daemon holds {link} under another name (a hard link to the "
                                      "same file); stop it first (`catalyst stop` with its config)")
        assert not (tmp_path / "elsewhere" / "same.db.pid").exists()  # the refused one let its own lock go
        assert InstanceLock(tmp_path / "elsewhere" / "other.db").acquire("daemon").release() is None  # others may
    again = InstanceLock(link).acquire("daemon")  # the holder gone: taken at once, the file created if it was not
    again.release()


def test_a_missing_database_file_is_created_empty_under_the_lock_and_a_link_made_later_is_covered(tmp_path):
    import os

    from catalyst.errors import AlreadyRunning

    database = tmp_path / "catalyst.db"
    held = InstanceLock(database).acquire("daemon")
    try:
        assert database.is_file() and database.stat().st_size == 0  # an empty file is a valid new database
        assert database.stat().st_mode & 0o777 == 0o600
        os.link(database, tmp_path / "later.db")
        with pytest.raises(AlreadyRunning):
            InstanceLock(tmp_path / "later.db").acquire("daemon")
    finally:
        held.release()


def test_the_simulations_wipe_moves_the_lock_to_the_new_file_and_leaves_a_linked_name_whole(tmp_path):
    """The embedded exchange's run starts from an empty database. Replaced, the file under the lock was the old one,
    and a hard link to the new file was unguarded; emptied in place (truncated), a daemon's database linked as the
    simulation's lost its data (a review). The file is removed and the lock taken again on the new one."""
    import os

    from catalyst.daemon import _wipe
    from catalyst.errors import AlreadyRunning

    database = tmp_path / "catalyst.db"
    database.write_bytes(b"SQLite format 3\x00" + b"x" * 100)
    (tmp_path / "catalyst.db-wal").write_bytes(b"wal")
    os.link(database, tmp_path / "daemons.db")  # another name for the same file, as a daemon's database
    held = InstanceLock(database).acquire("daemon")
    try:
        inode = database.stat().st_ino
        _wipe(database, held)
        assert database.stat().st_ino != inode and database.stat().st_size == 0
        assert not (tmp_path / "catalyst.db-wal").exists()
        assert (tmp_path / "daemons.db").read_bytes().startswith(b"SQLite format 3")  # kept whole under its name
        os.link(database, tmp_path / "linked.db")
        with pytest.raises(AlreadyRunning):
            InstanceLock(tmp_path / "linked.db").acquire("daemon")
        InstanceLock(tmp_path / "daemons.db").acquire("daemon").release()  # the old file is not ours any more
    finally:
        held.release()
