"""Migrations on real files: parity with the models, idempotent upgrade, clear errors for bad files."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, Table, text

from catalyst.store import migrate
from catalyst.store.db import make_engine
from catalyst.store.errors import (
    DatabaseTooNewError,
    NotADatabaseError,
    NotCatalystDatabaseError,
    SchemaMismatchError,
    StoreError,
)
from catalyst.store.models import Base


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


async def pragmas(url: str, synchronous: str = "FULL") -> dict[str, object]:
    engine = make_engine(url, synchronous=synchronous)
    try:
        async with engine.connect() as connection:
            return {
                name: (await connection.execute(text(f"PRAGMA {name}"))).scalar_one()
                for name in ("journal_mode", "foreign_keys", "synchronous", "busy_timeout")
            }
    finally:
        await engine.dispose()


def test_connections_use_wal_foreign_keys_and_full_sync(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "pragmas.db")

    found = asyncio.run(pragmas(url))

    # synchronous: 0 OFF, 1 NORMAL, 2 FULL, 3 EXTRA
    assert found == {"journal_mode": "wal", "foreign_keys": 1, "synchronous": 2, "busy_timeout": 5000}


def test_synchronous_level_is_an_argument(tmp_path: Path) -> None:
    assert asyncio.run(pragmas(sqlite_url(tmp_path / "normal.db"), synchronous="NORMAL"))["synchronous"] == 1


def test_migrated_schema_matches_the_models(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "parity.db")

    assert migrate.upgrade(url) == migrate.head_revision()

    assert migrate.schema_differences(url) == []


def test_parity_check_notices_a_table_the_migration_lacks(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "drift.db")
    migrate.upgrade(url)
    extra = Table("not_migrated", Base.metadata, Column("id", Integer, primary_key=True))
    try:
        differences = migrate.schema_differences(url)
    finally:
        Base.metadata.remove(extra)

    assert [d[0] for d in differences] == ["add_table"]


def test_upgrade_twice_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "twice.db"
    url = sqlite_url(path)
    migrate.upgrade(url)
    instance_before = sqlite3.connect(path).execute("SELECT instance_id FROM store_meta").fetchall()

    head = migrate.upgrade(url)

    assert head == migrate.current_revision(url) == "0002"
    assert sqlite3.connect(path).execute("SELECT instance_id FROM store_meta").fetchall() == instance_before
    assert len(instance_before) == 1 and len(instance_before[0][0]) == 8


def test_empty_database_has_no_revision(tmp_path: Path) -> None:
    assert migrate.current_revision(sqlite_url(tmp_path / "empty.db")) is None


def test_each_new_database_gets_its_own_instance_id(tmp_path: Path) -> None:
    ids = set()
    for name in ("a.db", "b.db"):
        migrate.upgrade(sqlite_url(tmp_path / name))
        ids.add(sqlite3.connect(tmp_path / name).execute("SELECT instance_id FROM store_meta").fetchone()[0])

    assert len(ids) == 2


def test_text_file_is_refused_as_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_text("these are my trading notes, not a database\n" * 20)

    with pytest.raises(NotADatabaseError) as raised:
        migrate.upgrade(sqlite_url(path))

    assert str(path) in str(raised.value)
    assert "\n" not in str(raised.value)


def test_corrupt_database_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.db"
    migrate.upgrade(sqlite_url(path))
    data = bytearray(path.read_bytes())
    data[16:] = b"\xff" * (len(data) - 16)  # keep the header, destroy page size and every page
    path.write_bytes(bytes(data))
    for leftover in (tmp_path / "corrupt.db-wal", tmp_path / "corrupt.db-shm"):
        leftover.unlink(missing_ok=True)

    with pytest.raises(NotADatabaseError) as raised:
        migrate.upgrade(sqlite_url(path))

    assert str(path) in str(raised.value)
    assert "\n" not in str(raised.value)


def test_a_database_with_a_damaged_page_is_refused_at_start_not_met_mid_trade(tmp_path: Path) -> None:
    """Its first page intact, it opened and traded until a statement reached the damage (seen: a whole morning)."""
    path = tmp_path / "damaged.db"
    migrate.upgrade(sqlite_url(path))
    connection = sqlite3.connect(path)
    connection.executemany(
        "INSERT INTO trade_updates (received_at, event, payload) VALUES ('2024-03-04 14:45:00.000000', 'new', ?)",
        [(f'{{"n": {i}, "pad": "{"x" * 300}"}}',) for i in range(2000)])
    connection.commit()
    connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # every page in the file itself
    connection.close()
    pages = path.stat().st_size // 4096
    with path.open("r+b") as file:  # one page in the middle of the table's b-tree, overwritten
        file.seek((pages // 2) * 4096)
        file.write(bytes(range(256)) * 16)

    with pytest.raises(NotADatabaseError) as raised:
        migrate.upgrade(sqlite_url(path))

    said = str(raised.value)
    assert said.startswith(f"{path}: ") and "damaged" in said and "\n" not in said
    assert "recover it (sqlite3 FILE .recover | sqlite3 NEW) or restore a backup" in said


@pytest.mark.parametrize("tables", [("foo",), ("orders", "notes", "people", "tags")])
def test_another_applications_sqlite_file_is_refused_and_left_as_it_was(tmp_path: Path, tables: tuple[str, ...]) -> None:
    """Catalyst's tables were added into it, and `catalyst status` read its own `orders` table as ours."""
    path = tmp_path / "their.db"
    changed_by_hand(path, *(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, what TEXT)" for table in tables),
                    "INSERT INTO foo (what) VALUES ('theirs')" if "foo" in tables else "SELECT 1")
    before = path.read_bytes()

    with pytest.raises(NotCatalystDatabaseError) as raised:
        migrate.upgrade(sqlite_url(path))

    held = "foo" if tables == ("foo",) else "notes, orders, people, …"
    assert str(raised.value) == (f"{path}: not a Catalyst database (it holds tables {held} but no alembic_version "
                                 "table): point daemon.database_url at Catalyst's database, or at a new file for "
                                 "Catalyst to create")
    assert path.read_bytes() == before
    assert sorted(path.parent.iterdir()) == [path]  # no journal either: it was only read


def test_an_sqlite_file_without_tables_becomes_a_catalyst_database(tmp_path: Path) -> None:
    path = tmp_path / "blank.db"
    changed_by_hand(path, "PRAGMA user_version = 1", "VACUUM")
    assert path.stat().st_size > 0

    assert migrate.upgrade(sqlite_url(path)) == migrate.head_revision()


def test_database_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    url = sqlite_url(path)
    migrate.upgrade(url)
    with sqlite3.connect(path) as connection:
        connection.execute("UPDATE alembic_version SET version_num = '9999'")

    with pytest.raises(DatabaseTooNewError) as raised:
        migrate.upgrade(url)

    assert str(path) in str(raised.value)
    assert "'9999'" in str(raised.value)
    assert isinstance(raised.value, StoreError)


def changed_by_hand(path: Path, *statements: str) -> None:
    with sqlite3.connect(path) as connection:
        for statement in statements:
            connection.execute(statement)
    connection.close()


MISMATCH_ADVICE = ("it was changed outside Catalyst's migrations: keep a copy of it, then put back what differs before "
                   "starting on it again (a backup restored instead would lose the orders written since)")


@pytest.mark.parametrize(("change", "named"), [
    ("DROP TABLE fills", "missing table fills"),
    ("ALTER TABLE orders DROP COLUMN planned_entry_price", "missing column orders.planned_entry_price"),
    ("ALTER TABLE orders ADD COLUMN note TEXT NOT NULL DEFAULT ''", "unexpected column orders.note"),
])
def test_a_database_whose_schema_is_not_its_revisions_is_refused_naming_what_differs(tmp_path: Path, change: str,
                                                                                      named: str) -> None:
    """Labelled 0002 with its fills table dropped, a daemon started on it, traded, and failed to record the fills."""
    path = tmp_path / "edited.db"
    url = sqlite_url(path)
    migrate.upgrade(url)
    changed_by_hand(path, "PRAGMA foreign_keys = OFF", change)
    before = path.read_bytes()

    with pytest.raises(SchemaMismatchError) as raised:
        migrate.upgrade(url)

    assert str(raised.value) == f"{path}: its schema does not match its revision 0002: {named}; {MISMATCH_ADVICE}"
    assert path.read_bytes() == before


def test_an_older_database_whose_schema_is_not_its_revisions_is_refused_once_migrated_and_left_at_its_revision(
        tmp_path: Path) -> None:
    path = tmp_path / "yesterday-edited.db"
    url = sqlite_url(path)
    migrate._with_connection(url, to_revision("0001"))
    changed_by_hand(path, "DROP TABLE fills")

    with pytest.raises(SchemaMismatchError) as raised:
        migrate.upgrade(url)

    assert str(raised.value) == f"{path}: its schema does not match its revision 0002: missing table fills; {MISMATCH_ADVICE}"
    assert migrate.current_revision(url) == "0001"  # the migration's transaction rolled back with the refusal
    with sqlite3.connect(path) as db:
        assert "planned_entry_price" not in [row[1] for row in db.execute("PRAGMA table_info(orders)")]


def to_revision(revision: str):
    from alembic import command

    def migrate_to(connection):
        config = migrate.alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, revision)

    return migrate_to


def test_migrations_run_from_any_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    assert migrate.upgrade(sqlite_url(tmp_path / "cwd.db")) == "0002"


def test_a_database_of_the_first_schema_is_upgraded_in_place_keeping_its_orders(tmp_path: Path) -> None:
    # A daemon updated between two trading days opens yesterday's database: 0002 adds orders.planned_entry_price
    # (NULL for the rows written before it) and every row stays.
    from alembic import command

    path = tmp_path / "yesterday.db"
    url = sqlite_url(path)

    def to_first_schema(connection):
        config = migrate.alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, "0001")

    migrate._with_connection(url, to_first_schema)
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO trading_cycles (cycle_id, date, phase, cycle_state, daily_pnl, started_at, updated_at) "
                   "VALUES (1, '2026-12-04', 'closed', 'active', '0', '2026-12-04 14:00:00', '2026-12-04 21:00:00')")
        db.execute("INSERT INTO securities (security_id, symbol) VALUES (1, 'AAPL')")
        db.execute("INSERT INTO orders (order_id, client_order_id, cycle_id, security_id, role, side, order_type, "
                   "order_class, time_in_force, quantity, planned_stop_loss, planned_take_profit, status, filled_qty, "
                   "created_at, updated_at, submit_attempts, outcome_unknown) VALUES (1, 'cat-x-1', 1, 1, 'entry', "
                   "'buy', 'market', 'simple', 'day', '100', '147.00', '156.00', 'filled', '100', "
                   "'2026-12-04 14:30:00', '2026-12-04 14:30:01', 1, 0)")
    assert migrate.current_revision(url) == "0001"

    assert migrate.upgrade(url) == "0002" == migrate.head_revision()

    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT order_id, planned_stop_loss, planned_entry_price FROM orders").fetchall()
    assert rows == [(1, "147.00", None)]
    assert migrate.schema_differences(url) == []


def test_the_second_schema_downgrades_with_trades_in_it(tmp_path: Path) -> None:
    # The way back to a Catalyst that knows only 0001 (which refuses a 0002 database as made by a newer version):
    # `alembic downgrade 0001`. alembic's batch copy of the orders table was refused by the foreign keys as soon as a
    # fill pointed at an order; SQLite's own DROP COLUMN keeps every row.
    from alembic import command

    path = tmp_path / "today.db"
    url = sqlite_url(path)
    migrate.upgrade(url)
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO trading_cycles (cycle_id, date, phase, cycle_state, daily_pnl, started_at, updated_at) "
                   "VALUES (1, '2026-12-05', 'closed', 'active', '0', '2026-12-05 14:00:00', '2026-12-05 21:00:00')")
        db.execute("INSERT INTO securities (security_id, symbol) VALUES (1, 'AAPL')")
        db.execute("INSERT INTO orders (order_id, client_order_id, cycle_id, security_id, role, side, order_type, "
                   "order_class, time_in_force, quantity, planned_entry_price, status, filled_qty, created_at, "
                   "updated_at, submit_attempts, outcome_unknown) VALUES (1, 'cat-x-1', 1, 1, 'entry', 'buy', "
                   "'market', 'simple', 'day', '100', '145.00', 'filled', '100', '2026-12-05 14:30:00', "
                   "'2026-12-05 14:30:01', 1, 0)")
        db.execute("INSERT INTO fills (fill_id, execution_id, order_id, symbol, side, qty, price, occurred_at, "
                   "received_at, source) VALUES (1, 'b-1:100', 1, 'AAPL', 'buy', '100', '149.95', "
                   "'2026-12-05 14:30:01', '2026-12-05 14:30:01', 'stream')")

    def to_first_schema(connection):
        config = migrate.alembic_config()
        config.attributes["connection"] = connection
        command.downgrade(config, "0001")

    migrate._with_connection(url, to_first_schema)

    assert migrate.current_revision(url) == "0001"
    with sqlite3.connect(path) as db:
        columns = [row[1] for row in db.execute("PRAGMA table_info(orders)")]
        assert "planned_entry_price" not in columns
        assert db.execute("SELECT o.order_id, f.price FROM fills f JOIN orders o USING (order_id)").fetchall() == [
            (1, "149.95")]
        assert db.execute("PRAGMA foreign_key_check").fetchall() == []
    assert migrate.upgrade(url) == "0002"  # and forward again


@pytest.mark.parametrize("change", ["CREATE INDEX my_fills_by_symbol ON fills(symbol)",
                                    "CREATE TABLE my_notes (id INTEGER PRIMARY KEY, body TEXT)"])
def test_an_index_or_a_table_an_operator_adds_for_their_own_queries_is_no_reason_to_refuse(tmp_path: Path,
                                                                                           change: str) -> None:
    # A review: a report's index stopped the daemon from starting, and `catalyst status` from showing the positions.
    path = tmp_path / "with-my-index.db"
    url = sqlite_url(path)
    migrate.upgrade(url)
    changed_by_hand(path, change)
    migrate.verify(url)  # the daemon's check before the broker, and catalyst status's
    assert migrate.upgrade(url) == migrate.head_revision()


def test_a_unique_index_added_by_hand_is_refused_as_it_could_refuse_catalysts_writes(tmp_path: Path) -> None:
    path = tmp_path / "with-a-unique-index.db"
    url = sqlite_url(path)
    migrate.upgrade(url)
    changed_by_hand(path, "CREATE UNIQUE INDEX one_fill_a_symbol ON fills(symbol)")
    with pytest.raises(SchemaMismatchError, match="unexpected index one_fill_a_symbol on fills"):
        migrate.verify(url)
