"""The cycle conductor resumed from a persisted phase (spec §4): the day's candidates live in memory only, so a
daemon restarted between the bell and trading_at must evaluate again rather than trade nothing; a restart after
the entries went out must not enter again. An operator's emergency stop before the scan halts the day's entries.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, Callable, Iterator

import pytest
from loguru import logger

from actors.cycle import CycleActor, EmergencyStop
from actors.messages import TradePlan
from catalyst.domain.cycle import PhaseSchedule
from catalyst.domain.positions import PositionSide
from catalyst.sim.market import EXCHANGE_TZ
from catalyst.sim.server import EmbeddedExchange
from tests.actors.conftest import exchange_at, logged_lines

DAY = date(2024, 3, 4)
PRE_MARKET = datetime(2024, 3, 4, 9, 0, tzinfo=EXCHANGE_TZ)  # idle until scanning at 09:15
TO_THE_BELL = timedelta(minutes=32)  # 09:32, evaluating: 09:30-09:35


@pytest.fixture
def exchange() -> Iterator[EmbeddedExchange]:
    """Overrides the actor conftest's exchange (09:45) so the day starts before the scan."""
    with exchange_at(PRE_MARKET, ("AAPL", "MSFT")) as ex:
        yield ex


class Hooks:
    """A scanner that always finds AAPL and an approval that sizes 100 shares of each candidate it is given."""

    def __init__(self, trading: Any) -> None:
        self.trading = trading
        self.scans: list[datetime] = []

    def as_dict(self) -> dict[str, Callable[..., Any]]:
        return {
            "scan": self.scan, "approve": self.approve,
            "daily_pnl": lambda cycle_id: self.trading.writer.cycle_pnl(cycle_id).get(),
            "loss_limit_breached": lambda realized, unrealized: False,
            "write_report": lambda day: None, "is_trading_day": lambda day: True,
            "entries_allowed": lambda: (True, ""), "doctor_pass": lambda reason: None,
        }

    def scan(self, cycle_id: int, now: datetime) -> list[str]:
        self.scans.append(now)
        return ["AAPL"]

    def approve(self, cycle_id: int, candidates: list[str], now: datetime) -> list[TradePlan]:
        return [TradePlan(symbol=symbol, side=PositionSide.LONG, qty=Decimal("100"), stop_loss=Decimal("48.00"),
                          take_profit=Decimal("55.00"), cycle_id=cycle_id) for symbol in candidates]


@pytest.fixture
def start_cycle(trading) -> Iterator[Callable[[Hooks], Any]]:
    refs: list[Any] = []

    def start(hooks: Hooks) -> Any:
        refs.append(CycleActor.start(trading.writer, trading.system, trading.exchange.clock, PhaseSchedule(),
                                     hooks.as_dict()))
        return refs[-1]

    yield start
    for ref in refs:
        ref.stop()


def persisted_phase(trading, phase: str) -> int:
    """The row a daemon stopped in `phase` left behind."""
    cycle = trading.writer.get_or_create_cycle(DAY).get()
    trading.writer.set_cycle_phase(cycle.cycle_id, phase, trading.exchange.clock.now()).get()
    return cycle.cycle_id


def entries(trading) -> list[Any]:
    return [o for o in trading.all_orders("AAPL") if o.role == "entry"]


def test_a_restart_in_evaluating_evaluates_again_and_trades_the_candidates(trading, start_cycle):
    trading.exchange.advance(TO_THE_BELL)
    persisted_phase(trading, "evaluating")  # scanned at 09:15 and 09:30, then the process died
    trading.exchange.set_price("AAPL", "50.00")
    hooks = Hooks(trading)
    cycle = start_cycle(hooks)
    trading.wait_for(lambda: cycle.proxy().state().get()["phase"] == "evaluating", "the cycle to resume")

    trading.exchange.advance(timedelta(minutes=4))  # 09:36: trading is due

    trading.wait_for(lambda: cycle.proxy().state().get()["phase"] == "trading", "the trading phase")
    assert [o.quantity for o in trading.wait_for(lambda: entries(trading), "the entry")] == [Decimal("100")]
    assert len(hooks.scans) == 1


def test_a_restart_in_trading_does_not_enter_again(trading, start_cycle):
    persisted_phase(trading, "trading")
    trading.exchange.advance(TO_THE_BELL + timedelta(minutes=4))  # 09:36, inside the entry window
    hooks = Hooks(trading)
    cycle = start_cycle(hooks)
    trading.wait_for(lambda: cycle.proxy().state().get()["phase"] == "trading", "the cycle to resume")
    trading.exchange.advance(timedelta(minutes=25))  # 10:01: monitoring

    trading.wait_for(lambda: cycle.proxy().state().get()["phase"] == "monitoring", "the monitoring phase")
    assert hooks.scans == [] and entries(trading) == []


def test_an_emergency_stop_before_the_scan_halts_the_days_entries(trading, start_cycle):
    trading.exchange.set_price("AAPL", "50.00")
    cycle = start_cycle(Hooks(trading))
    trading.wait_for(lambda: trading.writer.get_cycle(DAY).get(), "the day's cycle row (idle)")

    cycle.tell(EmergencyStop(reason="operator: catalyst stop --emergency"))
    trading.wait_for(lambda: cycle.proxy().state().get()["halted"], "the stop to be taken")
    trading.exchange.advance(TO_THE_BELL + timedelta(minutes=4))  # 09:36: trading is due

    trading.wait_for(lambda: cycle.proxy().state().get()["phase"] == "trading", "the trading phase")
    row = trading.writer.get_cycle(DAY).get()
    assert (row.cycle_state, row.halt_reason) == ("emergency_stopped", "operator: catalyst stop --emergency")
    assert entries(trading) == []


def working_stops(trading) -> list[Any]:
    return [o for o in trading.broker_view()["orders"]
            if o["symbol"] == "AAPL" and o["type"] == "stop" and o["status"] in ("new", "accepted", "held")]


def a_position_protected_then_the_close(trading) -> None:
    """A position opened at 09:40 by a daemon whose day row says `monitoring`, under its stop; then 16:10 comes."""
    trading.exchange.set_price("AAPL", "50.00")
    trading.exchange.advance(timedelta(minutes=40))  # 09:40
    cycle_id = persisted_phase(trading, "monitoring")
    trading.open(TradePlan(symbol="AAPL", side=PositionSide.LONG, qty=Decimal("100"), stop_loss=Decimal("48.00"),
                           take_profit=Decimal("55.00"), cycle_id=cycle_id))
    trading.wait_for(lambda: working_stops(trading), "the position's stop at the broker")
    trading.exchange.advance(timedelta(hours=6, minutes=30))


def test_a_restart_after_the_close_keeps_the_positions_under_their_stops_and_the_next_open_flattens_them(
        trading, start_cycle):
    # The daemon was down at 15:55, when the day's flatten runs, and starts again after the close: a market exit
    # could not fill before the next open, so cancelling the stops to send it would leave the shares bare all night.
    a_position_protected_then_the_close(trading)  # 16:10: the day's orders expire at the close

    cycle = start_cycle(Hooks(trading))
    trading.wait_for(lambda: cycle.proxy().state().get()["phase"] == "closed", "the cycle to close the day")
    trading.exchange.advance(timedelta(minutes=10))  # settled: the day completes
    trading.wait_for(lambda: cycle.proxy().state().get()["phase"] == "completed", "the day to complete")

    stops = trading.wait_for(lambda: working_stops(trading), "a stop for the night (the day's expired)")
    assert [Decimal(o["qty"]) for o in stops] == [Decimal("100")]
    assert trading.broker_view()["positions"] and not [o for o in trading.all_orders() if o.role == "flatten"]

    trading.exchange.advance(timedelta(hours=17, minutes=11))  # the next day, 09:31: the market is open
    trading.wait_for(lambda: not trading.broker_view()["positions"], "the carried position to be flattened",
                     timeout=30)
    assert [o.status for o in trading.all_orders() if o.role == "flatten"] == ["filled"]
    assert working_stops(trading) == []


def test_a_restart_of_a_day_already_trading_flattens_a_position_carried_from_an_earlier_day(trading, start_cycle):
    # Entering evaluating at 09:30 flattens what earlier days left; a daemon killed at that moment and started again
    # later in the day resumes in a phase past it, and must not leave those shares to the 15:55 flatten.
    trading.exchange.set_price("AAPL", "50.00")
    trading.exchange.advance(timedelta(minutes=40))  # 09:40 on the first day
    yesterday = persisted_phase(trading, "monitoring")
    trading.open(TradePlan(symbol="AAPL", side=PositionSide.LONG, qty=Decimal("100"), stop_loss=Decimal("48.00"),
                           take_profit=Decimal("55.00"), cycle_id=yesterday))
    trading.wait_for(lambda: working_stops(trading), "the position's stop at the broker")
    trading.exchange.advance(timedelta(days=1, minutes=5))  # 09:45 the next day: the market is open
    trading.wait_for(lambda: working_stops(trading), "a stop for the new day (the first day's expired)")
    today = trading.writer.get_or_create_cycle(DAY + timedelta(days=1)).get()
    trading.writer.set_cycle_phase(today.cycle_id, "trading", trading.exchange.clock.now()).get()

    cycle = start_cycle(Hooks(trading))

    trading.wait_for(lambda: not trading.broker_view()["positions"], "the carried position to be flattened",
                     timeout=30)
    assert cycle.proxy().state().get()["phase"] == "trading"
    assert [o.status for o in trading.all_orders() if o.role == "flatten"] == ["filled"]
    assert working_stops(trading) == []


def test_a_restart_after_the_close_of_a_day_left_trading_keeps_a_carried_position_under_its_stops(
        trading, start_cycle):
    # The day's row says `monitoring` (the daemon stopped during the day) and it starts again after the close: a
    # position from an earlier day is kept under its stops, not flattened (its stops cancelled for an exit queued
    # until the next open, put back a moment later by the close's KeepOvernight).
    trading.exchange.set_price("AAPL", "50.00")
    trading.exchange.advance(timedelta(minutes=40))  # 09:40 on the first day
    yesterday = persisted_phase(trading, "monitoring")
    trading.open(TradePlan(symbol="AAPL", side=PositionSide.LONG, qty=Decimal("100"), stop_loss=Decimal("48.00"),
                           take_profit=Decimal("55.00"), cycle_id=yesterday))
    first_stop = trading.wait_for(lambda: working_stops(trading), "the position's stop at the broker")[0]
    trading.exchange.advance(timedelta(days=1, hours=6, minutes=30))  # 16:10 the next day
    today = trading.writer.get_or_create_cycle(DAY + timedelta(days=1)).get()
    trading.writer.set_cycle_phase(today.cycle_id, "monitoring", trading.exchange.clock.now()).get()

    cycle = start_cycle(Hooks(trading))
    trading.wait_for(lambda: cycle.proxy().state().get()["phase"] in ("closed", "completed"), "the day closed")

    assert [o["id"] for o in working_stops(trading)] == [first_stop["id"]]  # never cancelled
    assert not [o for o in trading.all_orders() if o.role == "flatten"]
    assert trading.broker_view()["positions"]


def test_a_restart_of_a_day_already_closed_with_a_position_kept_overnight_completes_it(trading, start_cycle):
    # Found by chaos (seed 51): killed after it closed the day, a position kept under its stops, the daemon started
    # again in `closed` and never completed the day: when it closed lived in memory only, so the settling it waits
    # for before the report never began.
    a_position_protected_then_the_close(trading)
    persisted_phase(trading, "closed")

    cycle = start_cycle(Hooks(trading))
    trading.wait_for(lambda: cycle.proxy().state().get()["phase"] == "closed", "the cycle to resume closed")
    trading.exchange.advance(timedelta(minutes=10))  # settled, counted from the restart
    trading.wait_for(lambda: cycle.proxy().state().get()["phase"] == "completed", "the day to complete", timeout=15)

    stops = trading.wait_for(lambda: working_stops(trading), "a stop for the night (the day's expired)")
    assert [Decimal(o["qty"]) for o in stops] == [Decimal("100")]
    assert trading.broker_view()["positions"] and not [o for o in trading.all_orders() if o.role == "flatten"]


def test_a_restart_after_an_emergency_stop_flattens_the_positions_it_left_open(trading, start_cycle):
    # Killed during an emergency stop's flatten (its stops cancelled, its market exit not sent yet), the daemon's
    # restart rebuilds the position and protects it again, and the day's row says `closed`, emergency_stopped: the
    # flatten lived in memory only, and the position stayed open under its stop until the next day's open.
    trading.exchange.set_price("AAPL", "50.00")
    trading.exchange.advance(timedelta(minutes=40))  # 09:40: the market is open
    cycle_id = persisted_phase(trading, "closed")
    trading.writer.set_cycle_state(cycle_id, "emergency_stopped", "operator: catalyst stop --emergency").get()
    trading.open(TradePlan(symbol="AAPL", side=PositionSide.LONG, qty=Decimal("100"), stop_loss=Decimal("48.00"),
                           take_profit=Decimal("55.00"), cycle_id=cycle_id))
    trading.wait_for(lambda: working_stops(trading), "the position's stop at the broker (as rebuilt)")
    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(message.record["message"]), level="INFO",
                      filter=lambda record: record["name"] == "actors.cycle")
    try:
        start_cycle(Hooks(trading))
        trading.wait_for(lambda: not trading.broker_view()["positions"], "the position to be flattened", timeout=30)
    finally:
        logger.remove(sink)
    assert [o.status for o in trading.all_orders() if o.role == "flatten"] == ["filled"]
    assert working_stops(trading) == []
    assert f"cycle {DAY} flattening 1 live positions: emergency: operator: catalyst stop --emergency (resumed after " \
           "a restart)" in lines


def test_an_emergency_stop_after_the_close_keeps_the_stops_and_the_next_open_flattens(trading, start_cycle):
    # Flattening at once would cancel the stops and queue a market exit for the open: the shares bare all night.
    a_position_protected_then_the_close(trading)  # 16:10
    cycle = start_cycle(Hooks(trading))
    trading.wait_for(lambda: cycle.proxy().state().get()["phase"] == "closed", "the cycle to close the day")
    trading.exchange.advance(timedelta(minutes=10))
    trading.wait_for(lambda: cycle.proxy().state().get()["phase"] == "completed", "the day to complete")
    trading.wait_for(lambda: working_stops(trading), "a stop for the night (the day's expired)")

    cycle.ask(EmergencyStop(reason="operator: catalyst stop --emergency"))

    stops = working_stops(trading)
    assert [Decimal(o["qty"]) for o in stops] == [Decimal("100")]
    assert not [o for o in trading.all_orders() if o.role == "flatten"]
    trading.exchange.advance(timedelta(hours=17, minutes=11))  # the next day, 09:31: the market is open
    trading.wait_for(lambda: not trading.broker_view()["positions"], "the position flattened at the open", timeout=30)
    assert [o.status for o in trading.all_orders() if o.role == "flatten"] == ["filled"]
    assert working_stops(trading) == []


def test_an_emergency_stop_asked_before_the_first_tick_reads_the_day_and_flattens(trading, start_cycle, monkeypatch):
    # A daemon resuming an operator's emergency stop at start asks before the cycle's first tick has read the day:
    # taken for a stop at night, the positions were left open in the middle of the session.
    trading.exchange.set_price("AAPL", "50.00")
    trading.exchange.advance(timedelta(minutes=40))  # 09:40: the market is open
    cycle_id = persisted_phase(trading, "monitoring")
    trading.open(TradePlan(symbol="AAPL", side=PositionSide.LONG, qty=Decimal("100"), stop_loss=Decimal("48.00"),
                           take_profit=Decimal("55.00"), cycle_id=cycle_id))
    trading.wait_for(lambda: working_stops(trading), "the position's stop at the broker")
    monkeypatch.setattr(CycleActor, "on_start", lambda self: None)  # no tick comes: the stop is certainly first

    cycle = start_cycle(Hooks(trading))
    cycle.ask(EmergencyStop(reason="operator: catalyst stop --emergency"))

    trading.wait_for(lambda: not trading.broker_view()["positions"], "the position flattened", timeout=30)
    assert [o.status for o in trading.all_orders() if o.role == "flatten"] == ["filled"]
    assert trading.writer.get_cycle(DAY).get().cycle_state == "emergency_stopped"


def test_a_first_start_after_the_close_does_not_scan_the_day_that_is_over(trading, start_cycle):
    # From a review: started for the first time at 16:38, the day went idle → scanning → closed, and the scan read
    # the day's gappers and ranked them for nothing.
    trading.exchange.advance(timedelta(hours=7, minutes=38))  # 16:38
    hooks = Hooks(trading)
    with logged_lines("actors.cycle", "INFO") as lines:
        cycle = start_cycle(hooks)
        trading.wait_for(lambda: cycle.proxy().state().get()["phase"] in ("closed", "completed"), "the day closed")
    assert hooks.scans == []
    assert f"cycle {DAY} #1 started after the close: no scan, nothing traded today" in lines


def ticks_without_trading(trading, hooks: Hooks, ticks: int) -> None:
    """A cycle run for `ticks` ticks on a day its calendar says is not a trading day, then stopped."""
    asked: list[date] = []

    def is_trading_day(day: date) -> bool:
        asked.append(day)
        return False

    cycle = CycleActor.start(trading.writer, trading.system, trading.exchange.clock, PhaseSchedule(),
                             {**hooks.as_dict(), "is_trading_day": is_trading_day})
    try:
        trading.wait_for(lambda: len(asked) >= ticks, f"{ticks} ticks of the cycle on the day without trading")
    finally:
        cycle.stop()


def test_a_day_that_is_not_a_trading_day_is_said_once(trading, start_cycle):
    hooks = Hooks(trading)
    with logged_lines("actors.cycle", "INFO") as lines:
        ticks_without_trading(trading, hooks, 3)
    said = [line for line in lines if "is not a trading day" in line]
    assert said == ["cycle Monday 2024-03-04 is not a trading day (a weekend or a market holiday): nothing is traded "
                    "until the next session"]
    assert hooks.scans == []


class ReportingHooks(Hooks):
    """Hooks whose report writing is recorded, as the daemon's writes `reports/<day>/index.md`."""

    def __init__(self, trading: Any) -> None:
        super().__init__(trading)
        self.reports: list[date] = []
        self.phases_at_report: list[str] = []

    def as_dict(self) -> dict[str, Callable[..., Any]]:
        return {**super().as_dict(), "write_report": self.write_report}

    def write_report(self, day: date) -> str:
        self.reports.append(day)
        self.phases_at_report.append(self.trading.writer.get_cycle(day).get().phase)
        return f"reports/{day}/index.md"


def test_a_day_whose_close_the_daemon_missed_is_completed_at_the_next_start_with_its_pnl_and_report(trading,
                                                                                                     start_cycle):
    """From a review: a daemon down from the afternoon to the next morning left the day `monitoring` for good, its
    daily_pnl 0, no report, and what it realized in no figure; nothing in the log said so."""
    trading.exchange.set_price("AAPL", "50.00")
    trading.exchange.advance(timedelta(minutes=40))  # 09:40 on Monday
    monday = persisted_phase(trading, "monitoring")
    trading.open(TradePlan(symbol="AAPL", side=PositionSide.LONG, qty=Decimal("100"), stop_loss=Decimal("48.00"),
                           take_profit=Decimal("55.00"), cycle_id=monday))
    trading.wait_for(lambda: working_stops(trading), "the position's stop at the broker")
    trading.trade("AAPL", "55.20")  # the take-profit fills while the daemon is up; then it is stopped
    trading.wait_for(lambda: not trading.broker_view()["positions"], "the take-profit to fill")
    realized = trading.wait_for(lambda: trading.writer.cycle_pnl(monday).get()[0], "Monday's realized P&L")
    trading.exchange.advance(timedelta(hours=23))  # Tuesday 08:41: the daemon starts again before the scan

    hooks = ReportingHooks(trading)
    with logged_lines("actors.cycle", "WARNING") as lines:
        cycle = start_cycle(hooks)
        trading.wait_for(lambda: cycle.proxy().state().get()["day"] == str(DAY + timedelta(days=1)), "Tuesday")
    row = trading.writer.get_cycle(DAY).get()
    assert (row.phase, row.daily_pnl) == ("completed", realized) and realized > 0
    # `completed` only after the report: killed in between, the next start completes the day again (a review: the
    # report was lost for good when `completed` came first); then written again, to say `completed` (a review).
    assert hooks.reports == [DAY, DAY] and hooks.phases_at_report == ["closed", "completed"]
    assert lines == [f"cycle 2024-03-04 #{monday} was left monitoring: its close passed without the daemon finishing "
                     f"it (not running then, or its clock moved past it). Completing it now: P&L {realized:+.2f} "
                     "realized"]
    assert trading.writer.get_cycle(DAY + timedelta(days=1)).get().phase == "idle"  # today's goes on as ever


def test_a_day_whose_close_the_daemon_missed_is_completed_at_a_start_on_a_day_without_trading(trading, start_cycle):
    """From a review: a daemon down from Friday afternoon and started again on Saturday left Friday open, without its
    report, until Monday's first tick: the whole weekend with no report of Friday's trades."""
    trading.exchange.advance(timedelta(minutes=40))  # 09:40 on the first day
    first_day = persisted_phase(trading, "monitoring")
    trading.exchange.advance(timedelta(hours=23))  # the next day, not a trading day here (a Saturday, a holiday)

    hooks = ReportingHooks(trading)
    ticks_without_trading(trading, hooks, 2)
    assert trading.writer.get_cycle(DAY).get().phase == "completed"
    assert trading.writer.get_cycle(DAY).get().cycle_id == first_day
    assert hooks.reports == [DAY, DAY]  # once, and again once it says completed; not again at every tick
    assert trading.writer.get_cycle(DAY + timedelta(days=1)).get() is None  # no row for a day without trading


def test_the_close_writes_the_days_report_before_its_row_says_completed(trading, start_cycle):
    """From a review: `completed` was written before the report. Killed between the two (the report with its charts
    takes about a second), the restart resumed a completed day and never wrote it, and nothing said so. Now a kill
    between them leaves the row `closed`, and the restart finishes the day again."""
    a_position_protected_then_the_close(trading)
    persisted_phase(trading, "closed")  # the row a kill during the close's work leaves now

    hooks = ReportingHooks(trading)
    cycle = start_cycle(hooks)
    trading.wait_for(lambda: cycle.proxy().state().get()["phase"] == "closed", "the cycle to resume closed")
    trading.exchange.advance(timedelta(minutes=10))
    trading.wait_for(lambda: cycle.proxy().state().get()["phase"] == "completed", "the day to complete", timeout=15)

    assert hooks.reports == [DAY, DAY] and hooks.phases_at_report == ["closed", "completed"]


class HaltedHooks(Hooks):
    def as_dict(self) -> dict[str, Callable[..., Any]]:
        return {**super().as_dict(),
                "entries_allowed": lambda: (False, "the doctor halted new entries: order AAPL#o-3: database "
                                                   "cancelled, broker held")}


def test_entries_refused_at_the_trading_phase_are_on_the_days_row_with_the_reason(trading, start_cycle):
    """From a review: the report of a day the doctor's halt kept from trading said `state active`, 0 trades, and
    nothing of why."""
    trading.exchange.set_price("AAPL", "50.00")
    cycle = start_cycle(HaltedHooks(trading))
    trading.wait_for(lambda: trading.writer.get_cycle(DAY).get(), "the day's cycle row (idle)")
    trading.exchange.advance(TO_THE_BELL + timedelta(minutes=4))  # 09:36: trading is due

    trading.wait_for(lambda: cycle.proxy().state().get()["phase"] == "trading", "the trading phase")
    row = trading.writer.get_cycle(DAY).get()
    assert (row.cycle_state, row.halt_reason) == (
        "halted", "the doctor halted new entries: order AAPL#o-3: database cancelled, broker held")
    assert entries(trading) == []
