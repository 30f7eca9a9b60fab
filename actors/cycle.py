"""The day's conductor (spec §4): drives the cycle's phases by the exchange clock, persists each one, resumes after a
restart from the persisted phase, approves entries, flattens before the close, and writes the day's report.

It never blocks on an actor that can wait on it: it asks the scanner, the doctor and the writer (none of which ask
back) and only tells position actors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Callable

import pykka
from loguru import logger

from actors import messages as m
from actors.refs import BUSY, Answers, Delayed, tell_if_alive, tell_later
from catalyst.broker.errors import BrokerError
from catalyst.clock import wall_seconds
from catalyst.domain.cycle import (
    CYCLE_MACHINE, FLATTEN_RETRY_WAITS, CyclePhase, FlattenRetry, FlattenStep, PhaseSchedule, emergency_stop,
    exchange_time, flatten_due, market_open, phase_due, schedule_for_close, undone_flatten,
)
from catalyst.domain.errors import InvalidSchedule

log = logger.bind(actor="cycle")
POSITION_ANSWER_S = 5.0  # a position actor answers its state at once unless something holds it
TICK_EXCHANGE_S = 30.0
SETTLE_AFTER_CLOSE = timedelta(minutes=10)  # exchange time to wait for exits to settle before the report
OUTAGE_ERROR_AFTER = timedelta(minutes=5)  # exchange time a broker step may keep failing before it is an ERROR


class Tick(m.Message):
    pass


class EmergencyStop(m.Message):
    reason: str


@dataclass
class DayState:
    day: date
    cycle_id: int
    phase: CyclePhase
    candidates: list[Any] = field(default_factory=list)
    flattened: bool = False
    flatten_reason: str | None = None  # why every live position was flattened (end of day, emergency)
    carried: dict[str, str] = field(default_factory=dict)  # positions of earlier days flattened at the open: why
    flatten_retries: dict[str, FlattenRetry] = field(default_factory=dict)  # undone flattens, by position
    kept_overnight: bool = False  # the market closed before the end-of-day flatten ran (_keep_overnight)
    overnight_told: bool = False  # the live positions were told KeepOvernight (once a day)
    halted: str | None = None
    closed_at: datetime | None = None
    said_flatten_outlasts: bool = False  # the day kept open past its settle for an emergency's flatten (once)
    schedule: PhaseSchedule = field(default_factory=PhaseSchedule)  # the configured one, moved for an early close


class CycleActor(pykka.ThreadingActor):
    """`hooks` are plain callables the daemon provides: scan(cycle_id, now) -> candidates,
    approve(candidates, now) -> list of TradePlan, daily_pnl(cycle_id) -> (realized, unrealized),
    loss_limit_breached(realized, unrealized) -> bool, write_report(day) -> path, is_trading_day(day) -> bool,
    entries_allowed() -> (bool, reason), doctor_pass(reason), and optionally session_close(day) -> time (the
    broker calendar's close, exchange time), skip_to(datetime) (simulation only: jump the exchange clock over
    nights) and day_completed(day, report_path)."""

    # Left behind by a stop if still busy after its share of the bound (waiting on a broker that does not answer):
    # a daemon thread does not hold the process's exit (catalyst.daemon.Daemon.stop).
    use_daemon_thread = True

    def __init__(self, writer: Any, system: Any, clock: Any, schedule: PhaseSchedule, hooks: dict[str, Callable]) -> None:
        super().__init__()
        self.writer, self.system, self.clock, self.schedule, self.hooks = writer, system, clock, schedule, hooks
        self.today: DayState | None = None
        self._too_short: set[date] = set()  # days whose early close leaves no room for the schedule (said once)
        self._said_not_trading: set[date] = set()
        self._earlier_days_done_on: date | None = None  # the last date earlier unfinished days were completed on
        self._outage_since: datetime | None = None  # the first tick a broker step failed, in a run of failures
        self._emergency_waiting: str | None = None  # an emergency stop asked before the day could be read
        self._outage_loud = False
        self._timer: Delayed | None = None
        self._stopping = False

    def on_start(self) -> None:
        self._schedule_tick(0.0)

    def on_stop(self) -> None:
        self._stopping = True
        if self._timer:
            self._timer.cancel()

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Tick):
            try:
                self._advance()
                self._outage_over()
                if self._emergency_waiting is not None:
                    self._emergency(self._emergency_waiting)
            except (BrokerError, pykka.Timeout) as exc:
                self._outage(exc)
            finally:
                self._schedule_tick(wall_seconds(self.clock, TICK_EXCHANGE_S))
        elif isinstance(message, EmergencyStop):
            self._emergency(message.reason)
        return None

    def _outage(self, exc: Exception) -> None:
        """A step that needs the broker (the calendar, a scan) failed after its retries: nothing of it was recorded,
        so the next tick simply tries again. Said once as a WARNING, once as an ERROR if it lasts OUTAGE_ERROR_AFTER,
        and when it ends: a tick every 30 exchange seconds must not flood the log with one outage."""
        now = self.clock.now()
        what = f"{type(exc).__name__}: {exc}" if isinstance(exc, pykka.Timeout) else str(exc)
        if self._outage_since is None:
            self._outage_since, self._outage_loud = now, False
            log.warning(f"cycle step failed, tried again every {TICK_EXCHANGE_S:g} exchange s: {what}")
        elif not self._outage_loud and now - self._outage_since >= OUTAGE_ERROR_AFTER:
            self._outage_loud = True
            log.error(f"cycle stalled since {exchange_time(self._outage_since):%H:%M:%S}: the broker keeps failing "
                      f"({what}); the day's phases wait for it, positions keep their stops")
        else:
            log.debug(f"cycle step failed again: {what}")

    def _outage_over(self) -> None:
        if self._outage_since is not None:
            log.info(f"cycle steps go through again (failing since {exchange_time(self._outage_since):%H:%M:%S})")
            self._outage_since = None

    def state(self) -> dict[str, Any]:
        day = self.today
        return {"day": str(day.day) if day else None, "phase": str(day.phase) if day else "idle",
                "candidates": len(day.candidates) if day else 0, "halted": day.halted if day else None}

    # --- the clock drives the machine ---------------------------------------------------------------------

    def _advance(self) -> None:
        now = self.clock.now()
        day = self._day(now)
        if day is None:
            return
        self._retry_undone_flattens(day, now)  # on a completed day too: an emergency stop completes it early
        if (day.phase in (CyclePhase.CLOSED, CyclePhase.COMPLETED) and day.flatten_reason and not day.overnight_told
                and phase_due(day.schedule, now) is CyclePhase.CLOSED):
            # An emergency stop closed the day before the market did, so entering `closed` at the close, which
            # tells the positions KeepOvernight, never comes. A flatten of it still under way then (its stops'
            # cancels or its exit held up by a broker outage) would send its market exit after the close, queued
            # for the next open with the stops already cancelled: the shares bare all night. The close keeps them.
            self._keep_overnight(day)
        if day.phase is CyclePhase.COMPLETED:
            return
        due = phase_due(day.schedule, now)
        if day.phase in (CyclePhase.MONITORING, CyclePhase.TRADING) and flatten_due(day.schedule, now):
            if due is CyclePhase.CLOSED:
                self._keep_overnight(day)
            else:
                self._flatten_all("end of day", day, scheduled=True)
        if day.phase in (CyclePhase.TRADING, CyclePhase.MONITORING):  # from the first entry on
            self._check_loss_limit(day)
        if day.phase is CyclePhase.CLOSED:
            self._finish_day(day, now)
            return
        path = CYCLE_MACHINE.path(day.phase, due) if due is not day.phase else ()
        for step in path or ():
            self._enter(day, step, now)

    def _day(self, now: datetime) -> DayState | None:
        today = now.date()
        if self.today is not None and self.today.day == today:
            return self.today
        if self._earlier_days_done_on != today:
            # On any day, a weekend's or a holiday's too: a daemon started on Saturday after going down on Friday
            # afternoon left Friday open, without its report, until Monday's first tick (a review).
            self._complete_earlier_days(today, now)
            self._earlier_days_done_on = today
        if not self.hooks["is_trading_day"](today):
            if today not in self._said_not_trading:  # once a day: a weekend's log said only `phase=idle` (a review)
                self._said_not_trading.add(today)
                log.info(f"cycle {today:%A %Y-%m-%d} is not a trading day (a weekend or a market holiday): nothing "
                         "is traded until the next session")
            self._skip(now, "not a trading day")
            return None
        schedule = self._schedule_for(today)
        if schedule is None:
            self._skip(now, "the session is too short for the schedule")
            return None
        cycle = self.writer.get_or_create_cycle(today).get()
        phase = CyclePhase(cycle.phase)
        self.today = DayState(today, cycle.cycle_id, phase, halted=cycle.halt_reason, schedule=schedule)
        log.info(f"cycle {today} #{cycle.cycle_id} {'resumed in' if phase is not CyclePhase.IDLE else 'starts'} {phase}")
        if schedule is not self.schedule:
            log.info(f"cycle {today} early close at {schedule.closed_at:%H:%M}: positions are flattened at "
                     f"{schedule.flatten_at:%H:%M}")
        if phase in (CyclePhase.EVALUATING, CyclePhase.TRADING, CyclePhase.MONITORING) and market_open(schedule, now):
            # Resumed past the moment entering evaluating flattens what earlier days left: the market is open, so
            # do it now rather than leave those positions to the end-of-day flatten. Not once it has closed (the
            # phase as the daemon left it): the stops cancelled for an exit that waits for the next open, put back
            # only by the close's KeepOvernight a moment later (a review).
            self._flatten_carried(self.today)
        if (phase in (CyclePhase.CLOSED, CyclePhase.COMPLETED) and cycle.cycle_state == "emergency_stopped"
                and market_open(schedule, now) and self.system.supervisor.live_count().get()):
            # An emergency stop means flat after a restart too: killed during its flatten (the stops cancelled, the
            # exit not sent yet), the restart rebuilt the positions under new stops, and the flatten lived in memory.
            self._flatten_all(f"emergency: {cycle.halt_reason} (resumed after a restart)", self.today)
        if phase is CyclePhase.CLOSED:
            # When the day closed lives in memory only: the settling before the report counts from this start (else a
            # day kept overnight, restarted once closed, would wait for it forever). Past the close, what is still
            # live is kept under its stops until the next open, whatever was under way when the daemon stopped.
            self.today.closed_at = now
            if phase_due(schedule, now) is CyclePhase.CLOSED:
                self.today.flattened = True
                self._keep_overnight(self.today)
        if phase is CyclePhase.EVALUATING:
            # Candidates live in memory only: resumed between the bell and trading_at, evaluate again (as entering
            # evaluating would) or the trading phase would approve nothing.
            self.today.candidates = self.hooks["scan"](cycle.cycle_id, now)
        return self.today

    def _schedule_for(self, day: date) -> PhaseSchedule | None:
        """The configured schedule, its flatten and close moved to an early close; None (said once) for a session
        too short to hold it. Without a session_close hook (tests, a broker without a calendar) the configured one."""
        close = self.hooks["session_close"](day) if "session_close" in self.hooks else None
        if close is None:
            return self.schedule
        try:
            return schedule_for_close(self.schedule, close)
        except InvalidSchedule as exc:
            if day not in self._too_short:
                self._too_short.add(day)
                log.warning(f"cycle {day} not traded: the market closes at {close:%H:%M}, too early for the "
                            f"configured schedule ({exc})")
            return None

    def _enter(self, day: DayState, phase: CyclePhase, now: datetime) -> None:
        CYCLE_MACHINE.check(day.phase, phase, f"cycle {day.day}")
        if phase is CyclePhase.SCANNING and phase_due(day.schedule, now) is CyclePhase.CLOSED:
            # A first start after the close goes idle → scanning → closed: a scan then reads a day that is over (a
            # review: "universe 50, 4 candidates" and their ranking at 16:38), spending the broker's rate budget.
            log.info(f"cycle {day.day} #{day.cycle_id} started after the close: no scan, nothing traded today")
        elif phase is CyclePhase.SCANNING:
            day.candidates = self.hooks["scan"](day.cycle_id, now)
        elif phase is CyclePhase.EVALUATING:
            self._flatten_carried(day)  # the market is open: an exit fills now
            day.candidates = self.hooks["scan"](day.cycle_id, now) or day.candidates  # with the opening prints
        elif phase is CyclePhase.TRADING:
            self._open_approved(day, now)
        elif phase is CyclePhase.CLOSED:
            day.closed_at = now
            self._keep_overnight(day)  # only if the end-of-day flatten never ran
        self._persist(day, phase)

    def _persist(self, day: DayState, phase: CyclePhase) -> None:
        before, day.phase = day.phase, phase
        self.writer.set_cycle_phase(day.cycle_id, str(phase), self.clock.now()).get()
        log.info(f"cycle {day.day} #{day.cycle_id} {before} → {phase}")

    def _open_approved(self, day: DayState, now: datetime) -> None:
        allowed, why = self.hooks["entries_allowed"]()
        if exchange_time(now) >= day.schedule.monitoring_at:
            allowed, why = False, f"past {day.schedule.monitoring_at:%H:%M}, the end of the entry window (resumed late?)"
        if day.halted or not allowed:
            log.warning(f"cycle {day.day} no new entries: {day.halted or why}")
            if not day.halted:  # on the day's row, so its report says why the day did not trade (a review)
                self.writer.set_cycle_state(day.cycle_id, "halted", why).get()
            return
        plans = self.hooks["approve"](day.cycle_id, day.candidates, now)
        for plan in plans:
            self.system.open_position(plan)
        log.info(f"cycle {day.day} #{day.cycle_id} opened {len(plans)} positions from {len(day.candidates)} candidates")

    def _flatten_all(self, reason: str, day: DayState, scheduled: bool = False) -> None:
        if day.flattened:
            return
        day.flattened, day.flatten_reason = True, reason
        refs = self.system.supervisor.live_refs().get()
        told = sum(tell_if_alive(ref, m.Flatten(reason=reason, scheduled=scheduled)) for ref in refs)
        log.info(f"cycle {day.day} flattening {told} live positions: {reason}"
                 + (f" ({len(refs) - told} finished meanwhile)" if told < len(refs) else ""))

    def _keep_overnight(self, day: DayState) -> None:
        """The market has closed before the end-of-day flatten ran (the daemon was down at 15:55): a market exit
        could not fill before the next open, and cancelling the stops first, as a flatten does, would leave the
        shares bare all night. They stay under their stops (re-placed as the day's expire) and are flattened when
        the market next opens (_flatten_carried). A position whose flatten did run but has not ended (its market exit
        unfilled at the close, or still waiting for its stops' cancels) is kept the same way (KeepOvernight)."""
        refs = self.system.supervisor.live_refs().get()
        if not day.overnight_told:
            day.overnight_told = True
            for ref in refs:
                tell_if_alive(ref, m.KeepOvernight())
            if day.flattened and refs:
                day.kept_overnight = True
        if day.flattened:
            return
        day.flattened = day.kept_overnight = True
        live = len(refs)
        if live:
            log.warning(f"cycle {day.day} the market closed before the end-of-day flatten ran: {live} positions kept "
                        f"under their stops overnight, flattened at the next open")

    def _flatten_carried(self, day: DayState) -> None:
        """Positions of an earlier day (kept overnight, or found at a start): exited at the open."""
        for ref, state in Answers(POSITION_ANSWER_S).states(self.system.supervisor.live_refs().get()):
            if state is BUSY:
                log.warning(f"cycle {day.day} a position actor did not answer within {POSITION_ANSWER_S:g} s: if it "
                            "was carried over from an earlier day, it stays under its stops until the end-of-day flatten")
                continue
            if state.get("cycle_id") not in (None, day.cycle_id) and state.get("status") == "open":
                reason = f"carried over from an earlier day ({state['position']}): flattened at the open"
                day.carried[state["position"]] = reason
                tell_if_alive(ref, m.Flatten(reason=reason, scheduled=True))

    def _retry_undone_flattens(self, day: DayState, now: datetime) -> None:
        """A flatten asked for here whose market exit failed leaves its position open under stops again
        (actors.position's _exit_failed): it is asked for again after growing waits (FLATTEN_RETRY_WAITS) while the
        market is open, and never after the close, when a market exit would wait all night with the stops taken off."""
        if not (day.flatten_reason or day.carried) or day.overnight_told or not market_open(day.schedule, now):
            return
        refs = self.system.supervisor.live_refs().get()
        if not refs:
            return
        for ref, state in Answers(POSITION_ANSWER_S).states(refs):
            if state is BUSY or state.get("status") != "open" or state.get("flattening"):
                continue  # a busy one is looked at again next tick
            label = state["position"]
            reason = day.flatten_reason or day.carried.get(label)
            if reason is None:
                continue
            retry, step = undone_flatten(day.flatten_retries.get(label), now)
            day.flatten_retries[label] = retry
            tries = len(FLATTEN_RETRY_WAITS)
            if step is FlattenStep.NOTED:
                log.warning(f"cycle {day.day} position {label} still open after its flatten ({reason}): its market "
                            f"exit failed; flattening it again at {exchange_time(retry.due_at):%H:%M:%S} "
                            f"(up to {tries} tries while the market is open)")
            elif step is FlattenStep.RETRY:
                tell_if_alive(ref, m.Flatten(reason=f"{reason}; again, try {retry.attempts} of {tries}"))
            elif step is FlattenStep.GIVE_UP:
                log.error(f"cycle {day.day} position {label} still open after {tries} more flattens ({reason}): "
                          f"left under its stops; flatten it by hand at the broker")

    def _check_loss_limit(self, day: DayState) -> None:
        realized, unrealized = self.hooks["daily_pnl"](day.cycle_id)
        if self.hooks["loss_limit_breached"](realized, unrealized):
            self._emergency(f"daily loss limit: realized {realized} + unrealized {unrealized}")

    def _emergency(self, reason: str) -> None:
        # Asked before the first tick (a daemon resuming an emergency stop at start), the day is read first, as the
        # tick would: without it a market-hours stop would look like one at night and leave the positions open. If
        # the broker cannot say (the calendar), the positions keep their stops and the next tick applies it.
        try:
            day = self.today if self.today is not None else self._day(self.clock.now())
        except (BrokerError, pykka.Timeout) as exc:
            if self._emergency_waiting is None:
                log.warning(f"cycle emergency stop ({reason}) waits for the broker ({exc}): the positions keep "
                            "their stops, and the next tick applies it")
            self._emergency_waiting = reason
            return
        self._emergency_waiting = None
        if day is None or day.phase not in (CyclePhase.SCANNING, CyclePhase.EVALUATING, CyclePhase.TRADING,
                                            CyclePhase.MONITORING):
            now = self.clock.now()
            # Today's session only: on a weekend or a holiday `today` is still the last trading day.
            if day is not None and day.day == now.date() and market_open(day.schedule, now):
                log.warning(f"cycle emergency stop requested ({reason}) outside an active phase: flattening anyway")
                for ref in self.system.supervisor.live_refs().get():
                    tell_if_alive(ref, m.Flatten(reason=f"emergency: {reason}"))
            else:
                # A market exit sent now waits for the open with the stops taken off: the shares would be bare all
                # night. They stay under their stops; the next open's flatten of what earlier days left takes them.
                log.warning(f"cycle emergency stop requested ({reason}) while the market is closed: the positions "
                            "stay under their stops and are flattened at the next open")
            if day is not None and day.flatten_reason is None:
                day.flatten_reason = f"emergency: {reason}"  # one whose exit fails is asked again (market open)
            if day is not None and day.phase is CyclePhase.IDLE and not day.halted:
                # Before the scan there is no phase to close, but the stop must still hold: no entries today,
                # persisted so a restart remembers it.
                day.halted = reason
                self.writer.set_cycle_state(day.cycle_id, "emergency_stopped", reason).get()
                log.critical(f"cycle {day.day} EMERGENCY STOP before the scan: no entries today ({reason})")
            return
        log.critical(f"cycle {day.day} EMERGENCY STOP: {reason}")
        day.halted = reason
        self.writer.set_cycle_state(day.cycle_id, "emergency_stopped", reason).get()
        self._flatten_all(f"emergency: {reason}", day)
        day.closed_at = self.clock.now()
        self._persist(day, emergency_stop(day.phase))

    def _finish_day(self, day: DayState, now: datetime) -> None:
        live = self.system.supervisor.live_count().get()
        settled = day.closed_at is not None and now - day.closed_at >= SETTLE_AFTER_CLOSE
        if live and not settled:
            return
        if live and market_open(day.schedule, now):
            # An emergency stop closed the day early, and its flatten is still under way (the stops' cancels, or the
            # exit, held up by a broker outage). Completed now, the day said ERROR "still live after the close" with
            # the market open and the flatten working, then left it to the close all the same: it completes once
            # they are flat, or at the close, which keeps them under their stops (_keep_overnight).
            if not day.said_flatten_outlasts:
                day.said_flatten_outlasts = True
                log.warning(f"cycle {day.day} {live} positions still flattening after the day closed early "
                            f"({day.halted or day.flatten_reason}): the day completes once they are flat, or at the "
                            "market's close with them kept under their stops")
            return
        if live and day.kept_overnight:
            log.warning(f"cycle {day.day} {live} positions kept overnight under their stops; completing the day")
        elif live:
            log.error(f"cycle {day.day} {live} positions still live after the close; completing the day anyway")
        self.hooks["doctor_pass"]("end of day")
        realized, unrealized = self.hooks["daily_pnl"](day.cycle_id)
        self.writer.set_daily_pnl(day.cycle_id, realized + unrealized, now).get()
        # The report before `completed`, as for a day completed late: killed in between, the restart finishes the day
        # again (a review: `completed` first, a kill during the report's second lost it for good, nothing said); then
        # again once the row says completed, which the report shows.
        path = self._write_report(day.day)
        self._persist(day, CyclePhase.COMPLETED)
        if path is not None:
            path = self._write_report(day.day)
        log.info(f"cycle {day.day} completed: P&L {realized + unrealized:+.2f}; report {path}")
        if "day_completed" in self.hooks:
            self.hooks["day_completed"](day.day, path)
        self._skip(now, "day completed")

    def _write_report(self, day: date) -> Any:
        try:
            return self.hooks["write_report"](day)
        except Exception as exc:  # a report failure must not undo a finished trading day
            log.error(f"cycle {day} report not written: {type(exc).__name__}: {exc}")
            return None

    def _complete_earlier_days(self, today: date, now: datetime) -> None:
        """Earlier days the daemon was not running to finish (down over their close: a machine off overnight, a
        service stopped in the afternoon): each is completed now, with its P&L and its report, and said as a WARNING.
        They stayed in their phase for good, with no report and their P&L in no figure (a review).

        Said first, and `completed` last, after the report: a restart in between completes the day again (it had
        lost the report for good, a review). Its P&L is what it realized: its positions still open are worth now what
        today's prices say, not what they were worth at its close, and are counted on the day they are sold."""
        for cycle in self.writer.unfinished_cycles_before(today).get():
            realized, unrealized = self.hooks["daily_pnl"](cycle.cycle_id)
            unvalued = (f" ({unrealized:+.2f} unrealized in positions still open not counted: their value at the "
                        "close is not known)") if unrealized else ""
            log.warning(f"cycle {cycle.date} #{cycle.cycle_id} was left {cycle.phase}: its close passed without the "
                        "daemon finishing it (not running then, or its clock moved past it). Completing it now: P&L "
                        f"{realized:+.2f} realized{unvalued}")
            phase = CyclePhase(cycle.phase)
            for step in CYCLE_MACHINE.path(phase, CyclePhase.CLOSED) or ():
                self.writer.set_cycle_phase(cycle.cycle_id, str(CYCLE_MACHINE.check(phase, step, f"cycle {cycle.date}")),
                                            now).get()
                phase = step
            self.writer.set_daily_pnl(cycle.cycle_id, realized, now).get()
            path = self._write_report(cycle.date)
            self.writer.set_cycle_phase(cycle.cycle_id, str(CYCLE_MACHINE.check(phase, CyclePhase.COMPLETED,
                                                                                f"cycle {cycle.date}")), now).get()
            if path is not None:  # again, now that its row says completed: the first one said `closed` (a review)
                path = self._write_report(cycle.date)
            log.info(f"cycle {cycle.date} #{cycle.cycle_id} completed late; report {path}")

    def _skip(self, now: datetime, why: str) -> None:
        skip_to = self.hooks.get("skip_to")
        if skip_to is not None and not self._stopping:
            target = skip_to(now)
            if target is not None:
                log.info(f"cycle {why}: exchange clock jumps to {target:%Y-%m-%d %H:%M}")

    def _schedule_tick(self, delay: float) -> None:
        if self._stopping:
            return
        self._timer = tell_later(self.actor_ref, delay, Tick())
