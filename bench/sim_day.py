"""Issue 6: `catalyst sim --days 1` with the shipped config, as a subprocess: wall time, exchange time, speed-up."""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
import tomllib
from contextlib import closing
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench.common import goal, machine_facts, ratio, scratch_dir
from catalyst.sim.market import EXCHANGE_TZ

NAME = "sim_day"
ISSUE = "6"
SEED = 7  # the shipped config's exchange.seed: a day with a catalyst the scanner approves
CEILING_SPEED = 2000.0
GOAL_SPEEDUP = 500.0
SHIPPED_CONFIG = Path(__file__).resolve().parent.parent / "config.toml"
TIMEOUT_S = 600.0
EXCHANGE_START = re.compile(r"embedded exchange at \S+ \(.*starts (?P<at>\d{4}-\d\d-\d\d \d\d:\d\d) ET\)")
REPORT_LINE = re.compile(r"^(?P<day>\d{4}-\d\d-\d\d): report (?P<path>.+)$", re.MULTILINE)


def run(quick: bool) -> dict[str, Any]:
    shipped = tomllib.loads(SHIPPED_CONFIG.read_text())
    shipped_speed = float(shipped["exchange"]["speed"])
    trading_at = shipped["cycle"]["trading_at"]
    # Quick: only the fast run (a shipped-speed day is ~40 s alone); full: the shipped speed and the ceiling probe.
    speeds: list[float | None] = [CEILING_SPEED] if quick else [None, CEILING_SPEED]
    days = {}
    for speed in speeds:
        label = f"speed_{speed:g}" if speed is not None else f"shipped_speed_{shipped_speed:g}"
        days[label] = simulate_day(speed, speed or shipped_speed, trading_at)
    judged_label, judged = next(iter(days.items()))
    speedup = judged["speedup"]
    return {
        "name": NAME, "issue": ISSUE, "quick": quick, "machine": machine_facts(),
        "figures": {"seed": SEED, "config": "config.toml as shipped (copied to a temp folder)", **days},
        "goals": [
            goal(f"simulated s / wall s, one day ({judged_label.replace('_', ' ')})", f"≥ {GOAL_SPEEDUP:g}×",
                 speedup, speedup >= GOAL_SPEEDUP),
            *[goal(f"speed-up delivered / asked ({label.replace('_', ' ')})", "baseline (1.0 = keeps up)",
                   day["delivered_vs_asked"], None) for label, day in days.items()],
        ],
        "notes": [
            f"`catalyst sim --config config.toml --days 1 --seed {SEED} [--speed X]` as a subprocess in a fresh "
            "temporary folder holding a copy of the shipped config.toml (so var/ and reports/ are made there); "
            "APCA_* and CATALYST_* variables removed from its environment.",
            "Wall: process start to exit (Python start-up, exchange start, the day, report, shutdown). Exchange "
            "time: from the embedded exchange's start (its first log line, 08:00 ET) to the cycle row's last "
            "update, written when the day completed (exchange clock).",
            "cycle_started: exchange time when the daemon created the day's cycle row, i.e. start-up done; at "
            "high speeds start-up alone (a few wall seconds) can pass cycle.scanning_at.",
            "Speed-up = simulated seconds / wall seconds; delivered/asked divides it by the --speed asked. "
            f"first_entry_lag_s: the first position's entry time after cycle.trading_at ({trading_at}) in exchange "
            "seconds: how late the daemon acts when the clock runs faster than it can follow.",
            "The same seed trades the same names, but fills depend on when the daemon acts, so trades and P&L "
            "may differ between speeds.",
        ],
    }


def simulate_day(speed: float | None, asked: float, trading_at: str) -> dict[str, Any]:
    with scratch_dir(NAME) as folder:
        config = folder / "config.toml"
        shutil.copyfile(SHIPPED_CONFIG, config)
        command = [*catalyst_command(), "sim", "--config", str(config), "--days", "1", "--seed", str(SEED)]
        if speed is not None:
            command += ["--speed", f"{speed:g}"]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("APCA_", "CATALYST_"))}
        started = time.perf_counter()
        done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
        wall_s = time.perf_counter() - started
        if done.returncode != 0:
            tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise RuntimeError(f"catalyst sim exited {done.returncode}: {tail}")
        return day_figures(folder, done, wall_s, asked, trading_at)


def catalyst_command() -> list[str]:
    """The installed console script beside this interpreter, else the CLI through the interpreter itself."""
    script = Path(sys.executable).with_name("catalyst")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "from catalyst.cli import run_command; run_command()"]


def day_figures(folder: Path, done: subprocess.CompletedProcess[str], wall_s: float, asked: float,
                trading_at: str) -> dict[str, Any]:
    start_match = EXCHANGE_START.search(done.stderr)
    if start_match is None:
        raise RuntimeError("catalyst sim did not log where its embedded exchange starts")
    exchange_start = datetime.strptime(start_match["at"], "%Y-%m-%d %H:%M").replace(tzinfo=EXCHANGE_TZ)
    reports = [(m["day"], Path(m["path"].strip())) for m in REPORT_LINE.finditer(done.stdout)]
    with closing(sqlite3.connect(f"file:{folder / 'var' / 'sim.db'}?mode=ro", uri=True)) as db:
        cycle = db.execute("SELECT phase, started_at, updated_at, daily_pnl FROM trading_cycles "
                           "ORDER BY cycle_id DESC LIMIT 1").fetchone()
        positions = db.execute("SELECT status, entry_time FROM positions ORDER BY position_id").fetchall()
    if cycle is None or cycle[0] != "completed":
        raise RuntimeError(f"the simulated day did not complete (cycle phase {cycle[0] if cycle else 'missing'})")
    completed = _exchange_time(cycle[2])
    simulated_s = (completed - exchange_start).total_seconds()
    entries = sorted(_exchange_time(entry) for _, entry in positions if entry)
    trading_start = exchange_start.replace(hour=int(trading_at[:2]), minute=int(trading_at[3:5]))
    speedup = ratio(simulated_s, wall_s)
    return {
        "wall_s": round(wall_s, 2),
        "exchange_start": f"{exchange_start:%Y-%m-%d %H:%M:%S} ET",
        "cycle_started": f"{_exchange_time(cycle[1]):%H:%M:%S} ET",
        "completed": f"{completed:%H:%M:%S} ET",
        "simulated_s": round(simulated_s, 1),
        "simulated_hours": round(simulated_s / 3600, 2),
        "speed_asked": asked,
        "speedup": speedup,
        "delivered_vs_asked": ratio(speedup, asked),
        "trades": len(positions),
        "trades_closed": sum(1 for status, _ in positions if status == "closed"),
        "realized_pnl": cycle[3],
        "first_entry_lag_s": round((entries[0] - trading_start).total_seconds(), 1) if entries else None,
        "report": {"days": [day for day, _ in reports], "exists": bool(reports) and all(p.is_file() for _, p in reports),
                   "charts": sum(len(list(p.parent.glob("*.png"))) for _, p in reports if p.parent.is_dir())},
    }


def _exchange_time(stored: str) -> datetime:
    """The store writes naive UTC timestamps (its clock is the exchange's); shown here in exchange time."""
    return datetime.fromisoformat(stored).replace(tzinfo=timezone.utc).astimezone(EXCHANGE_TZ)

