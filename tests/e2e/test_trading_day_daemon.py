"""`catalyst run` as a supervisor runs it (issue 6), following `catalyst exchange` in its own process: a restart in
the middle of the day resumes the persisted phase without a second scan, and `catalyst stop --emergency` flattens
and closes the cycle. Each test asserts the daemon's database AND the emulator's own view of the account.

The exchange runs at 180x from 09:12 on seed 7's Monday: the day's one entry (DREN) fills at 09:35 and reaches its
take-profit around 13:20, so about a minute of wall time the position is open and protected.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import pytest
import requests

from catalyst.parent_tie import tied

REPO = Path(__file__).resolve().parents[2]
SIM_KEY = "CATALYST-SIM"  # the daemon's key id against an emulator when no APCA_* keys are set
WORKING = ("new", "accepted", "held", "partially_filled", "pending_new")
T = TypeVar("T")


def catalyst_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "catalyst.cli", *args]


def clean_env() -> dict[str, str]:
    return tied({k: v for k, v in os.environ.items() if not k.startswith(("APCA_", "CATALYST_"))})


class Day:
    """One exchange process, the daemon(s) following it, and the views the tests assert on."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.config = folder / "config.toml"
        shutil.copy(REPO / "config.toml", self.config)
        self.processes: list[subprocess.Popen] = []
        self.exchange = self._spawn(catalyst_command("exchange", "--port", "0", "--speed", "180", "--seed", "7",
                                                     "--start", "2026-11-23T09:12:00", "--rate-limit", "0"),
                                    "exchange", stdout=subprocess.PIPE)
        line = self.exchange.stdout.readline().strip()
        assert line.startswith("catalyst exchange ready at "), line
        self.url = line.rsplit(" ", 1)[1]
        self.daemon: subprocess.Popen | None = None
        self.runs = 0

    def _spawn(self, command: list[str], name: str, stdout: Any = subprocess.DEVNULL) -> subprocess.Popen:
        log = open(self.folder / f"{name}.log", "w")
        process = subprocess.Popen(command, cwd=self.folder, env=clean_env(), stdout=stdout, stderr=log, text=True)
        log.close()
        self.processes.append(process)
        return process

    def start_daemon(self) -> None:
        self.runs += 1
        self.daemon = self._spawn(catalyst_command("run", "--config", str(self.config), "--broker-url", self.url),
                                  f"daemon-{self.runs}")

    def stop_daemon(self) -> tuple[subprocess.CompletedProcess, int]:
        """`catalyst stop` while this test, the daemon's parent, reaps it as a supervisor would: an exited child
        nobody has waited for is a zombie, and `catalyst stop` rightly sees its pid as still there."""
        assert self.daemon is not None
        stop = subprocess.Popen(catalyst_command("stop", "--config", str(self.config)), cwd=self.folder,
                                env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        code = self.daemon.wait(timeout=90)
        out, err = stop.communicate(timeout=90)
        return subprocess.CompletedProcess(stop.args, stop.returncode, out, err), code

    def log(self, run: int | None = None) -> str:
        return (self.folder / f"daemon-{run or self.runs}.log").read_text()

    def catalyst(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(catalyst_command(*args, "--config", str(self.config)), cwd=self.folder,
                              env=clean_env(), capture_output=True, text=True, timeout=120)

    def wait_for(self, predicate: Callable[[], T], what: str, timeout: float = 120.0) -> T:
        deadline = time.monotonic() + timeout
        while True:
            result = predicate()
            if result:
                return result
            if self.daemon is not None and self.daemon.poll() is not None:
                raise AssertionError(f"the daemon exited ({self.daemon.returncode}) while waiting for {what}:\n"
                                     + self.log()[-3000:])
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}:\n" + self.log()[-3000:])
            time.sleep(0.2)

    def rows(self, sql: str) -> list[sqlite3.Row]:
        path = self.folder / "var" / "catalyst.db"
        if not path.exists():
            return []
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10) as db:
            db.row_factory = sqlite3.Row
            try:
                return db.execute(sql).fetchall()
            except sqlite3.OperationalError:  # the daemon has not created the schema yet
                return []

    def cycle(self) -> sqlite3.Row | None:
        rows = self.rows("SELECT * FROM trading_cycles")
        return rows[0] if rows else None

    def protected_open_position(self) -> sqlite3.Row | None:
        """The open position once both OCO legs are working at the broker under their broker ids."""
        for position in self.rows("SELECT * FROM positions WHERE status = 'open'"):
            legs = self.rows(f"SELECT * FROM orders WHERE position_id = {position['position_id']} "
                             "AND role IN ('take_profit', 'stop_loss') AND status IN ('submitted', 'accepted')")
            if {leg["role"] for leg in legs} == {"take_profit", "stop_loss"} and all(l["alpaca_order_id"] for l in legs):
                return position
        return None

    def broker_view(self) -> dict[str, Any]:
        return requests.get(f"{self.url}/sim/v1/accounts/{SIM_KEY}/snapshot", timeout=10).json()

    def stop_all(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=10)
            if process.stdout:
                process.stdout.close()


@pytest.fixture
def day(tmp_path) -> Iterator[Day]:
    harness = Day(tmp_path)
    yield harness
    harness.stop_all()


def broker_held_and_stop_protected(view: dict[str, Any], symbol: str) -> tuple[Decimal, Decimal]:
    held = sum((Decimal(p["qty"]) for p in view["positions"] if p["symbol"] == symbol), Decimal(0))
    stops = sum((Decimal(o["qty"]) - Decimal(o["filled_qty"]) for o in view["orders"]
                 if o["symbol"] == symbol and o["type"] == "stop" and o["status"] in WORKING), Decimal(0))
    return held, stops


def test_a_restart_in_monitoring_resumes_the_phase_without_a_second_scan_and_keeps_positions_protected(day):
    day.start_daemon()
    day.wait_for(lambda: (c := day.cycle()) and c["phase"] == "monitoring", "the cycle to reach monitoring")
    position = day.wait_for(day.protected_open_position, "a protected open position")
    scans = len(day.rows("SELECT * FROM scan_results"))
    entries = len(day.rows("SELECT * FROM orders WHERE role = 'entry'"))

    stopped, exit_code = day.stop_daemon()
    assert stopped.returncode == 0 and exit_code == 0, stopped.stderr
    day.start_daemon()
    day.wait_for(lambda: "resumed in monitoring" in day.log(), "the restarted daemon to resume")
    day.wait_for(lambda: "positions restored" in day.log(), "the position actors to be rebuilt")
    rebuilt = day.wait_for(day.protected_open_position, "the rebuilt position to be protected")
    view = day.broker_view()

    assert day.cycle()["phase"] == "monitoring"
    assert "1 positions restored" in day.log() and f"{position['quantity']} protected={position['quantity']}" in day.log()
    assert rebuilt["position_id"] == position["position_id"]
    assert len(day.rows("SELECT * FROM scan_results")) == scans
    assert len(day.rows("SELECT * FROM orders WHERE role = 'entry'")) == entries
    assert "scanner cycle" not in day.log() and "positions from" not in day.log()
    symbol = day.rows(f"SELECT symbol FROM securities s JOIN positions p ON p.security_id = s.security_id "
                      f"WHERE p.position_id = {position['position_id']}")[0]["symbol"]
    assert broker_held_and_stop_protected(view, symbol) == (Decimal(position["quantity"]),) * 2


def test_stop_emergency_flattens_every_position_closes_the_cycle_and_then_stops_the_daemon(day):
    # Stopping once flat, exit 0 (no supervisor restarts it): it used to keep running, and its next morning's cycle
    # traded again on its own (found by a README audit: `cycle … evaluating → trading`, a new entry).
    day.start_daemon()
    day.wait_for(day.protected_open_position, "a protected open position")

    result = day.catalyst("stop", "--emergency")
    assert result.returncode == 0, result.stderr
    assert "emergency stop" in result.stdout, result.stdout
    cycle = day.wait_for(lambda: (c := day.cycle()) and c["cycle_state"] == "emergency_stopped" and c,
                         "the emergency stop to be recorded")
    day.wait_for(lambda: day.rows("SELECT * FROM positions") and not day.rows(
        "SELECT * FROM positions WHERE status != 'closed'"), "every position to be closed")
    day.wait_for(lambda: day.cycle()["phase"] in ("closed", "completed"), "the cycle to close")
    view = day.broker_view()

    assert "operator: catalyst stop --emergency" in cycle["halt_reason"]
    assert "EMERGENCY STOP" in day.log()
    assert all(Decimal(p["qty"]) == 0 for p in view["positions"])
    assert not [o for o in view["orders"] if o["status"] in WORKING]
    assert day.daemon.wait(timeout=120) == 0  # it stops by itself once flat, and once the day's report is written
    assert "system emergency stop done: no position left" in day.log()
    assert day.cycle()["phase"] == "completed" and (day.folder / "reports" / day.cycle()["date"] / "index.md").exists()
    assert not (day.folder / "var" / "catalyst.db.emergency").exists()  # done: a restart trades again
    assert day.catalyst("status").stdout.startswith("daemon: not running")


def test_an_emergency_stop_under_way_goes_on_after_a_restart_and_stops_once_flat(day):
    # A daemon restarted before its emergency stop was done (a crash, a supervisor's restart) must not trade on: the
    # stop is kept beside the database until it is flat. Here the daemon was stopped with a position open and the
    # marker left as an emergency stop under way leaves it.
    day.start_daemon()
    position = day.wait_for(day.protected_open_position, "a protected open position")
    stopped, exit_code = day.stop_daemon()
    assert stopped.returncode == 0 and exit_code == 0, stopped.stderr
    (day.folder / "var" / "catalyst.db.emergency").write_text("operator: catalyst stop --emergency")
    entries = len(day.rows("SELECT * FROM orders WHERE role = 'entry'"))

    day.start_daemon()

    assert day.daemon.wait(timeout=120) == 0, day.log()[-3000:]
    assert "system emergency stop (operator: catalyst stop --emergency) resumed after a restart" in day.log()
    closed = day.rows(f"SELECT * FROM positions WHERE position_id = {position['position_id']}")[0]
    assert closed["status"] == "closed"
    assert len(day.rows("SELECT * FROM orders WHERE role = 'entry'")) == entries  # nothing new entered
    view = day.broker_view()
    assert all(Decimal(p["qty"]) == 0 for p in view["positions"])
    assert not [o for o in view["orders"] if o["status"] in WORKING]
    assert not (day.folder / "var" / "catalyst.db.emergency").exists()
