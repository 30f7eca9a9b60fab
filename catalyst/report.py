"""The daily report: reports/YYYY-MM-DD/index.md plus PNG charts, read from the database without writing it."""

from __future__ import annotations

import os
import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from loguru import logger
from sqlalchemy import Engine, create_engine, event, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from catalyst.domain.cycle import EXCHANGE_TZ, exchange_day
from catalyst.domain.money import ZERO
from catalyst.domain.positions import day_pnl, realized_in_day
from catalyst.errors import CatalystError
from catalyst.report_charts import (
    ENTRY_ROLES, Trade, TradeFill, max_drawdown, pnl_chart_png, pnl_curve, trade_chart_png,
)  # fmt: skip
from catalyst.store.db import check_database_file, describe_database, is_sqlite
from catalyst.store.cycle_ops import day_positions_query, day_rows, fills_query
from catalyst.store.errors import StoreError
from catalyst.store.models import DoctorFinding, Fill, Order, ScanResult, Security, TradingCycle
from catalyst.store.models import Position as PositionRow
from catalyst.store.records import CycleRecord, ScanResultRecord, cycle_record, scan_result_record

PriceSource = Callable[[str, datetime, datetime], Sequence[tuple[datetime, Decimal]]]
EXIT_LABELS = {"take_profit": "take-profit", "stop_loss": "stop-loss", "flatten": "flatten", "exit": "exit"}
ASYNC_DRIVERS = ("aiosqlite", "asyncpg", "aiomysql")
CHART_MARGIN = timedelta(minutes=15)


class ReportError(CatalystError):
    """The report cannot be written: the database is missing or unreadable, or the folder is not writable."""


REPEAT_GAP = timedelta(minutes=15)  # three of the doctor's default passes: a longer silence starts a new row


@dataclass(frozen=True)
class FindingLine:
    found_at: datetime
    severity: str
    type: str
    subject: str
    action: str | None
    outcome: str | None


@dataclass(frozen=True)
class DayData:
    day: date
    cycle: CycleRecord | None
    trades: tuple[Trade, ...]
    scans: tuple[ScanResultRecord, ...]
    findings: tuple[FindingLine, ...]
    # What the day realized (catalyst.domain.positions.day_pnl): its own trades' exits during it, and those of
    # positions kept from an earlier day, each (symbol, position id, realized during the day) in `carried`; their
    # trades are in the report of the day they were entered.
    realized: Decimal = ZERO
    carried: tuple[tuple[str, int, Decimal], ...] = ()


def write_daily_report(
    database: str | sessionmaker[Session],
    day: date,
    reports_dir: Path,
    market_prices: PriceSource | None = None,
    own_database: bool = False,
    repeat_gap: timedelta = REPEAT_GAP,
) -> Path:
    """Write reports_dir/YYYY-MM-DD/index.md, pnl.png and one trade-<SYMBOL>-<id>.png per trade; return index.md.

    `database` is the daemon's URL (read through a plain synchronous engine with writes refused) or a
    session factory the caller keeps read-only. Files are 0600 in a 0700 folder: P&L is private.
    `own_database`: called inside the daemon that writes the database (read_only_engine). `repeat_gap`: a finding
    found again within it is the same incident (three of the doctor's passes, doctor.interval_s).
    """
    data = read_day(database, day, own_database)
    folder = _private_folder(Path(reports_dir), day.isoformat())
    curve, notes = pnl_curve(data.trades)
    _write_private(folder / "pnl.png", pnl_chart_png(day.isoformat(), curve))
    charts: dict[int, str] = {}
    for trade in data.trades:
        if trade.entry_time is None or trade.entry_price is None:
            continue
        name = f"trade-{re.sub(r'[^A-Za-z0-9.-]', '_', trade.symbol)}-{trade.position_id}.png"
        prices, note = _prices_for(trade, market_prices)
        r = f", {trade.r_multiple:+.2f}R" if trade.r_multiple is not None else ""
        title = (f"{trade.symbol} {trade.side} {_qty(trade.qty)} (position {trade.position_id}): "
                 f"{trade.exit_reason}, {_money(trade.realized_pnl)}{r}{note}")  # fmt: skip
        _write_private(folder / name, trade_chart_png(trade, prices, title))
        charts[trade.position_id] = name
    index = folder / "index.md"
    _write_private(index, render_markdown(data, curve, max_drawdown(curve), charts, notes,
                                          repeat_gap).encode("utf-8"))
    # The phase tells apart the day's two writings (cycle: once before `completed`, once after), which read alike.
    phase = f" (cycle {data.cycle.phase})" if data.cycle is not None else ""
    logger.info(f"report {day.isoformat()}{phase}: {len(data.trades)} trades, {len(charts)} trade charts → {index}")
    return index


# --- reading -------------------------------------------------------------------------------------------------

def read_only_engine(database_url: str, own_database: bool = False) -> Engine:
    """A plain synchronous engine on the daemon's URL (`+aiosqlite` dropped) that refuses every write.

    `own_database`: inside the daemon whose writer has the file open, the file's header is not read here. Opening and
    closing the file outside SQLite drops every POSIX lock this process holds on it, the writer's SQLite locks
    included, and in WAL mode SQLite does not take its shared lock again: another connection (an operator's sqlite3,
    a backup) then took itself for the last one and removed the -wal with committed rows in it (a review). SQLite's
    own connections share their locks on one file and are safe; the daemon checked its file at start."""
    parsed = make_url(database_url)
    backend, _, driver = parsed.drivername.partition("+")
    if driver in ASYNC_DRIVERS:
        parsed = parsed.set(drivername=backend)
    database = parsed.database or ":memory:"
    if is_sqlite(parsed) and database != ":memory:" and not database.startswith("file:"):
        path = Path(database)
        # Connecting would create a missing file: the report must never create or change the database.
        if not path.is_file():
            raise ReportError(f"database {path} does not exist: nothing to report")
        try:
            if not own_database:
                check_database_file(parsed)
        except StoreError as error:
            raise ReportError(f"cannot read the database: {error}") from None
        # SQLite's read-only open: the main file is never written, not even by the checkpoint a last
        # closing connection would run. (It may leave empty -wal/-shm files beside a closed database.)
        read_only = {**parsed.query, "mode": "ro", "uri": "true"}
        parsed = parsed.set(database=path.resolve().as_uri(), query=read_only)
    engine = create_engine(parsed)
    if is_sqlite(parsed):

        @event.listens_for(engine, "connect")
        def _read_only(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA query_only=ON")  # also for a URL we could not open read-only
            cursor.execute("PRAGMA busy_timeout=5000")
            cursor.close()

    return engine


def read_day(database: str | sessionmaker[Session], day: date, own_database: bool = False) -> DayData:
    """Everything the report shows for `day`, read in one session."""
    where = database if isinstance(database, str) else "the given session factory"
    try:
        if not isinstance(database, str):
            with database() as session:
                return load_day(session, day)
        engine = read_only_engine(database, own_database)
        try:
            with Session(engine) as session:
                return load_day(session, day)
        finally:
            engine.dispose()
    except SQLAlchemyError as error:
        detail = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
        name = describe_database(where) if isinstance(database, str) else where
        raise ReportError(f"cannot read {name} for the {day.isoformat()} report: {detail}") from None


def load_day(session: Session, day: date) -> DayData:
    start, end = exchange_day(day)
    found_today = (DoctorFinding.found_at >= start, DoctorFinding.found_at < end)
    findings = tuple(
        FindingLine(f.found_at, f.severity, f.type, f.subject, f.action, f.outcome)
        for f in session.scalars(select(DoctorFinding).where(*found_today).order_by(DoctorFinding.found_at))
    )
    cycle = session.scalar(select(TradingCycle).where(TradingCycle.date == day))
    if cycle is None:
        return DayData(day, None, (), (), findings)
    cycle_id = cycle.cycle_id
    scans = tuple(
        scan_result_record(row, symbol)
        for row, symbol in session.execute(
            select(ScanResult, Security.symbol).join(Security, ScanResult.security_id == Security.security_id)
            .where(ScanResult.cycle_id == cycle_id).order_by(ScanResult.rank_in_scan, ScanResult.scan_id)
        )
    )  # fmt: skip
    orders_by_position: dict[int, list[Order]] = defaultdict(list)
    for order in session.scalars(select(Order).where(Order.cycle_id == cycle_id, Order.position_id.is_not(None))):
        orders_by_position[order.position_id or 0].append(order)
    fills_by_order: dict[int, list[Fill]] = defaultdict(list)
    cycle_fills = select(Fill).join(Order, Fill.order_id == Order.order_id).where(Order.cycle_id == cycle_id)
    for fill in session.scalars(cycle_fills.order_by(Fill.occurred_at, Fill.fill_id)):
        fills_by_order[fill.order_id or 0].append(fill)
    positions = session.execute(
        select(PositionRow, Security.symbol).join(Security, PositionRow.security_id == Security.security_id)
        .where(PositionRow.cycle_id == cycle_id).order_by(PositionRow.entry_time, PositionRow.position_id)
    ).all()  # fmt: skip
    trades = tuple(
        _trade(row, symbol, orders_by_position[row.position_id], fills_by_order) for row, symbol in positions
    )
    held = session.execute(day_positions_query(cycle_id, start)).all()
    rows = day_rows(held, session.execute(fills_query([p.position_id for p in held])).all())
    realized = day_pnl(rows, cycle_id, (start, end))[0]
    symbols = dict(session.execute(
        select(PositionRow.position_id, Security.symbol).join(Security, PositionRow.security_id == Security.security_id)
        .where(PositionRow.position_id.in_([p.position_id for p in held]))).all())  # fmt: skip
    carried = tuple((symbols[p.position_id], p.position_id, pnl) for p, row in zip(held, rows)
                    if p.cycle_id != cycle_id and (pnl := realized_in_day(row, cycle_id, (start, end))))
    return DayData(day, cycle_record(cycle), trades, scans, findings, realized, carried)


def _trade(row: PositionRow, symbol: str, orders: list[Order], fills_by_order: dict[int, list[Fill]]) -> Trade:
    entry = next((o for o in sorted(orders, key=lambda o: o.order_id) if o.role in ENTRY_ROLES), None)
    fills = tuple(sorted(
        (TradeFill(f.occurred_at, o.role, f.side, f.qty, f.price) for o in orders for f in fills_by_order[o.order_id]),
        key=lambda f: f.at,
    ))  # fmt: skip
    # A closed position's row holds quantity 0; the traded size is what the entry filled.
    qty = sum((f.qty for f in fills if f.role in ENTRY_ROLES), ZERO) or (entry.filled_qty if entry else ZERO)
    planned_stop = entry.planned_stop_loss if entry is not None else None
    planned_target = entry.planned_take_profit if entry is not None else None
    return Trade(
        position_id=row.position_id, symbol=symbol, side=row.side, status=row.status,
        qty=qty or row.quantity, entry_time=row.entry_time, entry_price=row.entry_price,
        exit_time=row.exit_time, exit_price=row.exit_price, realized_pnl=row.realized_pnl,
        planned_stop=planned_stop if planned_stop is not None else row.stop_loss,
        stop=row.stop_loss if row.stop_loss is not None else planned_stop,
        target=row.take_profit if row.take_profit is not None else planned_target,
        exit_reason=_exit_reason(row.status, fills), fills=fills,
    )  # fmt: skip


def _exit_reason(status: str, fills: tuple[TradeFill, ...]) -> str:
    roles = list(dict.fromkeys(f.role for f in fills if f.role not in ENTRY_ROLES))  # first-exit order
    if roles:
        return " + ".join(EXIT_LABELS.get(role, role) for role in roles)
    return "still open" if status == "open" else f"{status} (no exit fill recorded)"


# --- Markdown ------------------------------------------------------------------------------------------------

def render_markdown(
    data: DayData, curve: Sequence[tuple[datetime, Decimal]], drawdown: Decimal, charts: dict[int, str],
    notes: Sequence[str], repeat_gap: timedelta = REPEAT_GAP,
) -> str:
    """The report a trader opens first: headline numbers, the trades, the scan, the doctor's findings."""
    day = data.day.isoformat()
    lines = [f"# Catalyst daily report — {day}", ""]
    if data.cycle is None:
        lines += ["No trading cycle was recorded for this day.", ""]
    else:
        cycle = data.cycle
        halted = f" — {_cell(cycle.halt_reason)}" if cycle.halt_reason else ""
        lines += [f"Cycle {cycle.cycle_id}: phase **{cycle.phase}**, state **{cycle.cycle_state}**{halted}. "
                  "Times are exchange time (America/New_York).", ""]  # fmt: skip
    end = exchange_day(data.day)[1]
    # Closed by this day's end: one kept overnight and closed on a later day counts there (realized_in_day).
    closed = [t for t in data.trades if t.closed and (t.exit_time is None or t.exit_time < end)]
    carried = sum((pnl for _, _, pnl in data.carried), ZERO)
    wins = [t for t in closed if t.realized_pnl > 0]
    losses = [t for t in closed if t.realized_pnl < 0]
    best = max(wins, key=lambda t: t.realized_pnl, default=None)
    worst = min(losses, key=lambda t: t.realized_pnl, default=None)
    rate = f"{Decimal(len(wins)) * 100 / len(closed):.1f}%" if closed else "—"
    lines += [
        "## Headline", "",
        f"- **Trades:** {len(closed)} closed ({len(wins)} won, {len(losses)} lost"
        + (f", {len(closed) - len(wins) - len(losses)} even)" if len(wins) + len(losses) < len(closed) else ")")
        + (f", {len(data.trades) - len(closed)} still open" if len(closed) < len(data.trades) else ""),
        f"- **Win rate:** {rate}",
        f"- **Realized P&L:** {_money(data.realized)}"
        + (f" (with {_money(carried)} from {len(data.carried)} kept from an earlier day: "
           + ", ".join(f"{_cell(symbol)} #{pid} {_money(pnl)}" for symbol, pid, pnl in data.carried) + ")"
           if data.carried else ""),
        f"- **Largest win:** {_money(best.realized_pnl) + f' ({best.symbol})' if best else '—'}",
        f"- **Largest loss:** {_money(worst.realized_pnl) + f' ({worst.symbol})' if worst else '—'}",
        f"- **Max drawdown:** {_money(-drawdown) if drawdown else _money(ZERO)} (intraday realized curve)",
        "", "![Cumulative realized P&L](pnl.png)", "",
    ]  # fmt: skip
    lines += ["## Trades", ""]
    if data.trades:
        lines += [
            "| # | Symbol | Side | Entry | Entry price | Exit | Exit price | Qty | P&L | R | Duration | Exit reason |",
            "|---:|---|---|---|---:|---|---:|---:|---:|---:|---:|---|",
        ]
        for t in data.trades:
            r = f"{t.r_multiple:+.2f}R" if t.r_multiple is not None else "—"
            symbol = f"[{_cell(t.symbol)}]({charts[t.position_id]})" if t.position_id in charts else _cell(t.symbol)
            lines.append(f"| {t.position_id} | {symbol} | {t.side} | {_clock(t.entry_time)} | {_price(t.entry_price)} "
                         f"| {_clock(t.exit_time)} | {_price(t.exit_price)} | {_qty(t.qty)} | {_money(t.realized_pnl)} "
                         f"| {r} | {_duration(t.duration)} | {t.exit_reason} |")  # fmt: skip
    else:
        lines.append("No trades.")
    lines += [""] + [f"> Note: {_cell(note)}" for note in notes] + ([""] if notes else [])
    lines += ["## Scan results", ""]
    if data.scans:
        lines += ["| Rank | Symbol | Score | Parts | Status |", "|---:|---|---:|---|---|"]
        for s in data.scans:
            status = f"{s.status}: {s.reason}" if s.reason else s.status
            lines.append(f"| {s.rank_in_scan} | {_cell(s.symbol)} | {s.composite_score:.2f} "
                         f"| {_cell(_parts(s.score_parts))} | {_cell(status)} |")  # fmt: skip
    else:
        lines.append("No scan results.")
    lines += ["", "## Doctor findings", ""]
    if data.findings:
        lines += ["| Time | Severity | Type | Subject | Action | Outcome |", "|---|---|---|---|---|---|"]
        for f, last, count in _once_each(data.findings, repeat_gap):
            when = _clock(f.found_at) if count == 1 else f"{_clock(f.found_at)}–{_clock(last)} ({count} passes)"
            lines.append(f"| {when} | {_cell(f.severity)} | {_cell(f.type)} | {_cell(f.subject)} "
                         f"| {_cell(f.action or '—')} | {_cell(f.outcome or '—')} |")  # fmt: skip
    else:
        lines.append("No findings.")
    return "\n".join(lines) + "\n"


def _once_each(findings: tuple[FindingLine, ...],
               repeat_gap: timedelta = REPEAT_GAP) -> list[tuple[FindingLine, datetime, int]]:
    """A finding found again by pass after pass, once, with when it was last found and by how many passes: the
    doctor records it every pass it lasts (an ended order of another database, for 24 hours; a halt standing), and a
    day's report listed it 57 times (a review). Each heal stays a row of its own (a heal is an event: two a few
    minutes apart are two incidents), and a silence longer than `repeat_gap` starts a new row: two incidents an
    afternoon apart read as one that lasted it."""
    rows: list[list] = []
    open_runs: dict[tuple, list] = {}
    for f in findings:
        key = (f.severity, f.type, f.subject, f.action, f.outcome)
        run = open_runs.get(key) if f.outcome != "healed" else None
        if run is not None and f.found_at - run[1] <= repeat_gap:
            run[1], run[2] = f.found_at, run[2] + 1
            continue
        rows.append([f, f.found_at, 1])
        open_runs[key] = rows[-1]
    return [(f, last, count) for f, last, count in rows]


def _money(amount: Decimal) -> str:
    return f"{'-' if amount < 0 else '+' if amount > 0 else ''}${abs(amount):,.2f}"


def _price(price: Decimal | None) -> str:
    if price is None:
        return "—"
    # Cents for ordinary prices; sub-penny prices (under $1) keep four places.
    return f"{price:,.2f}" if price == price.quantize(Decimal("0.01")) else f"{price:,.4f}"


def _qty(qty: Decimal) -> str:
    return f"{qty.normalize():f}"


def _clock(at: datetime | None) -> str:
    return at.astimezone(EXCHANGE_TZ).strftime("%H:%M:%S") if at is not None else "—"


def _duration(span: timedelta | None) -> str:
    if span is None:
        return "—"
    minutes, seconds = divmod(int(span.total_seconds()), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {seconds:02d}s"


def _parts(parts: dict[str, Any]) -> str:
    def shown(value: Any) -> str:
        try:
            return f"{Decimal(str(value)):.2f}" if not isinstance(value, bool) else str(value)
        except ArithmeticError:
            return str(value)

    return ", ".join(f"{name} {shown(value)}" for name, value in parts.items()) or "—"


def _cell(text: str) -> str:
    # A pipe would end the table cell and a newline the row.
    return " ".join(str(text).split()).replace("|", "\\|")


# --- files ---------------------------------------------------------------------------------------------------

def _prices_for(trade: Trade, source: PriceSource | None) -> tuple[list[tuple[datetime, Decimal]], str]:
    from_fills = [(f.at, f.price) for f in trade.fills]
    if source is None:
        return from_fills, " (fills only)"
    assert trade.entry_time is not None
    start, end = trade.entry_time - CHART_MARGIN, (trade.exit_time or trade.entry_time) + CHART_MARGIN
    try:
        prices = [(at, Decimal(price)) for at, price in source(trade.symbol, start, end)]
    except Exception as error:  # a chart must not cost the report: fall back to the fills
        logger.warning(f"report: minute prices for {trade.symbol} unavailable ({error}); charting fills only")
        return from_fills, " (fills only: prices unavailable)"
    return (prices, "") if prices else (from_fills, " (fills only: no minute prices)")


def _private_folder(reports_dir: Path, name: str) -> Path:
    folder = reports_dir / name
    try:
        reports_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        folder.mkdir(mode=0o700, exist_ok=True)
        os.chmod(folder, 0o700)  # an existing folder from an earlier run, or a umask that widened it
    except OSError as error:
        raise ReportError(f"cannot create the report folder {folder}: {error.strerror or error}") from None
    return folder


def _write_private(path: Path, content: bytes) -> None:
    """Write owner-only (0600) through a temporary file, so a reader never sees half a report."""
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            os.fchmod(handle.fileno(), 0o600)  # a leftover temporary file may have other bits
            handle.write(content)
        os.replace(temporary, path)
    except OSError as error:
        raise ReportError(f"cannot write {path}: {error.strerror or error}") from None
