"""`catalyst status` before the daemon ever ran: one line naming the missing file, and where a simulated day is."""

from __future__ import annotations

import pytest

from catalyst.config import load_config
from catalyst.errors import DatabaseError
from catalyst.status import status_text


def test_a_missing_database_is_named_and_the_simulations_pointed_to_when_make_sim_left_one(tmp_path):
    config_file = tmp_path / "config.toml"
    config_file.write_text('[daemon]\ndatabase_url = "sqlite+aiosqlite:///var/catalyst.db"\n')
    config = load_config(config_file)

    with pytest.raises(DatabaseError) as alone:
        status_text(config)
    assert str(alone.value) == (f"{tmp_path / 'var' / 'catalyst.db'}: no database yet (run `catalyst db upgrade` or "
                                "start the daemon)")

    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "sim.db").write_bytes(b"")  # what `make sim` leaves beside it
    with pytest.raises(DatabaseError) as beside_a_sim:
        status_text(config)
    assert str(beside_a_sim.value).endswith("; the simulation's is read with `catalyst status --sim`")


def test_an_empty_file_or_a_folder_where_the_database_should_be_is_named_as_such(tmp_path):
    # They read `no such table: orders` and `disk I/O error`.
    config_file = tmp_path / "config.toml"
    config_file.write_text('[daemon]\ndatabase_url = "sqlite+aiosqlite:///catalyst.db"\n')
    config = load_config(config_file)
    (tmp_path / "catalyst.db").write_bytes(b"")
    with pytest.raises(DatabaseError) as empty:
        status_text(config)
    assert str(empty.value).startswith(f"{tmp_path / 'catalyst.db'}: an empty file, no database yet")

    (tmp_path / "catalyst.db").unlink()
    (tmp_path / "catalyst.db").mkdir()
    with pytest.raises(DatabaseError) as folder:
        status_text(config)
    assert str(folder.value) == f"{tmp_path / 'catalyst.db'}: a directory, not a database file (check daemon.database_url)"
