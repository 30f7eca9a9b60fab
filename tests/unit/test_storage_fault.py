"""A failure of the disk under the database (full, read-only) is told apart from a failure of one statement, from
SQLite's own errors, however they are wrapped; and where it surfaces it is one line, never a traceback."""

from __future__ import annotations

import logging
import sqlite3
import threading
from types import SimpleNamespace
from pathlib import Path

import pytest
import sqlalchemy
from loguru import logger

from catalyst import cli, logs
from catalyst.store.errors import storage_fault


def full_disk_error(path: Path) -> sqlite3.OperationalError:
    """SQLite's own SQLITE_FULL: the database may not grow past the pages it has (as on a full disk)."""
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE t (x TEXT)")
    connection.commit()
    pages = connection.execute("PRAGMA page_count").fetchone()[0]
    connection.execute(f"PRAGMA max_page_count = {pages}")
    try:
        for _ in range(1000):
            connection.execute("INSERT INTO t VALUES (?)", ("x" * 1000,))
    except sqlite3.OperationalError as error:
        return error
    finally:
        connection.close()
    raise AssertionError("the database grew past max_page_count")


def read_only_error(path: Path) -> sqlalchemy.exc.OperationalError:
    """SQLite's SQLITE_READONLY, as SQLAlchemy raises it (the sqlite3 error in `.orig`)."""
    engine = sqlalchemy.create_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql("CREATE TABLE t (x INTEGER)")
            connection.exec_driver_sql("PRAGMA query_only = ON")
            with pytest.raises(sqlalchemy.exc.OperationalError) as refused:
                connection.exec_driver_sql("INSERT INTO t VALUES (1)")
    finally:
        engine.dispose()
    return refused.value


def test_a_full_or_read_only_disk_is_a_storage_fault_however_it_is_wrapped(tmp_path):
    full = full_disk_error(tmp_path / "full.db")
    assert storage_fault(full) == "database or disk is full"
    assert storage_fault(read_only_error(tmp_path / "ro.db")) == "attempt to write a readonly database"
    try:
        raise RuntimeError("restoring position 3 failed") from full
    except RuntimeError as chained:
        assert storage_fault(chained) == "database or disk is full"


def test_a_refused_row_a_busy_database_or_a_bug_is_not_a_storage_fault(tmp_path):
    connection = sqlite3.connect(tmp_path / "t.db", timeout=0, isolation_level=None)
    connection.execute("CREATE TABLE t (x INTEGER PRIMARY KEY)")
    connection.execute("INSERT INTO t VALUES (1)")
    with pytest.raises(sqlite3.IntegrityError) as refused:
        connection.execute("INSERT INTO t VALUES (1)")
    assert storage_fault(refused.value) is None
    connection.execute("BEGIN IMMEDIATE")
    other = sqlite3.connect(tmp_path / "t.db", timeout=0, isolation_level=None)
    with pytest.raises(sqlite3.OperationalError) as busy:
        other.execute("BEGIN IMMEDIATE")
    assert busy.value.sqlite_errorname == "SQLITE_BUSY" and storage_fault(busy.value) is None
    connection.execute("ROLLBACK")
    connection.close()
    other.close()
    assert storage_fault(ValueError("bad price")) is None and storage_fault(None) is None


def test_an_actor_killed_by_a_full_disk_is_one_log_line_without_a_traceback(tmp_path):
    lines: list[str] = []
    logger.remove()
    logger.add(lambda message: lines.append(str(message)), format="{message}", level="INFO")
    handler = logs._InterceptHandler()
    pykka_log = logging.getLogger("pykka")
    try:
        full = full_disk_error(tmp_path / "full.db")
        record = pykka_log.makeRecord("pykka", logging.ERROR, __file__, 1, "Unhandled exception in DoctorActor (urn:1):",
                                      (), (type(full), full, full.__traceback__))
        handler.emit(record)
        try:
            1 / 0
        except ZeroDivisionError as bug:
            record = pykka_log.makeRecord("pykka", logging.ERROR, __file__, 1,
                                          "Unhandled exception in CycleActor (urn:2):", (), (type(bug), bug, bug.__traceback__))
        handler.emit(record)
    finally:
        logger.remove()
    assert lines[0] == ("Unhandled exception in DoctorActor (urn:1): database or disk is full (the database's disk "
                        "failed)\n")
    assert "Traceback" in lines[1] and "ZeroDivisionError: division by zero" in lines[1]  # a bug keeps its traceback


def test_an_actor_killed_by_a_lock_held_past_the_wait_blames_the_lock_not_the_disk():
    from catalyst.store.errors import HELD_LOCK, DatabaseLockedError

    lines: list[str] = []
    logger.remove()
    logger.add(lambda message: lines.append(str(message)), format="{message}", level="INFO")
    try:
        locked = DatabaseLockedError("var/catalyst.db", f"database is locked: {HELD_LOCK} for longer than Catalyst waits")
        logs._InterceptHandler().emit(logging.getLogger("pykka").makeRecord(
            "pykka", logging.ERROR, __file__, 1, "Unhandled exception in DoctorActor (urn:1):", (),
            (type(locked), locked, None)))
    finally:
        logger.remove()
    assert lines[0].endswith("(another program held the database's lock)\n") and "Traceback" not in lines[0]


def test_the_command_line_names_a_failing_disk_in_one_line_and_exits_3(tmp_path, monkeypatch, capsys):
    refused = read_only_error(tmp_path / "ro.db")

    def status_on_a_read_only_disk(args):
        raise refused

    monkeypatch.setattr(cli, "_cmd_status", status_on_a_read_only_disk)
    assert cli.main(["status"]) == 3
    err = capsys.readouterr().err
    assert err == ("catalyst: error: the database's disk failed: attempt to write a readonly database; free disk "
                   "space or repair the disk, then run again\n")


def test_a_write_refused_while_the_daemon_stops_is_kept_for_its_exit_not_taken_for_a_clean_stop():
    # A TERM while another program held the lock: the writes of the stop were refused, and the daemon said
    # "stopped cleanly" and exited 0 (a review). One refused before the stop was said by the main loop already.
    from catalyst.daemon import Daemon

    class Storage:
        fault: str | None = None

    class System:  # the part that owns the writer's StorageHealth; `refs` marks a system, stopped by stop()
        refs = ()

        def __init__(self, refused_at_stop: str | None, before: str | None = None) -> None:
            self.storage, self.refused_at_stop = Storage(), refused_at_stop
            self.storage.fault = before
            self.entries_closed = threading.Event()  # set as the stop begins (TradingSystem's)
            self.broker_drain_s = 5.0  # the workers' drain, given its share of the stop's bound (TradingSystem's)

        def stop(self) -> None:
            self.storage.fault = self.storage.fault or self.refused_at_stop

    locked = "database is locked: another program held a lock on it for longer than Catalyst waits (30 s)"
    daemon = Daemon.__new__(Daemon)
    daemon.config = SimpleNamespace(daemon=SimpleNamespace(shutdown_timeout_s=20.0))
    daemon.parts = [System(locked)]
    daemon.stop()
    assert daemon.fault_at_stop == locked
    daemon.parts = [System(None, before=locked)]
    daemon.stop()
    assert daemon.fault_at_stop is None
    daemon.parts = [System(None)]
    daemon.stop()
    assert daemon.fault_at_stop is None
