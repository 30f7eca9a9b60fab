"""`catalyst status` on a database the daemon would refuse, or made by a newer Catalyst: one line each, never an
internal error with a second line."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from catalyst.cli import main
from catalyst.store.migrate import head_revision, upgrade


def catalyst_status(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    config = tmp_path / "config.toml"
    config.write_text('[daemon]\ndatabase_url = "sqlite+aiosqlite:///catalyst.db"\n')
    code = main(["status", "--config", str(config)])
    said = capsys.readouterr()
    return code, said.out, said.err


def catalyst_database(tmp_path: Path, *changes: str) -> Path:
    path = tmp_path / "catalyst.db"
    upgrade(f"sqlite+aiosqlite:///{path}")
    edit(path, *changes)
    return path


def edit(path: Path, *statements: str) -> None:
    connection = sqlite3.connect(path)
    with connection:
        for statement in statements:
            connection.execute(statement)
    connection.close()


def test_another_applications_file_with_its_own_orders_table_is_named_as_not_catalysts(tmp_path, capsys):
    path = tmp_path / "catalyst.db"
    edit(path, "CREATE TABLE orders (id INTEGER PRIMARY KEY, item TEXT)", "INSERT INTO orders (item) VALUES ('tea')")

    code, out, err = catalyst_status(tmp_path, capsys)

    assert (code, out) == (3, "")
    assert err == (f"catalyst: error: {path}: not a Catalyst database (it holds tables orders but no alembic_version "
                   "table): point daemon.database_url at Catalyst's database, or at a new file for Catalyst to "
                   "create\n")


def test_a_database_whose_schema_is_not_its_revisions_is_refused_naming_what_differs(tmp_path, capsys):
    path = catalyst_database(tmp_path, "DROP TABLE trading_cycles")

    code, out, err = catalyst_status(tmp_path, capsys)

    assert (code, out) == (3, "")
    assert err.startswith(f"catalyst: error: {path}: its schema does not match its revision {head_revision()}: "
                          "missing table trading_cycles; ")
    assert err.count("\n") == 1


def test_a_newer_catalysts_database_is_shown_under_a_warning(tmp_path, capsys):
    path = catalyst_database(tmp_path, "UPDATE alembic_version SET version_num = '0099'")

    code, out, err = catalyst_status(tmp_path, capsys)

    assert (code, err) == (0, "")
    assert out.splitlines()[:3] == [
        "daemon: not running",
        f"warning: {path}: schema revision '0099' is unknown to this Catalyst (newest known: {head_revision()}); it "
        "was made by a newer version; shown as this Catalyst reads it, which may miss or misread what that version "
        "changed",
        f"database {path}",
    ]


def test_a_table_a_newer_catalyst_changed_is_one_line_not_an_internal_error(tmp_path, capsys):
    path = catalyst_database(tmp_path, "UPDATE alembic_version SET version_num = '0099'",
                             "ALTER TABLE doctor_findings RENAME TO findings")

    code, out, err = catalyst_status(tmp_path, capsys)

    assert (code, out) == (3, "")
    assert err == f"catalyst: error: {path}: cannot read the database: no such table: doctor_findings\n"
