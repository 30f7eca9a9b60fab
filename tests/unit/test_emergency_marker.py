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


def test_status_says_an_emergency_stop_is_under_way(tmp_path):
    from catalyst.status import _emergency_line

    database = tmp_path / "catalyst.db"
    assert _emergency_line(database) == []
    (tmp_path / "catalyst.db.emergency").write_text("operator: catalyst stop --emergency")
    assert _emergency_line(database)[0].startswith(f"emergency stop under way ({tmp_path / 'catalyst.db.emergency'})")
