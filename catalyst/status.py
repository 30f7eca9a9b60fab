"""`catalyst status`: a readable table from the database (read-only) and the running daemon's last state snapshot."""

from __future__ import annotations

import json
import shutil
import sqlite3
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

from catalyst.config import Config, sqlite_path
from catalyst.domain.cycle import EXCHANGE_TZ, exchange_day
from catalyst.domain.positions import DayPosition, day_pnl, realized_in_day
from catalyst.errors import DatabaseError
from catalyst.instance import InstanceLock, emergency_path
from catalyst.runtime import sim_database_url
from catalyst.store.errors import DatabaseTooNewError
from catalyst.store.migrate import verify
from catalyst.store.reserve import MB, reserve_path

WORKING = ("created", "submitted", "accepted", "partial_fill")


def state_snapshot_path(database_path: Path) -> Path:
    return database_path.with_name(database_path.name + ".state.json")


def write_state_snapshot(database_path: Path, snapshot: dict[str, Any]) -> None:
    """Written by the daemon with every state table; `catalyst status` shows it. Owner-readable only."""
    path = state_snapshot_path(database_path)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(snapshot, default=str))
    tmp.chmod(0o600)
    tmp.replace(path)


def _open(path: Path, hint: str = "") -> sqlite3.Connection:
    if not path.exists():
        raise DatabaseError(f"{path}: no database yet (run `catalyst db upgrade` or start the daemon){hint}")
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        conn.execute("SELECT 1 FROM orders LIMIT 1")
    except sqlite3.DatabaseError as exc:
        raise _unreadable(path, exc) from None
    conn.row_factory = sqlite3.Row
    return conn


def _unreadable(path: Path, error: sqlite3.Error) -> DatabaseError:
    return DatabaseError(f"{path}: cannot read the database: {error}")


def _database_warnings(url: str) -> list[str]:
    """The checks the daemon's start runs, read-only: another application's file, a damaged one or one whose schema
    is not its revision's is refused in one line, as its tables would be misread. A newer Catalyst's database is
    shown under a warning rather than refused: reading harms nothing, and an operator whose `catalyst` lags the
    daemon's (mid-upgrade, or after a downgrade of the package) still needs its positions; a table or column this
    version no longer finds is then one line too."""
    try:
        verify(url)
    except DatabaseTooNewError as exc:
        return [f"warning: {exc}; shown as this Catalyst reads it, which may miss or misread what that version changed"]
    return []


def status_text(config: Config, simulation: bool = False) -> str:
    try:
        return _status_text(config, simulation)
    except PermissionError as exc:
        # The daemon's folder is its user's alone (UMask=0077 under systemd): another user meets this on any file.
        raise DatabaseError(f"{exc.filename or 'the database folder'}: permission denied: run `catalyst status` as "
                            "the daemon's user (or one who may read its database folder)") from None


def _status_text(config: Config, simulation: bool = False) -> str:
    url = sim_database_url(config) if simulation else config.daemon.database_url
    path = sqlite_path(url)
    if path is None:
        raise DatabaseError(f"{url}: `catalyst status` reads SQLite databases only")
    simulated = sqlite_path(sim_database_url(config))
    # `make sim` leaves its day in the simulation's database: say where, rather than only that this one is missing.
    hint = "; the simulation's is read with `catalyst status --sim`" if (
        not simulation and simulated is not None and simulated.exists()) else ""
    running, said = daemon_line(path)
    if running and (not path.exists() or (path.is_file() and path.stat().st_size == 0)):
        # Empty too: the daemon's instance lock makes the file at once (instance.py), and its first start may wait
        # minutes for the broker before it writes the schema (a review: "an empty file … run `catalyst db upgrade`",
        # exit 3, of a daemon already running).
        return f"{said}; starting up: its database {path} is not created yet"
    if path.is_dir():
        raise DatabaseError(f"{path}: a directory, not a database file (check daemon.database_url)")
    if path.is_file() and path.stat().st_size == 0:  # SQLite's own answer would be "no such table: orders"
        raise DatabaseError(f"{path}: an empty file, no database yet (run `catalyst db upgrade` or start the "
                            f"daemon){hint}")
    warnings = _database_warnings(url)
    with _open(path, hint) as conn:
        try:
            tables = _render(conn, path, running)
        except sqlite3.Error as exc:  # a table or column missing, a damaged page met, a lock held too long
            raise _unreadable(path, exc) from None
        return "\n".join([said, *warnings, *_emergency_line(path), *tables, "",
                          disk_line(path, config.daemon.disk_reserve_mb)])


def _emergency_line(database: Path) -> list[str]:
    """An operator's emergency stop under way (`<db>.emergency`): the daemon opens nothing and stops once flat, and a
    start goes on with it, so a trader wondering why nothing trades reads it here first."""
    marker = emergency_path(database)
    if not marker.exists():
        return []
    return [f"emergency stop under way ({marker}): no new entry; the daemon stops once flat, and a start goes on "
            "with it (remove the file, with no daemon running, to give it up)"]


def daemon_line(database: Path) -> tuple[bool, str]:
    """Whether a daemon runs on this database now, by its instance lock (which the kernel frees even after kill -9),
    and the line saying so: the tables below are the database's, and a snapshot the last one a daemon wrote."""
    try:
        holder = InstanceLock(database).holder()
    except OSError as exc:  # the lock file not ours to open (another user's daemon, a read-only folder)
        return False, f"daemon: unknown (its lock {database}.lock cannot be read: {exc.strerror or exc})"
    if holder is None:
        return False, "daemon: not running"
    what = f", {holder['what']}" if holder.get("what") else ""
    return True, f"daemon: running (pid {holder.get('pid') or 'unknown'}{what})"


def disk_line(database: Path, reserve_mb: int) -> str:
    """The disk under the database and its reserve: after a stop on a full disk, what an operator checks first."""
    try:
        free = f"{shutil.disk_usage(database.parent).free / MB:,.1f} MB free on the disk under the database"
    except OSError as exc:
        free = f"free space under the database unknown ({exc.strerror or exc})"
    if not reserve_mb:
        return f"disk: {free}; no disk reserve (daemon.disk_reserve_mb = 0)"
    reserve = reserve_path(database)
    if reserve.exists() and reserve.stat().st_size >= reserve_mb * MB:
        return f"disk: {free}; the {reserve_mb} MB disk reserve is set aside ({reserve})"
    return (f"disk: {free}; the {reserve_mb} MB disk reserve is NOT set aside ({reserve}): the daemon's next start "
            "sets it aside if the disk has room (it is given back when the disk fills up)")


def _render(conn: sqlite3.Connection, path: Path, running: bool = True) -> list[str]:
    out = [f"database {path}"]
    cycle = conn.execute("SELECT * FROM trading_cycles ORDER BY date DESC LIMIT 1").fetchone()
    today_id = cycle["cycle_id"] if cycle else -1
    day = exchange_day(date.fromisoformat(cycle["date"])) if cycle else None
    start = _stored(day[0]) if day else ""
    # Today's positions, those kept from an earlier day and closed today (what they realized today is today's P&L),
    # and any still open from an earlier day (kept overnight under their stops): "no positions today" over shares
    # held since yesterday hid them from the operator (catalyst.store.cycle_ops.day_positions_query's reading).
    positions = conn.execute(
        "SELECT p.*, s.symbol FROM positions p JOIN securities s USING (security_id) "
        "WHERE p.cycle_id = ? OR p.status = 'open' OR p.exit_time >= ? ORDER BY p.position_id",
        (today_id, start)).fetchall()
    rows = _day_rows(conn, positions)
    realized, unrealized = day_pnl(rows, today_id, day) if day else (Decimal(0), Decimal(0))
    carried = [p for p in positions if p["cycle_id"] != today_id and p["status"] == "open"]
    closed_today = [(p, realized_in_day(row, today_id, day)) for p, row in zip(positions, rows)
                    if day and p["cycle_id"] != today_id and p["status"] == "closed"]
    if cycle is None:
        out.append("no trading cycle yet")
    else:
        # The cycle's daily_pnl is written when the day completes; before that, the day so far from its positions.
        pnl = (f"daily P&L {Decimal(cycle['daily_pnl']):+.2f}" if cycle["phase"] == "completed"
               else f"P&L so far {realized + unrealized:+.2f}")
        out.append(f"cycle {cycle['date']} phase {cycle['phase']} state {cycle['cycle_state']}"
                   + (f" ({cycle['halt_reason']})" if cycle["halt_reason"] else "") + f" {pnl}")
    out.append("")
    out.append(f"{'position':<14}{'status':<9}{'side':<6}{'qty':>7}{'entry':>10}{'exit':>10}{'stop':>9}{'target':>9}"
               f"{'realized':>11}{'unrealized':>12}")
    for p in positions:
        label = p["symbol"] + "#p-" + str(p["position_id"]) + ("*" if p["cycle_id"] != today_id else "")
        out.append(f"{label:<14}{p['status']:<9}{p['side']:<6}"
                   f"{_n(p['quantity']):>7}{_n(p['entry_price']):>10}{_n(p['exit_price']):>10}{_n(p['stop_loss']):>9}"
                   f"{_n(p['take_profit']):>9}{_n(p['realized_pnl']):>11}"
                   f"{_n(p['unrealized_pnl'] if p['status'] == 'open' else None):>12}")
    if not positions:
        out.append("(no positions today)")
    out.append(f"realized {realized:+.2f}  unrealized {unrealized:+.2f}")
    if closed_today:
        out.append(f"* {len(closed_today)} kept from an earlier day closed today, realized today "
                   f"{sum((pnl for _, pnl in closed_today), Decimal(0)):+.2f}, in the day's P&L")
    if carried:
        held = sum((Decimal(p["unrealized_pnl"]) for p in carried), Decimal(0))
        out.append(f"* {len(carried)} open from an earlier day (kept overnight), unrealized {held:+.2f}, not in the "
                   "day's P&L")
    working = conn.execute(
        f"SELECT o.*, s.symbol FROM orders o JOIN securities s USING (security_id) "
        f"WHERE o.status IN ({','.join('?' * len(WORKING))}) ORDER BY o.order_id", WORKING).fetchall()
    out.append("")
    out.append(f"working orders: {len(working)}")
    for o in working:
        price = o["limit_price"] or o["stop_price"] or ""
        out.append(f"  {o['symbol']}#o-{o['order_id']:<6} {o['role']:<12} {o['side']:<5} {_n(o['quantity']):>7} "
                   f"{o['order_type']:<6} {_n(price):>9} {o['status']}" + ("  OUTCOME UNKNOWN" if o["outcome_unknown"] else ""))
    findings = conn.execute("SELECT * FROM doctor_findings ORDER BY finding_id DESC LIMIT 5").fetchall()
    out.append("")
    out.append(f"last doctor findings: {len(findings)}")
    for f in findings:
        out.append(f"  {_new_york(f['found_at'])} {f['severity']:<8} {f['type']:<22} {f['subject']} → {f['action'] or '-'}"
                   f" ({f['outcome'] or '-'})")
    snapshot = state_snapshot_path(path)
    if snapshot.exists():
        try:
            state = json.loads(snapshot.read_text())
            if not isinstance(state, dict) or not isinstance(state.get("positions", []), list):
                raise ValueError("not a snapshot")  # a hand-edited or foreign file: said unreadable, not a traceback
            out.append("")
            out.append(f"daemon snapshot at {state.get('at')}: phase {state.get('phase')}, "
                       f"{len(state.get('positions', []))} live position actors, halted: {state.get('halted') or 'no'}"
                       + ("" if running else " (its last run's: no daemon runs now)"))
        except (OSError, ValueError):
            out.append(f"(daemon snapshot {snapshot} unreadable)")
    return out


def _day_rows(conn: sqlite3.Connection, positions: list[sqlite3.Row]) -> list[DayPosition]:
    """The positions as the day's P&L reads them, each with its recorded executions (catalyst.store.cycle_ops's
    reading, in the sqlite3 shell's terms: status reads the file as it is, without the daemon's engine)."""
    ids = [p["position_id"] for p in positions]
    fills: dict[int, list[tuple[datetime, str, Decimal, Decimal]]] = {i: [] for i in ids}
    for f in conn.execute(
            "SELECT o.position_id, f.occurred_at, f.side, f.qty, f.price FROM fills f JOIN orders o USING (order_id) "
            f"WHERE o.position_id IN ({','.join('?' * len(ids))}) ORDER BY f.occurred_at, f.fill_id", ids):
        at = _utc(f["occurred_at"])
        if at is not None:
            fills[f["position_id"]].append((at, f["side"], Decimal(f["qty"]), Decimal(f["price"])))
    return [DayPosition(p["cycle_id"], p["side"], p["status"], Decimal(p["realized_pnl"]), Decimal(p["unrealized_pnl"]),
                        _utc(p["exit_time"]), tuple(fills[p["position_id"]])) for p in positions]


def _stored(at: datetime) -> str:
    """`at` as SQLite holds a timestamp (naive UTC text), for comparisons in SQL."""
    return at.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _utc(stored: str | None) -> datetime | None:
    try:
        return datetime.fromisoformat(stored).replace(tzinfo=timezone.utc) if stored else None
    except (TypeError, ValueError):
        return None


def _new_york(stored: str) -> str:
    """A stored timestamp (naive UTC text) as the log shows time: New York."""
    try:
        at = datetime.fromisoformat(stored).replace(tzinfo=timezone.utc)
    except (TypeError, ValueError):
        return str(stored)[:19]
    return f"{at.astimezone(EXCHANGE_TZ):%Y-%m-%d %H:%M:%S}"


def _n(value: Any) -> str:
    if value in (None, ""):
        return "-"
    number = Decimal(str(value))
    return f"{number:.2f}" if number != number.to_integral_value() else f"{number:.0f}"
