"""DbWriter: the single writer actor serves many threads against one file without locking errors."""

from __future__ import annotations

import sqlite3
import threading
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path

import pykka
import pytest

from actors.db_writer import DbWriter
from catalyst.store.errors import ConstraintViolationError, InvalidValueError, NotADatabaseError
from catalyst.store.records import OrderRecord

T0 = datetime(2025, 12, 29, 15, 0, tzinfo=timezone.utc)
THREADS = 8
WRITES_PER_THREAD = 200


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


def test_eight_threads_writing_through_the_actor_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "busy.db"
    writer = DbWriter.start(sqlite_url(path)).proxy()
    cycle_id = writer.get_or_create_cycle(date(2025, 12, 29), at=T0).get().cycle_id
    errors: list[BaseException] = []
    client_ids: list[str] = []
    lock = threading.Lock()

    def write_many(thread_no: int) -> None:
        try:
            for n in range(WRITES_PER_THREAD):
                if n % 2:
                    writer.record_trade_update("new", {"thread": thread_no, "n": n}, T0).get()
                else:
                    order: OrderRecord = writer.create_order(
                        cycle_id=cycle_id, symbol=f"T{thread_no}", role="entry", side="buy",
                        order_type="market", quantity=Decimal(n + 1),
                    ).get()  # fmt: skip
                    with lock:
                        client_ids.append(order.client_order_id)
        except BaseException as error:  # noqa: BLE001 - reported by the assertion below
            with lock:
                errors.append(error)

    threads = [threading.Thread(target=write_many, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    writer.actor_ref.stop()

    assert errors == []
    half = THREADS * WRITES_PER_THREAD // 2
    with sqlite3.connect(path) as connection:
        assert connection.execute("SELECT count(*) FROM orders").fetchone()[0] == half
        assert connection.execute("SELECT count(*) FROM trade_updates").fetchone()[0] == half
    assert len(set(client_ids)) == half


def test_database_error_reaches_the_caller_and_the_actor_keeps_serving(tmp_path: Path) -> None:
    writer = DbWriter.start(sqlite_url(tmp_path / "errors.db")).proxy()

    with pytest.raises(ConstraintViolationError, match="FOREIGN KEY"):
        writer.create_order(
            cycle_id=12345, symbol="AAPL", role="entry", side="buy", order_type="market", quantity=Decimal(1)
        ).get()  # fmt: skip
    with pytest.raises(InvalidValueError, match="cycle phase 'lunch'"):
        writer.set_cycle_phase(1, "lunch", T0).get()

    assert writer.actor_ref.is_alive()
    cycle = writer.get_or_create_cycle(date(2025, 12, 30), at=T0).get()
    assert cycle.phase == "idle"


def test_unusable_file_fails_at_start_with_the_file_named(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"definitely not sqlite" * 50)

    with pytest.raises(NotADatabaseError, match=str(path)):
        DbWriter.start(sqlite_url(path))

    assert pykka.ActorRegistry.get_by_class(DbWriter) == []


def test_records_returned_through_the_actor_are_frozen_values(tmp_path: Path) -> None:
    writer = DbWriter.start(sqlite_url(tmp_path / "frozen.db")).proxy()

    security = writer.ensure_security("nvda", name="NVIDIA").get()

    assert security.symbol == "NVDA"
    with pytest.raises(AttributeError):
        security.symbol = "AMD"  # type: ignore[misc]
