"""What the cycle conductor calls: the scanner, risk approval, the doctor, P&L, the calendar and the report.

Kept out of the cycle actor so it stays a thin state machine, and so each hook can be exercised on its own.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from datetime import time as dt_time
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable

import pykka
from loguru import logger

from actors.messages import TradePlan
from catalyst.broker.errors import BrokerError
from catalyst.domain import risk
from catalyst.domain.cycle import EXCHANGE_TZ, exchange_time
from catalyst.domain.money import to_tick
from catalyst.domain.positions import PositionSide
from catalyst.domain.scanning import suggested_exits
from catalyst.runtime import next_session_start

log = logger.bind(actor="cycle")
STREAM_LOGIN_WAIT_S = 10.0  # wall seconds a first trade-stream login may take before entries are refused


def answer_of(who: str, future: Any, timeout: float) -> Any:
    """The actor's answer; a pykka.Timeout naming the actor if it has none in `timeout` seconds. The cycle takes a
    timeout for a failed step and tries again at its next tick, and its log line then says who kept it waiting
    (pykka's own message is only `Timeout: 30 seconds`)."""
    try:
        return future.get(timeout=timeout)
    except pykka.Timeout:
        raise pykka.Timeout(f"the {who} did not answer within {timeout:g} s (busy: a broker call that hangs, a long "
                            "pass)") from None


@dataclass(frozen=True)
class PersistedCandidate:
    symbol: str
    price: Decimal
    stop: Decimal
    scan_id: int
    pattern_stop: bool = False  # its stop is a bull flag's low, not a percentage of its price
    side: PositionSide = PositionSide.LONG  # the shipped scanner ranks long setups only


class TradingCalendar:
    """The broker's calendar, read a week at a time: which days trade, and when each closes."""

    def __init__(self, broker: Any) -> None:
        self.broker = broker
        self._sessions: dict[date, Any] = {}  # day → its CalendarDay, or None: not a trading day

    def is_trading_day(self, day: date) -> bool:
        return self._session(day) is not None

    def session_close(self, day: date) -> dt_time | None:
        """When the market closes on `day`, exchange time (13:00 on a half day); None if it does not open."""
        session = self._session(day)
        return session.close.astimezone(EXCHANGE_TZ).time() if session is not None else None

    def session_hours(self, day: date) -> tuple[dt_time, dt_time] | None:
        """When the market opens and closes on `day`, exchange time; None if it does not open."""
        return _hours(self._session(day))

    def known_session_hours(self, day: date) -> tuple[bool, tuple[dt_time, dt_time] | None]:
        """(True, session_hours(day)) if the week holding `day` has been read, else (False, None): no broker call."""
        if day not in self._sessions:
            return False, None
        return True, _hours(self._sessions[day])

    def _session(self, day: date) -> Any:
        if day not in self._sessions:
            sessions = {s.day: s for s in self.broker.calendar(day, day + timedelta(days=7))}
            for offset in range(8):
                d = day + timedelta(days=offset)
                self._sessions[d] = sessions.get(d)
        return self._sessions[day]


def _hours(session: Any) -> tuple[dt_time, dt_time] | None:
    if session is None:
        return None
    return session.open.astimezone(EXCHANGE_TZ).time(), session.close.astimezone(EXCHANGE_TZ).time()


class MarketHours:
    """Whether the market is closed now (before the open, after the close, a day it does not trade, by the broker's
    calendar), for a position actor about to send a market exit of its own accord (a refused stop, late entry shares,
    a rebuild with its exit working, a flatten the cycle did not schedule): sent while closed, it waits for the next
    open with no stop under the shares. The cycle tells only the actors live at the close (KeepOvernight), not one
    rebuilt after it or before the open.

    Position actors ask from their own threads. The calendar is the cycle's (read a week at a time as the cycle starts
    each day), so an actor seldom reads it; one that must, reads it alone: the others meanwhile, and everyone for
    CALENDAR_RETRY_S after a read that failed, get the regular session on weekdays (a review: taken as closed, a refused
    stop in the day got no market exit until 15:55; a slow read held every deciding actor). A day already read is
    answered from the calendar without the lock (a third review: a lookup another actor held gave a guess)."""

    CALENDAR_RETRY_S = 60.0
    REGULAR_SESSION = (dt_time(9, 30), dt_time(16, 0))

    def __init__(self, calendar: TradingCalendar, clock: Any) -> None:
        self.calendar, self.clock = calendar, clock
        self._reading = threading.Lock()
        self._failed_at: float | None = None  # time.monotonic() of the last failed read

    def closed(self) -> bool:
        now = self.clock.now().astimezone(EXCHANGE_TZ)
        hours = self._hours_of(now.date())
        return hours is None or not hours[0] <= now.time() < hours[1]

    def _hours_of(self, day: date) -> tuple[dt_time, dt_time] | None:
        known, hours = self.calendar.known_session_hours(day)
        if known:
            return hours  # read already (the usual case): no lock, so no actor ever gets a guess for a known day
        regular = self.REGULAR_SESSION if day.weekday() < 5 else None  # a holiday or a half day is not known
        if self._failed_at is not None and time.monotonic() - self._failed_at < self.CALENDAR_RETRY_S:
            return regular
        if not self._reading.acquire(blocking=False):
            return regular  # another actor is reading it (a read of the week is cached; a slow one holds that actor)
        try:
            hours = self.calendar.session_hours(day)
        except Exception as exc:  # noqa: BLE001 - a position's decision must not fail on the calendar
            self._failed_at = time.monotonic()
            why = str(exc) if isinstance(exc, BrokerError) else f"{type(exc).__name__}: {exc}"
            log.warning(f"cycle cannot read the broker's calendar ({why}): market hours are the regular session's "
                        f"(09:30-16:00 on weekdays) for the next {self.CALENDAR_RETRY_S:g} s (a holiday or a half "
                        "day unknown)")
            return regular
        finally:
            self._reading.release()
        self._failed_at = None
        return hours


class CycleHooks:
    _equity: Decimal | None = None  # read at approval: the percent daily loss limit's base for the rest of the day

    def __init__(self, daemon: Any, broker_factory: Callable[[str], Any]) -> None:
        from actors.doctor import DoctorActor
        from actors.scanner import ScannerActor

        self.daemon = daemon
        self.config = daemon.config
        self.endpoint = daemon.endpoint
        self.broker = daemon.broker
        system = daemon.system
        self.writer = system.writer
        self.scanner = ScannerActor.start(broker_factory("scanner"), self.writer, self.config.scanner).proxy()
        clock_limit_s = self.config.broker.max_clock_skew_s if self.endpoint.clock.speed == 1 else None
        self.doctor = DoctorActor.start(self.writer, broker_factory("doctor"), system.router, system.supervisor,
                                        self.endpoint.clock, self.config.doctor, clock_limit_s).proxy()
        daemon.parts.extend([self.scanner.actor_ref, self.doctor.actor_ref])
        daemon.reconnect_listeners.append(self.doctor.actor_ref)
        # The daemon's, which the position actors' MarketHours reads too: the cycle keeps it filled.
        self.calendar = daemon.calendar if daemon.calendar is not None else TradingCalendar(self.broker)
        self.doctor.run_pass(reason="start-up").get()

    def as_dict(self) -> dict[str, Callable[..., Any]]:
        hooks = {
            "scan": self.scan, "approve": self.approve, "daily_pnl": self.daily_pnl,
            "loss_limit_breached": self.loss_limit_breached, "write_report": self.write_report,
            "is_trading_day": self.calendar.is_trading_day, "session_close": self.calendar.session_close,
            "entries_allowed": self.entries_allowed,
            "doctor_pass": self.doctor_pass, "day_completed": self.daemon.day_completed,
        }
        if self.endpoint.exchange is not None:
            hooks["skip_to"] = self.skip_to
        return hooks

    def scan(self, cycle_id: int, now: datetime) -> list[Any]:
        found = list(answer_of("scanner", self.scanner.scan(cycle_id, now), 120))
        return found or self.persisted_candidates(cycle_id)

    def priced_now(self, candidates: list[Any]) -> list[risk.Candidate]:
        """The candidates at their latest trade price, for risk to size them. If the prices cannot be read the
        BrokerError goes up: the cycle tries the approval again at its next tick, until the entry window closes
        (sizing on old prices is what this prevents). A candidate with no latest trade is rejected; a stop that is a
        percentage of the price moves with it, a bull flag's low stays where the pattern put it.

        Why, at approval and not at the scan: the candidates may be a quarter of an hour old (the 09:15 scan before
        the open, when the 09:30 one finds none), and even the 09:30 scan's are five minutes old by the 09:35
        approval; a gapper moves several percent meanwhile. Sized and bracketed at the old price, an entry filled
        far from it: its stop twice the risk budget away, or its take-profit below the fill."""
        if not candidates:
            return []
        try:
            trades = self.broker.latest_trades([c.symbol for c in candidates])
        except BrokerError as exc:
            log.warning(f"cycle cannot read the latest prices of {len(candidates)} candidates ({exc}): none is "
                        "entered on an older price; the approval is tried again at the next tick")
            raise
        priced, moves, missing = [], [], []
        for candidate in candidates:
            trade = trades.get(candidate.symbol)
            if trade is None:
                missing.append(candidate.symbol)
                if candidate.scan_id is not None:
                    self.writer.set_scan_status(candidate.scan_id, "rejected", "no latest trade at approval").get()
                continue
            stop = candidate.stop
            if not getattr(candidate, "pattern_stop", False):
                stop = suggested_exits(trade.price, None, self.config.scanner)[0]
            priced.append(risk.Candidate(symbol=candidate.symbol, entry=trade.price, stop=stop,
                                         side=getattr(candidate, "side", PositionSide.LONG), scan_id=candidate.scan_id))
            moves.append(f"{candidate.symbol} {candidate.price} → {trade.price}"
                         + (f" (stop {candidate.stop} → {stop})" if stop != candidate.stop else ""))
        log.info(f"cycle priced {len(priced)} candidates at their latest trade: {', '.join(moves) or 'none'}"
                 + (f"; no latest trade for {', '.join(missing)}: not entered" if missing else ""))
        return priced

    def persisted_candidates(self, cycle_id: int) -> list[PersistedCandidate]:
        """Today's latest ranked candidates from scan_results: a restart must not forget the morning's scan
        when a later scan finds nothing (gappers fade after the open)."""
        rows = [r for r in self.writer.scan_results(cycle_id).get() if r.status == "candidate"]
        if not rows:
            return []
        latest = max(r.scanned_at for r in rows)
        picked = []
        for row in sorted((r for r in rows if r.scanned_at == latest), key=lambda r: r.rank_in_scan):
            try:
                parts = row.score_parts
                price, stop, flag = Decimal(str(parts["price"])), Decimal(str(parts["stop"])), parts.get("flag")
                # A flag whose low was not under the price gave a percentage stop (suggested_exits): not a level.
                pattern_stop = flag is not None and Decimal(str(flag["pullback_low"])) < price
                picked.append(PersistedCandidate(row.symbol, price, stop, row.scan_id, pattern_stop=pattern_stop))
            except (KeyError, ArithmeticError, TypeError):
                log.warning(f"cycle scan row {row.scan_id} ({row.symbol}) has no usable price/stop; skipped")
        if picked:
            log.info(f"cycle using {len(picked)} candidates persisted at {exchange_time(latest):%H:%M} (this scan found none)")
        return picked

    def approve(self, cycle_id: int, candidates: list[Any], now: datetime) -> list[TradePlan]:
        priced = self.priced_now(candidates)
        account = self.broker.account()
        self._equity = account.equity
        realized, unrealized = self.daily_pnl(cycle_id)
        book = self._book()
        day_trades_left = risk.day_trades_left(account.last_equity, account.daytrade_count, len(book.holdings))
        if day_trades_left is not None:
            log.info(f"cycle day-trade protection: equity at the last close {account.last_equity} (under "
                     f"{risk.PDT_EQUITY}), {account.daytrade_count} day trades in five business days, "
                     f"{len(book.holdings)} positions open or entering today: {day_trades_left} more may be opened")
        decisions = risk.approve(
            priced, book, risk.Account(equity=account.equity, buying_power=account.buying_power,
                               realized_pnl=realized, unrealized_pnl=unrealized, day_trades_left=day_trades_left),
            self.config.risk,
        )
        plans = []
        for decision in decisions:
            scan_id = decision.candidate.scan_id
            if decision.approved:
                log.info(f"cycle approve {decision.symbol} qty={decision.qty} entry≈{decision.entry} "
                         f"stop={to_tick(decision.stop)} target={to_tick(decision.target)} R={decision.risk_per_share}")
                plans.append(TradePlan(symbol=decision.symbol, side=decision.candidate.side, qty=decision.qty,
                                       stop_loss=to_tick(decision.stop), take_profit=to_tick(decision.target),
                                       cycle_id=cycle_id, scan_id=scan_id, entry_price=decision.entry))
            else:
                log.info(f"cycle reject {decision.symbol}: {decision.reason}")
            if scan_id is not None:
                self.writer.set_scan_status(scan_id, "approved" if decision.approved else "rejected",
                                            None if decision.approved else decision.reason).get()
        if any(d.emergency_stop for d in decisions):
            from actors.cycle import EmergencyStop

            self.daemon.cycle.tell(EmergencyStop(reason="daily loss limit reached at approval"))
        return plans

    def _book(self) -> risk.Book:
        live = self.writer.live_positions().get()
        holdings = [risk.Holding(p.symbol, p.quantity * (p.entry_price or Decimal(0))) for p in live.open_positions]
        # A working entry's price is not known yet: its planned stop is a floor for the money it will tie up.
        holdings += [risk.Holding(o.symbol, o.quantity * (o.limit_price or o.planned_stop_loss or Decimal(0)))
                     for o in live.pending_entries]
        return risk.Book(tuple(holdings))

    def daily_pnl(self, cycle_id: int) -> tuple[Decimal, Decimal]:
        return self.writer.cycle_pnl(cycle_id).get()

    def loss_limit_breached(self, realized: Decimal, unrealized: Decimal) -> bool:
        # With daily_loss_limit_pct, the limit is a percent of the equity read at approval: without it the
        # tick's check knew only the dollar limit, and the percent one was met at approval alone.
        return risk.daily_loss_breached(realized, unrealized, self.config.risk, self._equity)

    def entries_allowed(self) -> tuple[bool, str]:
        if self.daemon.emergency_flatten is not None or self.daemon.emergency_requested:
            # Not only today's: the daemon waits to be flat, and a position the market could not take out today
            # must not let the next morning's cycle trade.
            return False, "the operator's emergency stop: the daemon stops once flat"
        reserve_used = self.daemon.system.storage.reserve_used
        if reserve_used is not None:  # what the freed space holds is for the positions already open: the daemon stops
            return False, f"{reserve_used}; the daemon stops once every filled share is under a stop"
        allowed = answer_of("doctor", self.doctor.entries_allowed(), 30)
        ok, why = allowed if isinstance(allowed, tuple) else (bool(allowed), "the doctor halted new entries")
        if not ok and not isinstance(allowed, tuple):
            reason = answer_of("doctor", self.doctor.why_halted(), 30)
            why += f": {reason}" if reason else ""
        return (ok, why) if not ok else self.trade_stream_ready()

    def trade_stream_ready(self) -> tuple[bool, str]:
        """No position is opened without the trade stream: its entry's fill would be learned only at the doctor's
        next pass over REST, and its stop placed that much later. A login under way, or refused and being retried
        (Alpaca allows one trade stream per account: a daemon restarted after a crash may be refused until the broker
        drops the dead connection), is waited for a little; still not in, entries stop with the reason (another
        program, or another catalyst daemon, holding the stream: two daemons on one account trade over each other)."""
        router = self.daemon.system.router.proxy()
        deadline = time.monotonic() + STREAM_LOGIN_WAIT_S
        state = answer_of("router", router.trade_stream(), 30)
        while not state.logged_in and time.monotonic() < deadline:
            time.sleep(0.2)
            state = answer_of("router", router.trade_stream(), 30)
        if state.logged_in:
            return True, f"the trade stream is {state.why}"
        return False, (f"the trade stream is not logged in after {STREAM_LOGIN_WAIT_S:.0f} s ({state.why}): a fill "
                       f"would be learned only at the doctor's next REST pass, its stop placed late")

    def doctor_pass(self, reason: str) -> None:
        answer_of("doctor", self.doctor.run_pass(reason=reason), 300)

    def skip_to(self, now: datetime) -> datetime | None:
        """Simulation only: jump the exchange clock to 08:00 of the next session, not through the night."""
        exchange = self.endpoint.exchange
        target = next_session_start(exchange.market, now + timedelta(days=1) if now.hour >= 8 else now)
        if target <= now:
            return None
        exchange.jump_to(target)
        return target

    def write_report(self, day: date) -> Path:
        from catalyst.report import write_daily_report

        exchange = self.endpoint.exchange

        def prices(symbol: str, start: datetime, end: datetime) -> list[tuple[datetime, Decimal]]:
            assert exchange is not None
            return [(bar.start, bar.close) for bar in exchange.market.minute_bars(symbol, start, end)]

        return write_daily_report(self.daemon.database_url, day, self.config.daemon.reports_dir,
                                  prices if exchange is not None else None, own_database=True,
                                  repeat_gap=timedelta(seconds=3 * self.config.doctor.interval_s))
