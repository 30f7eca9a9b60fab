"""The store on a real SQLite file, from an empty migration: a whole trade read back exactly."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Coroutine, Iterator
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import text

from catalyst.store.db import make_engine
from catalyst.store.errors import ConstraintViolationError, InvalidValueError
from catalyst.store.migrate import upgrade
from catalyst.store.records import NewOrder, OrderProgress
from catalyst.store.repository import Store

T = TypeVar("T")
T0 = datetime(2025, 12, 29, 14, 35, tzinfo=timezone.utc)


class StoreOnLoop:
    """A Store plus the event loop to drive it from plain test code."""

    def __init__(self, url: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.store = Store(make_engine(url))

    def __call__(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coroutine)

    def close(self) -> None:
        self(self.store.close())
        self.loop.close()


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path / 'catalyst.db'}"
    upgrade(url)
    return url


@pytest.fixture
def run(db_url: str) -> Iterator[StoreOnLoop]:
    on_loop = StoreOnLoop(db_url)
    yield on_loop
    on_loop.close()


def test_whole_trade_reads_back_exactly(run: StoreOnLoop) -> None:
    store = run.store
    cycle = run(store.get_or_create_cycle(date(2025, 12, 29), at=T0))
    security = run(store.ensure_security("AAPL", name="Apple Inc."))

    entry = run(store.create_order(
        cycle_id=cycle.cycle_id, symbol="AAPL", role="entry", side="buy", order_type="limit",
        quantity=Decimal("100"), limit_price=Decimal("150.00"),
        planned_stop_loss=Decimal("147.00"), planned_take_profit=Decimal("155.00"), at=T0,
    ))  # fmt: skip
    assert re.fullmatch(r"cat-[0-9a-f]{8}-" + str(entry.order_id), entry.client_order_id)
    assert (entry.status, entry.position_id, entry.security_id) == ("created", None, security.security_id)

    run(store.mark_submitted(entry.order_id, "alp-xyz-123", "accepted", T0 + timedelta(seconds=1)))
    fill_time = T0 + timedelta(seconds=5)
    assert run(store.record_fill(
        execution_id="exec-1", alpaca_order_id="alp-xyz-123", symbol="AAPL", side="buy",
        qty=Decimal("100"), price=Decimal("149.95"), occurred_at=fill_time, source="stream",
        order_progress=OrderProgress("filled", "filled", Decimal("100"), Decimal("149.95")),
    ))  # fmt: skip
    position = run(store.open_position_for_entry(
        entry.order_id, Decimal("100"), Decimal("149.95"), fill_time, Decimal("147.00"), Decimal("155.00")
    ))  # fmt: skip

    stop, target = run(store.create_orders([
        NewOrder(cycle.cycle_id, "AAPL", "stop_loss", "sell", "stop", Decimal("100"), order_class="oco",
                 stop_price=Decimal("147.00"), position_id=position.position_id, parent_order_id=entry.order_id),
        NewOrder(cycle.cycle_id, "AAPL", "take_profit", "sell", "limit", Decimal("100"), order_class="oco",
                 limit_price=Decimal("155.00"), position_id=position.position_id, parent_order_id=entry.order_id),
    ], at=fill_time))  # fmt: skip
    run(store.mark_submitted(stop.order_id, "alp-sl", "new", fill_time))
    run(store.mark_submitted(target.order_id, "alp-tp", "held", fill_time))

    exit_time = T0 + timedelta(minutes=30)
    run(store.record_fill(
        execution_id="exec-2", alpaca_order_id="alp-tp", symbol="AAPL", side="sell", qty=Decimal("100"),
        price=Decimal("155.00"), position_qty=Decimal("0"), occurred_at=exit_time, source="stream",
        order_progress=OrderProgress("filled", "filled", Decimal("100"), Decimal("155.00")),
    ))  # fmt: skip
    run(store.update_order_status(stop.order_id, "cancelled", "canceled", Decimal(0), None, exit_time, reason="OCO"))
    run(store.close_position(position.position_id, Decimal("155.00"), Decimal("505.00"), exit_time))

    entry_back = run(store.get_order_by_client_id(entry.client_order_id))
    assert entry_back is not None
    assert entry_back.status == "filled"
    assert entry_back.filled_avg_price == Decimal("149.95")
    assert str(entry_back.filled_avg_price) == "149.95"
    stored = run(_scalar(store, f"SELECT filled_avg_price FROM orders WHERE order_id = {entry.order_id}"))
    assert stored == "149.95"  # text in the file, never a float
    assert entry_back.position_id == position.position_id
    assert entry_back.alpaca_order_id == "alp-xyz-123"
    assert entry_back.filled_at == fill_time
    assert entry_back.filled_at.tzinfo is not None
    assert entry_back.planned_stop_loss == Decimal("147.00")

    legs = run(store.orders_for_position(position.position_id))
    by_role = {order.role: order for order in legs}
    assert set(by_role) == {"entry", "stop_loss", "take_profit"}
    assert by_role["stop_loss"].parent_order_id == entry.order_id
    assert (by_role["stop_loss"].status, by_role["stop_loss"].cancel_reason) == ("cancelled", "OCO")
    assert by_role["stop_loss"].cancelled_at == exit_time
    assert (by_role["take_profit"].status, by_role["take_profit"].filled_avg_price) == ("filled", Decimal("155.00"))

    closed = run(store.get_position(position.position_id))
    assert closed is not None
    assert (closed.symbol, closed.side, closed.status, closed.quantity) == ("AAPL", "long", "closed", Decimal(0))
    assert (closed.entry_price, closed.exit_price, closed.realized_pnl) == (
        Decimal("149.95"), Decimal("155.00"), Decimal("505.00"),
    )  # fmt: skip
    assert (closed.entry_time, closed.exit_time) == (fill_time, exit_time)
    assert [f.execution_id for f in run(store.fills_for_order(entry.order_id))] == ["exec-1"]
    assert run(store.working_orders()) == []


def test_same_execution_twice_is_recorded_once(run: StoreOnLoop) -> None:
    fill = dict(
        execution_id="exec-dup", alpaca_order_id="unknown-at-first", symbol="MSFT", side="buy",
        qty=Decimal("10"), price=Decimal("410.10"), occurred_at=T0, source="stream",
    )  # fmt: skip

    first = run(run.store.record_fill(**fill))
    second = run(run.store.record_fill(**{**fill, "source": "rest"}))

    assert (first, second) == (True, False)
    rows = run.loop.run_until_complete(_count(run.store, "fills"))
    assert rows == 1


async def _scalar(store: Store, sql: str) -> Any:
    engine = make_engine(store_url(store))
    try:
        async with engine.connect() as connection:
            return (await connection.execute(text(sql))).scalar_one()
    finally:
        await engine.dispose()


def store_url(store: Store) -> str:
    return store._engine.url.render_as_string()


async def _count(store: Store, table: str) -> int:
    return int(await _scalar(store, f"SELECT count(*) FROM {table}"))


def test_fill_for_unknown_order_is_kept_without_an_order(run: StoreOnLoop) -> None:
    recorded = run(run.store.record_fill(
        execution_id="exec-orphan", alpaca_order_id="not-ours", symbol="TSLA", side="sell",
        qty=Decimal("3"), price=Decimal("250.5"), occurred_at=T0, source="activity",
    ))  # fmt: skip

    assert recorded
    assert run(_count(run.store, "fills")) == 1


def test_trade_update_for_unknown_order_is_recorded_with_its_payload(run: StoreOnLoop) -> None:
    payload = {"event": "fill", "order": {"id": "nobody", "filled_avg_price": Decimal("1.10")}}

    update_id = run(run.store.record_trade_update("fill", payload, T0, alpaca_order_id="nobody"))

    assert update_id >= 1
    assert run(_count(run.store, "trade_updates")) == 1


def test_float_money_is_refused_with_a_clear_message(run: StoreOnLoop) -> None:
    cycle = run(run.store.get_or_create_cycle(date(2025, 12, 29), at=T0))

    with pytest.raises(InvalidValueError, match="limit_price must be a Decimal"):
        run(run.store.create_order(
            cycle_id=cycle.cycle_id, symbol="AAPL", role="entry", side="buy", order_type="limit",
            quantity=Decimal(1), limit_price=149.95,
        ))  # fmt: skip
    assert run(run.store.working_orders()) == []


def test_naive_timestamp_is_refused(run: StoreOnLoop) -> None:
    with pytest.raises(InvalidValueError, match="naive"):
        run(run.store.get_or_create_cycle(date(2025, 12, 29), at=datetime(2025, 12, 29, 9, 30)))


def test_unknown_status_is_refused_before_writing(run: StoreOnLoop) -> None:
    cycle = run(run.store.get_or_create_cycle(date(2025, 12, 29), at=T0))
    order = run(run.store.create_order(
        cycle_id=cycle.cycle_id, symbol="AAPL", role="entry", side="buy", order_type="market", quantity=Decimal(5)
    ))  # fmt: skip

    with pytest.raises(InvalidValueError, match="order status 'done' is not one of"):
        run(run.store.update_order_status(order.order_id, "done", None, Decimal(0), None, T0))
    assert run(run.store.get_order(order.order_id)).status == "created"  # type: ignore[union-attr]


def test_order_for_missing_cycle_is_refused_by_foreign_key(run: StoreOnLoop) -> None:
    with pytest.raises(ConstraintViolationError, match="FOREIGN KEY"):
        run(run.store.create_order(
            cycle_id=999, symbol="AAPL", role="entry", side="buy", order_type="market", quantity=Decimal(5)
        ))  # fmt: skip


def test_second_open_for_one_entry_returns_the_same_position(run: StoreOnLoop) -> None:
    cycle = run(run.store.get_or_create_cycle(date(2025, 12, 29), at=T0))
    entry = run(run.store.create_order(
        cycle_id=cycle.cycle_id, symbol="AMD", role="entry", side="sell", order_type="market", quantity=Decimal(7)
    ))  # fmt: skip

    first = run(run.store.open_position_for_entry(entry.order_id, Decimal(7), Decimal("120.01"), T0))
    again = run(run.store.open_position_for_entry(entry.order_id, Decimal(7), Decimal("120.01"), T0))

    assert again.position_id == first.position_id
    assert first.side == "short"
    assert run(_count(run.store, "positions")) == 1


def test_a_mark_to_market_after_the_close_leaves_the_closed_position_at_zero_unrealized(run: StoreOnLoop) -> None:
    """The doctor reads the open positions, then marks each: one that closed in between keeps its close's zero."""
    cycle = run(run.store.get_or_create_cycle(date(2025, 12, 29), at=T0))
    entries = [run(run.store.create_order(cycle_id=cycle.cycle_id, symbol=symbol, role="entry", side="buy",
                                          order_type="market", quantity=Decimal(10))) for symbol in ("AMD", "NVDA")]
    still_open, closing = (run(run.store.open_position_for_entry(e.order_id, Decimal(10), Decimal("100.00"), T0))
                           for e in entries)
    run(run.store.close_position(closing.position_id, Decimal("101.00"), Decimal("10.00"), T0 + timedelta(minutes=1)))

    assert run(run.store.mark_open_position(closing.position_id, Decimal("99.00"), Decimal("-10.00"))) is False
    assert run(run.store.mark_open_position(still_open.position_id, Decimal("99.00"), Decimal("-10.00"))) is True
    closed, marked = (run(run.store.get_position(p.position_id)) for p in (closing, still_open))
    assert (closed.status, closed.unrealized_pnl, closed.realized_pnl) == ("closed", Decimal(0), Decimal("10.00"))
    assert (marked.last_price, marked.unrealized_pnl) == (Decimal("99.00"), Decimal("-10.00"))


def test_catalyst_status_reads_the_day_so_far_in_new_york_time(run: StoreOnLoop, tmp_path: Path) -> None:
    """Mid-day: the cycle's daily_pnl is only written when the day completes, so status sums the day so far; a closed
    position has no unrealized P&L; the doctor's findings read in New York time like the log."""
    from catalyst.config import load_config
    from catalyst.status import status_text
    from catalyst.store.records import NewFinding

    cycle = run(run.store.get_or_create_cycle(date(2025, 12, 29), at=T0))
    entries = [run(run.store.create_order(cycle_id=cycle.cycle_id, symbol=symbol, role="entry", side="buy",
                                          order_type="market", quantity=Decimal(10))) for symbol in ("AMD", "NVDA")]
    held, sold = (run(run.store.open_position_for_entry(e.order_id, Decimal(10), Decimal("100.00"), T0)) for e in entries)
    run(run.store.mark_open_position(held.position_id, Decimal("102.50"), Decimal("25.00")))
    run(run.store.close_position(sold.position_id, Decimal("101.00"), Decimal("10.00"), T0 + timedelta(minutes=1)))
    run(run.store.insert_findings([NewFinding(found_at=T0, pass_id="p-1", type="ORPHAN_ORDER", severity="warning",
                                              subject="order AAPL#12345678", action="alert", outcome="alerted")]))
    config_file = tmp_path / "config.toml"
    config_file.write_text(f'[daemon]\ndatabase_url = "sqlite+aiosqlite:///{tmp_path / "catalyst.db"}"\n')

    lines = status_text(load_config(config_file)).splitlines()

    assert lines[0] == "daemon: not running"
    assert lines[2].endswith(" P&L so far +35.00")  # realized 10 + unrealized 25
    (closed,) = [line for line in lines if line.startswith(f"NVDA#p-{sold.position_id} ")]
    assert closed.split()[-2:] == ["10", "-"]
    assert any(line.startswith("  2025-12-29 09:35:00 warning  ORPHAN_ORDER") for line in lines)  # T0: 14:35 UTC
    # Last, the disk under the database: this store was never a daemon's, so no reserve was set aside beside it.
    assert lines[-1].startswith("disk: ") and "the 8 MB disk reserve is NOT set aside" in lines[-1]


def test_catalyst_status_shows_a_position_kept_overnight_beside_the_days_own(run: StoreOnLoop, tmp_path: Path) -> None:
    """The day after a position was kept overnight under its stops, status said `(no positions today)`: it listed
    only the latest cycle's positions, while the shares were held and their stops worked."""
    from catalyst.config import load_config
    from catalyst.status import status_text

    yesterday = run(run.store.get_or_create_cycle(date(2025, 12, 29), at=T0))
    entry = run(run.store.create_order(cycle_id=yesterday.cycle_id, symbol="AMD", role="entry", side="buy",
                                       order_type="market", quantity=Decimal(10)))
    kept = run(run.store.open_position_for_entry(entry.order_id, Decimal(10), Decimal("100.00"), T0))
    run(run.store.mark_open_position(kept.position_id, Decimal("98.00"), Decimal("-20.00")))
    run(run.store.get_or_create_cycle(date(2025, 12, 30), at=T0 + timedelta(days=1)))
    config_file = tmp_path / "config.toml"
    config_file.write_text(f'[daemon]\ndatabase_url = "sqlite+aiosqlite:///{tmp_path / "catalyst.db"}"\n')

    lines = status_text(load_config(config_file)).splitlines()

    assert "(no positions today)" not in lines
    (row,) = [line for line in lines if line.startswith(f"AMD#p-{kept.position_id}* ")]
    assert row.split()[1:3] == ["open", "long"]
    assert "realized +0.00  unrealized +0.00" in lines  # the day's own P&L: nothing traded today
    assert "* 1 open from an earlier day (kept overnight), unrealized -20.00, not in the day's P&L" in lines


def test_a_loss_realized_on_the_day_after_entry_is_that_days(run: StoreOnLoop, tmp_path: Path) -> None:
    """A position kept overnight under its stop (good till cancelled) that the stop sells at the next open: its loss
    went on the entry's day, whose figure was already written at its close, and today's P&L (the daily loss limit's
    input, risk's realized P&L, `catalyst status`) read 0 after it."""
    from catalyst.config import load_config
    from catalyst.status import status_text

    yesterday = run(run.store.get_or_create_cycle(date(2025, 12, 29), at=T0))
    entries = [run(run.store.create_order(cycle_id=yesterday.cycle_id, symbol=symbol, role="entry", side="buy",
                                          order_type="market", quantity=Decimal(10))) for symbol in ("AMD", "NVDA")]
    kept, sold = (run(run.store.open_position_for_entry(e.order_id, Decimal(10), Decimal("100.00"), T0)) for e in entries)
    run(run.store.close_position(sold.position_id, Decimal("101.00"), Decimal("10.00"), T0 + timedelta(hours=1)))
    today = run(run.store.get_or_create_cycle(date(2025, 12, 30), at=T0 + timedelta(days=1)))
    # 09:30 New York on the 30th: the stop fills at the open, 5.00 below the entry.
    run(run.store.close_position(kept.position_id, Decimal("95.00"), Decimal("-50.00"), T0 + timedelta(days=1, minutes=-5)))

    assert run(run.store.cycle_pnl(today.cycle_id)) == (Decimal("-50.00"), Decimal(0))
    assert run(run.store.cycle_pnl(yesterday.cycle_id)) == (Decimal("10.00"), Decimal(0))  # counted once, not twice
    config_file = tmp_path / "config.toml"
    config_file.write_text(f'[daemon]\ndatabase_url = "sqlite+aiosqlite:///{tmp_path / "catalyst.db"}"\n')
    lines = status_text(load_config(config_file)).splitlines()

    assert lines[2].endswith(" P&L so far -50.00")
    (row,) = [line for line in lines if line.startswith(f"AMD#p-{kept.position_id}* ")]
    assert row.split()[1] == "closed"
    assert not [line for line in lines if line.startswith(f"NVDA#p-{sold.position_id}")]  # yesterday's own day
    assert "* 1 kept from an earlier day closed today, realized today -50.00, in the day's P&L" in lines


def test_catalyst_status_says_whether_a_daemon_runs_and_whose_snapshot_it_shows(run: StoreOnLoop,
                                                                               tmp_path: Path) -> None:
    """After a kill -9 it showed the dead daemon's last snapshot as if it were running, and during start-up (the
    database not created yet) it failed with `no database yet`."""
    import os

    from catalyst.config import load_config
    from catalyst.instance import InstanceLock
    from catalyst.status import status_text, write_state_snapshot

    config_file = tmp_path / "config.toml"
    config_file.write_text(f'[daemon]\ndatabase_url = "sqlite+aiosqlite:///{tmp_path / "fresh" / "catalyst.db"}"\n')
    lock = InstanceLock(tmp_path / "fresh" / "catalyst.db").acquire("catalyst run --config config.toml")
    try:
        assert status_text(load_config(config_file)) == (
            f"daemon: running (pid {os.getpid()}, catalyst run --config config.toml); starting up: its database "
            f"{tmp_path / 'fresh' / 'catalyst.db'} is not created yet")
    finally:
        lock.release()

    run(run.store.get_or_create_cycle(date(2025, 12, 29), at=T0))
    database = tmp_path / "catalyst.db"
    config_file.write_text(f'[daemon]\ndatabase_url = "sqlite+aiosqlite:///{database}"\n')
    write_state_snapshot(database, {"at": "2025-12-29T10:45:00", "phase": "monitoring", "positions": [{}, {}]})
    snapshot = "daemon snapshot at 2025-12-29T10:45:00: phase monitoring, 2 live position actors, halted: no"

    lines = status_text(load_config(config_file)).splitlines()
    assert lines[0] == "daemon: not running" and f"{snapshot} (its last run's: no daemon runs now)" in lines

    lock = InstanceLock(database).acquire("catalyst run")
    try:
        lines = status_text(load_config(config_file)).splitlines()
    finally:
        lock.release()
    assert lines[0] == f"daemon: running (pid {os.getpid()}, catalyst run)" and snapshot in lines
