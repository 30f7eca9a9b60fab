"""The doctor: reconciles the database with the broker in bulk (spec §7) and heals each finding by its policy.

It never moves state itself: broker truth goes through the router (the only actor that moves orders, along the
machine, recording executions exactly once), protection through the position actors, adoption through the
supervisor. Broker calls per pass: the order list (paged, 500 a page), positions, fill activities, and one
market-data read for marks (the first three twice when a finding needs a second look); never one call per order.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pykka
from loguru import logger

from actors import messages as m
from actors.refs import BUSY, Answers, Delayed, tell_if_alive, tell_later
from catalyst.broker.errors import BrokerError, NotFound
from catalyst.broker.reports import FillReport, OrderReport, PositionReport, order_views, position_view
from catalyst.clock import (
    CLOCK_READING_MAX_S, CLOCK_SKEW_WARN_S, FIX_TIME_SYNC, FOLLOWING_BROKER, clock_skew_s, describe_skew, wall_seconds,
)
from catalyst.domain.cycle import EXCHANGE_TZ, exchange_time
from catalyst.domain.orders import ORDER_MACHINE, OrderStatus, oco_stop_leg_id, oco_take_profit_id
from catalyst.domain.positions import Position, PositionSide, PositionStatus
from catalyst.domain.reconcile import (
    BrokerFill, BrokerOrder, BrokerView, DoctorSettings, Finding, FindingType, LocalOrder,
    LocalPosition, LocalView, Policy, WORKING_BROKER, execution_key, reconcile, signed_qty,
)  # fmt: skip
from catalyst.store.batch import call
from catalyst.store.doctor_ops import ADOPTED_ENTRY_ROLE, AdoptedFill, BrokerOrderRow
from catalyst.store.records import NewFinding

log = logger.bind(actor="doctor")
_T = FindingType
CENT = Decimal("0.01")


class Tick(m.Message):
    pass


@dataclass(frozen=True)
class PassReport:
    pass_id: str
    number: int
    reason: str
    dry_run: bool
    findings: tuple[Finding, ...]
    outcomes: tuple[str, ...]
    healed: int
    alerts: int
    entries_allowed: bool
    halt_reason: str | None
    error: str | None = None


@dataclass
class _Pass:
    """What one pass gathered, kept for healing."""

    pass_id: str
    after: datetime
    local: dict[int, Any]
    reports: dict[str, OrderReport]
    fills: list[FillReport]
    positions: dict[str, PositionReport]
    cum: dict[str, Decimal]  # execution id → cumulative qty after it


UNAVAILABLE_PASSES_BEFORE_ERROR = 3  # a broker failing this many passes in a row is an ERROR, before that a WARNING
POSITION_ANSWER_S = 5.0  # a position actor answers its state at once unless something holds it
# How far back a start looks for the orders behind an earlier run's halts (_halts_from_before).
HALTS_REMEMBERED = timedelta(days=30)
UNLISTED_READS = 20  # working rows of ours the broker's listing left out, read by id in one pass at most
LATE_SHARE_REBUILDS = 3  # a closed position rebuilt this often for its late entry shares, still holding them: halt
ASKED_PASS_GAP_S = 30.0  # wall seconds between passes the positions ask for (PassWanted)
# Findings the daemon's own writes in flight can explain for a few milliseconds (a fill the router is recording, an
# OCO acknowledged between two reads, a submit's answer waiting in the router's mailbox): each one, like a halt,
# counts only if a second look a moment later sees it again. None of them is older than a pass can wait for.
CONFIRMED_ON_A_SECOND_LOOK = frozenset({_T.MISSING_FILL, _T.MISSING_PROTECTION, _T.OUTCOME_UNKNOWN})


def needs_a_second_look(finding: Finding) -> bool:
    return finding.policy is Policy.HALT or finding.type in CONFIRMED_ON_A_SECOND_LOOK


class PositionBusy(Exception):
    """A live position actor did not answer, and none that did is the finding's: it may be the one."""


def once_per_order(views: list[tuple[OrderReport, BrokerOrder]]) -> list[tuple[OrderReport, BrokerOrder]]:
    """Each broker order viewed once. A leg can be listed twice: under a take-profit replaced at the broker (moved by
    hand: Alpaca may still list its legs) and under its replacement, or read by id beside its OCO's read by id
    (_read_unlisted). Counted twice, its stop made every pass say EXCESS_PROTECTION (a review). The view under a
    parent still working is kept; under a replaced parent only when it has no other (a triggered stop's take-profit
    `replaced` by no order, alpaca-py #198, whose leg is the exit in flight)."""
    replaced = {item.broker_id for item, _ in views if item.status == "replaced"}
    kept: dict[str, tuple[OrderReport, BrokerOrder]] = {}
    for item, view in views:
        earlier = kept.get(item.broker_id)
        if earlier is None or (earlier[1].parent_id in replaced and view.parent_id not in replaced):
            kept[item.broker_id] = (item, view)
    return list(kept.values())


class _AskedPassDue(m.Message):
    """A pass a position asked for, due now that ASKED_PASS_GAP_S has passed since the last one asked."""

    reason: str


class DoctorActor(pykka.ThreadingActor):
    # Left behind by a stop if still busy after its share of the bound (waiting on a broker that does not answer):
    # a daemon thread does not hold the process's exit (catalyst.daemon.Daemon.stop).
    use_daemon_thread = True

    def __init__(self, writer: Any, broker: Any, router: Any, supervisor: Any, clock: Any,
                 settings: DoctorSettings | None = None, clock_limit_s: float | None = None) -> None:
        super().__init__()
        self.writer, self.broker, self.router, self.supervisor, self.clock = writer, broker, router, supervisor, clock
        self.settings = settings or DoctorSettings()
        # On the wall clock (paper, live): broker.max_clock_skew_s, for the periodic look at this machine's clock
        # against the broker's (check_clock); None on an emulator's clock, which the daemon follows.
        self.clock_limit_s = clock_limit_s
        self._clock_said: str | None = None  # the level last said of the clock (None: within CLOCK_SKEW_WARN_S)
        self.halted = False
        self.halt_reason: str | None = None
        self._halts_this_pass: list[tuple[str, tuple[str, ...]]] = []  # (reason, broker ids) of the pass under way
        self._halting_orders: set[str] = set()  # broker ids of the orders behind the halt, read again before it lifts
        self._before_restart = True  # until the first pass has looked for an earlier run's halts (_halts_from_before)
        self._numbers = itertools.count(1)
        self._timer: Delayed | None = None
        self._last_pass_at: datetime | None = None
        self._instance: str | None = None  # this database's id, read once
        # Findings the last pass only reported (alerted, or halted on), as they read, with that outcome: the same one
        # again is said at DEBUG, or a hand order from the morning would be a WARNING every pass all day, and
        # warnings that repeat are warnings a trader learns to skip. That holds for a finding the doctor would heal
        # but could only report (a live position's `created` row whose submit hangs in flight). A change (a new
        # status), a heal, or a halt since lifted makes it news again.
        self._reported: dict[str, str] = {}
        self._late_share_rebuilds: dict[int, int] = {}  # closed positions rebuilt to sell their late entry shares
        # Passes in a row the broker failed (each call already retried): one is a blip the next pass covers, a
        # run of them means nothing has been reconciled for a while, which the operator must hear as an ERROR.
        self._unavailable_in_row = 0
        self._reconciled_at: datetime | None = None
        self._asked_pass_at = float("-inf")  # time.monotonic() of the last pass a position asked for (PassWanted)
        self._asked_pass_due: Delayed | None = None  # one asked too soon after it, due once the gap has passed

    # --- lifecycle and messages -------------------------------------------------------------------------------

    def on_start(self) -> None:
        self._last_pass_at = self.clock.now()
        self._schedule()

    def on_stop(self) -> None:
        for timer in (self._timer, self._asked_pass_due):
            if timer is not None:
                timer.cancel()

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Tick):
            # The timer only polls: a pass is due after interval_s of EXCHANGE time (a manual clock never runs one).
            if self._last_pass_at is None or (self.clock.now() - self._last_pass_at).total_seconds() >= self.settings.interval_s:
                self.run_pass(reason="periodic")
                self.check_clock()
            self._schedule()
        elif isinstance(message, m.StreamReconnected):
            self.run_pass(reason=f"stream reconnected #{message.count}")
        elif isinstance(message, m.PassWanted):
            self._pass_wanted(message.reason)
        elif isinstance(message, _AskedPassDue):
            self._asked_pass_due = None
            self._pass_wanted(message.reason)
        return None

    def _pass_wanted(self, reason: str) -> None:
        """A pass asked for by a position, at most one each ASKED_PASS_GAP_S (wall seconds: each costs broker calls
        out of the account's 200 a minute); one asked sooner runs once that gap has passed, for all asked meanwhile."""
        if self._asked_pass_due is not None:
            return  # one is due already: it covers this one too
        now = time.monotonic()
        wait_s = self._asked_pass_at + ASKED_PASS_GAP_S - now
        if wait_s > 0:
            self._asked_pass_due = tell_later(self.actor_ref, wait_s, _AskedPassDue(reason=reason))
            return
        self._asked_pass_at = now
        self.run_pass(reason=f"asked: {reason}")

    def check_clock(self) -> None:
        """This machine's clock against the broker's, again each periodic pass: start-up compared them once, but a
        time sync that steps the clock, or stops and lets it drift, changes that mid-day. Past CLOCK_SKEW_WARN_S the
        daemon's clock follows the broker's (WallClock.follow), so the 15:55 flatten stays at the exchange's 15:55.
        Said when it changes: a WARNING past CLOCK_SKEW_WARN_S, an ERROR past broker.max_clock_skew_s, INFO once it is
        back within."""
        if self.clock_limit_s is None:
            return
        try:
            before = self.clock.now()
            broker_at = self.broker.clock().at
            after = self.clock.now()
        except BrokerError as exc:  # the pass reports an unavailable broker; this look waits for the next one
            log.debug(f"doctor could not read the broker's clock: {exc}")
            return
        if (after - before).total_seconds() > CLOCK_READING_MAX_S:
            log.debug(f"doctor the broker's clock took {(after - before).total_seconds():.1f} s to answer: too loose "
                      "a reading to compare clocks by; the next pass looks again")
            return
        measured = clock_skew_s(before, broker_at, after)
        # The wall clock corrects itself to the broker's (WallClock.follow); a clock without that only reports.
        follow = getattr(self.clock, "follow", None)
        skew = follow(measured) if follow is not None else measured
        level = ("ERROR" if abs(skew) > self.clock_limit_s else "WARNING" if abs(skew) > CLOCK_SKEW_WARN_S
                 else None)
        if level == self._clock_said:
            return
        was, self._clock_said = self._clock_said, level
        advice = FOLLOWING_BROKER if follow is not None else FIX_TIME_SYNC
        if level is None:
            again = "; the schedule runs on this machine's clock again" if was and follow is not None else ""
            log.info(f"doctor {describe_skew(skew)}: within {CLOCK_SKEW_WARN_S:g} s again{again}")
        elif level == "ERROR":
            log.error(f"doctor {describe_skew(skew)} (broker.max_clock_skew_s = {self.clock_limit_s:g}): {advice}")
        else:
            log.warning(f"doctor {describe_skew(skew)}: {advice}")

    def _schedule(self) -> None:
        self._timer = tell_later(self.actor_ref, wall_seconds(self.clock, self.settings.interval_s), Tick())

    def entries_allowed(self) -> bool:
        """The cycle asks before approving an entry: False once a finding's policy halted entries."""
        return not self.halted

    def why_halted(self) -> str | None:
        """The halt's reason while entries are halted, for the cycle's line and its row (the report's)."""
        return self.halt_reason if self.halted else None

    def resume(self, why: str) -> None:
        """Entries allowed again: no pass finds what halted them any more (_keep_or_lift_halt)."""
        log.warning(f"doctor entries allowed again ({why}); was halted: {self.halt_reason}")
        self.halted, self.halt_reason = False, None

    # --- one pass ---------------------------------------------------------------------------------------------

    def run_pass(self, dry_run: bool = False, reason: str = "periodic") -> PassReport:
        number = next(self._numbers)
        now = self.clock.now()
        self._last_pass_at = now
        pass_id = f"{now:%Y%m%dT%H%M%S}-{number}"
        self._halts_this_pass = []
        try:
            gathered, local, broker = self._gather(pass_id, now)
            findings = self._judge(local, broker, now)
            if any(needs_a_second_look(f) for f in findings):
                gathered, local, broker, findings = self._look_again(pass_id, findings)
        except BrokerError as exc:
            self._unavailable_in_row += 1
            since = (f"nothing reconciled since {exchange_time(self._reconciled_at):%H:%M:%S}"
                     if self._reconciled_at else "nothing reconciled yet")
            alarming = self._unavailable_in_row >= UNAVAILABLE_PASSES_BEFORE_ERROR
            log.log("ERROR" if alarming else "WARNING",
                    f"doctor pass #{number} ({reason}): broker unavailable, {self._unavailable_in_row} pass"
                    f"{'es' if self._unavailable_in_row > 1 else ''} in a row, {since}: {exc}")
            return PassReport(pass_id, number, reason, dry_run, (), (), 0, 0, not self.halted, self.halt_reason, str(exc))
        if self._unavailable_in_row:
            log.info(f"doctor pass #{number} ({reason}): the broker answers again after {self._unavailable_in_row} "
                     f"failed pass{'es' if self._unavailable_in_row > 1 else ''}")
        self._unavailable_in_row, self._reconciled_at = 0, now
        outcomes: list[str] = []
        batch: tuple[list[OrderReport], list[FillReport]] = ([], [])
        repeated, reported = 0, {}
        for finding in findings:
            line = finding.line()
            before = self._reported.get(line)
            again = before == "alerted" or (before == "halted" and self.halted)
            repeated += again
            log.log("DEBUG" if again else "WARNING" if finding.severity != "info" else "INFO", line)
            outcome = "dry run" if dry_run else self._heal(finding, gathered, batch)
            outcomes.append(outcome)
            if outcome in ("alerted", "halted"):
                reported[line] = outcome
        if not dry_run:
            self._reported = reported
            # What halted entries gone (another daemon's orders cancelled, the shares sold), the halt lifts: held for
            # the process's life, one Monday event refused every later day's entries with a reason no longer true.
            self._keep_or_lift_halt(number)
            if batch[0] or batch[1]:
                self.router.tell(m.CatchUpResult(orders=tuple(batch[0]), fills=tuple(batch[1]), since=gathered.after,
                                                 from_doctor=True))
            self._mark_to_market(local)
            if findings:
                self.writer.insert_findings([_record(f, now, pass_id, o) for f, o in zip(findings, outcomes)]).get()
        healed = sum(o == "healed" for o in outcomes)
        alerts = sum(o == "alerted" for o in outcomes)
        state = "entries allowed" if not self.halted else f"entries HALTED: {self.halt_reason}"
        known = f" ({repeated} as in the last pass)" if repeated else ""
        log.info(f"doctor pass #{number} ({reason}{', dry run' if dry_run else ''}): {len(findings)} findings{known}, "
                 f"{healed} healed, {alerts} alerts, {state}")
        return PassReport(pass_id, number, reason, dry_run, tuple(findings), tuple(outcomes), healed, alerts,
                          not self.halted, self.halt_reason)

    def _judge(self, local: LocalView, broker: BrokerView, now: datetime) -> list[Finding]:
        findings = []
        for finding in reconcile(local, broker, now, self.settings):
            why = self._flattening(finding, now)
            if why is None:
                findings.append(finding)
            else:
                log.info(f"doctor {finding.subject} has no stop at the broker while it flattens ({why}): its exit is "
                         "under way, nothing to heal")
        return findings

    def _look_again(self, pass_id: str, first: list[Finding]) -> tuple[_Pass, LocalView, BrokerView, list[Finding]]:
        """A halt stops the trader's entries for the day, so it must hold on a second look a moment later; so must
        a missing fill, missing protection or unknown outcome, each a WARNING an operator acts on.

        The database and the broker are read at different moments while the daemon trades: an exit's execution
        recorded before its position row is updated, or a fill the broker lists before the router has it, looks
        like a position nobody can explain for a few milliseconds. The second look decides the whole pass (the
        first one's other findings are seen again); a finding needing it counts only if both looks have it, and one
        seen only in the second is left to the next pass.
        """
        to_confirm = {(f.type, f.subject) for f in first if needs_a_second_look(f)}
        time.sleep(self.settings.confirm_halt_after_s)
        now = self.clock.now()
        gathered, local, broker = self._gather(pass_id, now)
        findings = []
        for finding in self._judge(local, broker, now):
            if needs_a_second_look(finding) and (finding.type, finding.subject) not in to_confirm:
                log.info(f"doctor {finding.type} {finding.subject} seen on the second look only: left to the next pass")
                continue
            findings.append(finding)
        again = {(f.type, f.subject) for f in findings}
        for kind, subject in sorted(to_confirm - again):
            log.info(f"doctor {kind} {subject} gone on a second look {self.settings.confirm_halt_after_s:g} s later: "
                     "the daemon was still writing what the broker already showed, not a difference")
        return gathered, local, broker, findings

    def _instance_id(self) -> str:
        if self._instance is None:
            self._instance = self.writer.instance_id().get()
        return self._instance

    def _gather(self, pass_id: str, now: datetime) -> tuple[_Pass, LocalView, BrokerView]:
        floor = now - timedelta(seconds=self.settings.lookback_s)
        working = self.writer.working_orders().get() + self.writer.orders_with_unknown_outcome().get()
        kept = self.writer.oldest_entry_kept_after_close().get()  # late shares of a closed position, kept
        after = min([o.created_at for o in working] + [floor] + ([kept] if kept is not None else [])) - timedelta(
            seconds=self.settings.list_margin_s)
        # Our rows from further back than the broker's listing: a row is created before its order is sent, so an
        # order the broker lists as submitted just after `after` can have a row created just before it (seen at
        # 720x, where those milliseconds are seconds): read alike, it looked placed by hand, an ORPHAN_ORDER.
        since = after - timedelta(seconds=self.settings.list_margin_s)
        rows = self.writer.reconciliation_orders(since).get()
        # The shares we hold and the executions they came from, as ONE snapshot (one transaction): read apart, a
        # fill committed in between would show as shares the broker has and we lack, or the other way round.
        positions, key_list = self.writer.together([
            call("open_positions_for_reconciliation"), call("execution_keys", [r.order_id for r in rows]),
        ]).get()
        keys = frozenset(key_list)
        reports = self.broker.list_orders(status="all", after=after, nested=True)
        reports += self._read_unlisted(rows, reports)
        broker_positions = self.broker.positions()
        fills = self.broker.fill_activities(after=after)
        # The orders are read again AFTER the broker: every order we sent was committed before it was sent (the
        # golden rule), so this read holds every one of ours the broker just listed. Read only before, an entry
        # placed while this pass talked to the broker looked placed by hand: an orphan order, and its shares an
        # orphan position the doctor would adopt, i.e. protect a second time. Those late rows only say which broker
        # orders are ours (their status may be ahead of the broker's answer); their executions are not among
        # `keys`, so they count as shares still being recorded, consistent with `positions`.
        seen_first = {r.order_id for r in rows}
        reread = self.writer.reconciliation_orders(since).get()
        late = [r for r in reread if r.order_id not in seen_first]
        # A row the snapshot had `created` (no broker id) may have been sent and acknowledged since: that is an
        # order in flight, not an outcome to settle (settling it said a false OUTCOME_UNKNOWN WARNING).
        unsent_first = {r.order_id for r in rows if r.alpaca_order_id is None}
        acknowledged = frozenset(r.order_id for r in reread if r.order_id in unsent_first and r.alpaca_order_id)
        recorded_since = frozenset(self.writer.execution_keys([r.order_id for r in rows]).get()) - keys
        views = once_per_order(order_views(reports))
        flat = {item.broker_id: item for item, _ in views}
        cum = _cumulative(fills)
        local = LocalView(
            orders=tuple(_local_order(r) for r in rows),
            positions=tuple(LocalPosition(p.position_id, p.symbol, p.side, p.quantity) for p in positions),
            closed_holding=self._closed_holding(positions, broker_positions, now),
            execution_keys=keys, placed_during_pass=tuple(_local_order(r) for r in late),
            recorded_since=recorded_since, acknowledged_during_pass=acknowledged, instance_id=self._instance_id(),
        )
        broker = BrokerView(
            orders=tuple(view for _, view in views),
            positions=tuple(position_view(p) for p in broker_positions),
            fills=tuple(BrokerFill(f.broker_order_id, cum[f.execution_id], f.qty, f.price, f.at) for f in fills),
        )
        gathered = _Pass(pass_id, after, {r.order_id: r for r in (*rows, *late)}, flat, fills,
                         {p.symbol: p for p in broker_positions}, cum)
        return gathered, local, broker

    def _read_unlisted(self, rows: list[Any], reports: list[OrderReport]) -> list[OrderReport]:
        """Working rows of ours with a broker id that the listing left out, read by id. A nested listing shows an
        OCO's legs under their parent only, and a leg replaced at the broker (a stop moved by hand) is its parent's
        leg no more: unread, it stayed working in the database for every pass, ORDER_NOT_AT_BROKER, while the orders
        that replaced it sold the shares (chaos, seed 297). Read, its `replaced` status is healed and the router
        follows the replacement."""
        listed = {item.broker_id for item, _ in order_views(reports)}
        unlisted = [r for r in rows if r.alpaca_order_id and r.alpaca_order_id not in listed
                    and OrderStatus(r.status) not in ORDER_MACHINE.terminal]
        found: list[OrderReport] = []
        for row in unlisted[:UNLISTED_READS]:
            if row.alpaca_order_id in listed:
                continue  # the leg of an OCO read by id just before
            try:
                found.append(self.broker.get_order(row.alpaca_order_id))
                listed.update(item.broker_id for item, _ in order_views(found[-1:]))
            except NotFound:
                continue  # ORDER_NOT_AT_BROKER says so
            except BrokerError as exc:
                log.debug(f"doctor order {row.symbol}#o-{row.order_id} not listed, and its read failed ({exc})")
        return found

    def _closed_holding(self, positions: list[Any], broker_positions: list[Any],
                        now: datetime) -> tuple[LocalPosition, ...]:
        """Closed positions still holding shares by their recorded fills, for symbols the broker holds more or less
        of than our open positions do (none, or one opened after the closed one): the only place such shares can
        come from (LocalView.closed_holding)."""
        ours: dict[str, Decimal] = {}
        for p in positions:
            ours[p.symbol] = ours.get(p.symbol, Decimal(0)) + signed_qty(p.side, p.quantity)
        unexplained = {p.symbol for p in broker_positions
                       if p.qty and signed_qty(p.side, p.qty) != ours.get(p.symbol, Decimal(0))}
        if not unexplained:
            return ()
        since = now - timedelta(seconds=self.settings.lookback_s)
        return tuple(LocalPosition(p.position_id, p.symbol, p.side, p.quantity)
                     for p in self.writer.closed_positions_holding_shares(sorted(unexplained), since).get())

    # --- healing ----------------------------------------------------------------------------------------------

    def _heal(self, finding: Finding, got: _Pass, batch: tuple[list[OrderReport], list[FillReport]]) -> str:
        try:
            if finding.policy is Policy.ALERT:
                return "alerted"
            if finding.policy is Policy.HALT:
                self._halt(finding.reason or f"{finding.type} {finding.subject}", finding.broker_ids)
                return "halted"
            if finding.type is _T.ORPHAN_POSITION and finding.position_id is not None:
                return self._rebuild_to_sell(finding)
            if finding.policy is Policy.ADOPT and finding.type is _T.ORPHAN_POSITION:
                return "healed" if self._adopt(finding, got) is not None else "halted"
            if finding.policy is Policy.FLATTEN:
                return self._flatten(finding, got)
            if finding.policy is Policy.HEAL:
                return self._repair(finding, got, batch)
            return "alerted"  # a policy that does not apply to this finding type: say so, do nothing
        except PositionBusy as busy:
            log.warning(f"doctor {finding.type} {finding.subject} left for the next pass: {busy}")
            return f"failed: {busy}"
        except Exception as exc:  # noqa: BLE001 - one failed heal must not stop the pass; it is recorded
            log.error(f"doctor could not heal {finding.type} {finding.subject}: {type(exc).__name__}: {exc}")
            return f"failed: {exc}"

    def _repair(self, finding: Finding, got: _Pass, batch: tuple[list[OrderReport], list[FillReport]]) -> str:
        kind = finding.type
        if kind is _T.ORDER_STATUS_MISMATCH:
            batch[0].extend(got.reports[i] for i in finding.broker_ids)
        elif kind is _T.MISSING_FILL:
            (broker_id,) = finding.broker_ids
            known = {f.execution_id for f in batch[1]}
            batch[1].extend(f for f in got.fills if f.broker_order_id == broker_id and f.execution_id not in known)
        elif kind is _T.OUTCOME_UNKNOWN:
            self._settle(finding, got)
        elif kind is _T.MISSING_PROTECTION:
            self._resend_lost(finding, got)
            ref = self._position_ref(finding)
            if ref is not None:
                tell_if_alive(ref, m.CheckProtection())
        elif kind in (_T.PHANTOM_POSITION, _T.POSITION_QTY_MISMATCH):
            self._attach_hand_exits(finding, got, batch)
        elif kind is _T.STUCK_CREATED:
            return self._retire_unsent(finding)
        else:
            return "alerted"
        return "healed"

    def _resend_lost(self, finding: Finding, got: _Pass) -> None:
        """This position's stops and exits whose submit ended with its outcome unknown (5xx, hangs or a dropped
        connection, after the router's own resends, router.unknown_resends; one only ever refused before the broker
        acted, 429s, the router keeps sending itself) stay `created`, and the position actor counts them as working:
        it neither
        re-protects the shares nor stops waiting for its exit, while the broker holds them with no stop. Each such
        order, unknown for stuck_after_s, is looked up by its client_order_id (an OCO travels as its take-profit):
        there, the next pass settles it; absent, the router sends it again with that same id, so a first attempt
        landing late is refused as a duplicate instead of doubling the stop or the exit."""
        now = self.clock.now()
        lost = [o for o in got.local.values() if o.position_id == finding.position_id and o.outcome_unknown
                and o.status == OrderStatus.CREATED and o.alpaca_order_id is None
                and o.role in ("take_profit", "stop_loss", "flatten", "exit")
                and (now - o.updated_at).total_seconds() >= self.settings.stuck_after_s]
        asked = {sent.order_id: sent for sent in (self._sent_as(row, got.local.get) for row in lost)}
        resend = []
        for row in asked.values():
            if self._at_broker_after_all(f"{finding.subject}: {row.symbol}#o-{row.order_id}", row):
                continue
            resend.append(row.order_id)
            log.warning(f"doctor {finding.subject}: {row.symbol}#o-{row.order_id} never reached the broker (its "
                        f"submit's outcome was unknown; no order has client_order_id {row.client_order_id}): sending "
                        "it again with that id")
        if resend:
            self.router.tell(m.ResendUnsent(order_ids=tuple(resend),
                                            reason="never reached the broker (outcome unknown, not found by its "
                                                   "client_order_id)"))

    @staticmethod
    def _sent_as(row: Any, get_row: Callable[[int], Any]) -> Any:
        """The row whose client_order_id the broker knows the order by: an OCO travels as its take-profit, its
        stop-loss a leg Alpaca names itself."""
        if row.role != "stop_loss":
            return row
        take_profit = get_row(oco_take_profit_id(row.order_id))
        return take_profit if take_profit is not None and take_profit.role == "take_profit" else row

    def _at_broker_after_all(self, subject: str, row: Any) -> bool:
        """Asks the broker for the row by its client_order_id; there after all, the next pass settles it."""
        if self.broker.get_order_by_client_id(row.client_order_id) is None:
            return False
        log.warning(f"doctor {subject} is at the broker after all ({row.client_order_id}); left for the next pass "
                    "to settle")
        return True

    def _retire_unsent(self, finding: Finding) -> str:
        """A row created but never sent, whose position has closed: no actor will send it (a closed position keeps
        none, and a restart rebuilds only live ones), and sending it now would trade shares nobody holds. If the
        broker has no order with its client_order_id, the router retires it as cancelled. A row of a live position
        is only reported: its actor resends it with the same client_order_id at the next restart."""
        row = self.writer.get_order(finding.order_id).get()
        position = self.writer.get_position(row.position_id).get() if row and row.position_id else None
        # An entry of a position still pending (no positions row until a fill) whose submit ended with its outcome
        # unknown, or that a restart or a wait after refusals found too old to send (entry_resend_max_age_s): sent
        # later it would buy late, maybe after the entry window or an emergency stop; retired instead.
        lost_entry = row is not None and row.role == "entry" and row.position_id is None
        if row is None or (not lost_entry and (position is None or position.status != "closed")):
            log.info(f"doctor {finding.subject} stays created: its position is not closed (its submit is in flight, "
                     "a hung call waiting out its timeout, or waits to go again after the broker refused it; else a "
                     "restart resends it)")
            return "alerted"
        if self._at_broker_after_all(finding.subject, self._sent_as(row, lambda i: self.writer.get_order(i).get())):
            return "alerted"
        reason = (f"never sent: position {row.symbol}#p-{row.position_id} closed first" if not lost_entry
                  else "never reached the broker (outcome unknown, not found by its client_order_id)"
                  if row.outcome_unknown else "never sent: too late to send now (not found by its client_order_id)")
        self.router.tell(m.RetireUnsent(order_ids=(row.order_id,), reason=reason))
        return "healed"

    def _settle(self, finding: Finding, got: _Pass) -> None:
        report = got.reports[finding.broker_ids[0]]
        row = got.local[finding.order_id]
        ids = [row.order_id]
        sibling = got.local.get(oco_stop_leg_id(row.order_id))
        # An OCO is submitted as its take-profit with the stop-loss as its leg.
        if report.legs and row.role == "take_profit" and sibling is not None and sibling.role == "stop_loss":
            ids.append(sibling.order_id)
        self.router.tell(m.SubmitResult(order_ids=tuple(ids), report=report))

    def _attach_hand_exits(self, finding: Finding, got: _Pass, batch: tuple[list[OrderReport], list[FillReport]]) -> None:
        """A position reduced or closed by hand: write the hand orders as exits of the position and let the router
        apply their real fills, so the position actor closes it at the broker's prices."""
        ref = self._position_ref(finding)
        cycle_id = self.writer.get_position(finding.position_id).get().cycle_id
        for broker_id in finding.broker_ids:
            report = got.reports[broker_id]
            row = self.writer.adopt_order(BrokerOrderRow(
                cycle_id=cycle_id, symbol=report.symbol, role="exit", side=report.side, order_type=_order_type(report),
                quantity=report.qty or report.filled_qty, alpaca_order_id=broker_id,
                client_order_id=report.client_order_id, position_id=finding.position_id,
            )).get()
            if ref is not None:
                self.router.tell(m.Register(owner=ref, order_ids=(row.order_id,)))
            batch[0].append(report)
            batch[1].extend(f for f in got.fills if f.broker_order_id == broker_id)
            log.info(f"doctor attached hand order {report.symbol}#{broker_id[:8]} as exit {report.symbol}#o-{row.order_id}")

    def _adopt(self, finding: Finding, got: _Pass) -> Any:
        held = got.positions[finding.symbol]
        side = "buy" if held.side == "long" else "sell"
        hand = [got.reports[i] for i in finding.broker_ids]
        fills = [f for f in got.fills if f.broker_order_id in finding.broker_ids]
        if not fills or sum(f.qty if f.side == side else -f.qty for f in fills) != held.qty:
            # No fill in the window explains the holding (opened before it, or elsewhere). Writing the broker's
            # average price as a fill would invent an execution the broker never reported: halt and say so.
            self._halt(f"{held.symbol}: broker holds {held.qty} that no reported fill explains; not adopted "
                       f"(flatten it by hand, or restart once its fills are reported)")
            return None
        if any(f.side != side for f in fills):
            # Bought and partly sold by hand: the position would be rebuilt from the buys alone (its executions), for
            # more shares than are held, and its stop refused for them (a review: adopted 30, rebuilt 50, no stop,
            # then a halt over "database 50, broker 30" every pass). Not adopted: said, once a pass, as a halt.
            self._halt(f"{held.symbol}: broker holds {held.qty} bought and sold by hand ({len(hand)} orders); not "
                       "adopted, as one position cannot hold both sides' fills. Entries stay halted while the broker "
                       "holds them: flatten them by hand (a stop placed by hand protects them, but does not lift the "
                       "halt)")
            return None
        executions = [AdoptedFill(execution_key(f.broker_order_id, got.cum[f.execution_id]), f.broker_order_id,
                                  f.qty, f.price, f.at) for f in fills if f.side == side]
        mark = held.current_price or held.avg_entry_price
        pct, target_pct = self.settings.adopt_stop_pct, self.settings.adopt_target_pct
        stop, target = ((mark * (1 - pct), mark * (1 + target_pct)) if side == "buy"
                        else (mark * (1 + pct), mark * (1 - target_pct)))
        single = hand[0] if len(hand) == 1 else None
        # The day its shares were bought (exchange time), a trading day as fills are: not the day the doctor found
        # them. A review found a Saturday's adoption making a trading day of the Saturday, completed "late" on Monday
        # with a WARNING and a report of its own; and shares bought on Friday, adopted before Monday's first tick, kept
        # all Monday as Monday's where shares carried from an earlier day are sold at the open.
        bought_on = max(f.at for f in fills if f.side == side).astimezone(EXCHANGE_TZ).date()
        cycle_id = self.writer.get_or_create_cycle(bought_on).get().cycle_id
        entry, position = self.writer.adopt_position(BrokerOrderRow(
            cycle_id=cycle_id, symbol=held.symbol, role=ADOPTED_ENTRY_ROLE, side=side, order_type="market",
            quantity=held.qty, alpaca_order_id=single.broker_id if single else None,
            client_order_id=single.client_order_id if single else f"adopt-{held.symbol}-{got.pass_id}",
            status="filled", filled_qty=held.qty, filled_avg_price=held.avg_entry_price,
            planned_stop_loss=stop.quantize(CENT), planned_take_profit=target.quantize(CENT),
        ), executions).get()
        log.warning(f"doctor adopted {held.symbol} {held.side} {held.qty} as {held.symbol}#p-{position.position_id} "
                    f"(entry o-{entry.order_id}, stop {stop.quantize(CENT)}); its actor protects it")
        return self.supervisor.restore(entry.order_id).get()

    def _flatten(self, finding: Finding, got: _Pass) -> str:
        ref = self._adopt(finding, got) if finding.type is _T.ORPHAN_POSITION else self._position_ref(finding)
        if ref is None:
            return "failed: no position actor to flatten"
        if not tell_if_alive(ref, m.Flatten(reason=f"doctor: {finding.type} {finding.subject}")):
            return "failed: the position actor stopped (its position is done)"
        return "healed"

    def _rebuild_to_sell(self, finding: Finding) -> str:
        """Entry shares of a closed position recorded after it closed, never sold: its actor, rebuilt, sells them once
        the broker says it holds them (PositionActor._sell_late_entry_shares). One already live is at it (its broker
        read, its exit): reported, not rebuilt. Rebuilt LATE_SHARE_REBUILDS times and still there, they halt."""
        assert finding.position_id is not None
        if self._live_position(finding) is not None:
            return "alerted"
        count = self._late_share_rebuilds.get(finding.position_id, 0) + 1
        self._late_share_rebuilds[finding.position_id] = count
        if count > LATE_SHARE_REBUILDS:
            self._halt(f"{finding.reason}; rebuilt {LATE_SHARE_REBUILDS} times and still not sold: check "
                       f"{finding.symbol} at the broker")
            return "halted"
        restored = self._position_ref(finding)
        return "healed" if restored is not None else "failed: the position could not be rebuilt"

    def _halt(self, reason: str, broker_ids: tuple[str, ...] = ()) -> None:
        if not self.halted:
            log.critical(f"doctor HALTS new entries: {reason}")
        self.halted, self.halt_reason = True, self.halt_reason or reason
        self._halts_this_pass.append((reason, broker_ids))

    def _halts_from_before(self) -> None:
        """At the first pass of this process: the orders behind a halt of an earlier run (recorded with their
        findings) are read by id, and one still working halts again. A pass lists orders from a window (24 h): after
        a restart another daemon's older order was not seen at all, and entries went on beside it (a review)."""
        self._before_restart = False
        assert self._last_pass_at is not None  # set as the pass began
        earlier = self.writer.orders_behind_halts_since(self._last_pass_at - HALTS_REMEMBERED).get()
        for broker_id, reason in earlier.items():
            if broker_id in self._halting_orders:
                continue
            try:
                report = self.broker.get_order(broker_id)
            except NotFound:
                continue
            except BrokerError as exc:  # unknown is not gone: halted until a pass can read it
                report = None
                log.warning(f"doctor order {broker_id[:8]} behind a halt before the restart could not be read ({exc})")
            if report is None or _still_working(report):
                self._halt(f"{reason} (found again from before the restart)", (broker_id,))

    def _keep_or_lift_halt(self, number: int) -> None:
        """After a pass: a halt stands while its cause does. Each pass finds a cause again while it lasts, and the
        reason said is this pass's (the first one's was kept after it had gone, a review). An order that halted is
        also read by its id before the halt lifts: one older than the pass's window of orders (another daemon's
        good-till-cancelled order) is not listed again, and was taken for gone (a review)."""
        if self._before_restart:
            self._halts_from_before()
        if self._halts_this_pass:
            self.halt_reason = self._halts_this_pass[0][0]
            # Added to, not replaced: an old order found no more by the passes must not be forgotten because another
            # cause halted meanwhile (a review); each leaves the set once read as ended.
            self._halting_orders |= {i for _, ids in self._halts_this_pass for i in ids}
            return
        if not self.halted:
            return
        for broker_id in sorted(self._halting_orders):
            try:
                report = self.broker.get_order(broker_id)
            except NotFound:
                self._halting_orders.discard(broker_id)  # not at the broker at all: not a cause
                continue
            except BrokerError as exc:
                log.debug(f"doctor halt kept: order {broker_id[:8]} could not be read ({exc})")
                return
            if _still_working(report):
                return  # still there: the halt stands, with its reason
            self._halting_orders.discard(broker_id)
        self.resume(f"pass #{number} no longer finds what halted them")

    def _position_ref(self, finding: Finding) -> Any:
        """The live actor of the finding's position, rebuilt from the database when it has none."""
        live = self._live_position(finding)
        if live is not None:
            return live[0]
        entry = next((o for o in self.writer.orders_for_position(finding.position_id).get() if o.role == "entry"), None)
        return self.supervisor.restore(entry.order_id).get() if entry is not None else None

    def _live_position(self, finding: Finding) -> tuple[Any, dict[str, Any]] | None:
        """The finding's position actor, if one is live, and its state.

        Raises PositionBusy when an actor did not answer and none that did is the finding's: taking that for "no live
        actor" would rebuild the position beside its own actor, two actors placing stops and exits for one position."""
        label = f"{finding.symbol}#p-{finding.position_id}"
        busy = 0
        for ref, state in Answers(POSITION_ANSWER_S).states(self.supervisor.live_refs().get()):
            if state is BUSY:
                busy += 1
            elif state["position"] == label:
                return ref, state
        if busy:
            raise PositionBusy(f"{busy} position actor(s) did not answer within {POSITION_ANSWER_S:g} s, and {label}'s "
                               "may be one of them: not rebuilt beside it")
        return None

    def _flattening(self, finding: Finding, now: datetime) -> str | None:
        """Why the finding's position is flattening, if it is and began less than stuck_after_s ago.

        A flattening position cancels its OCO first and sends its market exit only once the broker confirms
        (sent beside the cancels, a stop already through could fill as well: a doubled exit). In between the broker
        holds the shares with no stop, and the actor refuses to re-protect shares it is selling: a pass meeting that
        moment has nothing to heal. One stuck past stuck_after_s is reported as before.
        """
        try:
            live = self._live_position(finding) if finding.type is _T.MISSING_PROTECTION else None
        except PositionBusy:
            return None  # not known to be flattening: the finding stands, and its heal says why it waits
        if live is None or not live[1].get("flattening"):
            return None
        since = datetime.fromisoformat(live[1]["flattening_since"])
        return live[1]["flattening"] if (now - since).total_seconds() < self.settings.stuck_after_s else None

    # --- marks ------------------------------------------------------------------------------------------------

    def _mark_to_market(self, local: LocalView) -> None:
        symbols = sorted({p.symbol for p in local.positions})
        if not symbols:
            return
        try:
            trades = self.broker.latest_trades(symbols)
        except BrokerError as exc:
            log.warning(f"doctor marks not updated: {exc}")
            return
        for row in self.writer.open_positions_for_reconciliation().get():
            tick = trades.get(row.symbol)
            if tick is None or row.entry_price is None:
                continue
            held = Position(row.symbol, PositionSide(row.side), PositionStatus.OPEN, row.quantity, row.entry_price,
                            entry_filled_qty=row.quantity)
            self.writer.mark_open_position(row.position_id, tick.price, held.unrealized_pnl(tick.price)).get()


def _local_order(row: Any) -> LocalOrder:
    return LocalOrder(row.order_id, row.client_order_id, row.alpaca_order_id, row.symbol, row.role, row.side,
                      row.quantity, OrderStatus(row.status), row.filled_qty, row.position_id, row.created_at,
                      row.updated_at, row.outcome_unknown)


def _still_working(report: OrderReport) -> bool:
    """Working as reconcile has it: the order or one of its legs (a filled entry's bracket stop still works)."""
    return report.status in WORKING_BROKER or any(leg.status in WORKING_BROKER for leg in report.legs)


def _record(finding: Finding, at: datetime, pass_id: str, outcome: str) -> NewFinding:
    details: dict[str, Any] = {"reason": finding.reason} if finding.reason else {}
    if outcome == "halted" and finding.broker_ids:  # read again after a restart (DoctorActor._halts_from_before)
        details["broker_ids"] = list(finding.broker_ids)
    return NewFinding(found_at=at, pass_id=pass_id, type=str(finding.type), severity=str(finding.severity),
                      subject=finding.subject, db_value=finding.db_value, broker_value=finding.broker_value,
                      action=finding.action, outcome=outcome, details=details or None)


def _cumulative(fills: list[FillReport]) -> dict[str, Decimal]:
    """Cumulative qty after each execution: the broker's when it says, else summed per order in time order."""
    running: dict[str, Decimal] = {}
    cum: dict[str, Decimal] = {}
    for fill in sorted(fills, key=lambda f: (f.at, f.cum_qty or 0)):
        total = fill.cum_qty if fill.cum_qty is not None else running.get(fill.broker_order_id, Decimal(0)) + fill.qty
        running[fill.broker_order_id] = total
        cum[fill.execution_id] = total
    return cum


def _order_type(report: OrderReport) -> str:
    return report.type if report.type in ("market", "limit", "stop", "stop_limit") else "market"

