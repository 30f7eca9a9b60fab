"""DiskReserve: real blocks set aside beside the database, given back once, only for a disk out of room."""

from __future__ import annotations

from types import SimpleNamespace

from actors.db_writer import StorageHealth, _commit_refused
from catalyst.hooks import CycleHooks
from catalyst.status import disk_line
from catalyst.store.batch import CallOutcome
from catalyst.store.reserve import MB, DiskReserve, reserve_path


def test_the_reserve_is_real_blocks_beside_the_database_and_set_aside_once(tmp_path):
    reserve = DiskReserve.beside(tmp_path / "catalyst.db", 2)
    assert reserve.path == tmp_path / "catalyst.db-reserve" == reserve_path(tmp_path / "catalyst.db")
    said = reserve.set_aside()
    assert said == (True, f"a disk reserve of 2 MB is set aside at {tmp_path / 'catalyst.db-reserve'}")
    stat = reserve.path.stat()
    assert stat.st_size == 2 * MB and stat.st_blocks * 512 >= 2 * MB  # allocated, not a sparse file
    before = stat.st_mtime_ns
    assert reserve.set_aside() == said and reserve.path.stat().st_mtime_ns == before  # a restart keeps it


def test_a_reserve_too_short_is_made_whole_again(tmp_path):
    reserve = DiskReserve.beside(tmp_path / "catalyst.db", 1)
    reserve.path.write_bytes(b"x" * 1000)  # left half-made by a crash
    reserve.set_aside()
    assert reserve.path.stat().st_size == MB


def test_no_room_for_the_reserve_is_said_and_leaves_no_file(tmp_path):
    reserve = DiskReserve(tmp_path / "missing-folder" / "catalyst.db-reserve", MB)
    well, said = reserve.set_aside()
    assert not well and said.startswith(f"NO disk reserve: {reserve.path} could not be set aside (No such file or directory")
    assert said.endswith("a fill whose commit meets a full disk will have no stop until the disk is freed and the "
                         "daemon restarted")
    assert not reserve.path.exists()
    assert not reserve.release()  # nothing to give back


def test_the_reserve_helps_a_full_disk_only_and_is_given_back_once(tmp_path):
    reserve = DiskReserve.beside(tmp_path / "catalyst.db", 1)
    reserve.set_aside()
    assert reserve.may_help("SQLITE_FULL")
    assert not reserve.may_help("SQLITE_READONLY") and not reserve.may_help("SQLITE_CORRUPT")
    assert not reserve.may_help(None)
    # An I/O error with room left on the disk (a failing disk, a file size limit) is not for the reserve.
    assert not reserve.may_help("SQLITE_IOERR_WRITE")
    huge = DiskReserve(reserve.path, 1 << 62)  # more than any disk has free: the disk counts as out of room
    assert huge.may_help("SQLITE_IOERR_WRITE")
    assert reserve.release() and not reserve.path.exists()
    assert not reserve.release() and not reserve.may_help("SQLITE_FULL")  # once only


def test_only_a_batch_whose_commit_failed_counts_as_nothing_written():
    full = OSError("database or disk is full")
    assert _commit_refused([CallOutcome(error=full), CallOutcome(error=full)]) is full
    # One call refused in its savepoint while the others committed: retrying the batch would write them twice.
    assert _commit_refused([CallOutcome(value=1), CallOutcome(error=full)]) is None
    assert _commit_refused([CallOutcome(error=full), CallOutcome(error=OSError("other"))]) is None
    assert _commit_refused([]) is None and _commit_refused(None) is None and _commit_refused([1, 2]) is None


def test_no_entry_is_opened_once_the_reserve_was_used():
    health = StorageHealth()
    health.reserve_used = "the disk under var/catalyst.db is full (database or disk is full); its 8 MB reserve …"
    hooks = SimpleNamespace(daemon=SimpleNamespace(system=SimpleNamespace(storage=health), emergency_flatten=None,
                                                   emergency_requested=False))
    assert CycleHooks.entries_allowed(hooks) == (  # type: ignore[arg-type]
        False, f"{health.reserve_used}; the daemon stops once every filled share is under a stop")



def test_a_disk_left_with_less_room_than_the_reserve_is_said(tmp_path, monkeypatch):
    reserve = DiskReserve.beside(tmp_path / "catalyst.db", 1)
    monkeypatch.setattr("catalyst.store.reserve.free_bytes", lambda _directory: MB // 2)
    well, said = reserve.set_aside()
    assert not well and said == (f"a disk reserve of 1 MB is set aside at {reserve.path}, but the disk has only 0.5 MB "
                                 "free beside it: free disk space (when it is full, the reserve records what is in "
                                 "flight and the daemon stops)")
    assert reserve.path.stat().st_size == MB


def test_catalyst_status_says_whether_the_reserve_is_set_aside(tmp_path, monkeypatch):
    database = tmp_path / "catalyst.db"
    monkeypatch.setattr("catalyst.status.shutil.disk_usage", lambda _folder: SimpleNamespace(free=int(2.5 * MB)))
    missing = disk_line(database, 8)
    assert missing == (f"disk: 2.5 MB free on the disk under the database; the 8 MB disk reserve is NOT set aside "
                       f"({tmp_path / 'catalyst.db-reserve'}): the daemon's next start sets it aside if the disk has "
                       "room (it is given back when the disk fills up)")
    DiskReserve.beside(database, 1).set_aside()
    assert disk_line(database, 1) == (f"disk: 2.5 MB free on the disk under the database; the 1 MB disk reserve is "
                                      f"set aside ({tmp_path / 'catalyst.db-reserve'})")
    assert disk_line(database, 8).startswith("disk: 2.5 MB free on the disk under the database; the 8 MB disk reserve "
                                             "is NOT set aside")  # a smaller one than configured does not count
    assert disk_line(database, 0) == "disk: 2.5 MB free on the disk under the database; no disk reserve " \
                                     "(daemon.disk_reserve_mb = 0)"


def test_the_daemon_warns_once_when_the_disk_runs_low_and_says_when_it_has_room_again(tmp_path, monkeypatch):
    from loguru import logger

    from catalyst.config import load_config
    from catalyst.daemon import Daemon

    config_file = tmp_path / "config.toml"
    config_file.write_text('[daemon]\ndatabase_url = "sqlite+aiosqlite:///catalyst.db"\n')
    daemon = Daemon(load_config(config_file), SimpleNamespace(),  # type: ignore[arg-type]
                    f"sqlite+aiosqlite:///{tmp_path / 'catalyst.db'}")
    free = [500 * MB, 40 * MB, 30 * MB, 250 * MB]
    monkeypatch.setattr("shutil.disk_usage", lambda _folder: SimpleNamespace(free=free.pop(0)))
    lines: list[tuple[str, str]] = []
    sink = logger.add(lambda m: lines.append((m.record["level"].name, m.record["message"])), level="INFO")
    try:
        for _ in range(4):
            daemon.check_disk_room()
    finally:
        logger.remove(sink)
    assert lines == [
        ("WARNING", f"system the disk under {tmp_path / 'catalyst.db'} has only 40.0 MB free (under 100 MB): free disk "
                    "space; once it is full the daemon records what is in flight on its disk reserve and stops"),
        ("INFO", f"system the disk under {tmp_path / 'catalyst.db'} has 250.0 MB free again")]


def test_a_damaged_file_is_told_apart_from_a_full_or_failing_disk():
    from catalyst.store.errors import is_damage

    assert is_damage("database disk image is malformed") and is_damage("file is not a database")
    assert not is_damage("database or disk is full") and not is_damage("disk I/O error")
    assert not is_damage("attempt to write a readonly database")
