"""`catalyst sim --days 1` as a user runs it (issue 6): a whole synthetic day through the CLI, asserted on the
database it leaves, the report it writes and what it prints. The run starts on a Saturday, so it also proves the
weekend is skipped by the calendar rather than traded.

One subprocess run (~45 s wall at 720x) is shared by the module's tests.
"""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest

# Under xdist (`make test`), on one worker: its module-scoped simulated day is built once, not once per worker.
pytestmark = pytest.mark.xdist_group("trading_day_sim")

REPO = Path(__file__).resolve().parents[2]
SATURDAY, MONDAY = "2026-11-21", "2026-11-23"  # seed 7's synthetic Monday has a gapper with FDA news (DREN)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class SimRun:
    folder: Path
    result: subprocess.CompletedProcess

    def rows(self, sql: str) -> list[sqlite3.Row]:
        with sqlite3.connect(f"file:{self.folder / 'var' / 'sim.db'}?mode=ro", uri=True) as db:
            db.row_factory = sqlite3.Row
            return db.execute(sql).fetchall()


def daemon_env() -> dict[str, str]:
    """The user's environment minus broker keys (the embedded exchange needs none), plus the pinned start."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("APCA_", "CATALYST_"))}
    env["CATALYST_EXCHANGE__START"] = f"{SATURDAY}T08:00:00"
    return env


@pytest.fixture(scope="module")
def sim_day(tmp_path_factory) -> SimRun:
    folder = tmp_path_factory.mktemp("sim-day")
    # The shipped config, its log file on as a live daemon's is: the simulation must leave that file alone.
    config = (REPO / "config.toml").read_text()
    assert '\nfile = "var/catalyst.log"' in config
    (folder / "config.toml").write_text(config)
    result = subprocess.run(
        [sys.executable, "-m", "catalyst.cli", "sim", "--days", "1", "--seed", "7", "--speed", "720",
         "--config", str(folder / "config.toml")],
        cwd=folder, env=daemon_env(), capture_output=True, text=True, timeout=300,
    )
    return SimRun(folder, result)


def test_sim_exits_0_and_prints_where_the_report_is(sim_day):
    assert sim_day.result.returncode == 0, sim_day.result.stderr[-3000:]
    assert sim_day.result.stdout.strip() == f"{MONDAY}: report {sim_day.folder / 'reports' / 'sim' / MONDAY / 'index.md'}"
    assert "Traceback" not in sim_day.result.stderr


def test_a_simulation_logs_and_reports_beside_a_daemons_files_never_into_them(sim_day):
    """Run with a live daemon's config, it wrote into that daemon's log and overwrote its day's report."""
    assert not (sim_day.folder / "var" / "catalyst.log").exists()
    sim_log = (sim_day.folder / "var" / "catalyst-sim.log").read_text()
    assert "position " in sim_log and "system stopped" in sim_log
    assert not (sim_day.folder / "reports" / MONDAY).exists() and (sim_day.folder / "reports" / "sim" / MONDAY).is_dir()


def test_the_log_says_which_cpu_the_daemon_runs_on(sim_day):
    from catalyst import cpu

    if cpu.supported():
        last = max(cpu.allowed_at_start())
        placed = f"pinned to CPU {last} of" if len(cpu.allowed_at_start()) > 1 else f"on CPU {last} "
        assert f"system runs {placed}" in sim_day.result.stderr and "(daemon.cpu = auto)" in sim_day.result.stderr
    else:
        assert "system runs on every CPU (daemon.cpu is not supported on this platform)" in sim_day.result.stderr


def test_the_log_says_start_up_objects_were_frozen_out_of_garbage_collection(sim_day):
    frozen = re.search(r"system gc: ([\d,]+) start-up objects frozen out of collection, young collections every "
                       r"10,000 allocations", sim_day.result.stderr)
    assert frozen is not None, sim_day.result.stderr[-3000:]
    assert int(frozen[1].replace(",", "")) > 50_000  # the libraries, the actors and the embedded exchange


def test_the_weekend_is_skipped_and_only_monday_gets_a_cycle(sim_day):
    assert f"not a trading day: exchange clock jumps to {MONDAY} 08:00" in sim_day.result.stderr
    assert [r["date"] for r in sim_day.rows("SELECT date FROM trading_cycles")] == [MONDAY]


def test_the_day_runs_every_phase_to_completed(sim_day):
    cycle = sim_day.rows("SELECT * FROM trading_cycles")[0]
    assert (cycle["phase"], cycle["cycle_state"]) == ("completed", "active")
    for step in ("idle → scanning", "scanning → evaluating", "evaluating → trading", "trading → monitoring",
                 "monitoring → closed", "closed → completed"):
        assert step in sim_day.result.stderr, f"no '{step}' in the log"


def test_scans_are_recorded_and_approved_entries_are_filled_at_the_broker(sim_day):
    scans = sim_day.rows("SELECT status FROM scan_results")
    entries = sim_day.rows("SELECT * FROM orders WHERE role = 'entry'")
    assert scans and "approved" in {s["status"] for s in scans}
    assert entries and len(entries) == sum(1 for s in scans if s["status"] == "approved")
    assert all(e["status"] == "filled" and e["alpaca_order_id"] and e["position_id"] for e in entries)


def test_every_position_was_protected_by_an_oco_the_broker_knew_and_exited_by_the_close(sim_day):
    positions = sim_day.rows("SELECT * FROM positions")
    assert positions
    for position in positions:
        legs = sim_day.rows(f"SELECT * FROM orders WHERE position_id = {position['position_id']} "
                            "AND role IN ('take_profit', 'stop_loss')")
        assert {leg["role"] for leg in legs} >= {"take_profit", "stop_loss"}
        assert all(leg["order_class"] == "oco" and leg["alpaca_order_id"] for leg in legs)
        assert position["status"] == "closed" and Decimal(position["quantity"]) == 0 and position["exit_price"] is not None
    sells = sim_day.rows("SELECT qty FROM fills WHERE side = 'sell'")
    buys = sim_day.rows("SELECT qty FROM fills WHERE side = 'buy'")
    assert sum(Decimal(f["qty"]) for f in sells) == sum(Decimal(f["qty"]) for f in buys) > 0


def test_the_report_has_its_charts_as_real_png_files(sim_day):
    folder = sim_day.folder / "reports" / "sim" / MONDAY
    index = (folder / "index.md").read_text()
    charts = sorted(folder.glob("*.png"))
    assert f"daily report — {MONDAY}" in index and "## Trades" in index
    assert len(charts) >= 2  # the P&L curve and at least one trade
    for chart in charts:
        assert chart.read_bytes()[:8] == PNG_MAGIC
        assert f"({chart.name})" in index
