"""Where an operator's emergency stop under way is kept (`<db>.emergency`), and that a simulation's fresh start, whose
exchange accounts are new, does not inherit one a killed run left behind."""

from __future__ import annotations

from catalyst.daemon import _wipe, emergency_marker


def test_the_marker_lives_beside_the_database_and_only_an_sqlite_file_has_one(tmp_path):
    assert emergency_marker(f"sqlite+aiosqlite:///{tmp_path / 'catalyst.db'}") == tmp_path / "catalyst.db.emergency"
    assert emergency_marker("postgresql://somewhere/catalyst") is None


def test_a_simulation_starting_afresh_drops_an_emergency_stop_a_killed_run_left(tmp_path):
    database = tmp_path / "sim.db"
    for name in ("sim.db", "sim.db-wal", "sim.db.emergency", "sim.db.lock"):
        (tmp_path / name).write_text("x")

    _wipe(database)

    assert sorted(p.name for p in tmp_path.iterdir()) == ["sim.db.lock"]  # the lock is the running one's
