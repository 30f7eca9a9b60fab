"""Store.batch on a real SQLite file: many calls, one transaction and one commit, each call its own outcome."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sqlite3
from collections.abc import Coroutine, Iterator
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import event

from actors.db_writer import DbWriter
from catalyst.store.batch import WriteGroup, call, commit_together, unwrap_all
from catalyst.store.db import make_engine
from catalyst.store.errors import ConstraintViolationError, InvalidValueError, RecordNotFoundError
from catalyst.store.migrate import upgrade
from catalyst.store.records import NewOrder, OrderProgress, OrderRecord
from catalyst.store.repository import PLAIN_SQL_METHODS, Store

T = TypeVar("T")
T0 = datetime(2025, 12, 29, 14, 35, tzinfo=timezone.utc)


class CountingStore:
    """A Store on its own loop that counts the transactions committed on its SQLite connections.

    Counted as SQLite sees them (every COMMIT statement on every connection the engine opens), so a batch run in
    an ORM session and one run in a plain transaction (raw_sql.PlainTransaction) are counted alike.
    """

    def __init__(self, path: Path, defer_report_sync: bool = False) -> None:
        self.path = path
        url = f"sqlite+aiosqlite:///{path}"
        upgrade(url)
        engine = make_engine(url)
        self.commits = 0
        self.level = "FULL"  # the synchronous level in force on the connection, as the PRAGMAs sent set it
        self.levels_at_commit: list[str] = []
        self.orm_transactions = 0  # transactions begun through SQLAlchemy (an ORM session's), not plain ones
        self.statements: list[str] = []  # every statement SQLite ran, in order
        event.listen(engine.sync_engine, "connect", self._trace)
        event.listen(engine.sync_engine, "begin", self._orm_begin)
        self.loop = asyncio.new_event_loop()
        self.store = Store(engine, clock=lambda: T0, synchronous="FULL", defer_report_sync=defer_report_sync)

    def _trace(self, dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.driver_connection.sqlite3_connection.set_trace_callback(self._count)

    def _orm_begin(self, _connection: Any) -> None:
        self.orm_transactions += 1

    def _count(self, statement: str) -> None:
        self.statements.append(statement)
        text = statement.strip().upper()
        if text.startswith("PRAGMA SYNCHRONOUS="):
            self.level = text.split("=", 1)[1]
        if text in ("COMMIT", "END"):
            self.commits += 1
            self.levels_at_commit.append(self.level)

    def __call__(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coroutine)

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        with sqlite3.connect(self.path) as db:  # a separate connection sees only what was committed
            return db.execute(sql).fetchall()

    def close(self) -> None:
        self(self.store.close())
        self.loop.close()


@pytest.fixture
def db(tmp_path: Path) -> Iterator[CountingStore]:
    counting = CountingStore(tmp_path / "batch.db")
    yield counting
    counting.close()


def fields(order: NewOrder) -> dict[str, Any]:
    return dataclasses.asdict(order)


def entry(cycle_id: int, symbol: str, role: str = "entry") -> NewOrder:
    return NewOrder(cycle_id=cycle_id, symbol=symbol, role=role, side="buy", order_type="market",
                    quantity=Decimal(100))


def test_batch_of_writes_is_one_commit_and_every_row_is_durable(db: CountingStore) -> None:
    cycle_id = db(db.store.get_or_create_cycle(date(2025, 12, 29))).cycle_id
    before = db.commits

    outcomes = db(db.store.batch([
        call("create_orders", [entry(cycle_id, "AAPL")]),
        call("record_trade_update", "new", {"n": 1}),
        call("record_trade_update", "fill", {"n": 2}),
    ]))

    (order,), first, second = unwrap_all(outcomes)
    assert isinstance(order, OrderRecord) and first < second
    assert db.commits - before == 1
    assert db.rows("SELECT event FROM trade_updates ORDER BY id") == [("new",), ("fill",)]
    assert db.rows("SELECT client_order_id FROM orders") == [(order.client_order_id,)]


def test_failing_call_is_rolled_back_alone_and_the_others_commit(db: CountingStore) -> None:
    cycle_id = db(db.store.get_or_create_cycle(date(2025, 12, 29))).cycle_id

    good_before, bad, good_after = db(db.store.batch([
        call("record_trade_update", "new", {"n": 1}),
        # Its first row is inserted before the second is refused: the savepoint must take that row back too.
        call("create_orders", [entry(cycle_id, "MSFT"), entry(cycle_id, "MSFT", role="bogus")]),
        call("record_trade_update", "fill", {"n": 2}),
    ]))

    assert isinstance(bad.error, InvalidValueError) and "bogus" in str(bad.error)
    assert good_before.error is None and good_after.error is None
    assert db.rows("SELECT event FROM trade_updates ORDER BY id") == [("new",), ("fill",)]
    assert db.rows("SELECT count(*) FROM orders") == [(0,)]
    with pytest.raises(InvalidValueError):
        unwrap_all([good_before, bad, good_after])


def test_calls_in_a_batch_see_the_writes_of_the_calls_before_them(db: CountingStore) -> None:
    cycle_id = db(db.store.get_or_create_cycle(date(2025, 12, 29))).cycle_id
    (order,) = db(db.store.create_orders([entry(cycle_id, "NVDA")]))

    submitted, found, missing = unwrap_all(db(db.store.batch([
        call("mark_submitted", order.order_id, "broker-1", "new", T0),
        call("get_order_by_alpaca_id", "broker-1"),
        call("get_order_by_alpaca_id", "broker-2"),
    ])))

    assert submitted.status == "submitted" and found.order_id == order.order_id and missing is None


def test_nested_batch_joins_the_enclosing_transaction(db: CountingStore) -> None:
    before = db.commits

    inner, outer = db(db.store.batch([
        call("batch", [call("record_trade_update", "new", {}), call("update_order_status", 999, "filled",
                                                                     "filled", Decimal(1), None)]),
        call("record_trade_update", "fill", {}),
    ]))

    created, refused = inner.value
    assert isinstance(created.value, int) and isinstance(refused.error, RecordNotFoundError)
    assert outer.error is None
    assert db.commits - before == 1
    assert db.rows("SELECT event FROM trade_updates ORDER BY id") == [("new",), ("fill",)]


def test_unknown_or_private_method_is_refused_by_name_without_harming_the_batch(db: CountingStore) -> None:
    unknown, private, fine = db(db.store.batch([
        call("drop_everything"), call("_transaction", None), call("record_trade_update", "new", {}),
    ]))

    assert "drop_everything" in str(unknown.error) and "_transaction" in str(private.error)
    assert fine.error is None and db.rows("SELECT count(*) FROM trade_updates") == [(1,)]


def test_groups_committed_together_share_one_commit_and_each_is_announced_on_its_own(tmp_path: Path) -> None:
    writer_ref = DbWriter.start(f"sqlite+aiosqlite:///{tmp_path / 'together.db'}")
    try:
        writer = writer_ref.proxy()
        announced: list[tuple[str, Any]] = []
        groups = []
        for name, payload in (("first", {"n": 1}), ("bad", "not a dict"), ("last", {"n": 3})):
            group = WriteGroup()
            index = group.add(call("record_trade_update", "fill", payload))
            group.then(lambda values, name=name, index=index: announced.append((name, values[index])))
            groups.append(group)
        before = writer.stats().get().transactions

        errors = commit_together(groups, writer)

        assert writer.stats().get().transactions - before == 1
        assert errors[0] is None and errors[2] is None and isinstance(errors[1], InvalidValueError)
        assert [name for name, _ in announced] == ["first", "last"]  # the bad one is not announced, nor in the way
        rows = sqlite3.connect(tmp_path / "together.db").execute("SELECT id, payload FROM trade_updates").fetchall()
        assert [(row_id, json.loads(payload)) for row_id, payload in rows] == \
            [(announced[0][1], {"n": 1}), (announced[1][1], {"n": 3})]
    finally:
        writer_ref.stop()


def test_urgent_callbacks_of_groups_committed_together_run_before_any_announcement(tmp_path: Path) -> None:
    writer_ref = DbWriter.start(f"sqlite+aiosqlite:///{tmp_path / 'urgent.db'}")
    try:
        writer = writer_ref.proxy()
        ran: list[str] = []
        groups = []
        for name, payload in (("logs", {"n": 1}), ("bad", "not a dict"), ("stop-loss", {"n": 3})):
            group = WriteGroup()
            group.add(call("record_trade_update", "fill", payload))
            group.then(lambda _, name=name: ran.append(f"then {name}"))
            groups.append(group)
        groups[1].first(lambda _: ran.append("first bad"))
        groups[2].first(lambda _: ran.append("first stop-loss"))

        errors = commit_together(groups, writer)

        assert ran == ["first stop-loss", "then logs", "then stop-loss"]  # and nothing of the failed group
        assert errors[0] is None and errors[2] is None and isinstance(errors[1], InvalidValueError)
    finally:
        writer_ref.stop()


# --- plain transactions: batches of plain-SQL operations run on the held sqlite3 connection, no ORM session ---------

def test_a_batch_of_plain_sql_operations_commits_once_without_an_orm_session(db: CountingStore) -> None:
    cycle_id = db(db.store.get_or_create_cycle(date(2025, 12, 29))).cycle_id
    commits, orm = db.commits, db.orm_transactions

    (order,), _ = unwrap_all(db(db.store.batch([
        call("create_orders", [entry(cycle_id, "AAPL")]),
        call("record_trade_update", "new", {"n": 1}),
    ])))

    assert (db.commits - commits, db.orm_transactions - orm) == (1, 0)
    # The ORM reads what the plain transaction wrote, and a batch with an ORM call still runs in a session.
    (read,) = unwrap_all(db(db.store.batch([call("get_order", order.order_id)])))
    assert read == order and db.orm_transactions - orm == 1


def test_every_plain_sql_method_runs_in_a_plain_batch_and_the_orm_sees_its_writes(db: CountingStore) -> None:
    cycle_id = db(db.store.get_or_create_cycle(date(2025, 12, 29))).cycle_id
    first, second, third = (db(db.store.create_order(**fields(entry(cycle_id, s)))) for s in ("AMD", "INTC", "TSM"))
    exit_leg = NewOrder(cycle_id=cycle_id, symbol="TSM", role="take_profit", side="sell", order_type="limit",
                        quantity=Decimal(100), limit_price=Decimal("12"))
    calls = {
        "create_order": call("create_order", **fields(entry(cycle_id, "QCOM"))),
        "create_orders": call("create_orders", [entry(cycle_id, "ARM")]),
        "mark_submitted": call("mark_submitted", first.order_id, "b-1", "new", T0),
        "update_order_status": call("update_order_status", first.order_id, "filled", "filled", Decimal(100),
                                    Decimal("10.5"), T0),
        "record_fill": call("record_fill", execution_id="b-1:100", order_id=first.order_id, alpaca_order_id="b-1",
                            symbol="AMD", side="buy", qty=Decimal(100), price=Decimal("10.5"), occurred_at=T0,
                            source="stream"),
        "record_trade_update": call("record_trade_update", "fill", {"n": 3}, alpaca_order_id="b-1"),
        "open_position_for_entry": call("open_position_for_entry", second.order_id, Decimal(100), Decimal("20"), T0),
        "open_position_with_orders": call("open_position_with_orders", third.order_id, Decimal(100), Decimal("10"),
                                          T0, Decimal("9"), Decimal("12"), [exit_leg]),
    }
    assert set(calls) == PLAIN_SQL_METHODS  # a method added to the plain set is added here too
    orm = db.orm_transactions

    values = {name: unwrap_all(db(db.store.batch([one])))[0] for name, one in calls.items()}

    assert db.orm_transactions == orm
    assert db(db.store.get_order(first.order_id)).status == "filled"
    assert [f.execution_id for f in db(db.store.fills_for_order(first.order_id))] == ["b-1:100"]
    position, (leg,) = values["open_position_with_orders"]
    assert db(db.store.get_order(leg.order_id)).position_id == position.position_id
    assert db(db.store.get_position(values["open_position_for_entry"].position_id)).quantity == Decimal(100)
    assert db.rows("SELECT symbol FROM securities WHERE symbol IN ('QCOM', 'ARM') ORDER BY symbol") == [
        ("ARM",), ("QCOM",)]


def test_a_lone_plain_operation_that_fails_leaves_nothing_and_the_next_one_commits(db: CountingStore) -> None:
    cycle_id = db(db.store.get_or_create_cycle(date(2025, 12, 29))).cycle_id
    orm = db.orm_transactions
    first = db(db.store.create_order(**fields(entry(cycle_id, "AMD"))))
    second = db(db.store.create_order(**fields(entry(cycle_id, "INTC"))))
    db(db.store.mark_submitted(first.order_id, "b-1", "new", T0))
    assert db.orm_transactions == orm  # a lone plain-SQL operation runs in a plain transaction too

    with pytest.raises(InvalidValueError):  # its first row is inserted before the second is refused
        db(db.store.create_orders([entry(cycle_id, "MSFT"), entry(cycle_id, "MSFT", role="bogus")]))
    with pytest.raises(ConstraintViolationError, match="mark_submitted refused by the database"):
        db(db.store.mark_submitted(second.order_id, "b-1", "new", T0))  # a broker id belongs to one order

    assert db.rows("SELECT count(*) FROM orders") == [(2,)]
    assert db.rows(f"SELECT alpaca_order_id FROM orders WHERE order_id = {second.order_id}") == [(None,)]
    assert db(db.store.mark_submitted(second.order_id, "b-2", "new", T0)).alpaca_order_id == "b-2"
    assert db.rows(f"SELECT alpaca_order_id FROM orders WHERE order_id = {second.order_id}") == [("b-2",)]


def test_a_plain_batch_whose_call_violates_a_constraint_commits_the_others(db: CountingStore) -> None:
    cycle_id = db(db.store.get_or_create_cycle(date(2025, 12, 29))).cycle_id
    first = db(db.store.create_order(**fields(entry(cycle_id, "AMD"))))
    second = db(db.store.create_order(**fields(entry(cycle_id, "INTC"))))
    commits = db.commits

    ok, refused, after = db(db.store.batch([
        call("mark_submitted", first.order_id, "b-1", "new", T0),
        call("mark_submitted", second.order_id, "b-1", "new", T0),
        call("record_trade_update", "new", {"n": 1}),
    ]))

    assert ok.error is None and after.error is None and isinstance(refused.error, ConstraintViolationError)
    assert db.commits - commits == 1
    assert db.rows("SELECT order_id, alpaca_order_id FROM orders ORDER BY order_id") == [
        (first.order_id, "b-1"), (second.order_id, None)]


def test_only_commits_of_broker_reports_skip_the_fsync_and_every_order_row_waits_for_it(tmp_path: Path) -> None:
    db = CountingStore(tmp_path / "deferred.db", defer_report_sync=True)
    try:
        cycle_id = db(db.store.get_or_create_cycle(date(2025, 12, 29))).cycle_id
        db.levels_at_commit.clear()
        order = db(db.store.create_order(**fields(entry(cycle_id, "AAPL"))))  # a broker call will wait on this
        db(db.store.mark_submitted(order.order_id, "b-1", "new", T0))  # what the broker answered
        unwrap_all(db(db.store.batch([
            call("record_trade_update", "fill", {"n": 1}),
            call("record_fill", execution_id="b-1:100", order_id=order.order_id, alpaca_order_id="b-1",
                 symbol="AAPL", side="buy", qty=Decimal(100), price=Decimal("10.00"), occurred_at=T0, source="stream"),
            call("update_order_status", order.order_id, status="filled", broker_status="filled",
                 filled_qty=Decimal(100), filled_avg_price=Decimal("10.00"), at=T0),
        ])))
        db(db.store.batch([call("record_trade_update", "new", {"n": 2}),
                           call("create_orders", [entry(cycle_id, "MSFT")])]))  # one order row: all of it waits
        assert db.levels_at_commit == ["FULL", "NORMAL", "NORMAL", "FULL"]

        refused = db(db.store.batch([call("mark_submitted", order.order_id + 1, "b-1", "new", T0)]))[0]
        assert isinstance(refused.error, ConstraintViolationError)
        with sqlite3.connect(db.path) as other:  # the deferred commits are in the database for any reader
            assert other.execute("SELECT alpaca_order_id FROM orders WHERE order_id = ?",
                                 (order.order_id,)).fetchone() == ("b-1",)
            assert other.execute("SELECT count(*) FROM fills").fetchone() == (1,)
        assert db.level == "FULL"  # a failed report batch leaves the connection at FULL again
        db(db.store.create_order(**fields(entry(cycle_id, "AMD"))))
        assert db.levels_at_commit[-1] == "FULL"
    finally:
        db.close()


def test_without_deferral_every_commit_waits_for_the_fsync(db: CountingStore) -> None:
    cycle_id = db(db.store.get_or_create_cycle(date(2025, 12, 29))).cycle_id
    order = db(db.store.create_order(**fields(entry(cycle_id, "AAPL"))))
    db(db.store.mark_submitted(order.order_id, "b-1", "new", T0))
    db(db.store.batch([call("record_trade_update", "fill", {"n": 1})]))
    assert set(db.levels_at_commit) == {"FULL"}


def test_calls_together_commit_all_or_none_inside_a_batch_and_on_their_own(tmp_path: Path) -> None:
    db = CountingStore(tmp_path / "together.db", defer_report_sync=True)
    try:
        cycle_id = db(db.store.get_or_create_cycle(date(2025, 12, 29))).cycle_id
        db.levels_at_commit.clear()
        db.orm_transactions = 0
        fill, failed, done = db(db.store.batch([
            call("record_trade_update", "fill", {"n": 1}),
            # The first row is fine, the second is refused: together, neither stays.
            call("together", (call("create_orders", [entry(cycle_id, "AAPL")]),
                              call("create_orders", [entry(cycle_id, "AAPL", role="bogus")]))),
            call("together", (call("create_orders", [entry(cycle_id, "MSFT")]),
                              call("record_trade_update", "new", {"n": 2}))),
        ]))

        assert fill.error is None and isinstance(failed.error, InvalidValueError)
        (msft,), update_id = done.unwrap()
        assert msft.symbol == "MSFT" and update_id > fill.value
        assert db.rows("SELECT symbol FROM orders JOIN securities USING (security_id)") == [("MSFT",)]
        assert db.orm_transactions == 0  # plain SQL all the way down: its calls are all plain ones
        assert db.levels_at_commit[-1] == "FULL"  # it writes order rows: its commit waits for the fsync

        values = db(db.store.together([call("create_orders", [entry(cycle_id, "NVDA")])]))
        assert values[0][0].symbol == "NVDA"
        with pytest.raises(InvalidValueError):
            db(db.store.together([call("create_orders", [entry(cycle_id, "AMD")]),
                                  call("create_orders", [entry(cycle_id, "AMD", role="bogus")])]))
        assert db.rows("SELECT count(*) FROM orders") == [(2,)]
    finally:
        db.close()


def test_writes_asked_without_read_back_are_made_and_return_nothing(db: CountingStore) -> None:
    cycle_id = db(db.store.get_or_create_cycle(date(2025, 12, 29))).cycle_id
    order = db(db.store.create_order(**fields(entry(cycle_id, "AMD"))))
    statements = len(db.statements)

    submitted = db(db.store.mark_submitted(order.order_id, "b-1", "new", T0, read_back=False))
    moved = db(db.store.update_order_status(order.order_id, "accepted", "accepted", Decimal(0), None, T0,
                                            read_back=False))

    assert (submitted, moved) == (None, None)
    assert not [s for s in db.statements[statements:] if s.lstrip().upper().startswith("SELECT")]  # no row read back
    assert db.rows(f"SELECT alpaca_order_id, status FROM orders WHERE order_id = {order.order_id}") == [
        ("b-1", "accepted")]
    assert db(db.store.mark_submitted(order.order_id, "b-1", "new", T0)).alpaca_order_id == "b-1"  # default: the row


def test_created_orders_are_returned_exactly_as_a_read_of_their_rows_gives_them(db: CountingStore) -> None:
    cycle_id = db(db.store.get_or_create_cycle(date(2025, 12, 29))).cycle_id
    parent = db(db.store.create_order(**fields(entry(cycle_id, "amd"))))  # symbols are stored upper-case
    common = dict(cycle_id=cycle_id, symbol="amd", side="sell", quantity=Decimal("100.50"),
                  parent_order_id=parent.order_id, order_class="oco", time_in_force="gtc")
    made = db(db.store.create_orders([
        NewOrder(role="take_profit", order_type="limit", limit_price=Decimal("11.10"), **common),
        NewOrder(role="stop_loss", order_type="stop", stop_price=Decimal("9.0"), planned_stop_loss=Decimal("9"),
                 **common),
    ], at=datetime(2025, 12, 29, 9, 35, 1, 250, tzinfo=ZoneInfo("America/New_York"))))

    assert [db(db.store.get_order(order.order_id)) for order in made] == made
    assert [db(db.store.get_order(parent.order_id))] == [parent]
    assert made[0].symbol == "AMD" and made[0].limit_price == Decimal("11.10") and made[1].stop_price == Decimal("9.0")


def test_an_acknowledgement_with_the_orders_new_state_is_one_write_of_both(db: CountingStore) -> None:
    cycle_id = db(db.store.get_or_create_cycle(date(2025, 12, 29))).cycle_id
    order = db(db.store.create_order(**fields(entry(cycle_id, "AMD"))))
    db(db.store.set_outcome_unknown(order.order_id, True))
    statements = len(db.statements)
    filled_at = T0 + timedelta(seconds=2)

    row = db(db.store.mark_submitted(order.order_id, "b-1", "filled", T0, at=filled_at, progress=OrderProgress(
        "filled", "filled", Decimal(100), Decimal("10.05"), None)))

    writes = [s for s in db.statements[statements:] if s.lstrip().upper().startswith("UPDATE")]
    assert len(writes) == 1
    assert (row.alpaca_order_id, row.status, row.broker_status, row.filled_qty, row.filled_avg_price) == (
        "b-1", "filled", "filled", Decimal(100), Decimal("10.05"))
    assert (row.submitted_at, row.filled_at, row.updated_at, row.outcome_unknown) == (T0, filled_at, filled_at, False)


def test_an_entry_fills_position_and_oco_rows_are_written_without_reading_back_and_equal_a_read(
        db: CountingStore) -> None:
    cycle_id = db(db.store.get_or_create_cycle(date(2025, 12, 29))).cycle_id
    order = db(db.store.create_order(**fields(entry(cycle_id, "AMD"))))
    common = dict(cycle_id=cycle_id, symbol="AMD", side="sell", quantity=Decimal("100"),
                  parent_order_id=order.order_id, order_class="oco")
    statements = len(db.statements)

    position, (take_profit, stop_loss) = db(db.store.open_position_with_orders(
        order.order_id, Decimal("100"), Decimal("10.05"), T0, Decimal("9.5"), Decimal("11"), [
            NewOrder(role="take_profit", order_type="limit", limit_price=Decimal("11"), **common),
            NewOrder(role="stop_loss", order_type="stop", stop_price=Decimal("9.5"), **common),
        ], T0))

    written = [" ".join(s.split()) for s in db.statements[statements:]]
    assert not [s for s in written if s.startswith(("SELECT t.", "SELECT security_id", "UPDATE orders SET client"))]
    assert db(db.store.get_position(position.position_id)) == position
    assert [db(db.store.get_order(o.order_id)) for o in (take_profit, stop_loss)] == [take_profit, stop_loss]
    instance = db(db.store.instance_id())
    assert (take_profit.client_order_id, stop_loss.client_order_id) == (
        f"cat-{instance}-{order.order_id + 1}", f"cat-{instance}-{order.order_id + 2}")


def test_order_ids_are_never_reused_even_after_the_newest_row_is_gone(db: CountingStore) -> None:
    cycle_id = db(db.store.get_or_create_cycle(date(2025, 12, 29))).cycle_id
    first = db(db.store.create_order(**fields(entry(cycle_id, "AMD"))))
    second = db(db.store.create_order(**fields(entry(cycle_id, "AMD"))))
    with sqlite3.connect(db.path) as other:  # as an operator's hand might (no foreign key points at it)
        other.execute("DELETE FROM orders WHERE order_id = ?", (second.order_id,))

    third = db(db.store.create_order(**fields(entry(cycle_id, "AMD"))))

    assert (first.order_id, second.order_id, third.order_id) == (1, 2, 3)
    assert third.client_order_id.endswith("-3") and third.client_order_id != second.client_order_id


def test_an_execution_is_recorded_once_and_a_fill_for_an_unknown_order_is_refused(db: CountingStore) -> None:
    cycle_id = db(db.store.get_or_create_cycle(date(2025, 12, 29))).cycle_id
    order = db(db.store.create_order(**fields(entry(cycle_id, "AMD"))))
    fill = dict(execution_id="e-1", order_id=order.order_id, symbol="AMD", side="buy", qty=Decimal(100),
                price=Decimal("10.05"), occurred_at=T0, source="stream")

    assert db(db.store.record_fill(**fill)) is True
    assert db(db.store.record_fill(**{**fill, "qty": Decimal(50)})) is False
    with pytest.raises(ConstraintViolationError, match="record_fill"):
        db(db.store.record_fill(**{**fill, "execution_id": "e-2", "order_id": order.order_id + 99}))
    assert db.rows("SELECT execution_id, qty FROM fills") == [("e-1", "100")]
