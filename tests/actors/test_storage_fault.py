"""The disk under the database fails mid-day (full, remounted read-only): nothing more can be recorded, so no order
may be sent (the golden rule); the writer says so once, and the daemon stops on that cause with one line naming the
file, instead of dying actor by actor, each with a traceback. Real actors, alpaca-py, the emulator, SQLite on disk;
the failure is SQLite's own (`PRAGMA query_only` on the writer's connection: every write refused with
SQLITE_READONLY, as on a filesystem the kernel remounted read-only)."""

from __future__ import annotations

from decimal import Decimal
from types import SimpleNamespace

import pytest
from loguru import logger

import actors.system
from actors.db_writer import DbWriter
from catalyst.broker.adapter import AlpacaBroker
from catalyst.broker.ratelimit import RateLimiter
from catalyst.config import load_config
from catalyst.daemon import Daemon
from catalyst.errors import DatabaseError
from tests.actors.conftest import Trading


class DiskThatFails(DbWriter):
    """The daemon's writer, plus a way for the test to make its disk refuse every write from now on."""

    def refuse_writes(self) -> None:
        assert self._loop is not None and self._store is not None
        raw = self._loop.run_until_complete(self._store._plain_sqlite3())
        raw.execute("PRAGMA query_only = ON")


@pytest.fixture
def failing_disk(exchange, tmp_path, monkeypatch):
    monkeypatch.setattr(actors.system, "DbWriter", DiskThatFails)
    harness = Trading(exchange, f"sqlite+aiosqlite:///{tmp_path / 'catalyst.db'}").start()
    yield harness
    harness.stop()


def test_a_disk_that_refuses_writes_sends_no_order_and_stops_the_daemon_naming_the_file(failing_disk, tmp_path):
    trading = failing_disk
    trading.exchange.set_price("AAPL", "149.95")
    trading.open(trading.plan())
    trading.wait_for(lambda: len(trading.broker_view()["orders"]) == 3, "the first trade to be protected")
    assert trading.system is not None and trading.system.storage.fault is None

    lines: list[tuple[str, str]] = []
    sink = logger.add(lambda message: lines.append((message.record["level"].name, message.record["message"])),
                      level="INFO")
    try:
        trading.system.writer_ref.proxy().refuse_writes().get()
        trading.exchange.set_price("MSFT", "410.00")
        trading.open(trading.plan(symbol="MSFT", qty="10", stop="400.00", target="420.00"))
        storage = trading.system.storage
        trading.wait_for(lambda: storage.fault is not None, "the writer to report the refused write")
        trading.wait_for(lambda: any("failed handling PlaceEntry" in message for _, message in lines),
                         "the router to give up the entry it could not record")
    finally:
        logger.remove(sink)

    assert storage.fault == "attempt to write a readonly database"
    orders = trading.broker_view()["orders"]
    assert [o["symbol"] for o in orders] == ["AAPL"] * 3, "an order whose row could not be written reached the broker"
    assert [o["status"] for o in orders] == ["filled", "new", "held"]  # the first trade's OCO stays working
    reports = [message for level, message in lines if "refused a write" in message]
    assert len(reports) == 1 and reports[0].startswith(f"writer database {tmp_path / 'catalyst.db'} refused a write")

    daemon = daemon_over(trading, tmp_path)
    with pytest.raises(DatabaseError) as stopped:
        daemon.check_actors()
    assert str(stopped.value).startswith(f"{tmp_path / 'catalyst.db'}: attempt to write a readonly database: "
                                         "nothing more could be recorded, so the daemon stopped (protection stays at "
                                         "the broker; every share of the 1 position at the broker is under a "
                                         "working stop)")
    assert stopped.value.exit_code == 3


def daemon_over(trading: Trading, tmp_path) -> Daemon:
    """The daemon's own stop check over the harness's actors, with the broker port `catalyst run` gives it."""
    config_file = tmp_path / "config.toml"
    config_file.write_text('[daemon]\ndatabase_url = "sqlite+aiosqlite:///catalyst.db"\n')
    daemon = Daemon(load_config(config_file), SimpleNamespace(), trading.db_url,  # type: ignore[arg-type]
                    parts=[trading.system])
    daemon.broker = AlpacaBroker(trading.key, "secret", trading_url=trading.exchange.base_url, timeout_s=5.0,
                                 limiter=RateLimiter(0), name="daemon")
    return daemon


def rest_an_entry(trading: Trading) -> None:
    """A limit entry of 10 MSFT at 409.00 resting at the broker (a print at 408.50 then fills it)."""
    trading.exchange.set_price("MSFT", "410.00")
    trading.open(trading.plan(symbol="MSFT", qty="10", stop="400.00", target="420.00", order_type="limit",
                              limit_price=Decimal("409.00")))
    trading.wait_for(lambda: (o := trading.all_orders("MSFT")) and o[0].status in ("submitted", "accepted"),
                     "the entry resting at the broker")
    assert trading.system is not None


def a_fill_the_disk_refused(trading: Trading) -> None:
    """10 MSFT bought at the broker by a resting limit entry whose fill the disk then refused to record."""
    rest_an_entry(trading)
    trading.system.writer_ref.proxy().refuse_writes().get()
    trading.trade("MSFT", "408.50")
    trading.wait_for(lambda: trading.system.storage.fault is not None, "the fill's commit to be refused")
    trading.wait_for(lambda: trading.broker_view()["positions"], "the shares bought at the broker")


def test_a_fill_the_disk_would_not_record_is_named_unprotected_when_the_daemon_stops(failing_disk, tmp_path):
    """The gap the golden rule leaves: a fill whose commit the disk refuses cannot have its stop sent (no row, no
    order). The daemon cannot close it, but it asks the broker which shares no working stop covers and names them, in
    a CRITICAL line and in its exit message, so the operator can protect them by hand until the disk is fixed."""
    trading = failing_disk
    a_fill_the_disk_refused(trading)
    assert [o["symbol"] for o in trading.broker_view()["orders"]] == ["MSFT"], "an order with no row was sent"

    lines: list[tuple[str, str]] = []
    sink = logger.add(lambda message: lines.append((message.record["level"].name, message.record["message"])),
                      level="INFO")
    try:
        with pytest.raises(DatabaseError) as stopped:
            daemon_over(trading, tmp_path).check_actors()
    finally:
        logger.remove(sink)
    assert "(protection stays at the broker; NOT under a working stop at the broker: MSFT 10 long, 0 under a working " \
           "stop); free disk space" in str(stopped.value)
    assert ("CRITICAL", "system position MSFT at the broker: MSFT 10 long, 0 under a working stop; no order can be "
            "sent while the database refuses writes: protect it by hand at the broker, or fix the disk and restart") \
        in lines
