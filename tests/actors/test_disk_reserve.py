"""The disk under the database fills up mid-day, another program's doing: the fill in flight must still get its stop.

Without the reserve, the fill's commit is refused, no order may be sent for a row that is not written (the golden
rule), and its shares stay unprotected until someone frees space and restarts. With it, the writer gives the reserve's
space back, writes the fill again, and the OCO goes out. A real full disk: a small tmpfs filled by a file of its own
until the kernel says ENOSPC (needs root to mount; CI runs as root). Real actors, alpaca-py, the emulator."""

from __future__ import annotations

import errno
import os
import subprocess
from decimal import Decimal
from pathlib import Path

import pytest

import actors.system
import catalyst.daemon
from actors.db_writer import DbWriter
from catalyst.errors import DatabaseError
from catalyst.store.reserve import reserve_path
from chaos.__main__ import RESERVE_STOP_LINE
from tests.actors.conftest import Trading, logged_lines
from tests.actors.test_protection_rejected import restrict
from tests.actors.test_storage_fault import daemon_over, rest_an_entry


class WalTruncated(DbWriter):
    """The daemon's writer, plus a checkpoint that empties the write-ahead log (as a restart's does): the next commit
    must grow the log file, so on a full disk it is refused."""

    def truncate_wal(self) -> None:
        assert self._loop is not None and self._store is not None
        raw = self._loop.run_until_complete(self._store._plain_sqlite3())
        raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")


@pytest.fixture
def small_disk(tmp_path) -> Path:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(disk)], capture_output=True,
                             text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=True)


def fill_up(disk: Path) -> Path:
    """Write a file until the kernel refuses with ENOSPC: the disk is then full for everyone."""
    filler = disk / "someone-elses.log"
    chunk = b"x" * 4096
    with open(filler, "wb", buffering=0) as file:
        while True:
            try:
                file.write(chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                return filler


@pytest.fixture
def on_small_disk(exchange, small_disk, monkeypatch):
    monkeypatch.setattr(actors.system, "DbWriter", WalTruncated)
    harness = Trading(exchange, f"sqlite+aiosqlite:///{small_disk / 'catalyst.db'}", disk_reserve_mb=1).start()
    yield harness
    harness.stop()


def rest_an_entry_then_fill_the_disk(trading: Trading, disk: Path) -> None:
    rest_an_entry(trading)
    trading.system.writer_ref.proxy().truncate_wal().get()
    fill_up(disk)


def test_a_fill_whose_commit_meets_a_full_disk_is_recorded_on_the_reserve_and_protected(on_small_disk, small_disk):
    trading = on_small_disk
    reserve = reserve_path(small_disk / "catalyst.db")
    assert reserve.stat().st_size == 1024 * 1024 and reserve.stat().st_blocks * 512 >= 1024 * 1024  # not sparse
    rest_an_entry_then_fill_the_disk(trading, small_disk)

    with logged_lines("actors.db_writer", "ERROR") as errors:
        trading.trade("MSFT", "408.50")
        orders = trading.wait_for(lambda: len(trading.broker_view()["orders"]) == 3 and trading.broker_view()["orders"],
                                  "the fill's OCO at the broker")
        trading.wait_for(lambda: all(o.alpaca_order_id for o in trading.all_orders("MSFT")),
                         "both OCO rows to carry their broker ids")

    assert [o["status"] for o in orders] == ["filled", "new", "held"]
    rows = trading.all_orders("MSFT")
    assert [(o.role, str(o.quantity)) for o in rows] == [("entry", "10"), ("take_profit", "10"), ("stop_loss", "10")]
    assert {o.alpaca_order_id for o in rows} == {o["id"] for o in orders}
    storage = trading.system.storage
    assert storage.fault is None
    assert storage.reserve_used is not None and storage.reserve_used.startswith(
        f"the disk under {small_disk / 'catalyst.db'} is full (database or disk is full); its 1 MB reserve")
    assert not reserve.exists()
    assert len(errors) == 1 and "for a full disk: gave back the 1 MB disk reserve" in errors[0]

    # The daemon then opens nothing more and stops as on any refused write, the fill now under its stop.
    with logged_lines("catalyst.daemon", "CRITICAL") as critical:
        with pytest.raises(DatabaseError) as stopped:
            daemon_over(trading, small_disk.parent).check_actors()
    assert critical == [f"system {storage.reserve_used}: no new position will be opened; cancelling the entries still "
                        "working, stopping once every filled share is under a working stop (at most "
                        f"{catalyst.daemon.RESERVE_DRAIN_S:g} s)",
                        "system stopping on a full disk: every filled share of the live positions is under a working "
                        "stop"]
    assert stopped.value.exit_code == 3
    assert str(stopped.value) == (
        f"{small_disk / 'catalyst.db'}: {storage.reserve_used}, so the daemon stopped opening positions and then "
        "stopped (protection stays at the broker; every share of the 1 position at the broker is under a working "
        "stop); free disk space, then restart: it sets the reserve aside again, rebuilds every position from the "
        "database and catches up with the broker")
    # The chaos harness judges a daemon stopped on a filled disk by this line: it must read the daemon's own words.
    said = RESERVE_STOP_LINE.search(f"catalyst: error: {stopped.value}")
    assert said and said["held"] == "every share of the 1 position at the broker is under a working stop"


def test_a_stop_that_does_not_come_is_waited_for_a_bounded_time_then_named_at_the_broker(on_small_disk, small_disk,
                                                                                         monkeypatch):
    """The reserve recorded the fill but the broker refuses its OCO (the account restricted meanwhile): the daemon
    does not wait for ever on a full disk; after RESERVE_DRAIN_S it stops, naming the shares with no stop."""
    monkeypatch.setattr(catalyst.daemon, "RESERVE_DRAIN_S", 1.0)
    trading = on_small_disk
    rest_an_entry_then_fill_the_disk(trading, small_disk)
    restrict(trading, trading_blocked=True)
    trading.trade("MSFT", "408.50")
    storage = trading.system.storage
    trading.wait_for(lambda: storage.reserve_used is not None, "the fill written on the reserve's space")
    trading.wait_for(lambda: [o.status for o in trading.all_orders("MSFT")][:3] == ["filled", "rejected", "rejected"],
                     "the OCO refused by the broker")

    daemon = daemon_over(trading, small_disk.parent)
    with logged_lines("catalyst.daemon", "CRITICAL") as critical:
        daemon.check_actors()  # waiting: the position holds 10 shares with no stop
        assert storage.fault is None and daemon.full_disk_since is not None
        with pytest.raises(DatabaseError) as stopped:
            trading.wait_for(lambda: daemon.check_actors(), "the bounded wait to end", timeout=5)
    assert critical[1] == "system stopping on a full disk after 1 s with MSFT#p-1 not yet under a working stop"
    assert "(protection stays at the broker; NOT under a working stop at the broker: MSFT 10 long, 0 under a working " \
           "stop); free disk space, then restart" in str(stopped.value)
    said = RESERVE_STOP_LINE.search(f"catalyst: error: {stopped.value}")
    assert said and said["held"].startswith("NOT under a working stop")
    assert [o["symbol"] for o in trading.broker_view()["orders"]] == ["MSFT"]


def test_entries_still_working_are_cancelled_before_the_daemon_stops_on_a_full_disk(on_small_disk, small_disk):
    """An entry left working at the broker could fill once the daemon has stopped, its shares without a stop until
    the disk is freed: the daemon cancels every working entry first. Here the write that meets the full disk is a new
    entry's own row (written on the reserve, sent like any write in flight), so two entries rest when it stops."""
    trading = on_small_disk
    rest_an_entry_then_fill_the_disk(trading, small_disk)
    trading.exchange.set_price("AAPL", "150.00")
    trading.open(trading.plan(order_type="limit", limit_price=Decimal("149.00")))
    storage = trading.system.storage
    trading.wait_for(lambda: storage.reserve_used is not None, "the new entry's row written on the reserve's space")
    trading.wait_for(lambda: len(trading.broker_view()["orders"]) == 2, "both entries resting at the broker")

    daemon = daemon_over(trading, small_disk.parent)
    with logged_lines("catalyst.daemon", "CRITICAL") as critical:
        with pytest.raises(DatabaseError) as stopped:
            trading.wait_for(lambda: daemon.check_actors(), "the daemon to stop on the full disk", timeout=10)
    assert critical[0].endswith("no new position will be opened; cancelling the entries still working, stopping once "
                                "every filled share is under a working stop (at most 30 s)")
    assert critical[1] == "system stopping on a full disk: every filled share of the live positions is under a working " \
                          "stop"
    assert sorted((o["symbol"], o["status"]) for o in trading.broker_view()["orders"]) == [
        ("AAPL", "canceled"), ("MSFT", "canceled")]
    assert "(protection stays at the broker; no position is held at the broker)" in str(stopped.value)
    assert [o.status for o in trading.all_orders("AAPL") + trading.all_orders("MSFT")] == ["cancelled", "cancelled"]
