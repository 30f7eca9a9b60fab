"""Another program holding a lock on the database (a trader's `sqlite3` shell left inside a transaction): the writer
waits a bounded time, saying so once, and writes everything once the lock goes; a lock held past the wait is a storage
fault (the daemon stops on it, exit 3, naming the file and what to do), with nothing half-written. At start-up, one
line. Real SQLite files, the real DbWriter, the lock taken by another connection as `sqlite3` takes it."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from loguru import logger

import catalyst.store.db
from actors.db_writer import DbWriter
from catalyst.store.batch import call
from catalyst.store.errors import DatabaseLockedError, storage_fault
from catalyst.store.migrate import current_revision, downgrade, head_revision, upgrade


@pytest.fixture
def short_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(catalyst.store.db, "BUSY_TIMEOUT_MS", 100)
    monkeypatch.setattr(catalyst.store.db, "LOCK_WAIT_S", 1.5, raising=False)


@pytest.fixture
def lines() -> Iterator[list[tuple[str, str]]]:
    said: list[tuple[str, str]] = []
    sink = logger.add(lambda m: said.append((m.record["level"].name, m.record["message"])), level="INFO")
    yield said
    logger.remove(sink)


def hold_lock(db: Path) -> sqlite3.Connection:
    """What `sqlite3 catalyst.db` then `BEGIN IMMEDIATE;` (or a first write inside BEGIN) holds."""
    shell = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    shell.execute("BEGIN IMMEDIATE")
    return shell


@pytest.fixture
def locked(tmp_path: Path, short_waits: None) -> Iterator[tuple[Path, Any, Any, sqlite3.Connection]]:
    """A DbWriter on a fresh database (the short waits in force before it opens it) and another program's connection
    holding its lock: (db, writer, ref, shell)."""
    db = tmp_path / "catalyst.db"
    ref = DbWriter.start(f"sqlite+aiosqlite:///{db}")
    try:
        writer = ref.proxy()
        shell = hold_lock(db)
        yield db, writer, ref, shell
        shell.close()
    finally:
        ref.stop()


def trade_updates(db: Path) -> int:
    with sqlite3.connect(db) as reader:
        return reader.execute("SELECT count(*) FROM trade_updates").fetchone()[0]


def test_a_lock_released_within_the_wait_is_waited_out_said_once_and_every_write_goes_through(
        locked: tuple[Path, Any, Any, sqlite3.Connection], lines: list[tuple[str, str]]) -> None:
    db, writer, ref, shell = locked
    threading.Timer(0.6, shell.rollback).start()
    started = time.monotonic()
    writer.record_trade_update("fill", {"n": 1}).get(timeout=10)  # a fill's update: plain SQL
    writer.ensure_security("AAPL").get(timeout=10)  # an ORM session's write
    assert 0.5 < time.monotonic() - started < 1.5
    assert trade_updates(db) == 1 and ref.proxy().health.get().fault is None
    warnings = [message for level, message in lines if level == "WARNING"]
    assert warnings == [f"writer database {db} is locked: another program holds a lock on it (a sqlite3 shell "
                        "left inside a transaction?); waiting up to 1.5 s for it, writing nothing meanwhile (so "
                        "no order is sent), then stopping"]
    assert any(m.startswith(f"writer database {db} is free again after ") for level, m in lines if level == "INFO")


def test_a_group_with_a_failing_call_is_made_again_whole_when_the_lock_refuses_its_savepoint_pass(
        locked: tuple[Path, Any, Any, sqlite3.Connection]) -> None:
    # The group's first pass fails on its own call (an unknown scan result), so it runs again with a savepoint per
    # call; there a transaction that has read is refused the lock at once (no busy wait). That refusal was one call's
    # own outcome: the group committed without it, and the fill's update was lost with no wait and no word (a review).
    db, writer, ref, shell = locked
    threading.Timer(0.6, shell.rollback).start()  # gone well within the wait
    outcomes = writer.batch([call("set_scan_status", 987654, "done"),
                             call("record_trade_update", "fill", {"n": 1})]).get(timeout=10)
    assert type(outcomes[0].error).__name__ == "RecordNotFoundError" and outcomes[1].error is None
    assert trade_updates(db) == 1 and ref.proxy().health.get().fault is None


def test_a_lock_held_past_the_wait_is_a_storage_fault_naming_the_file_with_nothing_half_written(
        locked: tuple[Path, Any, Any, sqlite3.Connection], lines: list[tuple[str, str]]) -> None:
    db, writer, ref, shell = locked
    with pytest.raises(DatabaseLockedError) as refused:
        writer.record_trade_update("fill", {"n": 1}).get(timeout=10)
    started = time.monotonic()  # the daemon stops on the first: the writes of its stop are refused at once
    outcomes = writer.batch([call("record_trade_update", "fill", {"n": 2}),
                             call("ensure_security", "MSFT")]).get(timeout=10)
    assert time.monotonic() - started < 0.5
    shell.rollback()

    assert str(refused.value).startswith(f"{db}: database is locked: another program held a lock on it for "
                                         "longer than Catalyst waits (1.5 s): ")
    assert str(refused.value).endswith(": close the program holding it (a sqlite3 shell left inside a "
                                       "transaction: end it with ROLLBACK or quit it), then start again")
    assert "\n" not in str(refused.value)
    assert [type(o.error) for o in outcomes] == [DatabaseLockedError, DatabaseLockedError]
    fault = ref.proxy().health.get().fault
    assert fault == "database is locked: another program held a lock on it for longer than Catalyst waits (1.5 s)"
    assert storage_fault(refused.value) == fault
    assert trade_updates(db) == 0  # nothing half-written: the fill is the restart's catch-up's to record
    assert sum(level == "WARNING" and "another program holds a lock" in m for level, m in lines) == 1


def test_the_daemon_stops_on_a_held_lock_naming_the_file_and_the_other_program_to_close(tmp_path: Path) -> None:
    from catalyst.daemon import Daemon

    daemon = Daemon.__new__(Daemon)
    daemon.database_url = f"sqlite+aiosqlite:///{tmp_path / 'catalyst.db'}"
    said = daemon._storage_failed("database is locked: another program held a lock on it for longer than Catalyst "
                                  "waits (30 s)")
    assert said.startswith(f"{tmp_path / 'catalyst.db'}: database is locked: another program held a lock on it")
    assert "close the program holding it" in said and "free disk space" not in said


def test_at_start_up_a_held_lock_is_one_line_naming_the_file(tmp_path: Path, short_waits: None,
                                                             lines: list[tuple[str, str]]) -> None:
    db = tmp_path / "catalyst.db"
    url = f"sqlite+aiosqlite:///{db}"
    upgrade(url)
    downgrade(url, "0001")  # a migration to make at start-up: a write
    shell = hold_lock(db)
    try:
        with pytest.raises(DatabaseLockedError) as refused:
            upgrade(url)
    finally:
        shell.rollback()
        shell.close()
    assert str(refused.value).startswith(f"{db}: database is locked: another program held a lock on it for longer "
                                         "than Catalyst waits (1.5 s): ")
    assert "\n" not in str(refused.value)
    assert [level for level, m in lines if "another program holds a lock" in m] == ["WARNING"]
    assert current_revision(url) == "0001"  # left as it was
    assert upgrade(url) == head_revision()  # and made once the lock is gone
