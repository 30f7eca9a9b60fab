"""`catalyst status` before the daemon ever ran: one line naming the missing file, and where a simulated day is."""

from __future__ import annotations

from pathlib import Path

import pytest

from catalyst.config import load_config
from catalyst.errors import DatabaseError
from catalyst.status import state_snapshot_path, status_text
from catalyst.store.migrate import upgrade


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


def test_a_database_folder_another_user_may_not_read_is_one_line_naming_whose_it_is(tmp_path, monkeypatch):
    # From a review: as another user, the daemon's 0700 folder was `catalyst: internal error: PermissionError`. This
    # suite runs as root, whom no mode stops: the refusal the kernel gives that user is given here.
    config_file = tmp_path / "config.toml"
    config_file.write_text('[daemon]\ndatabase_url = "sqlite+aiosqlite:///var/catalyst.db"\n')
    config = load_config(config_file)
    (tmp_path / "var").mkdir()
    refused = tmp_path / "var"
    real_stat = Path.stat

    def stat(self, *args, **kwargs):
        if self.is_relative_to(refused) and self != refused:
            raise PermissionError(13, "Permission denied", str(self))
        return real_stat(self, *args, **kwargs)

    monkeypatch.setattr(Path, "stat", stat)
    with pytest.raises(DatabaseError) as denied:
        status_text(config)
    assert str(denied.value).endswith("permission denied: run `catalyst status` as the daemon's user (or one who may "
                                      "read its database folder)")
    assert str(denied.value).startswith(str(refused))


@pytest.mark.parametrize("snapshot", ["[1, 2]", "null", '{"positions": 3}'])
def test_a_state_snapshot_that_is_not_one_is_said_unreadable(tmp_path, snapshot):
    config_file = tmp_path / "config.toml"
    config_file.write_text('[daemon]\ndatabase_url = "sqlite+aiosqlite:///catalyst.db"\n')
    config = load_config(config_file)
    upgrade(f"sqlite+aiosqlite:///{tmp_path / 'catalyst.db'}")
    state_snapshot_path(tmp_path / "catalyst.db").write_text(snapshot)

    assert f"(daemon snapshot {state_snapshot_path(tmp_path / 'catalyst.db')} unreadable)" in status_text(config)
