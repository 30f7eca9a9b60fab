"""DbWriter group commit: calls queued behind a busy writer share one transaction, each keeps its own outcome."""

from __future__ import annotations

import sqlite3
import threading
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pykka
import pytest

from actors.db_writer import DbWriter
from catalyst.store.errors import InvalidValueError

T0 = datetime(2025, 12, 29, 15, 0, tzinfo=timezone.utc)


class GatedWriter(DbWriter):
    """A DbWriter that can be held busy, so the test decides what waits in its mailbox."""

    def hold(self, gate: threading.Event) -> None:
        gate.wait(timeout=30)


@pytest.fixture
def gated(tmp_path: Path) -> Any:
    ref = GatedWriter.start(f"sqlite+aiosqlite:///{tmp_path / 'group.db'}")
    yield ref
    if ref.is_alive():
        ref.stop()


def committed_events(path: Path) -> list[str]:
    with sqlite3.connect(path) as db:
        return [row[0] for row in db.execute("SELECT event FROM trade_updates ORDER BY id")]


def test_calls_waiting_behind_a_busy_writer_share_one_transaction(gated: Any, tmp_path: Path) -> None:
    writer, gate = gated.proxy(), threading.Event()
    before = writer.stats().get()
    held = writer.hold(gate)
    futures = [writer.record_trade_update(f"event-{n}", {"n": n}, T0) for n in range(20)]

    gate.set()
    held.get(timeout=30)
    ids = [future.get(timeout=30) for future in futures]

    after = writer.stats().get()
    assert ids == sorted(ids) and len(set(ids)) == 20
    assert after.calls - before.calls == 20
    assert after.transactions - before.transactions == 1
    assert after.largest_group == 20


def test_each_caller_sees_its_row_committed_when_its_future_resolves(gated: Any, tmp_path: Path) -> None:
    writer, gate = gated.proxy(), threading.Event()
    writer.hold(gate)
    futures = [writer.record_trade_update(f"event-{n}", {}, T0) for n in range(10)]
    gate.set()

    for n, future in enumerate(futures):
        future.get(timeout=30)
        # A separate connection: what it sees is committed, not merely written in the writer's transaction.
        assert f"event-{n}" in committed_events(tmp_path / "group.db")


def test_a_failing_call_in_a_group_fails_alone(gated: Any, tmp_path: Path) -> None:
    writer, gate = gated.proxy(), threading.Event()
    cycle_id = writer.get_or_create_cycle(date(2025, 12, 29), at=T0).get().cycle_id
    writer.hold(gate)
    before = writer.record_trade_update("before", {}, T0)
    refused = writer.create_order(cycle_id=cycle_id, symbol="AAPL", role="bogus", side="buy",
                                  order_type="market", quantity=Decimal(1))
    created = writer.create_order(cycle_id=cycle_id, symbol="AAPL", role="entry", side="buy",
                                  order_type="market", quantity=Decimal(1))
    after = writer.record_trade_update("after", {}, T0)
    gate.set()

    with pytest.raises(InvalidValueError, match="bogus"):
        refused.get(timeout=30)
    assert created.get(timeout=30).role == "entry"
    assert isinstance(before.get(timeout=30), int) and isinstance(after.get(timeout=30), int)
    assert committed_events(tmp_path / "group.db") == ["before", "after"]
    assert writer.get_order(created.get().order_id).get().status == "created"


def test_a_stop_queued_behind_calls_keeps_its_place(gated: Any, tmp_path: Path) -> None:
    writer, gate = gated.proxy(), threading.Event()
    writer.hold(gate)
    served = [writer.record_trade_update(f"event-{n}", {}, T0) for n in range(5)]
    stopped = gated.stop(block=False)
    too_late = writer.record_trade_update("too-late", {}, T0)
    gate.set()

    assert [isinstance(f.get(timeout=30), int) for f in served] == [True] * 5
    stopped.get(timeout=30)
    with pytest.raises(pykka.ActorDeadError):
        too_late.get(timeout=30)
    assert committed_events(tmp_path / "group.db") == [f"event-{n}" for n in range(5)]


def test_a_lone_call_still_gets_its_own_exception_and_the_writer_keeps_serving(gated: Any) -> None:
    writer = gated.proxy()

    with pytest.raises(InvalidValueError):
        writer.record_trade_update("new", "not a dict", T0).get(timeout=30)
    assert isinstance(writer.record_trade_update("new", {}, T0).get(timeout=30), int)
