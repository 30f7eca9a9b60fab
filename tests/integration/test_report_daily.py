"""The daily report from a real SQLite file written through the DbWriter: numbers, charts, file modes, read-only."""

from __future__ import annotations

from contextlib import contextmanager

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import sessionmaker

from actors.db_writer import DbWriter
from catalyst.domain.cycle import EXCHANGE_TZ
from catalyst.report import ReportError, read_only_engine, write_daily_report
from catalyst.store.migrate import upgrade
from catalyst.store.records import NewFinding, NewOrder, NewScanResult, OrderProgress

D = Decimal
DAY = date(2024, 3, 4)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def at(hh: int, mm: int, ss: int = 0, day: date = DAY) -> datetime:
    return datetime(day.year, day.month, day.day, hh, mm, ss, tzinfo=EXCHANGE_TZ)


@dataclass(frozen=True)
class Planned:
    symbol: str
    qty: Decimal
    entry: Decimal
    stop: Decimal
    target: Decimal
    entry_at: datetime
    exit_role: str  # take_profit | stop_loss
    exit_price: Decimal
    exit_at: datetime


WINNER = Planned("AAPL", D("100"), D("150.00"), D("147.00"), D("156.00"), at(10, 0), "take_profit", D("156.00"),
                 at(10, 30))  # fmt: skip
LOSER = Planned("MSFT", D("50"), D("400.00"), D("396.00"), D("408.00"), at(10, 10), "stop_loss", D("396.00"),
                at(10, 52, 15))  # fmt: skip


def record_trade(writer: Any, cycle_id: int, plan: Planned) -> int:
    """Spec §1.3 through the store: entry order first, fill, position, OCO legs, one leg fills, close."""
    entry = writer.create_order(
        cycle_id=cycle_id, symbol=plan.symbol, role="entry", side="buy", order_type="market", quantity=plan.qty,
        planned_stop_loss=plan.stop, planned_take_profit=plan.target, at=plan.entry_at - timedelta(seconds=2),
    ).get()  # fmt: skip
    writer.mark_submitted(entry.order_id, f"alp-{plan.symbol}-entry", "accepted", plan.entry_at).get()
    writer.record_fill(
        execution_id=f"alp-{plan.symbol}-entry:{plan.qty}", alpaca_order_id=f"alp-{plan.symbol}-entry",
        symbol=plan.symbol, side="buy", qty=plan.qty, price=plan.entry, occurred_at=plan.entry_at, source="stream",
        order_progress=OrderProgress("filled", "filled", plan.qty, plan.entry),
    ).get()  # fmt: skip
    position = writer.open_position_for_entry(
        entry.order_id, plan.qty, plan.entry, plan.entry_at, plan.stop, plan.target
    ).get()
    common: dict[str, Any] = dict(order_class="oco", position_id=position.position_id, parent_order_id=entry.order_id)
    take_profit, stop_loss = writer.create_orders([
        NewOrder(cycle_id, plan.symbol, "take_profit", "sell", "limit", plan.qty, limit_price=plan.target, **common),
        NewOrder(cycle_id, plan.symbol, "stop_loss", "sell", "stop", plan.qty, stop_price=plan.stop, **common),
    ], at=plan.entry_at).get()  # fmt: skip
    legs = {"take_profit": take_profit, "stop_loss": stop_loss}
    for role, leg in legs.items():
        writer.mark_submitted(leg.order_id, f"alp-{plan.symbol}-{role}", "new", plan.entry_at).get()
    filled = legs[plan.exit_role]
    sibling = legs["stop_loss" if plan.exit_role == "take_profit" else "take_profit"]
    writer.record_fill(
        execution_id=f"alp-{plan.symbol}-{plan.exit_role}:{plan.qty}", alpaca_order_id=filled.alpaca_order_id
        or f"alp-{plan.symbol}-{plan.exit_role}", symbol=plan.symbol, side="sell", qty=plan.qty,
        price=plan.exit_price, occurred_at=plan.exit_at, source="stream",
        order_progress=OrderProgress("filled", "filled", plan.qty, plan.exit_price),
    ).get()  # fmt: skip
    writer.update_order_status(sibling.order_id, "cancelled", "canceled", D(0), None, plan.exit_at, reason="OCO").get()
    pnl = (plan.exit_price - plan.entry) * plan.qty
    writer.close_position(position.position_id, plan.exit_price, pnl, plan.exit_at).get()
    return position.position_id


@contextmanager
def day_writer(url: str) -> Iterator[tuple[Any, Any]]:
    """A fresh database at `url` with a writer and the day's cycle, for a test to record its own trades."""
    upgrade(url)
    ref = DbWriter.start(url)
    writer = ref.proxy()
    try:
        yield writer, writer.get_or_create_cycle(DAY, at=at(9, 15)).get()
    finally:
        ref.stop()


@pytest.fixture
def trading_day(tmp_path: Path) -> Iterator[tuple[str, dict[str, int]]]:
    """A finished day: two closed trades (one winner, one loser), three scan results and two findings."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'catalyst.db'}"
    upgrade(url)
    ref = DbWriter.start(url)
    writer = ref.proxy()
    try:
        cycle = writer.get_or_create_cycle(DAY, at=at(9, 15)).get()
        writer.insert_scan_results(cycle.cycle_id, [
            NewScanResult("AAPL", 1, D("87.5"), at(9, 30), {"gap_pct": "5.1", "rvol": 3.2}, status="entered"),
            NewScanResult("MSFT", 2, D("71.25"), at(9, 30), {"gap_pct": "3.4", "rvol": 2.1}, status="entered"),
            NewScanResult("TSLA", 3, D("55"), at(9, 30), {"gap_pct": "2"}, status="rejected",
                          reason="max open positions reached"),
        ]).get()  # fmt: skip
        ids = {plan.symbol: record_trade(writer, cycle.cycle_id, plan) for plan in (WINNER, LOSER)}
        writer.insert_findings([
            NewFinding(at(10, 40), "pass-7", "ORDER_STATUS_MISMATCH", "warning", "order 4 | MSFT",
                       db_value="accepted", broker_value="filled", action="catch_up", outcome="moved to filled"),
            NewFinding(at(15, 0, day=DAY - timedelta(days=1)), "pass-1", "YESTERDAY_ONLY", "info", "old"),
        ]).get()  # fmt: skip
        writer.set_cycle_phase(cycle.cycle_id, "completed", at=at(16, 0)).get()
    finally:
        ref.stop()
    yield url, ids


def minute_prices(symbol: str, start: datetime, end: datetime) -> list[tuple[datetime, Decimal]]:
    base = {"AAPL": D("150"), "MSFT": D("400")}[symbol]
    minutes = int((end - start).total_seconds() // 60)
    return [(start + timedelta(minutes=i), base + D(i % 7) / 2 - D("1.5")) for i in range(minutes + 1)]


def test_report_headline_and_trade_rows_carry_the_days_numbers(trading_day, tmp_path: Path) -> None:
    url, ids = trading_day

    index = write_daily_report(url, DAY, tmp_path / "reports", minute_prices)

    assert index == tmp_path / "reports" / "2024-03-04" / "index.md"
    report = index.read_text()
    assert "**Trades:** 2 closed (1 won, 1 lost)" in report
    assert "**Win rate:** 50.0%" in report
    assert "**Realized P&L:** +$400.00" in report
    assert "**Largest win:** +$600.00 (AAPL)" in report
    assert "**Largest loss:** -$200.00 (MSFT)" in report
    # The curve goes 0 → +600 (AAPL target) → +400 (MSFT stop): a $200 fall from the +600 peak.
    assert "**Max drawdown:** -$200.00" in report
    aapl_row = f"| {ids['AAPL']} | [AAPL](trade-AAPL-{ids['AAPL']}.png) | long | 10:00:00 | 150.00 | 10:30:00 | 156.00 "
    assert aapl_row + "| 100 | +$600.00 | +2.00R | 30m 00s | take-profit |" in report
    msft_row = f"| {ids['MSFT']} | [MSFT](trade-MSFT-{ids['MSFT']}.png) | long | 10:10:00 | 400.00 | 10:52:15 | 396.00 "
    assert msft_row + "| 50 | -$200.00 | -1.00R | 42m 15s | stop-loss |" in report


def test_report_lists_scan_results_and_only_the_days_findings(trading_day, tmp_path: Path) -> None:
    url, _ = trading_day

    report = write_daily_report(url, DAY, tmp_path / "reports").read_text()

    assert "| 1 | AAPL | 87.50 | gap_pct 5.10, rvol 3.20 | entered |" in report
    assert "| 3 | TSLA | 55.00 | gap_pct 2.00 | rejected: max open positions reached |" in report
    assert "| 10:40:00 | warning | ORDER_STATUS_MISMATCH | order 4 \\| MSFT | catch_up | moved to filled |" in report
    assert "YESTERDAY_ONLY" not in report
    assert "phase **completed**" in report
    assert report.index("## Headline") < report.index("## Trades") < report.index("## Scan results") < report.index(
        "## Doctor findings"
    )


@pytest.mark.parametrize("prices", [minute_prices, None], ids=["minute-prices", "fills-only"])
def test_charts_are_real_pngs_and_every_file_is_owner_only(trading_day, tmp_path: Path, prices: Any) -> None:
    url, ids = trading_day

    folder = write_daily_report(url, DAY, tmp_path / "reports", prices).parent

    names = {"index.md", "pnl.png", f"trade-AAPL-{ids['AAPL']}.png", f"trade-MSFT-{ids['MSFT']}.png"}
    assert {p.name for p in folder.iterdir()} == names  # no temporary files left behind
    for name in names - {"index.md"}:
        content = (folder / name).read_bytes()
        assert content.startswith(PNG_MAGIC), name
        assert len(content) > 10_000, f"{name} is only {len(content)} bytes"
    for name in names:
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o600, name
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700


def test_a_failing_price_source_still_gives_a_chart_from_the_fills(trading_day, tmp_path: Path) -> None:
    url, ids = trading_day

    def broken(symbol: str, start: datetime, end: datetime) -> list[tuple[datetime, Decimal]]:
        raise ConnectionError("market data down")

    folder = write_daily_report(url, DAY, tmp_path / "reports", broken).parent

    assert (folder / f"trade-AAPL-{ids['AAPL']}.png").read_bytes().startswith(PNG_MAGIC)


def test_rerun_replaces_the_report_and_keeps_modes(trading_day, tmp_path: Path) -> None:
    url, _ = trading_day
    first = write_daily_report(url, DAY, tmp_path / "reports")
    os.chmod(first, 0o644)
    os.chmod(first.parent, 0o755)

    second = write_daily_report(url, DAY, tmp_path / "reports")

    assert second == first and "+$400.00" in second.read_text()
    assert stat.S_IMODE(second.stat().st_mode) == 0o600
    assert stat.S_IMODE(second.parent.stat().st_mode) == 0o700


def test_the_report_line_names_the_cycles_phase_so_the_days_two_writings_read_apart(tmp_path: Path, caplog) -> None:
    """The cycle writes a day's report before `completed` and again after (a kill between them must not lose it):
    the operator tailing the log saw the same line twice. Each now says the phase its report shows."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'catalyst.db'}"
    with day_writer(url) as (writer, cycle):
        record_trade(writer, cycle.cycle_id, WINNER)
        writer.set_cycle_phase(cycle.cycle_id, "closed", at=at(16, 0)).get()
        caplog.set_level("INFO")
        write_daily_report(url, DAY, tmp_path / "reports", own_database=True)
        writer.set_cycle_phase(cycle.cycle_id, "completed", at=at(16, 1)).get()
        write_daily_report(url, DAY, tmp_path / "reports", own_database=True)
    write_daily_report(url, DAY + timedelta(days=1), tmp_path / "reports")

    index = tmp_path / "reports"
    assert [r.getMessage() for r in caplog.records if r.getMessage().startswith("report ")] == [
        f"report 2024-03-04 (cycle closed): 1 trades, 1 trade charts → {index / '2024-03-04' / 'index.md'}",
        f"report 2024-03-04 (cycle completed): 1 trades, 1 trade charts → {index / '2024-03-04' / 'index.md'}",
        f"report 2024-03-05: 0 trades, 0 trade charts → {index / '2024-03-05' / 'index.md'}",
    ]


def test_day_without_a_cycle_still_gets_a_report(trading_day, tmp_path: Path) -> None:
    url, _ = trading_day

    report = write_daily_report(url, DAY + timedelta(days=1), tmp_path / "reports").read_text()

    assert "No trading cycle was recorded for this day." in report
    assert "**Trades:** 0 closed (0 won, 0 lost)" in report
    assert (tmp_path / "reports" / "2024-03-05" / "pnl.png").read_bytes().startswith(PNG_MAGIC)


def test_report_reader_refuses_writes_and_leaves_the_data_unchanged(trading_day, tmp_path: Path) -> None:
    url, _ = trading_day
    engine = read_only_engine(url)
    try:
        with engine.connect() as connection:
            before = connection.execute(text("SELECT count(*) FROM fills")).scalar_one()
            with pytest.raises(OperationalError, match="readonly"):
                connection.execute(text("DELETE FROM fills"))
    finally:
        engine.dispose()

    database_file = tmp_path / "catalyst.db"
    content_before = database_file.read_bytes()

    write_daily_report(url, DAY, tmp_path / "reports")

    assert database_file.read_bytes() == content_before
    engine = read_only_engine(url)
    try:
        with engine.connect() as connection:
            assert connection.execute(text("SELECT count(*) FROM fills")).scalar_one() == before == 4
    finally:
        engine.dispose()


def test_missing_database_is_named_and_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.db"

    with pytest.raises(ReportError, match="nowhere.db does not exist"):
        write_daily_report(f"sqlite+aiosqlite:///{missing}", DAY, tmp_path / "reports")

    assert not missing.exists()


def bought_20_nvda_at_100(writer: Any, cycle: Any, stop: Decimal, target: Decimal) -> tuple[Any, Any]:
    """An entry for 20 NVDA, its fill at 100.00 at 10:00 and its open position: (entry row, position row)."""
    entry = writer.create_order(
        cycle_id=cycle.cycle_id, symbol="NVDA", role="entry", side="buy", order_type="market",
        quantity=D("20"), planned_stop_loss=stop, planned_take_profit=target, at=at(9, 59),
    ).get()  # fmt: skip
    writer.record_fill(execution_id="e1", order_id=entry.order_id, symbol="NVDA", side="buy", qty=D("20"),
                       price=D("100"), occurred_at=at(10, 0), source="stream").get()  # fmt: skip
    return entry, writer.open_position_for_entry(entry.order_id, D("20"), D("100"), at(10, 0), stop, target).get()


def test_partial_take_profit_then_flatten_shows_both_exits_and_two_curve_steps(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'partial.db'}"
    with day_writer(url) as (writer, cycle):
        entry, position = bought_20_nvda_at_100(writer, cycle, stop=D("95"), target=D("110"))
        tp, flatten = writer.create_orders([
            NewOrder(cycle.cycle_id, "NVDA", "take_profit", "sell", "limit", D("20"), limit_price=D("110"),
                     position_id=position.position_id, parent_order_id=entry.order_id),
            NewOrder(cycle.cycle_id, "NVDA", "flatten", "sell", "market", D("10"), position_id=position.position_id),
        ], at=at(10, 0)).get()  # fmt: skip
        writer.record_fill(execution_id="e2", order_id=tp.order_id, symbol="NVDA", side="sell", qty=D("10"),
                           price=D("110"), occurred_at=at(11, 0), source="stream").get()  # fmt: skip
        writer.record_fill(execution_id="e3", order_id=flatten.order_id, symbol="NVDA", side="sell", qty=D("10"),
                           price=D("98"), occurred_at=at(15, 55), source="stream").get()  # fmt: skip
        writer.close_position(position.position_id, D("104"), D("80"), at(15, 55)).get()
    engine = read_only_engine(url)
    try:
        index = write_daily_report(sessionmaker(engine), DAY, tmp_path / "reports")
    finally:
        engine.dispose()

    report = index.read_text()
    # R = 80 / (20 × |100 − 95|) = 0.8; +100 at 11:00 then −20 at 15:55: a $20 drawdown from the +100 peak.
    assert "| 20 | +$80.00 | +0.80R | 5h 55m | take-profit + flatten |" in report
    assert "**Max drawdown:** -$20.00" in report
    assert "Note:" not in report


def test_fills_that_disagree_with_the_position_are_noted_not_hidden(trading_day, tmp_path: Path) -> None:
    url, ids = trading_day
    ref = DbWriter.start(url)
    try:  # the position claims more than its fills give
        ref.proxy().close_position(ids["AAPL"], D("156.00"), D("650.00"), at(10, 30)).get()
    finally:
        ref.stop()

    report = write_daily_report(url, DAY, tmp_path / "reports").read_text()

    assert f"> Note: AAPL (position {ids['AAPL']}): fills give 600.00 but the position records 650.00" in report
    assert "**Realized P&L:** +$450.00" in report


def test_a_trade_closed_at_its_entry_price_is_counted_as_even(tmp_path: Path) -> None:
    """`4 closed (2 won, 1 lost)` left a reader to find the fourth; make sim has such trades (an exit at the fill)."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'catalyst.db'}"
    even = Planned("NVDA", D("10"), D("90.00"), D("88.00"), D("94.00"), at(10, 0), "take_profit", D("90.00"),
                   at(10, 5))  # fmt: skip
    with day_writer(url) as (writer, cycle):
        for plan in (WINNER, even):
            record_trade(writer, cycle.cycle_id, plan)

    report = write_daily_report(url, DAY, tmp_path / "reports", minute_prices_with_nvda).read_text()

    assert "**Trades:** 2 closed (1 won, 0 lost, 1 even)" in report


def minute_prices_with_nvda(symbol: str, start: datetime, end: datetime) -> list[tuple[datetime, Decimal]]:
    return [(start, D("90"))] if symbol == "NVDA" else minute_prices(symbol, start, end)


def reports_of(url: str, folder: Path, *days: date) -> list[str]:
    """The daily reports of `days`, read through a read-only engine as `catalyst report` does."""
    engine = read_only_engine(url)
    try:
        return [write_daily_report(sessionmaker(engine), day, folder).read_text() for day in days]
    finally:
        engine.dispose()


def test_a_trade_kept_overnight_counts_in_the_report_of_the_day_it_closed(tmp_path: Path) -> None:
    """Its loss went into the entry day's realized P&L, and the next day's report, the day the stop sold at the open
    (good till cancelled), said nothing of it."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'overnight.db'}"
    next_day = DAY + timedelta(days=1)
    overnight = Planned("MSFT", D("50"), D("400.00"), D("396.00"), D("408.00"), at(15, 0), "stop_loss", D("390.00"),
                        at(9, 30, 5, day=next_day))  # fmt: skip
    with day_writer(url) as (writer, cycle):
        record_trade(writer, cycle.cycle_id, WINNER)
        kept = record_trade(writer, cycle.cycle_id, overnight)
        writer.get_or_create_cycle(next_day, at=at(9, 15, day=next_day)).get()
    entered, closed = reports_of(url, tmp_path / "reports", DAY, next_day)

    assert "**Trades:** 1 closed (1 won, 0 lost), 1 still open" in entered
    assert "**Realized P&L:** +$600.00\n" in entered  # the winner's alone
    assert f"**Realized P&L:** -$500.00 (with -$500.00 from 1 kept from an earlier day: MSFT #{kept} -$500.00)" in closed


def test_a_piece_sold_the_day_before_is_not_counted_again_the_day_the_rest_is_sold(tmp_path: Path) -> None:
    """One OCO's target sold 10 of 20 on the entry day (+60), the other 10 were kept overnight and their stop sold
    them at the next open (-50). The next day counted the position's whole realized P&L, +10: the +60 twice."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'pieces.db'}"
    next_day = DAY + timedelta(days=1)
    with day_writer(url) as (writer, cycle):
        entry, position = bought_20_nvda_at_100(writer, cycle, stop=D("95"), target=D("106"))
        target, stop = writer.create_orders([
            NewOrder(cycle.cycle_id, "NVDA", "take_profit", "sell", "limit", D("10"), limit_price=D("106"),
                     position_id=position.position_id, parent_order_id=entry.order_id),
            NewOrder(cycle.cycle_id, "NVDA", "stop_loss", "sell", "stop", D("10"), stop_price=D("95"),
                     position_id=position.position_id, parent_order_id=entry.order_id),
        ], at=at(10, 0)).get()  # fmt: skip
        writer.record_fill(execution_id="e2", order_id=target.order_id, symbol="NVDA", side="sell", qty=D("10"),
                           price=D("106"), occurred_at=at(11, 0), source="stream").get()  # fmt: skip
        writer.update_position(position.position_id, quantity=D("10"), realized_pnl=D("60")).get()
        writer.mark_open_position(position.position_id, D("99"), D("-10")).get()
        assert writer.cycle_pnl(cycle.cycle_id).get() == (D("60"), D("-10"))  # the entry day, as its close wrote it
        tomorrow = writer.get_or_create_cycle(next_day, at=at(9, 15, day=next_day)).get()
        writer.record_fill(execution_id="e3", order_id=stop.order_id, symbol="NVDA", side="sell", qty=D("10"),
                           price=D("95"), occurred_at=at(9, 30, 5, day=next_day), source="stream").get()  # fmt: skip
        writer.close_position(position.position_id, D("100.50"), D("10"), at(9, 30, 5, day=next_day)).get()

        assert writer.cycle_pnl(tomorrow.cycle_id).get() == (D("-50"), D(0))  # the daily loss limit's input
        assert writer.cycle_pnl(cycle.cycle_id).get() == (D("60"), D(0))  # the entry day keeps its own +60 only
    entered, closed = reports_of(url, tmp_path / "reports", DAY, next_day)
    assert f"**Realized P&L:** -$50.00 (with -$50.00 from 1 kept from an earlier day: NVDA #{position.position_id}" in closed
    assert "**Realized P&L:** +$60.00\n" in entered


def _posix_locks_held_on(path: Path) -> list[str]:
    """This process's POSIX (fcntl) locks on `path`, from /proc/locks: SQLite's own. Without the line's ordinal, which
    moves with every other process's locks (the other test workers' databases)."""
    inode = os.stat(path).st_ino
    held = []
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if "->" in fields:  # a waiter's line
            continue
        if fields[1] == "POSIX" and fields[4] == str(os.getpid()) and fields[5].rsplit(":", 1)[1] == str(inode):
            held.append(" ".join(fields[1:]))
    return held


@pytest.mark.skipif(not Path("/proc/locks").exists(), reason="reads the kernel's lock table (Linux)")
def test_the_daemons_own_report_leaves_its_writers_sqlite_locks_in_place(trading_day, tmp_path: Path) -> None:
    """From a review: the daily report, written inside the daemon, opened and closed the database file to read its
    header, which drops every POSIX lock the process holds on it: the writer's shared lock was gone after each day's
    report, and another connection could then take itself for the last one and remove the -wal with committed rows."""
    url, _ = trading_day
    database = tmp_path / "catalyst.db"
    ref = DbWriter.start(url)
    writer = ref.proxy()
    try:
        writer.get_or_create_cycle(DAY + timedelta(days=1), at=at(9, 0, day=DAY + timedelta(days=1))).get()
        before = _posix_locks_held_on(database)
        assert before, "the writer's connection holds SQLite's shared lock (WAL)"

        write_daily_report(url, DAY, tmp_path / "reports", own_database=True)
        assert _posix_locks_held_on(database) == before

        # What an outside reader must still do, and why the daemon does not: its file check drops those locks.
        write_daily_report(url, DAY, tmp_path / "reports")
        assert _posix_locks_held_on(database) != before
    finally:
        ref.stop()


def test_a_finding_every_pass_found_again_is_one_row_with_its_span_and_count(trading_day, tmp_path: Path) -> None:
    """From a review: an ended order of another database is found by every pass for 24 hours, one row each, and a
    day's report listed it 57 times."""
    url, _ = trading_day
    ref = DbWriter.start(url)
    try:
        ref.proxy().insert_findings([
            NewFinding(at(11, 5 * i), f"pass-{i}", "ORPHAN_ORDER", "info", "order TINW#35c88d21", action="alert",
                       outcome="alerted") for i in range(1, 4)] + [
            NewFinding(at(11, 30), "pass-9", "ORPHAN_ORDER", "info", "order LUMT#0a1b2c3d", action="alert",
                       outcome="alerted")]).get()  # fmt: skip
    finally:
        ref.stop()

    report = write_daily_report(url, DAY, tmp_path / "reports").read_text()

    assert report.count("TINW#35c88d21") == 1
    assert "| 11:05:00–11:15:00 (3 passes) | info | ORPHAN_ORDER | order TINW#35c88d21 | alert | alerted |" in report
    assert "| 11:30:00 | info | ORPHAN_ORDER | order LUMT#0a1b2c3d | alert | alerted |" in report
    assert "| 10:40:00 | warning | ORDER_STATUS_MISMATCH |" in report  # a finding found once reads as before


def test_separate_incidents_and_each_heal_stay_rows_of_their_own(trading_day, tmp_path: Path) -> None:
    """From a review of the grouping: two healed MISSING_PROTECTION an afternoon apart read as one row spanning
    09:40–14:00, a position without a stop for 4 h 20 min."""
    url, _ = trading_day
    ref = DbWriter.start(url)
    try:
        ref.proxy().insert_findings([
            NewFinding(at(9, 40), "pass-1", "MISSING_PROTECTION", "critical", "position AAPL#p-1",
                       action="re-protect", outcome="healed"),
            NewFinding(at(14, 0), "pass-9", "MISSING_PROTECTION", "critical", "position AAPL#p-1",
                       action="re-protect", outcome="healed"),
            NewFinding(at(11, 0), "pass-3", "ORPHAN_ORDER", "info", "order X#1", action="alert", outcome="alerted"),
            NewFinding(at(11, 5), "pass-4", "ORPHAN_ORDER", "info", "order X#1", action="alert", outcome="alerted"),
            NewFinding(at(13, 0), "pass-8", "ORPHAN_ORDER", "info", "order X#1", action="alert", outcome="alerted"),
        ]).get()  # fmt: skip
    finally:
        ref.stop()

    report = write_daily_report(url, DAY, tmp_path / "reports").read_text()

    assert "| 09:40:00 | critical | MISSING_PROTECTION | position AAPL#p-1 | re-protect | healed |" in report
    assert "| 14:00:00 | critical | MISSING_PROTECTION | position AAPL#p-1 | re-protect | healed |" in report
    assert "| 11:00:00–11:05:00 (2 passes) | info | ORPHAN_ORDER | order X#1 | alert | alerted |" in report
    assert "| 13:00:00 | info | ORPHAN_ORDER | order X#1 | alert | alerted |" in report  # after two hours' silence


def test_a_standing_halt_is_one_row_and_the_gap_follows_the_doctors_interval(trading_day, tmp_path: Path) -> None:
    """From a review: grouping only alerts listed a standing halt once per pass again (288 rows a day at 300 s), and
    a fixed 15-minute gap split a doctor running every 20 minutes into a row per pass."""
    url, _ = trading_day
    ref = DbWriter.start(url)
    try:
        ref.proxy().insert_findings([
            NewFinding(at(11, 20 * i), f"pass-{i}", "OTHER_INSTANCE", "critical", "order DREN#ab12cd34",
                       action="halt entries", outcome="halted") for i in range(3)]).get()  # fmt: skip
    finally:
        ref.stop()

    every_20_minutes = write_daily_report(url, DAY, tmp_path / "a", repeat_gap=timedelta(hours=1)).read_text()
    assert every_20_minutes.count("OTHER_INSTANCE") == 1
    assert "| 11:00:00–11:40:00 (3 passes) | critical | OTHER_INSTANCE | order DREN#ab12cd34 |" in every_20_minutes
    default_gap = write_daily_report(url, DAY, tmp_path / "b").read_text()
    assert default_gap.count("OTHER_INSTANCE") == 3  # 20 minutes apart: past the default 15
