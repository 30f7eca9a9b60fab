"""The order router: order-first persistence, submission through broker workers, the trade stream, fill routing.

Invariants it keeps:
- No broker call for an order that is not committed: entry and flatten rows are created here, OCO rows by the
  position actor in the commit of the fill they protect; either way a worker gets a row only once it is on disk.
- It is the only actor that moves an order's status, always along the order machine (catching up through
  intermediate states); a stale report is ignored, a conflicting one is logged for the doctor.
- Every execution is recorded once. Its key is `<broker order id>:<cumulative filled qty after it>`: the stream's
  execution_id and a FILL activity's id are different identifiers at Alpaca, but both sources carry the order and
  its cumulative quantity, so the same execution learned twice (duplicate event, stream + REST catch-up) has one key.
- An update for an order it cannot place is recorded (trade_updates) and kept until its order is known.
- One commit per step (the write path's cost is per transaction, not per row): a stream update's trade_updates
  row, its execution and the order's new status go in one transaction; an acknowledgement's broker id and status,
  for both legs of an OCO, in one; updates and submit results already waiting in the mailbox share that commit.
  Decisions are made first, then written, and only then logged and announced to the owner, so no log line or
  message describes a state that is not committed.
- A submit response (or a REST report) saying more shares filled than the executions we hold usually means the
  stream's fill event is still in flight: the router waits `missing_execution_grace_s` of wall time before asking
  the broker for the executions over REST.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, NamedTuple

import pykka
from loguru import logger

from actors import messages as m
from actors.inbox import PeekableInbox
from actors.refs import Delayed, tell_if_alive, tell_later
from catalyst.router_settings import RouterSettings
from actors.broker_worker import (BrokerPool, Cancel, CatchUp, ReadFirstOrder, ReadPosition, ReadReplacement, SubmitOco,
                                  SubmitOrder, Verify, submit_order_ids)
from catalyst.broker.calls import said_through_an_outage
from catalyst.broker.reports import FillReport, OrderReport, TradeUpdateReport
from catalyst.domain.cycle import EXCHANGE_TZ, exchange_time
from catalyst.domain.errors import UnknownBrokerStatus
from catalyst.domain.orders import (OPEN_ORDER_STATUSES, CatchUpKind, OrderStatus, oco_stop_leg_id,
                                    oco_take_profit_id, plan_catch_up, status_from_broker)
from catalyst.domain.positions import entry_side
from catalyst.domain.reconcile import catalyst_instance, execution_cum, execution_key
from catalyst.store.batch import StoreCall, WriteGroup, call, commit_together
from catalyst.store.order_ops import Replacement
from catalyst.store.records import OrderProgress

log = logger.bind(actor="router")
MAX_UNMATCHED = 10_000
CANCEL_IN_FLIGHT_S = 15.0  # past this a cancel with no answer (a worker gone) may be sent again
GAP_LOOKS_MAX = 6  # catch-ups for an order's pieces found missing below a recorded one, then the doctor's
TOGETHER = (m.TradeUpdateReceived, m.SubmitResult)  # decided one by one, committed together when waiting together
MAX_TOGETHER = 128  # bounds one commit's size and the wait of the first update in it
ROUTINE_EVENTS = frozenset({"new", "pending_new", "accepted"})  # acknowledgements only: no shares, no end
ROUTINE_QUIET_S = 0.005  # idle this long (and no protection in flight): a burst of fills is over, apply them
OWNER_ANSWER_S = 2.0  # a position actor plans an entry fill's writes in well under a millisecond
MARKET_FILL_CHECK_MAX_S = 60.0  # the last REST look at an unfilled market order; the doctor's passes after that
STILL_WORKING = frozenset({OrderStatus.SUBMITTED, OrderStatus.ACCEPTED, OrderStatus.PARTIAL_FILL})
REFUSED_BACKOFF_MAX_S = 15.0  # wall seconds between sends of a submit the broker keeps refusing (unless it names a
# later reset)
REFUSED_RESET_MAX_S = 60.0  # Alpaca's budget is per minute: a reset named further off is waited for a minute only
STALE_BOOK_UNSENT = "not sent: decided on a stale book by a rebuilt position actor"
# Wall seconds between reads of an order that replaced one of ours, while the broker fails them (its adapter has
# retried each already); the last is repeated for as long as they fail. Its position hears nothing meanwhile, so the
# replaced leg still counts as working: no OCO and no market exit for its shares, which the new order may hold or
# have sold (either would sell them twice). Only the broker's answer that there is no such order ends the wait.
REPLACEMENT_READ_RETRY_S = (1.0, 2.0, 4.0, 8.0, 15.0, 30.0)
# A fill of an order no catalyst daemon placed: told again to a position actor rebuilt within this many wall seconds of
# hearing of it, and taken from a catch-up's fills when within this many exchange seconds of now (_recent_outside).
FILLED_OUTSIDE_RETOLD_S = 60.0
FILLED_OUTSIDE_RECENT_S = 60.0
# An order Catalyst did not place ended with these events: the shares it held are free (a replaced one's replacement
# may hold fewer). Its positions hear of it (OrderOutsideEnded).
ORDER_OUTSIDE_ENDED = frozenset({"canceled", "expired", "replaced"})


class WorkingOutside(NamedTuple):
    """An order Catalyst did not place, still working: the shares it holds on its side are not free for a stop."""

    symbol: str
    side: str
    qty: Decimal  # still to fill


def outside_holds(order: OrderReport) -> Decimal | None:
    """The shares an order Catalyst did not place holds now, by its report: what it has still to fill while it works;
    0 once it holds none (filled, ended, or an OCO's stop leg `held` while its take-profit, counted, holds the same
    shares); None for a status the router does not know."""
    try:
        status = status_from_broker(order.status, order.filled_qty, order.qty or order.filled_qty)
    except UnknownBrokerStatus:
        return None
    if status not in OPEN_ORDER_STATUSES or order.status == "held":
        return Decimal(0)
    return max((order.qty or Decimal(0)) - order.filled_qty, Decimal(0))


def outside_fill_key(broker_id: str, cum_qty: Decimal | None, execution_id: str | None) -> str | None:
    """The key a fill of an order Catalyst did not place is told by (m.FilledOutside.execution_id): its order and the
    shares filled with it, as the router keys its own executions (execution_key), the same whether the stream's event
    or a catch-up's FILL activity brought it (their ids differ: the activity's is `<time>::<id>`). Before, the
    catch-up's came with none, and a sale the stream had told was counted twice (40 sold by hand said as 80). The
    source's own id where the cumulative quantity is not known."""
    return execution_key(broker_id, cum_qty) if cum_qty else execution_id


class ReadReplacementAgain(m.Message):
    """The wait after a failed read of an order that replaced one of ours is over (REPLACEMENT_READ_RETRY_S)."""

    broker_id: str


class ApplyRoutineUpdates(m.Message):
    """The set-aside acknowledgement-only updates have waited long enough (see OrderRouter._park_routine)."""


class CheckMarketFill(m.Message):
    """A market order acknowledged `check_s` ago: ask the broker for it if it has still not filled."""

    order_id: int
    check_s: float


class ResendRefused(m.Message):
    """The wait after a submit the broker refused before acting is over: send it again (same client_order_id)."""

    order_id: int


@dataclass
class _Refused:
    """A submit refused before the broker acted, waiting to be sent again."""

    timer: Delayed
    tries: int  # sends that went unanswered so far
    never_placed: bool  # no submit of the row may have reached the broker: a cancel can simply withdraw it
    simple: bool  # one row, not an OCO's two (withdrawn together, _withdraw_oco)
    # Of those tries, the ones whose outcome was unknown with the look-up failing too (the broker answered nothing):
    # not counted against router.unknown_resends, which bounds sends the broker answered without settling them
    unanswered: int = 0


class PairLegs(m.Message):
    """Time to read again the take-profits of OCOs whose stop leg still has no broker id (_pair_legs_later)."""


class CatchUpAgain(m.Message):
    """The wait after a catch-up the broker did not answer is over (_catch_up_later)."""

    since: datetime


# An OCO acknowledged without its stop leg: its take-profit is read again this often, this many times, until the leg
# is paired; then the doctor's pass pairs it (catalyst.domain.reconcile), and says so.
PAIR_LEGS_EVERY_S, PAIR_LEGS_TRIES = 5.0, 60


class CheckExecutions(m.Message):
    """The grace period is over: fetch executions over REST if the order still has fewer than the broker said."""

    order_id: int


class CheckGap(m.Message):
    """Look again at an order whose recorded pieces still leave shares below one of them without an execution."""

    order_id: int


@dataclass
class Tracked:
    order_id: int
    client_order_id: str
    role: str
    symbol: str
    side: str
    qty: Decimal
    status: OrderStatus
    filled_qty: Decimal = Decimal(0)  # what its recorded executions add up to
    reported_filled_qty: Decimal = Decimal(0)  # the broker's cumulative filled quantity, often ahead of executions
    broker_id: str | None = None
    owner: Any = None
    cancel_reason: str | None = None
    pending_cancel: bool = False
    resent: bool = False
    keys: set[str] = field(default_factory=set)
    # Created by this router, so every execution of it recorded in the database went through `keys`: an
    # execution not in `keys` is certainly new (the fast path of an entry fill relies on it).
    keys_complete: bool = False
    market: bool = False  # a market order: it fills at once in the session, so a long silence is suspicious
    # Every share up to `recorded_to` is in recorded executions (a row read back has its executions read, _track); a
    # piece recorded past a gap waits in `ahead` (shares before it → cumulative after it) until the gap is filled.
    # A gap is an earlier piece's event lost while a later one arrived (a review: the lost piece waited for the
    # doctor's pass, its shares without a stop or its exit's position left open meanwhile).
    recorded_to: Decimal = Decimal(0)
    ahead: dict[Decimal, Decimal] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.symbol}#o-{self.order_id}"

    def piece_recorded(self, cum: Decimal, qty: Decimal) -> None:
        """An execution of `qty` leaving `cum` filled is in the database (new, or known already)."""
        before = cum - qty
        if cum <= self.recorded_to:
            return
        if before <= self.recorded_to:
            self.recorded_to = cum
        else:
            self.ahead[before] = max(cum, self.ahead.get(before, cum))
        while self.ahead and (lowest := min(self.ahead)) <= self.recorded_to:
            self.recorded_to = max(self.recorded_to, self.ahead.pop(lowest))

    @property
    def pieces_missing(self) -> bool:
        """Shares before a recorded piece that no recorded piece accounts for."""
        return bool(self.ahead)


class TradeStreamState(NamedTuple):
    logged_in: bool
    why: str


@dataclass(eq=False)
class _AnnouncedPath:
    """One order's moves planned in one write group, logged as ONE line once it commits."""

    group: WriteGroup
    tracked: Tracked
    path: list[OrderStatus]
    reason: str | None


def _tell(owner: Any, message: m.Message) -> bool:
    """Tell a position actor; one that has just stopped (closed, or crashed and being rebuilt) is not an error:
    its rebuilt successor reads the committed state from the database. False: it had stopped."""
    if not tell_if_alive(owner, message):
        log.info(f"router {type(message).__name__} for a stopped position actor: it is in the database")
        return False
    return True


def _is_fill(update: TradeUpdateReport) -> bool:
    return update.event in ("fill", "partial_fill")


def _fill_on_its_heels(tracked: Tracked, report: OrderReport) -> bool:
    """A market order acknowledged live with nothing filled yet: in the session its fill event is usually right
    behind the reply (Alpaca answers a market order `accepted` or `new`, then fills it). Awaited briefly, the two are
    committed together: the acknowledgement's own commit would otherwise run first, and the fill, whose protection
    waits on that fill's commit, would queue behind it."""
    if not tracked.market or tracked.filled_qty or report.filled_qty:
        return False
    try:
        reported = status_from_broker(report.status, report.filled_qty, report.qty or tracked.qty)
    except ValueError:
        return False  # logged where the report is applied
    return reported in (OrderStatus.SUBMITTED, OrderStatus.ACCEPTED)


def _what_changed(old: OrderReport, new: OrderReport) -> str:
    """A replace's changes for the log line: "stop 147.00 → 146.00", or the new order's terms if none shows."""
    changes = [f"{name} {before} → {after}" for name, before, after in (
        ("qty", old.qty, new.qty), ("stop", old.stop_price, new.stop_price), ("limit", old.limit_price, new.limit_price),
        ("tif", old.tif, new.tif)) if before != after]
    return ", ".join(changes) or f"{new.type} {new.side} {new.qty}"


def _yield_cpu() -> None:
    if hasattr(os, "sched_yield"):  # releases the GIL around the call
        os.sched_yield()


class OrderRouter(pykka.ThreadingActor):
    def __init__(self, writer: Any, protect: BrokerPool, general: BrokerPool, clock: Any,
                 settings: RouterSettings | None = None, supervisor: Any = None,
                 entries_closed: threading.Event | None = None) -> None:
        super().__init__()
        self.settings = settings or RouterSettings()
        self.entries_closed = entries_closed or threading.Event()  # the daemon stopping: no entry is sent
        # Cancels sent and not yet answered (order id -> when): asked again meanwhile, one would queue behind the first
        # at a broker that hangs, and hold up the workers' stop (a review).
        self._cancelling: dict[int, float] = {}
        self.supervisor = supervisor  # told of entry shares recorded after their position's actor stopped
        self._grace_timers: dict[int, tuple[Delayed, Decimal, datetime]] = {}
        # Order id -> (timer, catch-ups asked so far, the moment they read from) for pieces still missing after a
        # catch-up: a timer of its own, so a fill reported meanwhile still gets the grace period (a review).
        self._gap_looks: dict[int, tuple[Delayed, int, datetime]] = {}
        self._market_checks: dict[int, Delayed] = {}  # market orders acknowledged and not yet seen filled
        self._market_looks: set[int] = set()  # market orders that look has asked for, while they still work
        self.writer = writer
        self._protect = protect  # stops, OCOs, exits and cancels
        self._general = general  # entries, lookups and catch-up
        self.clock = clock
        self.by_order: dict[int, Tracked] = {}
        self.by_cid: dict[str, Tracked] = {}
        self.by_broker: dict[str, Tracked] = {}
        self.unmatched: dict[str, list[TradeUpdateReport]] = {}
        self._instance: str | None = None  # this database's id (client ids `cat-<id>-<n>`), read when first needed
        self._others_seen: set[str] = set()  # broker ids of another daemon's orders already named in the log
        # Per symbol, the last fill of an order no catalyst daemon placed and when it was heard of (time.monotonic()):
        # told again to a position actor rebuilt just after it (_on_Register).
        self._filled_outside: dict[str, tuple[float, m.FilledOutside]] = {}
        self.last_update_at: datetime | None = None
        self.stream_connections = 0
        self.stream_refusals = 0  # refused logins since the last connection: the first is news, the rest retries
        self.stream_refused: str | None = None  # why the latest login was refused, until the stream logs in
        self.catching_up = False  # our own CatchUp is with the broker worker, its result not back yet
        self._catch_up_after: tuple[datetime, str] | None = None  # one asked meanwhile: run once that result is in
        self._catch_up_failures = 0  # catch-ups in a row the broker did not answer
        self._catch_up_timer: tuple[Any, datetime] | None = None  # the next try after such a failure, and its since
        self._asked_owners: set[Any] = set()  # owners asked for an entry fill's writes, not yet told the outcome
        self._owner_groups: list[tuple[WriteGroup, Any]] = []  # their writes, for the message being planned
        self._routine: list[m.TradeUpdateReceived] = []  # acknowledgement-only updates set aside (_park_routine)
        self._routine_since = 0.0  # monotonic time the oldest of them was set aside
        self._routine_wake_at = 0.0  # monotonic time the pending look-again timer fires
        self._busy_at = 0.0  # monotonic time something other than a set-aside update was last handled
        self._acknowledging: tuple[WriteGroup, StoreCall] | None = None  # the acknowledgement being planned
        self._announcing: _AnnouncedPath | None = None  # the latest move's log line, still open to more steps
        # Order ids sent to a protection worker, their submit result not yet in, with when they were sent.
        self._protecting: dict[int, float] = {}
        # Order ids whose submit is in a pool's line or at a worker, its result not yet in: never aged out, so a row
        # being sent is never retired as "never sent" (_on_RetireUnsent).
        self._sending: set[int] = set()
        # Position actors told their book was stale (_rebuilt_from_a_stale_book): what they ask sent before they hear
        # it was decided on that book, and is not sent.
        self._stale_owners: set[str] = set()
        self._refused: dict[int, _Refused] = {}  # by the submit's first row (an OCO's take-profit)
        # OCOs (by take-profit id) acknowledged without their stop leg, and how many times read again since
        self._unpaired: dict[int, int] = {}
        self._pair_timer: Delayed | None = None
        # Orders of ours replaced at the broker, by their replacement's broker id: (the replaced order, its report),
        # while the replacement is being read (_follow_replacement); its events meanwhile wait in `unmatched`.
        self._replacing: dict[str, tuple[Tracked, OrderReport]] = {}
        self._not_following: set[str] = set()  # replacements whose read or row failed: left to the doctor
        self._replacement_reads: dict[str, int] = {}  # failed reads of each replacement being followed
        self._finding_first: set[int] = set()  # stop legs whose first order is being read back (_find_first_leg)
        # Broker ids of orders held unmatched as probably our OCO stop leg not named yet -> that leg's order id
        self._suspected_legs: dict[str, int] = {}
        # Orders no catalyst daemon placed (a trader's limit sell, another program on the key) still working, by broker
        # id, as their stream events and the catch-ups' lists tell them: its positions hear what each holds
        # (OrderOutsideWorking), so a refusal of an OCO for want of shares that they explain is capped at once
        # (PositionActor._cap_at_refusal). Those seen ended too, so that a list read before they ended does not bring
        # them back (an ordered set, oldest first).
        self._working_outside: dict[str, WorkingOutside] = {}
        self._outside_ended: dict[str, None] = {}
        # Whether a catch-up has listed every order working at the broker: asked of each until one has, the start's
        # (its list of the day's orders leaves out a trader's order placed on an earlier day, good till cancelled).
        self._working_listed = False

    def on_stop(self) -> None:
        if self._routine:  # recorded before the writer stops (it stops after the router)
            try:
                self._apply_routine()
            except Exception as exc:  # noqa: BLE001 - stopping must go on; the doctor re-reads these statuses
                log.warning(f"router could not record {len(self._routine)} acknowledgements while stopping: {exc}")
        for timer, _, _ in self._grace_timers.values():
            timer.cancel()
        self._grace_timers.clear()
        for timer, _, _ in self._gap_looks.values():
            timer.cancel()
        self._gap_looks.clear()
        if self._pair_timer is not None:
            self._pair_timer.cancel()
        if self._catch_up_timer is not None:
            self._catch_up_timer[0].cancel()
        for timer in self._market_checks.values():
            timer.cancel()
        self._market_checks.clear()
        for waiting in self._refused.values():  # still `created`: the next start sends them
            waiting.timer.cancel()
        if self._refused:
            # Named: a submit refused (a 429, a 5xx before the broker acted) as the daemon stopped was in no stop line
            # (a review: an OCO's retry cancelled here, its position's shares without a stop until the restart).
            labels = ", ".join(self.by_order[i].label if i in self.by_order else f"o-{i}" for i in self._refused)
            log.warning(f"router stopping with {len(self._refused)} submit(s) refused by the broker and waiting to be "
                        f"sent again ({labels}): their rows are kept, and the next start sends them")
        self._refused.clear()

    # --- messages --------------------------------------------------------------------------------------------

    @staticmethod
    def _create_actor_inbox() -> Any:
        return PeekableInbox()

    def on_receive(self, message: Any) -> Any:
        try:
            return self._receive(message)
        finally:
            self._apply_routine_when_due()

    def _receive(self, message: Any) -> Any:
        if isinstance(message, TOGETHER):
            batch = self._park_routine(self._with_awaited_fills([message, *self._waiting_updates()]))
            if batch:
                self._handle_together(batch)
            return None
        handler = getattr(self, f"_on_{type(message).__name__}", None)
        if handler is None:
            log.warning(f"router ignores unknown message {type(message).__name__}")
            return None
        if not isinstance(message, ApplyRoutineUpdates):
            self._busy_at = time.monotonic()
        try:
            return handler(message)
        except Exception as exc:
            # pykka stops an actor whose tell handler raises. One bad message must never stop the routing of
            # every other fill: log it on one line and carry on; the doctor reconciles whatever it left behind.
            log.error(f"router failed handling {type(message).__name__}: {type(exc).__name__}: {exc}")
            return None

    # --- routine updates wait while shares are being protected -------------------------------------------------

    def _park_routine(self, batch: list[m.Message]) -> list[m.Message]:
        """Set aside the acknowledgement-only updates (new, pending_new, accepted) of orders already tracked; the
        rest of the batch is handled now.

        Why: when a hundred entries fill in one minute, the OCO of each is acknowledged twice, by its submit reply and
        by a "new" event a moment before it, and recording and applying that event costs about a tenth of what
        protecting a position costs, on the same GIL. It carries no shares and ends nothing, so it waits until the
        burst is over (see _apply_routine_when_due) and the stops go out first. Such an update arriving late is
        harmless: the order machine treats a status behind the order's as stale. Updates of orders not tracked are
        never set aside (they may be how a lost submit reply's broker id is learned, and they are held as
        unmatched)."""
        if self.settings.routine_update_wait_s <= 0:
            return batch
        now: list[m.Message] = []
        for message in batch:
            if isinstance(message, m.TradeUpdateReceived) and self._is_routine(message.update):
                if not self._routine:
                    self._routine_since = time.monotonic()
                self._routine.append(m.TradeUpdateReceived(update=message.update, received_at=self.clock.now()))
            else:
                now.append(message)
        if now:
            self._busy_at = time.monotonic()
        return now

    def _is_routine(self, update: TradeUpdateReport) -> bool:
        if update.event not in ROUTINE_EVENTS or update.qty is not None:
            return False
        order = update.order
        return order.broker_id in self.by_broker or order.client_order_id in self.by_cid

    def _apply_routine_when_due(self) -> None:
        """The set-aside updates, once the burst is over: the mailbox empty, no protection or exit submit in flight
        and nothing else handled for ROUTINE_QUIET_S; or once the oldest has waited `routine_update_wait_s`. Until
        then a timer looks again every ROUTINE_QUIET_S (one at a time)."""
        if not self._routine:
            return
        now = time.monotonic()
        waiting = now - self._routine_since < self.settings.routine_update_wait_s
        busy = self._protection_in_flight(now) or not self.actor_inbox.empty() or now - self._busy_at < ROUTINE_QUIET_S
        if waiting and busy:
            if now >= self._routine_wake_at:
                self._routine_wake_at = now + ROUTINE_QUIET_S
                tell_later(self.actor_ref, ROUTINE_QUIET_S, ApplyRoutineUpdates())
            return
        self._apply_routine()

    def _protection_in_flight(self, now: float) -> bool:
        """A protection submit sent less than `routine_update_wait_s` ago whose result is not in. One whose result
        never comes (a worker that died with it; the doctor settles the row) stops counting then: otherwise every
        later acknowledgement would wait the full `routine_update_wait_s`, for the rest of the day."""
        oldest_counted = now - self.settings.routine_update_wait_s
        for order_id in [i for i, sent in self._protecting.items() if sent < oldest_counted]:
            del self._protecting[order_id]
        return bool(self._protecting)

    def _apply_routine(self) -> None:
        routine, self._routine = self._routine, []
        for start in range(0, len(routine), MAX_TOGETHER):
            self._handle_together(routine[start:start + MAX_TOGETHER])

    def _on_ApplyRoutineUpdates(self, _: ApplyRoutineUpdates) -> None:
        """The timer of _apply_routine_when_due: on_receive looks again once this returns."""

    def _waiting_updates(self) -> list[m.Message]:
        inbox = self.actor_inbox
        assert isinstance(inbox, PeekableInbox)
        waiting = inbox.take_waiting(lambda e: e.reply_to is None and isinstance(e.message, TOGETHER), MAX_TOGETHER - 1)
        return [envelope.message for envelope in waiting]

    def _with_awaited_fills(self, batch: list[m.Message]) -> list[m.Message]:
        """A submit result saying an order filled is nearly always a millisecond ahead of the fill's stream event
        (a marketable entry), and so is one acknowledging a market order (_fill_on_its_heels). Hold the batch up to
        `fill_event_wait_s` for those events, so both are decided and committed together instead of the fill
        queueing behind the result's own commit; no broker call waits on the result's commit. Whatever else arrives
        meanwhile joins the batch; anything that is not a trade update or submit result ends the wait."""
        awaited = self._fills_awaited(batch)
        deadline = time.monotonic() + self.settings.fill_event_wait_s
        inbox = self.actor_inbox
        assert isinstance(inbox, PeekableInbox)
        while awaited and len(batch) < MAX_TOGETHER:
            envelope = inbox.take_next(lambda e: e.reply_to is None and isinstance(e.message, TOGETHER),
                                       deadline - time.monotonic())
            if envelope is None:
                break
            batch.append(envelope.message)
            if isinstance(envelope.message, m.TradeUpdateReceived) and _is_fill(envelope.message.update):
                awaited.discard(envelope.message.update.order.broker_id)
        return batch

    def _fills_awaited(self, batch: list[m.Message]) -> set[str]:
        """Broker ids of orders a submit result in `batch` says filled beyond the executions held, with no fill
        event for them in `batch`."""
        awaited: set[str] = set()
        for message in batch:
            if isinstance(message, m.SubmitResult) and message.report is not None:
                for order_id, report in zip(message.order_ids, [message.report, *message.report.legs]):
                    tracked = self.by_order.get(order_id)
                    if tracked is not None and (report.filled_qty > tracked.filled_qty
                                                or _fill_on_its_heels(tracked, report)):
                        awaited.add(report.broker_id)
        for message in batch:
            if isinstance(message, m.TradeUpdateReceived) and _is_fill(message.update):
                awaited.discard(message.update.order.broker_id)
        return awaited

    def _handle_together(self, messages: list[m.Message]) -> None:
        """Trade updates and submit results that arrived together (100 entries filling in one minute): each is
        decided in turn, on the state the ones before it left, then all are committed in ONE transaction, then
        each is logged and announced on its own. One that fails is logged and skipped; the others go on."""
        planned: list[tuple[m.Message, WriteGroup]] = []
        fallbacks: dict[int, Any] = {}  # id(owner's group) → what to do if the owner's writes fail
        for message in messages:
            group = WriteGroup()
            self._owner_groups = []
            try:
                getattr(self, f"_plan_{type(message).__name__}")(message, group)
            except Exception as exc:
                log.error(f"router failed handling {type(message).__name__}: {type(exc).__name__}: {exc}")
                continue
            planned.append((message, group))
            for owner_group, fallback in self._owner_groups:
                planned.append((message, owner_group))
                fallbacks[id(owner_group)] = fallback
        try:
            errors = commit_together([group for _, group in planned], self.writer)
        except Exception as exc:  # the writer itself is gone: nothing was committed, nothing is announced
            log.error(f"router failed committing {len(planned)} updates: {type(exc).__name__}: {exc}")
            for fallback in fallbacks.values():
                fallback()
            return
        for (message, group), error in zip(planned, errors):
            if error is None:
                continue
            log.error(f"router failed handling {type(message).__name__}: {type(error).__name__}: {error}")
            if id(group) in fallbacks:
                fallbacks[id(group)]()

    def _on_PlaceEntry(self, msg: m.PlaceEntry) -> None:
        plan = msg.plan
        row = self.writer.create_order(
            cycle_id=plan.cycle_id, symbol=plan.symbol, role="entry", side=str(entry_side(plan.side)),
            order_type=plan.order_type, time_in_force="day", quantity=plan.qty, limit_price=plan.limit_price,
            planned_stop_loss=plan.stop_loss, planned_take_profit=plan.take_profit,
            planned_entry_price=plan.entry_price,
        ).get()
        tracked = self._track(row, msg.owner)
        tracked.keys_complete = True
        _tell(msg.owner, m.OrdersCreated(roles={"entry": row.order_id}))
        self._tell_working_outside(msg.owner, {plan.symbol})
        log.info(f"order {tracked.label} created entry {tracked.side} {plan.qty} {plan.order_type} cid={row.client_order_id}")
        if self.entries_closed.is_set():
            self._end_withdrawn([tracked], "the daemon is stopping")
            return
        self._to_general(SubmitOrder(row=row, reply_to=self.actor_ref))

    def _on_SubmitProtection(self, msg: m.SubmitProtection) -> None:
        if self._decided_on_a_stale_book(msg.owner, f"OCO o-{msg.take_profit.order_id}+o-{msg.stop_loss.order_id}"):
            group = WriteGroup()
            for row in (msg.take_profit, msg.stop_loss):  # never sent: cancelled, so no start sends them either
                self._move(self._track(row, msg.owner), OrderStatus.CANCELLED, broker_status=None, group=group,
                           reason=STALE_BOOK_UNSENT)
            group.commit(self.writer)
            return
        self._log_protection(*self._send_protection(msg.take_profit, msg.stop_loss, msg.owner))

    def _decided_on_a_stale_book(self, owner: Any, what: str) -> bool:
        """A rebuilt actor's order decided before it heard its book was stale: after a crash, the position's rows the
        book lacked (an exit the router created for the actor it replaced, say) would be doubled by it."""
        if owner is None or owner.actor_urn not in self._stale_owners:
            return False
        log.warning(f"router {what} not sent: asked by a position actor rebuilt from a stale book, which is being "
                    "rebuilt from the database")
        return True

    def _send_protection(self, take_profit: Any, stop_loss: Any, owner: Any) -> tuple[Tracked, Tracked, Any, Any]:
        tp, sl = self._track(take_profit, owner), self._track(stop_loss, owner)
        self._to_protection(SubmitOco(take_profit=take_profit, stop_loss=stop_loss, reply_to=self.actor_ref),
                            take_profit.order_id)
        return tp, sl, take_profit, stop_loss

    @staticmethod
    def _log_protection(tp: Tracked, sl: Tracked, take_profit: Any, stop_loss: Any) -> None:
        log.info(f"order {tp.label}+{sl.label} created OCO {take_profit.side} {take_profit.quantity} "
                 f"tp={take_profit.limit_price} sl={stop_loss.stop_price}")

    def _on_PlaceExit(self, msg: m.PlaceExit) -> None:
        if self._decided_on_a_stale_book(msg.owner, f"market exit of {msg.qty} {msg.symbol}"):
            return
        row = self.writer.create_order(
            cycle_id=msg.cycle_id, symbol=msg.symbol, role="flatten", side=str(msg.side), order_type="market",
            time_in_force="day", quantity=msg.qty, position_id=msg.position_id,
        ).get()
        tracked = self._track(row, msg.owner)
        _tell(msg.owner, m.OrdersCreated(roles={"flatten": row.order_id}))
        log.info(f"order {tracked.label} created flatten {msg.side} {msg.qty} market ({msg.reason})")
        self._to_protection(SubmitOrder(row=row, reply_to=self.actor_ref), row.order_id)

    def _on_Register(self, msg: m.Register) -> None:
        # Tracked already: routed to the actor this one replaces (a crash), or seen before it registered (a start).
        handed_over = any(order_id in self.by_order for order_id in msg.order_ids)
        if handed_over and self._rebuilt_from_a_stale_book(msg):
            return
        for order_id in msg.order_ids:
            tracked = self.by_order.get(order_id)
            if tracked is None:
                row = self.writer.get_order(order_id).get()
                if row is None:
                    log.error(f"router cannot register unknown order o-{order_id}")
                    continue
                tracked = self._track(row, msg.owner)
            tracked.owner = msg.owner
            self._replay_unmatched(tracked)
        for order_id in msg.order_ids:
            if order_id not in self._sending:  # a submit under way (sent for the actor this one replaces) answers
                self._send_if_never_acknowledged(self.by_order.get(order_id))
            tracked = self.by_order.get(order_id)
            if (tracked is not None and tracked.role == "take_profit" and tracked.broker_id
                    and self._leg_unpaired(order_id) and order_id not in self._unpaired):
                # Restored with its stop leg unpaired (killed before a read paired it): the start's catch-up lists
                # today's orders only, and this OCO (good till cancelled) may be an earlier day's.
                self._pair_legs(tracked)
        symbols = {t.symbol for i in msg.order_ids if (t := self.by_order.get(i)) is not None}
        self._tell_recent_fill_outside(msg.owner, symbols)
        self._tell_working_outside(msg.owner, symbols)
        if handed_over:
            told = self._tell_recorded_since_the_book(msg)
            self._tell_moved_since_the_book(msg, told)
        if msg.executions_missing_since is not None:
            # Rebuilt from rows that say more filled than the recorded executions: the catch-up on the stream's
            # connection covers today only, and a fill older than that would be waited for until a doctor pass.
            self._catch_up(msg.executions_missing_since,
                           why=f"executions missing at a rebuild: {msg.executions_missing}")

    def _rebuilt_from_a_stale_book(self, msg: m.Register) -> bool:
        """A position actor rebuilt after a crash whose book lacks rows of its position the database holds: the
        supervisor read it while this router's commit of the crashed actor's plan for an entry fill (the execution,
        the position row, its OCO rows) waited at the writer. Told the execution, the rebuilt actor would protect
        those shares a second time beside the OCO already sent (a review: 200 of 100 shares under stops). It is told
        to hand the position over to be rebuilt from the database as it is now; the orders stay with the actor it
        replaced until then (whatever reaches them meanwhile is read from the database by the next one).
        Only for a rebuild in place of a live owner: at a start the rows seen before registering have none."""
        replaced = [t for order_id in msg.order_ids if (t := self.by_order.get(order_id)) is not None
                    and t.owner is not None and t.owner.actor_urn != msg.owner.actor_urn]
        entry = next((t for t in replaced if t.role == "entry"), None)
        if entry is None:
            return False
        # Only rows this router tracks for the replaced actor: rows the rebuilt actor wrote itself since its book was
        # read (its restore protecting bare shares) are in the database too, and are not what its book missed.
        previous = {t.owner.actor_urn for t in replaced}
        book = self.writer.position_book(entry.order_id).get()
        missing = sorted(o.order_id for o in (book.orders if book is not None else ())
                         if o.order_id not in msg.order_ids and (t := self.by_order.get(o.order_id)) is not None
                         and t.owner is not None and t.owner.actor_urn in previous)
        if not missing:
            return False
        detail = f"{', '.join(f'o-{i}' for i in missing)} of its entry o-{entry.order_id} were committed"
        log.warning(f"router position of entry {entry.label} rebuilt from a book read before {detail}: told to be "
                    "rebuilt again")
        self._stale_owners.add(msg.owner.actor_urn)
        _tell(msg.owner, m.StaleBook(detail=detail))
        return True

    def _tell_recorded_since_the_book(self, msg: m.Register) -> set[int]:
        """Executions recorded after the new owner's book was read were told to the actor it replaces (or to none):
        the new one would never apply them, and would protect shares already sold or leave bought ones bare. The
        orders told of (each with its current status)."""
        known = set(msg.known_executions)
        if all(key in known for key in self.writer.execution_keys(msg.order_ids).get()):
            return set()
        missed = sorted(((fill, self.by_order[order_id]) for order_id in msg.order_ids if order_id in self.by_order
                         for fill in self.writer.fills_for_order(order_id).get() if fill.execution_id not in known),
                        key=lambda pair: (pair[0].occurred_at, pair[0].fill_id))
        for fill, tracked in missed:
            log.warning(f"order {tracked.label} execution {fill.execution_id} ({fill.qty} @ {fill.price}) was "
                        "recorded while its position was being rebuilt: told to the rebuilt actor")
            self._tell_owner(tracked, m.Execution(key=fill.execution_id, qty=fill.qty, price=fill.price,
                                                  at=fill.occurred_at))
        return {tracked.order_id for _, tracked in missed}

    def _tell_moved_since_the_book(self, msg: m.Register, told: set[int]) -> None:
        """A status the router moved an order to after the new owner's book was read, with no execution (a leg
        cancelled, an OCO rejected), went to the actor it replaces: the new one would count a cancelled stop as
        protection, and no later report of that same status would tell it."""
        for order_id, status in msg.book_statuses:
            tracked = self.by_order.get(order_id)
            if tracked is None or order_id in told or str(tracked.status) == status:
                continue
            log.warning(f"order {tracked.label} moved {status} → {tracked.status} while its position was being "
                        "rebuilt: told to the rebuilt actor")
            self._tell_owner(tracked, None, reason=self._cancel_reason(tracked)
                             if tracked.status is OrderStatus.CANCELLED else None)

    def _on_ResendUnsent(self, msg: m.ResendUnsent) -> None:
        for order_id in msg.order_ids:
            tracked = self.by_order.get(order_id)
            if tracked is None:
                row = self.writer.get_order(order_id).get()
                tracked = self._track(row, owner=None) if row is not None else None
            if tracked is None or order_id in self._sending:  # gone, or a submit of it is already under way
                continue
            self._stop_waiting(order_id)  # the router's own resend is not needed now
            tracked.resent = False  # its first submit ended (outcome unknown): this is the one resend
            self._send_if_never_acknowledged(tracked, why=msg.reason)

    def _send_if_never_acknowledged(self, tracked: Tracked | None,
                                    why: str = "created but never acknowledged before a restart",
                                    level: str = "WARNING") -> None:
        """A row still `created` after a restart was committed but its submission never acknowledged: the crash
        came between the two (or, `why` says, its submit ended with its outcome unknown and the broker does not have
        it). Send it now with the SAME client_order_id: if the first attempt did reach the broker, Alpaca refuses
        the duplicate and the worker's lookup returns the existing order, so nothing is doubled."""
        if tracked is None or tracked.status is not OrderStatus.CREATED or tracked.broker_id or tracked.resent:
            return
        if tracked.role == "stop_loss":
            return  # travels with its take-profit as one OCO
        row = self.writer.get_order(tracked.order_id).get()
        if tracked.role == "entry":
            age_s = (self.clock.now() - row.created_at).total_seconds()
            if age_s > self.settings.entry_resend_max_age_s:
                log.warning(f"order {tracked.label} entry {why}, {age_s:.0f} s ago: too late to send now; the doctor "
                            "asks the broker for it and retires it if absent")
                return
        tracked.resent = True
        # A send not said is not said by its broker calls' failures either: through an outage each send's dozen calls
        # (three submits, nine look-ups, each a 503) were a WARNING line apiece, every 15 s, for as long as it lasted.
        quiet = level == "DEBUG"
        if tracked.role == "take_profit":
            leg = self.writer.get_order(oco_stop_leg_id(tracked.order_id)).get()
            if leg is None or leg.role != "stop_loss":
                log.error(f"order {tracked.label} take-profit without its stop-loss row; left for the doctor")
                return
            log.log(level, f"order {tracked.label} OCO {why}: sending it now")
            self._to_protection(SubmitOco(take_profit=row, stop_loss=leg, reply_to=self.actor_ref, quiet=quiet),
                                row.order_id)
            return
        log.log(level, f"order {tracked.label} {tracked.role} {why}: sending it now")
        if tracked.role == "entry":
            self._to_general(SubmitOrder(row=row, reply_to=self.actor_ref))
        else:
            self._to_protection(SubmitOrder(row=row, reply_to=self.actor_ref, quiet=quiet), row.order_id)

    def _on_CancelOrders(self, msg: m.CancelOrders) -> None:
        for order_id in msg.order_ids:
            tracked = self.by_order.get(order_id)
            if tracked is None or tracked.status in (OrderStatus.FILLED, OrderStatus.CANCELLED, OrderStatus.REJECTED,
                                                     OrderStatus.EXPIRED, OrderStatus.REPLACED):
                continue
            tracked.cancel_reason = msg.reason
            if tracked.broker_id is None:
                if self._withdraw(tracked, msg.reason) or self._withdraw_oco(tracked, msg.reason):
                    continue
                tracked.pending_cancel = True  # cancelled as soon as the broker acknowledges it
                continue
            sent = self._cancelling.get(tracked.order_id)
            if sent is not None and time.monotonic() - sent < CANCEL_IN_FLIGHT_S:
                continue  # the one sent is still unanswered: its answer says whether to ask again
            self._cancelling[tracked.order_id] = time.monotonic()
            log.log("DEBUG" if msg.quiet else "INFO", f"order {tracked.label} cancel requested ({msg.reason})")
            self._protect.tell(Cancel(order_id=tracked.order_id, broker_id=tracked.broker_id, reply_to=self.actor_ref,
                                      quiet=msg.quiet))

    def _withdraw(self, tracked: Tracked, reason: str) -> bool:
        """An order still waiting in a pool's line for a free worker is taken back before it is ever sent: its row
        ends cancelled and its owner hears so, as for a cancel at the broker. (Sent later, an entry cancelled while
        it waited would fill after its position was told to stand down: an emergency stop's flatten, say.)"""
        waiting = self._refused.get(tracked.order_id)
        never_placed = waiting.never_placed and waiting.simple if waiting is not None else not tracked.resent
        if tracked.status is not OrderStatus.CREATED or not never_placed:
            return False
        if not self._take_back(tracked.order_id) and (waiting is None or tracked.order_id in self._sending):
            return False
        self._end_withdrawn([tracked], reason)
        return True

    def _withdraw_oco(self, tracked: Tracked, reason: str) -> bool:
        """Either leg of an OCO waiting to be sent again after the broker refused every submit of it before acting:
        never placed, so both legs end here together, as Alpaca ends an OCO's other leg when one is cancelled. (Sent
        at the reset and then cancelled, it would hold a flatten's exit back for up to a minute, and spend two calls
        of a rate budget the broker has just said is spent.)"""
        if tracked.role not in ("take_profit", "stop_loss"):
            return False
        take_profit_id = tracked.order_id if tracked.role == "take_profit" else oco_take_profit_id(tracked.order_id)
        waiting = self._refused.get(take_profit_id)
        legs = [self.by_order.get(take_profit_id), self.by_order.get(oco_stop_leg_id(take_profit_id))]
        if (waiting is None or waiting.simple or not waiting.never_placed or take_profit_id in self._sending
                or any(leg is None or leg.status is not OrderStatus.CREATED or leg.broker_id for leg in legs)):
            return False
        self._end_withdrawn([leg for leg in legs if leg is not None], reason)
        return True

    def _end_withdrawn(self, rows: list[Tracked], reason: str) -> None:
        """Rows taken back before any submit of them reached the broker end cancelled; their owner hears so."""
        self._stop_waiting(rows[0].order_id)
        self._protecting.pop(rows[0].order_id, None)
        group = WriteGroup()
        for tracked in rows:
            tracked.cancel_reason = reason
            self._move(tracked, OrderStatus.CANCELLED, broker_status=None, group=group,
                       reason=f"{reason}; withdrawn before it was sent")
            group.then(lambda _, t=tracked: self._tell_owner(t, None))
        group.commit(self.writer)

    def _take_back(self, order_id: int) -> bool:
        """True if the order's submit was still waiting in a pool's line: it will never be sent."""
        if self._general.withdraw(order_id) or self._protect.withdraw(order_id):
            self._sending.discard(order_id)
            return True
        return False

    def _on_RetireUnsent(self, msg: m.RetireUnsent) -> None:
        """Each row still `created`, with no broker id and no submission in flight, ends as cancelled; a row that
        moved on while the doctor looked is left alone (its own updates tell its story)."""
        group = WriteGroup()
        for order_id in msg.order_ids:
            tracked = self.by_order.get(order_id)
            if tracked is None:
                row = self.writer.get_order(order_id).get()
                tracked = self._track(row, owner=None) if row is not None else None
            waiting = self._refused.get(order_id)  # refused before the broker acted, so never placed: retirable
            if (tracked is None or tracked.status is not OrderStatus.CREATED or tracked.broker_id
                    or (tracked.resent and waiting is None)):
                continue
            # A closed position's row is not normally still in a pool's line: if it is, it must not go. One a worker
            # is sending (or an OCO's, which is never withdrawn) may reach the broker after the doctor looked there:
            # retired now, it would be a working order, or shares bought or sold, under a row saying cancelled.
            if not self._take_back(order_id) and order_id in self._sending:
                log.info(f"order {tracked.label} not retired: its submit is in flight; its answer tells")
                continue
            self._stop_waiting(order_id)
            self._move(tracked, OrderStatus.CANCELLED, broker_status=None, group=group, reason=msg.reason)
            group.add(call("set_outcome_unknown", order_id, False))  # the doctor asked: it is not at the broker
            if tracked.owner is not None:  # a live position's lost entry: it stands down (cancelled, no shares)
                group.then(lambda _, t=tracked: self._tell_owner(t, None))
        group.commit(self.writer)

    def _on_VerifyOrders(self, msg: m.VerifyOrders) -> None:
        known: dict[int, str] = {}
        for tracked in map(self.by_order.get, msg.order_ids):
            if tracked is not None and tracked.broker_id is None and tracked.role == "stop_loss":
                # An OCO's stop leg acknowledged without its id (an answer read un-nested): only its take-profit, read
                # by id and nested, names it, and that report pairs it. Asked of the leg (a lone leg, a flatten's
                # cancel), it was dropped here: nothing was read, and the leg's cancel could never be sent.
                tracked = self.by_order.get(oco_take_profit_id(tracked.order_id))
                if tracked is None or tracked.role != "take_profit":
                    continue
            if tracked is not None and tracked.broker_id:
                known[tracked.order_id] = tracked.broker_id
        if known:
            self._general.tell(Verify(orders=tuple(known.items()), reply_to=self.actor_ref, quiet=msg.quiet))

    def _on_ReadBrokerPosition(self, msg: m.ReadBrokerPosition) -> None:
        # On a protection worker: a market exit, or late entry shares' sale, waits on the answer with no stop
        self._protect.tell(ReadPosition(symbol=msg.symbol, reply_to=msg.reply_to, for_exit=msg.for_exit,
                                        for_protection=msg.for_protection))

    def _to_general(self, submit: SubmitOrder) -> None:
        """An entry to a general worker."""
        self._sending.add(submit.row.order_id)
        self._general.tell(submit)

    def _to_protection(self, submit: SubmitOrder | SubmitOco, order_id: int) -> None:
        """A stop, an OCO or an exit to a protection worker; routine updates wait until its result is in."""
        self._protecting[order_id] = time.monotonic()
        self._sending.update(submit_order_ids(submit))
        self._protect.tell(submit)
        # Hand the CPU to the worker now, so its request is on the wire while this thread logs and announces: the
        # daemon's threads share one CPU and one GIL, and the worker would otherwise wait for the next switch.
        _yield_cpu()

    def _plan_SubmitResult(self, msg: m.SubmitResult, group: WriteGroup) -> None:
        for order_id in msg.order_ids:
            self._protecting.pop(order_id, None)
            self._sending.discard(order_id)
        rows = [self.by_order[i] for i in msg.order_ids if i in self.by_order]
        if msg.refused is not None:
            self._send_again_later(rows, msg.refused, msg.retry_after_s, maybe_placed=False)
            return
        if msg.report is not None or msg.rejected is not None:
            self._refused.pop(msg.order_ids[0], None)  # answered at last
        if msg.rejected is not None:  # both legs of an OCO in the same commit
            for tracked in rows:
                self._move(tracked, OrderStatus.REJECTED, broker_status="rejected", reason=msg.rejected, group=group)
                if tracked.role == "stop_loss" and self._suspected_legs:
                    # No leg of it will ever be named: what was held as probably its own was placed outside Catalyst.
                    group.then(lambda _, leg=tracked: self._settle_suspected_legs(leg))
        elif msg.report is None and rows and rows[0].broker_id:
            # The stream named the order while its submit's answer was being lost (a reply lost after the broker
            # acted, then the look-up failing): it was placed, so nothing about it is unknown. Flagged (a review),
            # its rows stayed `outcome_unknown` for good, each doctor pass asking after an order already in hand.
            self._stop_waiting(msg.order_ids[0])
            first = rows[0]
            log.info(f"order {first.label} its submit ended with no answer ({msg.unknown}), but the stream had named "
                     f"it id={first.broker_id}: placed")
            # Acknowledged as an answer would be: a cancel asked while the submit was in flight waits for this (a
            # pending entry's, an emergency's flatten: the entry stayed working at the broker, free to buy).
            group.then(lambda _: self._after_acknowledged(first))
            if len(rows) > 1 and self._leg_unpaired(first.order_id):
                group.then(lambda _: self._pair_legs(first))
        elif msg.report is None:
            for tracked in rows:
                group.add(call("set_outcome_unknown", tracked.order_id, True))
            earlier = self._refused.get(msg.order_ids[0])
            counted = earlier.tries - earlier.unanswered if earlier else 0
            # A broker that answered nothing, not even the look-up (an outage), says nothing of the order: a stop or
            # an exit is sent again until it answers. Before, three sends 1, 2 and 4 s apart, then the doctor's pass
            # (stuck_after_s, then up to its interval): after a broker outage of a minute, a fill's shares stayed
            # without a stop for minutes, and a flatten's exit waited while the close came.
            if rows and rows[0].role != "entry" and (msg.unanswered or counted < self.settings.unknown_resends):
                group.then(lambda _: self._send_again_later(rows, f"outcome unknown after submit: {msg.unknown}",
                                                            None, maybe_placed=True, unanswered=msg.unanswered))
            else:
                self._stop_waiting(msg.order_ids[0])
                for tracked in rows:
                    group.then(lambda _, t=tracked: log.warning(
                        f"order {t.label} outcome unknown after submit: {msg.unknown}; the doctor settles it"))
        else:
            for tracked, report in zip(rows, [msg.report, *msg.report.legs]):
                named = self.by_broker.get(report.broker_id)
                if (tracked.broker_id is not None and tracked.broker_id != report.broker_id) or (
                        named is not None and named.order_id != tracked.order_id):
                    # A late answer (a look-up's, after a submit that timed out) names the leg as it is now: its
                    # replacement, moved by hand once the stream had named our leg, and followed by a row of its own.
                    # Each row keeps its own order (chaos, seed 352: the replacement's id given to the replaced row,
                    # refused by the database as a second row with it, and pointing at the wrong row in memory).
                    log.info(f"order {tracked.label} its submit's answer names id={report.broker_id}, "
                             + (f"{named.label}'s" if named is not None else "not its")
                             + f" (its own is id={tracked.broker_id}): kept as it is")
                    continue
                if tracked.role == "stop_loss" and report.replaces and report.replaces not in self.by_broker:
                    self._find_first_leg(tracked, report)  # moved by hand before this answer (a look-up's) came
                    continue
                self._acknowledge(tracked, report, group)
            if len(rows) > 1 + len(msg.report.legs):
                # An OCO answered without its stop leg (a reply read un-nested): the leg's row has no broker id, so
                # its fill could find no order. Its take-profit, read by id and nested, names it (_learn_broker_id).
                first = rows[0]
                group.then(lambda _: self._pair_legs(first))

    def _pair_legs(self, take_profit: Tracked) -> None:
        """Read the take-profit again by id, nested, until a report of it pairs its stop leg (_learn_broker_id): a
        single read that fails left the leg unpaired, its fill "not ours" to every catch-up."""
        if not self._leg_unpaired(take_profit.order_id):
            return  # a stream event with the legs paired it while the acknowledgement committed
        log.warning(f"order {take_profit.label} acknowledged without its stop leg: asking the broker for it")
        self._unpaired.setdefault(take_profit.order_id, 0)
        self._on_VerifyOrders(m.VerifyOrders(order_ids=(take_profit.order_id,)))
        self._pair_legs_later()

    def _leg_unpaired(self, take_profit_id: int) -> bool:
        leg = self.by_order.get(oco_stop_leg_id(take_profit_id))
        return leg is not None and leg.role == "stop_loss" and leg.broker_id is None

    def _pair_legs_later(self) -> None:
        if self._pair_timer is None and self._unpaired:
            self._pair_timer = tell_later(self.actor_ref, PAIR_LEGS_EVERY_S, PairLegs())

    def _on_PairLegs(self, msg: PairLegs) -> None:
        self._pair_timer = None
        again = []
        for take_profit_id, tries in list(self._unpaired.items()):
            tracked = self.by_order.get(take_profit_id)
            if tracked is None or not self._leg_unpaired(take_profit_id):
                del self._unpaired[take_profit_id]
            elif tries >= PAIR_LEGS_TRIES:
                del self._unpaired[take_profit_id]
                log.error(f"order {tracked.label} its stop leg o-{oco_stop_leg_id(take_profit_id)} still has no broker "
                          f"id after {tries} reads: the doctor's pass pairs it")
            else:
                self._unpaired[take_profit_id] = tries + 1
                again.append(take_profit_id)
        if again:
            self._on_VerifyOrders(m.VerifyOrders(order_ids=tuple(again)))  # one worker's errand for them all
        self._pair_legs_later()

    def _send_again_later(self, rows: list[Tracked], why: str, retry_after_s: float | None,
                          maybe_placed: bool, unanswered: bool = False) -> None:
        """A submit that did not get its answer goes again with the same client_order_id, after 1, 2, 4 … 15 s.

        Refused before the broker acted (every attempt a 429, a refused connection, our own rate budget): nothing
        was placed, so it is not left for the doctor, which waits stuck_after_s for a hung attempt to land while a
        stop's shares sit unprotected; it goes once the broker's named reset has passed (at most a minute) too. A stop
        or an exit keeps going until placed; an entry only while young enough (router.entry_resend_max_age_s), after
        which the doctor asks the broker for it and retires it.

        Its outcome unknown (`maybe_placed`: a stop or an exit only, router.unknown_resends times, and for as long as
        the broker answers nothing, `unanswered`): if a first attempt did land, the broker refuses the same id as a
        duplicate and the worker's look-up answers with it."""
        if not rows:
            return
        first = rows[0]
        earlier = self._refused.pop(first.order_id, None)
        tries = earlier.tries + 1 if earlier is not None else 1
        # The exponent capped: a broker that answers nothing is sent to for as long as it lasts, and 2.0 ** 1024 (the
        # 1,025th send, some 4 h into an outage) overflows a float, which dropped the result and the resends with it.
        delay_s = min(2.0 ** min(tries - 1, 30), REFUSED_BACKOFF_MAX_S)
        if retry_after_s is not None:
            delay_s = max(delay_s, min(retry_after_s, REFUSED_RESET_MAX_S))
        never_placed = (earlier.never_placed if earlier is not None else not first.resent) and not maybe_placed
        silent = (earlier.unanswered if earlier is not None else 0) + unanswered
        self._refused[first.order_id] = _Refused(
            timer=tell_later(self.actor_ref, delay_s, ResendRefused(order_id=first.order_id)), tries=tries,
            never_placed=never_placed, simple=len(rows) == 1, unanswered=silent)
        what = "OCO" if len(rows) > 1 else first.role
        if unanswered:
            outcome = (f"(the broker answered nothing {silent}x: sent until it answers; a duplicate is refused, then "
                       "looked up)")
        elif maybe_placed:
            outcome = (f"(try {tries - silent} of {self.settings.unknown_resends}; a duplicate is refused, then "
                       "looked up)")
        else:
            outcome = f"(refusal {tries})"
        level = "DEBUG" if unanswered and silent > 1 and not said_through_an_outage(tries) else "WARNING"
        log.log(level, f"order {'+'.join(t.label for t in rows)} {what} {why}: "
                       f"{'' if maybe_placed else 'nothing placed; '}sending it again with the same client_order_id "
                       f"in {delay_s:.1f}s {outcome}")

    def _stop_waiting(self, order_id: int) -> None:
        """A refused submit waiting to go again never will: withdrawn or retired."""
        waiting = self._refused.pop(order_id, None)
        if waiting is not None:
            waiting.timer.cancel()

    def _on_ResendRefused(self, msg: ResendRefused) -> None:
        waiting = self._refused.get(msg.order_id)
        tracked = self.by_order.get(msg.order_id)
        if waiting is None or tracked is None or tracked.status is not OrderStatus.CREATED or tracked.broker_id:
            self._refused.pop(msg.order_id, None)  # answered, withdrawn or retired meanwhile
            return
        reason = tracked.cancel_reason or "cancel"
        if tracked.pending_cancel and (self._withdraw(tracked, reason) or self._withdraw_oco(tracked, reason)):
            return  # cancelled while its submit was being refused, and never placed: it ends here
        if tracked.pending_cancel and tracked.role == "entry":
            # Cancelled while it waited, yet an earlier submit of it (before a restart, or one whose outcome was
            # unknown) may be at the broker: never sent again (a market buy would fill at once); the doctor asks the
            # broker for it by its client_order_id, then settles or retires it.
            del self._refused[msg.order_id]
            group = WriteGroup()
            group.add(call("set_outcome_unknown", tracked.order_id, True))
            group.then(lambda _: log.warning(f"order {tracked.label} entry cancelled while it waited to be sent again: "
                                             "not sent; the doctor asks the broker for it by its client_order_id"))
            group.commit(self.writer)
            return
        tracked.resent = False  # each refused submit placed nothing: this is not a second resend
        # Through an outage the resends' own line says so (_send_again_later); the sends between are DEBUG.
        quiet = waiting.unanswered > 1 and not said_through_an_outage(waiting.tries)
        self._send_if_never_acknowledged(tracked, why=f"unanswered {waiting.tries}x",
                                         level="DEBUG" if quiet else "WARNING")
        if not tracked.resent:  # not sent: an entry too old now, or an OCO without its stop-loss row
            del self._refused[msg.order_id]

    def _on_CancelResult(self, msg: m.CancelResult) -> None:
        self._cancelling.pop(msg.order_id, None)
        tracked = self.by_order.get(msg.order_id)
        if tracked is not None and not msg.ok:
            # The broker down under a flatten's recheck its position does not say: the position says the wait about
            # once a minute (PositionActor._check_flatten). A cancel the broker answered and refused is said each time.
            quiet = msg.quiet and msg.unanswered
            if msg.ended:  # the usual case: the OCO sibling of a leg cancelled first went with it
                log.info(f"order {tracked.label} cancel not needed, it had already ended at the broker: reading its "
                         f"status ({msg.detail})")
            else:
                log.log("DEBUG" if quiet else "WARNING", f"order {tracked.label} cancel not accepted: {msg.detail}")
            # Its read, where the broker answered nothing, says nothing this line has not said (its failed calls were
            # three WARNING lines a read, at every cancel an outage refused). A recheck's quiet cancel is not read
            # again here: its position reads the same orders beside it (VerifyOrders), and through an outage the two
            # reads a leg, three tries each, kept the two general workers nearly busy for one flattening position,
            # a catch-up queued behind them.
            if not quiet:
                self._general.tell(Verify(orders=((tracked.order_id, tracked.broker_id),), reply_to=self.actor_ref,
                                          quiet=msg.unanswered))

    def _on_OrdersVerified(self, msg: m.OrdersVerified) -> None:
        for report in msg.reports:
            self._apply_report(report, at=report.updated_at, execution=None)

    def _on_TradeUpdateReceived(self, msg: m.TradeUpdateReceived) -> None:
        self._handle_together([msg])

    def _plan_TradeUpdateReceived(self, msg: m.TradeUpdateReceived, group: WriteGroup) -> None:
        """The raw update, its execution and the order's new status: one commit (shared with updates beside it)."""
        update = msg.update
        self.last_update_at = max(self.last_update_at or update.at, update.at)
        group.add(call(
            "record_trade_update", event=update.event, payload=update.model_dump(mode="json"),
            received_at=msg.received_at, alpaca_order_id=update.order.broker_id,
            client_order_id=update.order.client_order_id, execution_id=update.execution_id,
        ))
        tracked = self._find(update.order)
        if tracked is None:
            group.then(lambda _: self._keep_unmatched(update))
            return
        execution = None
        if update.qty is not None and update.price is not None and _is_fill(update):
            execution = FillReport(
                execution_id=update.execution_id or "", broker_order_id=update.order.broker_id,
                client_order_id=update.order.client_order_id, symbol=update.order.symbol, side=update.order.side,
                qty=update.qty, price=update.price, cum_qty=update.order.filled_qty, leaves_qty=None,
                order_status=update.order.status, at=update.at,
            )
        self._apply_report(update.order, at=update.at, execution=execution, tracked=tracked, group=group)

    def _on_StreamConnected(self, msg: m.StreamConnected) -> None:
        self.stream_connections = msg.count
        if self.stream_refusals:
            log.info(f"router trade stream logged in after {self.stream_refusals} refused login(s)")
        self.stream_refusals, self.stream_refused = 0, None
        if self.last_update_at is None:
            # The first connection after a start: whatever happened while we were down is today's, so catch up
            # over the whole exchange day (a bounded number of paged calls), not just the last few minutes.
            now = self.clock.now()
            since = now.replace(hour=0, minute=0, second=0, microsecond=0)
        else:
            since = self.last_update_at - timedelta(minutes=5)
        self._catch_up(since, why=f"stream connected (#{msg.count})", force=True)

    def trade_stream(self) -> TradeStreamState:
        """Whether the trade stream is logged in, and if not, why: the cycle opens no position without it."""
        if self.stream_refused is not None:
            return TradeStreamState(False, f"its login was refused: {self.stream_refused}")
        if not self.stream_connections:
            return TradeStreamState(False, "it has not logged in yet")
        return TradeStreamState(True, f"logged in, connection #{self.stream_connections}")

    def _catch_up(self, since: datetime, why: str, force: bool = False, quiet: bool = False) -> None:
        if self.catching_up and not force:
            # The one in flight may have read the broker before this fill happened: run again once it is back, from
            # the earliest moment asked (dropping it left an entry's shares without their stop until a doctor pass).
            if self._catch_up_after is None:
                self._catch_up_after = (since, why)
            else:
                first_since, first_why = self._catch_up_after
                self._catch_up_after = (min(since, first_since), first_why.removesuffix(" and more") + " and more")
            return
        if self._catch_up_timer is not None:  # a failed one waiting to be asked again: this one covers it
            timer, failed_since = self._catch_up_timer
            timer.cancel()
            self._catch_up_timer, since = None, min(since, failed_since)
        self.catching_up = True
        when = (f"{exchange_time(since):%H:%M:%S}" if self.clock.now() - since < timedelta(hours=12)
                else f"{since.astimezone(EXCHANGE_TZ):%Y-%m-%d %H:%M:%S}")  # a rebuild may ask for days back
        log.log("DEBUG" if quiet else "INFO", f"router catching up over REST since {when}: {why}")
        self._general.tell(CatchUp(since=since, reply_to=self.actor_ref, quiet=quiet, working=not self._working_listed))

    def _on_StreamLoginFailed(self, msg: m.StreamLoginFailed) -> None:
        self.stream_refusals += 1
        self.stream_refused = msg.reason
        if self.stream_refusals == 1:  # the stream says each retry itself (broker stream ... login refused)
            log.error(f"router trade stream login failed: {msg.reason}; fills arrive only by REST catch-up (the "
                      f"doctor's passes) until it logs in")

    def _on_CatchUpResult(self, msg: m.CatchUpResult) -> None:
        if not msg.from_doctor:  # the doctor's healing batch is not the answer to ours, which may still be reading
            self.catching_up = False
            if msg.failed is not None:
                self._catch_up_later(msg.since, msg.failed)
                return
            self._catch_up_failures = 0
        self._learn_broker_ids(msg.orders)
        # Executions first (positions need their shares), then statuses; one commit each (not the hot path).
        new = ours = 0
        for fill in sorted(msg.fills, key=lambda f: (f.at, f.cum_qty or 0)):
            tracked = self.by_broker.get(fill.broker_order_id) or self._lookup_row(fill.client_order_id, fill.broker_order_id)
            if tracked is None and self._recent_outside(fill):
                # A sale by hand while the stream was down: as if its fill event had come (_keep_unmatched).
                # Keyed as the stream's event of it is (outside_fill_key): a sale the stream told already is the same
                # sale, not one more (a position counts what was sold outside Catalyst: PositionActor._cap_at_refusal).
                self._tell_filled_outside(m.FilledOutside(symbol=fill.symbol, side=fill.side, qty=fill.qty,
                                                          broker_id=fill.broker_order_id,
                                                          execution_id=outside_fill_key(fill.broker_order_id,
                                                                                        fill.cum_qty,
                                                                                        fill.execution_id)))
            if tracked is not None:
                ours += 1
                group = WriteGroup()
                recorded = self._plan_execution(tracked, fill, "activity", group)
                if (fresh := recorded(group.commit(self.writer))) is not None:
                    new += 1
                    self._tell_owner(tracked, fresh)
        for report in msg.orders:
            if self._find(report) is not None:
                self._apply_report(report, at=report.updated_at, execution=None)
            elif self._placed_outside(report):
                self._note_outside(report, listed=True)
        if msg.working is not None:
            self._working_listed = True
            for report in msg.working:
                if catalyst_instance(report.client_order_id) is not None:
                    continue  # ours (or another daemon's), and its legs with it
                for order in (report, *report.legs):
                    if self._find(order) is None and self._placed_outside(order):
                        self._note_outside(order, listed=True)
        # How many were news: after a crash the operator's question is whether any fill was missed, not how many the
        # broker listed (all of the day's, most recorded long ago).
        log.info(f"router catch-up applied {len(msg.fills)} fills ({new} new, {ours - new} recorded already, "
                 f"{len(msg.fills) - ours} not ours), {len(msg.orders)} orders since "
                 f"{exchange_time(msg.since):%H:%M:%S}")
        if not self.catching_up and self._catch_up_after is not None:
            (since, why), self._catch_up_after = self._catch_up_after, None
            self._catch_up(since, why=f"asked while the last one ran: {why}")

    def _catch_up_later(self, since: datetime, failed: str) -> None:
        """A catch-up the broker did not answer (a REST outage the stream's reconnect came in) is asked again, 1, 2, 4,
        8, then every 15 s until one is answered, from the earliest moment any asked for. Before, it was dropped and
        the fills it was for waited for the doctor's next pass, up to its interval after the broker was back."""
        self._catch_up_failures += 1
        failures = self._catch_up_failures
        if self._catch_up_after is not None:  # asked while this one ran: the next try covers it
            since, self._catch_up_after = min(since, self._catch_up_after[0]), None
        if self._catch_up_timer is not None:  # a forced one (a reconnect's) failed beside it: one try covers both
            timer, waiting_since = self._catch_up_timer
            timer.cancel()
            since = min(since, waiting_since)
        delay_s = min(2.0 ** min(failures - 1, 30), REFUSED_BACKOFF_MAX_S)  # capped: 2.0 ** 1024 overflows
        log.log("WARNING" if said_through_an_outage(failures) else "DEBUG",
                f"router catch-up since {exchange_time(since):%H:%M:%S} failed ({failed}): asking the broker again in "
                f"{delay_s:g} s (failure {failures}; until it answers)")
        self._catch_up_timer = (tell_later(self.actor_ref, delay_s, CatchUpAgain(since=since)), since)

    def _on_CatchUpAgain(self, msg: CatchUpAgain) -> None:
        if self._catch_up_timer is None or self._catch_up_timer[1] != msg.since:
            return  # a catch-up asked meanwhile covered it
        self._catch_up_timer = None
        # The try after a failure said at DEBUG is itself quiet, its broker calls' failures too (as resends are).
        self._catch_up(msg.since, why=f"the last one failed ({self._catch_up_failures}x)",
                       quiet=not said_through_an_outage(self._catch_up_failures))

    def _learn_broker_ids(self, reports: tuple[OrderReport, ...]) -> None:
        """Rows a crash left without their broker id get it first, so the fills (which name only the broker id)
        in the same catch-up can find their order."""
        group = WriteGroup()
        for report in reports:
            tracked = self.by_broker.get(report.broker_id) or self.by_cid.get(report.client_order_id) \
                or self._lookup_row(report.client_order_id, None)
            if tracked is not None:
                self._learn_broker_id(tracked, report, group, "the broker's list")
        group.commit(self.writer)

    def _learn_broker_id(self, tracked: Tracked, report: OrderReport, group: WriteGroup, source: str) -> None:
        """A row matched by client_order_id alone has no broker id: the stream's first event overtook the submit
        reply, or a crash came between the broker's answer and our commit. Record it now, or the fills, which name
        only the broker id, could never find their order. An OCO's stop leg carries a client_order_id Alpaca made
        up, so it is paired by our row order instead (oco_stop_leg_id)."""
        if report.broker_id and tracked.broker_id is None and report.client_order_id == tracked.client_order_id:
            self._record_broker_id(tracked, report, group)
            log.info(f"order {tracked.label} broker id {report.broker_id} learned from {source}")
            if tracked.order_id not in self._sending:
                # No answer of a submit is coming to acknowledge it (the last one ended with none, in an outage): this
                # is its acknowledgement. A cancel held for one goes now (a pending entry's, an emergency's flatten:
                # it stayed working at the broker, free to buy, the id clearing the doctor's flag).
                group.then(lambda _: self._after_acknowledged(tracked))
        # The stop leg is paired even when the take-profit knew its id already: an acknowledgement that came without
        # the legs (a look-up by client_order_id reads un-nested) left only the leg without one.
        if tracked.role == "take_profit" and report.legs and tracked.broker_id == report.broker_id \
                and self._acknowledging is None:  # an acknowledgement pairs its own legs (_plan_SubmitResult)
            leg = self.by_order.get(oco_stop_leg_id(tracked.order_id))
            if leg is None:
                row = self.writer.get_order(oco_stop_leg_id(tracked.order_id)).get()
                leg = self._track(row, owner=None) if row is not None else None
            if leg is not None and leg.role == "stop_loss" and leg.broker_id is None:
                if report.legs[0].replaces and report.legs[0].replaces not in self.by_broker:
                    self._find_first_leg(leg, report.legs[0])
                    return
                self._record_broker_id(leg, report.legs[0], group)
                log.info(f"order {leg.label} broker id {report.legs[0].broker_id} learned from {source} (its "
                         f"take-profit's leg)")
                # What the leg has done meanwhile (filled, its events lost) is in the same report: planned now, as a
                # verify's reports are only the take-profits'. Its fill events held unmatched follow, and a cancel
                # asked of it meanwhile (a lone leg, a flatten) goes now that it can.
                self._plan_report(leg, report.legs[0], report.legs[0].updated_at, None, group)
                group.then(lambda _: self._after_acknowledged(leg))

    def _find_first_leg(self, leg: Tracked, current: OrderReport) -> None:
        """The take-profit's stop leg now is a replacement (moved by hand before the leg's id was recorded): our row is
        the leg first placed. Read back to it, recorded as the row's, and followed forward from there, so no order of
        the chain is missing from the database (chaos with stops moved by hand: the row paired with the new leg, the
        first one "lost")."""
        if leg.order_id in self._finding_first:
            return
        self._finding_first.add(leg.order_id)
        log.info(f"order {leg.label} its stop leg at the broker id={current.broker_id} replaced id={current.replaces}: "
                 "reading back to the leg first placed")
        self._protect.tell(ReadFirstOrder(order_id=leg.order_id, broker_id=current.replaces, reply_to=self.actor_ref))

    def _on_FirstOrderRead(self, msg: m.FirstOrderRead) -> None:
        self._finding_first.discard(msg.order_id)
        leg = self.by_order.get(msg.order_id)
        first: OrderReport | None = msg.report
        if leg is None or leg.broker_id is not None:
            return  # paired meanwhile
        if first is None or first.broker_id in self.by_broker:
            # Its take-profit is read again (_on_PairLegs), which reads back again; past its tries, the doctor's pass.
            log.warning(f"order {leg.label} its first stop leg could not be read back ({msg.error or 'already ours'}): "
                        "reading its take-profit again")
            self._unpaired.setdefault(oco_take_profit_id(leg.order_id), 0)
            self._pair_legs_later()
            return
        group = WriteGroup()
        self._record_broker_id(leg, first, group)
        log.info(f"order {leg.label} broker id {first.broker_id} learned by reading back from its replacement")
        self._plan_report(leg, first, first.updated_at, None, group)  # `replaced`: followed on (_follow_replacement)
        group.then(lambda _: self._after_acknowledged(leg))
        group.commit(self.writer)

    def _record_broker_id(self, tracked: Tracked, report: OrderReport, group: WriteGroup) -> StoreCall:
        tracked.broker_id = report.broker_id
        self.by_broker[report.broker_id] = tracked
        # mark_submitted moves a created row to submitted itself, and never moves a row backwards.
        acknowledgement = call("mark_submitted", tracked.order_id, report.broker_id, report.status,
                               report.submitted_at, read_back=False)
        group.add(acknowledgement)
        return acknowledgement

    # --- the machine ------------------------------------------------------------------------------------------

    def _acknowledge(self, tracked: Tracked, report: OrderReport, group: WriteGroup) -> None:
        acknowledgement = self._record_broker_id(tracked, report, group)  # the move below only logs created → submitted
        was_created = tracked.status is OrderStatus.CREATED
        if was_created:
            self._move(tracked, OrderStatus.SUBMITTED, broker_status=report.status, group=group, write=False)
        self._acknowledging = (group, acknowledgement)  # a move the report calls for joins this write (_move)
        try:
            self._apply_report(report, at=report.updated_at, execution=None, tracked=tracked, group=group)
        finally:
            self._acknowledging = None
        if was_created and tracked.status is OrderStatus.SUBMITTED:
            # Answered `new` or `pending_new` (submitted): the report moved nothing further, so nothing told the owner,
            # which saw the order `created` still: an OCO on its way, holding the pieces that follow for a second.
            group.then(lambda _: self._tell_owner(tracked, None))
        group.then(lambda _: self._after_acknowledged(tracked))

    def _after_acknowledged(self, tracked: Tracked) -> None:
        self._replay_unmatched(tracked)
        if tracked.role == "stop_loss" and self._suspected_legs:
            self._settle_suspected_legs(tracked)
        self._check_market_fill_later(tracked, self.settings.market_fill_check_s)
        if tracked.pending_cancel:
            tracked.pending_cancel = False
            self._on_CancelOrders(m.CancelOrders(order_ids=(tracked.order_id,), reason=tracked.cancel_reason or "cancel"))

    def _apply_report(self, report: OrderReport, at: datetime, execution: FillReport | None,
                      tracked: Tracked | None = None, group: WriteGroup | None = None) -> None:
        """Decide what the report changes, queue the writes on `group` (committed here if none is given)."""
        own = group is None
        group = group if group is not None else WriteGroup()
        tracked = tracked or self._find(report)
        if tracked is not None:
            self._learn_broker_id(tracked, report, group, "a report")
            self._plan_report(tracked, report, at, execution, group)
        if own:
            group.commit(self.writer)

    def _plan_report(self, tracked: Tracked, report: OrderReport, at: datetime, execution: FillReport | None,
                     group: WriteGroup) -> None:
        fresh: list[m.Execution | None] = [None]  # filled in after the commit: was the execution new?
        owner_writes = False  # the owner's writes for this execution share its commit, and tell the owner
        tracked.reported_filled_qty = max(tracked.reported_filled_qty, report.filled_qty)
        if execution is not None:
            recorded = self._plan_execution(tracked, execution, "stream", group,
                                            missing_since=report.submitted_at - timedelta(minutes=1))
            group.then(lambda values: fresh.__setitem__(0, recorded(values)))
            owner_writes = self._plan_owner_writes(tracked, execution, fresh)
        if execution is None and report.filled_qty > tracked.filled_qty:
            # The broker says more shares filled than we have executions for. Usually the stream's fill event is
            # on its way (a REST report, or a reply saying filled, can be ahead of it); if it is still missing
            # after a grace period, it was lost (stream gap, dropped frame): fetch executions over REST, never
            # invent one.
            self._expect_executions(tracked, report.filled_qty, since=report.submitted_at - timedelta(minutes=1))
        advanced = False
        try:
            reported = status_from_broker(report.status, report.filled_qty, report.qty or tracked.qty)
        except ValueError as exc:
            log.error(f"order {tracked.label} broker status not understood: {exc}")
            reported = None
        if reported is not None:
            plan = plan_catch_up(tracked.status, reported)
            if plan.kind is CatchUpKind.CONFLICT:
                log.error(f"order {tracked.label} conflict: local {tracked.status}, broker {report.status}; left for the doctor")
            elif plan.kind is CatchUpKind.ADVANCE:
                advanced = True
                reason = self._cancel_reason(tracked) if reported is OrderStatus.CANCELLED else None
                pending_cum = (execution.cum_qty or Decimal(0)) if execution is not None else Decimal(0)
                filled = max(report.filled_qty, tracked.filled_qty, pending_cum)
                for index, step in enumerate(plan.path):  # only the last step is written: one row, one state
                    self._move(tracked, step, broker_status=report.status, filled_qty=filled,
                               avg_price=report.filled_avg_price, at=at, reason=reason, group=group,
                               write=index == len(plan.path) - 1)

        def tell(_: list[Any]) -> None:
            # Replaced, by an order not ours yet: its owner hears of it with its replacement (_on_OrderRead). Also
            # when the row already said `replaced` (a kill between its status and its replacement's row; a restart's
            # look at it), so what is left unfollowed is followed once a report names the new order.
            if tracked.status is OrderStatus.REPLACED and report.status == "replaced":
                if (report.replaced_by and report.replaced_by not in self.by_broker
                        and self._follow_replacement(tracked, report)):
                    return
                if not advanced and fresh[0] is None and not owner_writes:
                    # The broker's word on a leg a rebuilt position restored `replaced` and waits about (its
                    # _awaited_replacements): replaced by no order to follow (Alpaca's triggered stop), or by one
                    # already ours. Said, or the position would wait out its whole wait with nothing sent.
                    self._tell_owner(tracked, None)
                    return
            if (advanced or fresh[0] is not None) and not owner_writes:
                self._tell_owner(tracked, fresh[0])

        group.then(tell)

    # --- orders replaced at the broker -----------------------------------------------------------------------

    def _follow_replacement(self, tracked: Tracked, report: OrderReport) -> bool:
        """An order of ours ended `replaced`, naming the order that replaced it (Alpaca's PATCH: a stop moved by hand in
        the dashboard, another program on the key). Spec §2.2: track the new order. It is read by its id and written
        as a row of ours before its owner hears of either, so an OCO stays whole: told only that its leg ended, the
        position took the other leg for a lone one and cancelled it (undoing the change), or, a take-profit replaced,
        never saw the new one's fill and protected shares already sold. False when there is nothing to follow: no
        replacement named (Alpaca's report of a triggered stop, alpaca-py #198) or one that is already another of
        our orders. An entry's too (a limit entry moved by hand): its fills are its position's, protected at once, not
        shares of an order placed by hand, bare until the doctor's pass."""
        new_id = report.replaced_by
        if not new_id:
            return False
        if new_id in self._replacing:
            return True  # being read: a duplicate of the event
        if new_id in self._not_following:
            return False  # its read failed: taken as ended, told so once
        self._replacing[new_id] = (tracked, report)
        log.info(f"order {tracked.label} replaced at the broker by id={new_id}: reading the new order, to follow it")
        self._read_replacement(tracked, new_id)
        return True

    def _read_replacement(self, tracked: Tracked, broker_id: str) -> None:
        self._protect.tell(ReadReplacement(replaced_order_id=tracked.order_id, broker_id=broker_id,
                                           reply_to=self.actor_ref))

    def _on_ReadReplacementAgain(self, msg: ReadReplacementAgain) -> None:
        pending = self._replacing.get(msg.broker_id)
        if pending is not None:
            self._read_replacement(pending[0], msg.broker_id)

    def _on_OrderRead(self, msg: m.OrderRead) -> None:
        pending = self._replacing.get(msg.broker_id)
        if pending is None:
            return
        tracked, old = pending
        report: OrderReport | None = msg.report
        problem = msg.error
        if report is not None and (report.symbol != tracked.symbol or report.side != tracked.side or not report.qty):
            problem = f"it is a {report.side} {report.qty} {report.symbol} order, not a {tracked.side} {tracked.symbol} one"
        failed = self._replacement_reads.get(msg.broker_id, 0)
        if msg.error is not None and not msg.not_found:
            wait_s = REPLACEMENT_READ_RETRY_S[min(failed, len(REPLACEMENT_READ_RETRY_S) - 1)]
            self._replacement_reads[msg.broker_id] = failed + 1
            spent = failed + 1 == len(REPLACEMENT_READ_RETRY_S)
            level = "WARNING" if failed == 0 else "ERROR" if spent else "INFO"
            holds = ("its fills wait until it is read" if tracked.role == "entry"
                     else "its position sends nothing for those shares until it is read")
            log.log(level, f"order {tracked.label} its replacement id={msg.broker_id} could not be read "
                           f"({failed + 1} times: {msg.error}): reading it again in {wait_s:g} s; {holds}")
            tell_later(self.actor_ref, wait_s, ReadReplacementAgain(broker_id=msg.broker_id))
            return
        self._replacement_reads.pop(msg.broker_id, None)
        if problem is not None or report is None:
            self._not_followed(tracked, msg.broker_id, problem or "not read")
            return
        new = Replacement(alpaca_order_id=report.broker_id, client_order_id=report.client_order_id,
                          order_type=report.type, time_in_force=report.tif, quantity=report.qty,
                          limit_price=report.limit_price, stop_price=report.stop_price)
        group = WriteGroup()
        group.add(call("record_replacement", tracked.order_id, new, at=self.clock.now()))
        group.then(lambda values: self._hand_over_replacement(tracked, old, report, values[0]))
        try:
            group.commit(self.writer)
        except Exception as exc:  # noqa: BLE001 - a write refused: the order is left as ended, as before
            self._not_followed(tracked, msg.broker_id, f"its row could not be written ({type(exc).__name__}: {exc})")

    def _hand_over_replacement(self, tracked: Tracked, old: OrderReport, report: OrderReport, row: Any) -> None:
        self._replacing.pop(report.broker_id, None)
        new = self.by_order.get(row.order_id) or self._track(row, owner=tracked.owner)
        new.owner = new.owner or tracked.owner
        detail = _what_changed(old, report)
        log.info(f"order {tracked.label} replaced at the broker by {new.label} ({detail}): following it")
        if tracked.owner is not None:
            _tell(tracked.owner, m.OrderReplaced(replaced_order_id=tracked.order_id, new_order_id=new.order_id,
                                                 role=new.role, qty=report.qty or new.qty, detail=detail))
        self._apply_report(report, at=report.updated_at, execution=None, tracked=new)
        self._replay_unmatched(new)

    def _not_followed(self, tracked: Tracked, broker_id: str, why: str) -> None:
        self._replacing.pop(broker_id, None)
        if len(self._not_following) < MAX_UNMATCHED:
            self._not_following.add(broker_id)
        log.error(f"order {tracked.label} replaced at the broker by id={broker_id}, not followed: {why}; its "
                  "position takes it as ended, and the doctor's pass looks at the new order")
        self._tell_owner(tracked, None)

    def _plan_owner_writes(self, tracked: Tracked, fill: FillReport, fresh: list[m.Execution | None]) -> bool:
        """The hot path of an entry fill: ask the position actor for its writes (positions row, OCO rows) and commit
        them with the execution, in the same commit, in the golden rule's order (execution, position, protection);
        then the OCO goes to a protection worker straight from here and the owner hears what was committed.
        Saves a commit and four actor hand-offs between a fill and its stop. Only for an execution certainly new
        (so the owner never counts one twice) and an owner with no other plan awaiting its commit (a plan assumes
        the owner's current state); anything else, or an owner that does not answer, takes the usual path: commit,
        then tell.

        The position never waits on the router, so this question cannot deadlock."""
        if tracked.role != "entry" or tracked.owner is None or not tracked.keys_complete:
            return False
        key = execution_key(fill.broker_order_id, fill.cum_qty if fill.cum_qty is not None
                            else tracked.filled_qty + fill.qty)
        if key in tracked.keys or tracked.owner in self._asked_owners:
            return False
        execution = m.Execution(key=key, qty=fill.qty, price=fill.price, at=fill.at)
        try:
            plan = tracked.owner.ask(m.PrepareEntryFill(order_id=tracked.order_id, execution=execution),
                                     timeout=OWNER_ANSWER_S)
        except pykka.ActorDeadError:
            return False
        except pykka.Timeout:
            log.warning(f"order {tracked.label} owner did not plan its fill within {OWNER_ANSWER_S}s: told after")
            return False
        if not isinstance(plan, m.EntryFillPlan):
            return False
        self._asked_owners.add(tracked.owner)  # asked again only once told this outcome (FIFO, so it has applied it)
        owner_group = WriteGroup()
        owner_group.add(call("together", plan.calls))  # all or none: never a position row without its OCO rows

        settled = [False]  # the owner's writes committed: it hears of them as EntryFillCommitted, never twice
        protection: list[Any] = []

        def send_protection(outcome: list[Any]) -> None:
            """First after the commit, before any log line or message of the batch: the OCO to the broker."""
            settled[0] = True
            rows = plan.protection_rows(outcome[0])
            if rows:
                protection.append(self._send_protection(*rows, tracked.owner))

        def committed(outcome: list[Any]) -> None:
            self._asked_owners.discard(tracked.owner)
            if fresh[0] is None:  # cannot happen while keys_complete holds; the owner's rows are written regardless
                log.error(f"order {tracked.label} execution {key} was not new, yet its owner's writes committed")
            for sent in protection:
                self._log_protection(*sent)
            self._tell_owner(tracked, execution, committed=(plan, tuple(outcome[0])))

        def failed() -> None:
            """The owner's writes did not commit (none of them: one `together` call). If the execution did, tell
            the owner the usual way and it writes them itself; if nothing did, it hears nothing, as before."""
            self._asked_owners.discard(tracked.owner)
            if not settled[0] and fresh[0] is not None:
                settled[0] = True
                self._tell_owner(tracked, fresh[0])

        owner_group.first(send_protection)
        owner_group.then(committed)
        self._owner_groups.append((owner_group, failed))
        return True

    def _plan_execution(self, tracked: Tracked, fill: FillReport, source: str,
                        group: WriteGroup, missing_since: datetime | None = None) -> Any:
        """Queue the execution's exactly-once insert; the returned callback logs it and gives the fresh Execution.
        With `missing_since`, an earlier piece found missing once it is recorded is asked of the broker after the
        grace period (its event may be only behind this one) by the executions since then."""
        cum = fill.cum_qty if fill.cum_qty is not None else tracked.filled_qty + fill.qty
        key = execution_key(fill.broker_order_id, cum)
        if key in tracked.keys:
            return lambda _: None
        # The order's side, not the report's: an execution is on its order's side, and a FILL activity may name it in
        # Alpaca's longer list (`sell_short`, `cross`, ...), which the fills table does not take.
        index = group.add(call(
            "record_fill", execution_id=key, order_id=tracked.order_id, alpaca_order_id=fill.broker_order_id,
            symbol=fill.symbol, side=tracked.side, qty=fill.qty, price=fill.price, position_qty=None,
            occurred_at=fill.at, source=source,
        ))

        def recorded(values: list[Any]) -> m.Execution | None:
            tracked.keys.add(key)
            # Known already or new, it is recorded: a known one raises it too, or a row read back lagging its
            # executions was caught up every grace period forever (a review).
            tracked.filled_qty = max(tracked.filled_qty, cum)
            if fill.cum_qty is not None:
                tracked.piece_recorded(cum, fill.qty)
                if missing_since is not None and tracked.pieces_missing:
                    self._expect_executions(tracked, cum, since=missing_since)
            if not values[index]:
                return None  # known already (a restart's catch-up, a duplicate event): no second execution
            log.info(f"order {tracked.label} execution {fill.qty} @ {fill.price} (cum {cum}) via {source}")
            return m.Execution(key=key, qty=fill.qty, price=fill.price, at=fill.at)

        return recorded

    def _move(self, tracked: Tracked, status: OrderStatus, broker_status: str | None, group: WriteGroup,
              filled_qty: Decimal | None = None, avg_price: Decimal | None = None, at: datetime | None = None,
              reason: str | None = None, write: bool = True) -> None:
        """Move the tracked order now (later decisions in the same group build on it); log it after the commit."""
        before = tracked.status
        tracked.status = status
        if status not in STILL_WORKING:  # filled or ended: no look due
            if tracked.order_id in self._market_checks:
                self._market_checks.pop(tracked.order_id).cancel()
            self._market_looks.discard(tracked.order_id)
        if write:
            filled = tracked.filled_qty if filled_qty is None else max(filled_qty, tracked.filled_qty)
            pending = self._acknowledging
            if pending is not None and pending[0] is group and group.calls and group.calls[-1] is pending[1] \
                    and pending[1].args[0] == tracked.order_id:
                # The acknowledgement just queued for this order takes its new state too: one row write, not two.
                progress = OrderProgress(str(status), broker_status, filled, avg_price, reason)
                group.calls[-1] = replace(pending[1], kwargs={**pending[1].kwargs, "progress": progress,
                                                              "at": at or self.clock.now()})
            else:
                group.add(call(
                    "update_order_status", tracked.order_id, status=str(status), broker_status=broker_status,
                    filled_qty=filled, filled_avg_price=avg_price, at=at or self.clock.now(), reason=reason,
                    read_back=False,
                ))

        last = self._announcing
        if last is not None and last.group is group and last.tracked is tracked and last.path[-1] is before:
            # A catch-up (submitted → accepted → filled) or an acknowledgement that also moves its order (a stop
            # leg created → submitted → accepted) is one line for `tail -f`, not one per step.
            last.path.append(status)
            last.reason = reason or last.reason
            return
        path = _AnnouncedPath(group, tracked, [before, status], reason)
        self._announcing = path

        def announce(_: list[Any]) -> None:
            log.info(f"order {tracked.label} {' → '.join(path.path)}" + (f" ({path.reason})" if path.reason else ""))
            if path.path[-1] is OrderStatus.REJECTED:
                self._tell_owner(tracked, None, reason=path.reason)

        group.then(announce)

    def _expect_executions(self, tracked: Tracked, filled_qty: Decimal, since: datetime) -> None:
        pending = self._grace_timers.get(tracked.order_id)
        if pending is not None:
            timer, expected, first_since = pending
            self._grace_timers[tracked.order_id] = (timer, max(expected, filled_qty), min(first_since, since))
            return
        # A fill found by the look at a silent market order has had its stream event overdue for seconds already.
        grace_s = 0.0 if tracked.order_id in self._market_looks else self.settings.missing_execution_grace_s
        timer = tell_later(self.actor_ref, grace_s, CheckExecutions(order_id=tracked.order_id))
        self._grace_timers[tracked.order_id] = (timer, filled_qty, since)

    def _check_market_fill_later(self, tracked: Tracked, check_s: float) -> None:
        if not tracked.market or check_s <= 0 or not self._unfilled(tracked):
            return
        previous = self._market_checks.pop(tracked.order_id, None)
        if previous is not None:
            previous.cancel()
        self._market_checks[tracked.order_id] = tell_later(
            self.actor_ref, check_s, CheckMarketFill(order_id=tracked.order_id, check_s=check_s))

    @staticmethod
    def _unfilled(tracked: Tracked) -> bool:
        return (tracked.status in STILL_WORKING and tracked.broker_id is not None
                and max(tracked.filled_qty, tracked.reported_filled_qty) < tracked.qty)

    def _on_CheckMarketFill(self, msg: CheckMarketFill) -> None:
        """Ask the broker for a market order still unfilled: its report, applied like any other, starts the usual
        REST catch-up of executions when it says shares filled that the stream never brought."""
        self._market_checks.pop(msg.order_id, None)
        tracked = self.by_order.get(msg.order_id)
        if tracked is None or not self._unfilled(tracked):
            return
        assert tracked.broker_id is not None  # _unfilled
        log.info(f"order {tracked.label} market order with no fill {msg.check_s:g}s after its acknowledgement "
                 f"({tracked.status}, {tracked.filled_qty} of {tracked.qty}): asking the broker")
        self._market_looks.add(tracked.order_id)
        self._general.tell(Verify(orders=((tracked.order_id, tracked.broker_id),), reply_to=self.actor_ref))
        if msg.check_s < MARKET_FILL_CHECK_MAX_S:  # 2, 4, 8 … 60 s, then only the doctor's passes
            self._check_market_fill_later(tracked, min(msg.check_s * 2, MARKET_FILL_CHECK_MAX_S))

    def _on_CheckExecutions(self, msg: CheckExecutions) -> None:
        pending = self._grace_timers.pop(msg.order_id, None)
        tracked = self.by_order.get(msg.order_id)
        if pending is None or tracked is None:
            return
        _, expected, since = pending
        if tracked.filled_qty < expected:
            self._catch_up(since, why=f"{tracked.label} missing executions ({tracked.filled_qty} of {expected})")
        elif tracked.pieces_missing:
            self._catch_up(since, why=f"{tracked.label} missing executions (shares {tracked.recorded_to}–"
                                      f"{min(tracked.ahead)} of the {expected} filled have none)")
        else:
            return
        if msg.order_id not in self._gap_looks:
            self._look_at_gap_later(tracked, since, looks=1)

    def _look_at_gap_later(self, tracked: Tracked, since: datetime, looks: int) -> None:
        """Asked again after 4, 8 … 60 s while pieces stay missing: a catch-up may fail (a 5xx) or find the broker's
        activities behind its fill, and when the last piece is the one whose event came, no later event asks again
        (a review). After GAP_LOOKS_MAX catch-ups, the doctor's passes."""
        wait_s = min(self.settings.missing_execution_grace_s * 2 ** looks, MARKET_FILL_CHECK_MAX_S)
        self._gap_looks[tracked.order_id] = (tell_later(self.actor_ref, wait_s, CheckGap(order_id=tracked.order_id)),
                                             looks, since)

    def _on_CheckGap(self, msg: CheckGap) -> None:
        looked = self._gap_looks.pop(msg.order_id, None)
        tracked = self.by_order.get(msg.order_id)
        if looked is None or tracked is None:
            return
        if not tracked.pieces_missing and tracked.filled_qty >= tracked.reported_filled_qty:
            return
        _, looks, since = looked
        filled = max(tracked.filled_qty, tracked.reported_filled_qty)
        missing = (f"shares {tracked.recorded_to}–{min(tracked.ahead)} of the {filled} filled have none"
                   if tracked.pieces_missing else f"{tracked.filled_qty} of {filled}")
        if looks >= GAP_LOOKS_MAX:
            log.warning(f"order {tracked.label} executions still missing after {looks} catch-ups ({missing}): left to "
                        "the doctor's passes")
            return
        self._catch_up(since, why=f"{tracked.label} executions still missing ({missing})")
        self._look_at_gap_later(tracked, since, looks + 1)

    def _tell_owner(self, tracked: Tracked, execution: m.Execution | None, reason: str | None = None,
                    committed: tuple[m.EntryFillPlan, tuple[Any, ...]] | None = None) -> None:
        if tracked.owner is None:
            self._late_entry_shares(tracked, execution)
            return
        # The broker's cumulative quantity: a reply saying "filled" overtakes the fill's execution, and the owner must
        # know those shares are gone (not protect them again) before the execution reaches it.
        update = m.OrderUpdated(
            order_id=tracked.order_id, role=tracked.role, status=tracked.status,
            filled_qty=max(tracked.filled_qty, tracked.reported_filled_qty), execution=execution, reason=reason,
            cancel_asked=tracked.status is OrderStatus.CANCELLED and tracked.cancel_reason is not None,
        )
        if not _tell(tracked.owner, update if committed is None
                     else m.EntryFillCommitted(update=update, plan=committed[0], values=committed[1])):
            self._late_entry_shares(tracked, execution)

    def _late_entry_shares(self, tracked: Tracked, execution: m.Execution | None) -> None:
        """A new entry execution with no live actor to take it: its position closed (by its stop, say) before this
        execution was recorded (its fill event lost, brought by a catch-up or the doctor). Those shares are at the
        broker with no stop; the supervisor rebuilds the position to sell them. Not for an actor crashed and being
        rebuilt: the supervisor leaves those to the rebuilt one, which reads this execution from the database."""
        if tracked.role != "entry" or execution is None or self.supervisor is None:
            return
        tell_if_alive(self.supervisor, m.LateEntryShares(entry_order_id=tracked.order_id,
                                                         subject=f"order {tracked.label}", qty=execution.qty))

    def _cancel_reason(self, tracked: Tracked) -> str:
        if tracked.cancel_reason:
            return tracked.cancel_reason
        return "OCO" if tracked.role in ("stop_loss", "take_profit") else "canceled at the broker"

    # --- bookkeeping ------------------------------------------------------------------------------------------

    def _track(self, row: Any, owner: Any) -> Tracked:
        tracked = Tracked(
            order_id=row.order_id, client_order_id=row.client_order_id, role=row.role, symbol=row.symbol,
            side=row.side, qty=row.quantity, status=OrderStatus(row.status), filled_qty=row.filled_qty,
            broker_id=row.alpaca_order_id, owner=owner, market=row.order_type == "market",
        )
        if row.filled_qty:
            # Read back: which shares its recorded executions cover. Not the row's filled_qty, which may lag them (a
            # partial_fill report after another writes nothing) or lead them (a piece's event lost): a review.
            for fill in self.writer.fills_for_order(row.order_id).get():
                if (cum := execution_cum(fill.execution_id)) is not None:
                    tracked.piece_recorded(cum, fill.qty)
                    tracked.filled_qty = max(tracked.filled_qty, cum)
        self.by_order[tracked.order_id] = tracked
        self.by_cid[tracked.client_order_id] = tracked
        if tracked.broker_id:
            self.by_broker[tracked.broker_id] = tracked
        return tracked

    def _find(self, report: OrderReport) -> Tracked | None:
        return (self.by_broker.get(report.broker_id) or self.by_cid.get(report.client_order_id)
                or self._lookup_row(report.client_order_id, report.broker_id))

    def _lookup_row(self, client_order_id: str | None, broker_id: str | None) -> Tracked | None:
        row = self.writer.get_order_by_alpaca_id(broker_id).get() if broker_id else None
        if row is None and client_order_id:
            row = self.writer.get_order_by_client_id(client_order_id).get()
        return self._track(row, owner=None) if row is not None else None

    def _keep_unmatched(self, update: TradeUpdateReport) -> None:
        if update.order.broker_id in self.by_broker:
            # Its order's id was learned by an update after it in the same commit (an OCO's stop leg, named by its
            # take-profit's report in the batch that also brought the leg's fill): applied now, as the order's own,
            # not held nor said to be an order placed by hand (before, the daemon's own stop was said to be).
            log.debug(f"router update {update.event} for {self.by_broker[update.order.broker_id].label}: its broker "
                      "id was learned just after it: applied now")
            self.actor_ref.tell(m.TradeUpdateReceived(update=update))
            return
        other = catalyst_instance(update.order.client_order_id)
        if other is not None and other != self._our_instance():
            # Another daemon's order (another database on this account): it will never be ours, so it is not held
            # for an order to come; named once, as the doctor's OTHER_INSTANCE halt says what to do about it.
            first = update.order.broker_id not in self._others_seen
            if first and len(self._others_seen) < MAX_UNMATCHED:
                self._others_seen.add(update.order.broker_id)
            log.log("WARNING" if first else "DEBUG",
                    f"router update {update.event} for {update.order.symbol} cid={update.order.client_order_id}: an "
                    f"order of another catalyst daemon (database {other}) on this account: recorded, not ours")
            return
        replaced = self._replacing.get(update.order.broker_id)
        if replaced is not None:  # being read (_follow_replacement): its row is written in a moment
            log.info(f"router update {update.event} for {update.order.symbol} id={update.order.broker_id}, the order "
                     f"that replaced {replaced[0].label}: held until its row is written")
        elif (ours := self.by_broker.get(update.order.replaces or "")) is not None:
            # A replacement of ours (moved at the broker) whose own events came before the `replaced` of the order it
            # replaces (a restart's moment, a reordered stream): followed with that event (_follow_replacement).
            log.info(f"router update {update.event} for {update.order.symbol} id={update.order.broker_id}, the order "
                     f"that replaces {ours.label} at the broker: recorded, held until it is followed")
            self._tell_own_fill_not_named(update, ours)
        elif (leg := self._stop_leg_not_named(update.order)) is not None:
            log.info(f"router update {update.event} for {update.order.symbol} id={update.order.broker_id}: an OCO stop "
                     f"leg the broker has not named to us yet, probably {leg.label}'s (its OCO's answer is not in): "
                     "recorded, held until its order is known")
            if len(self._suspected_legs) < MAX_UNMATCHED:
                self._suspected_legs[update.order.broker_id] = leg.order_id
            self._tell_own_fill_not_named(update, leg)
        else:
            self._say_placed_elsewhere(update)
        if sum(len(v) for v in self.unmatched.values()) < MAX_UNMATCHED:
            self.unmatched.setdefault(update.order.broker_id, []).append(update)

    def _tell_own_fill_not_named(self, update: TradeUpdateReport, ours: Tracked) -> None:
        """A fill of an order that is probably `ours` (or replaces it) before any row of ours names it: its position is
        told all the same, since that fill sold its shares and the broker's positions list may not show it yet (a
        market exit must not read them meanwhile); told as probably its own, not as an order placed by hand."""
        if update.event in ("fill", "partial_fill") and update.qty:
            self._tell_filled_outside(m.FilledOutside(symbol=update.order.symbol, side=update.order.side,
                                                      qty=update.qty, broker_id=update.order.broker_id,
                                                      own_leg=ours.label))

    def _say_placed_elsewhere(self, update: TradeUpdateReport) -> None:
        log.warning(
            f"router update {update.event} for unknown order {update.order.symbol} id={update.order.broker_id} "
            f"cid={update.order.client_order_id}: recorded, held until its order is known"
        )
        if catalyst_instance(update.order.client_order_id) is not None:
            return
        self._note_outside(update.order)  # first: an end told below finds it no longer holding shares
        if update.event in ("fill", "partial_fill") and update.qty:
            self._tell_filled_outside(m.FilledOutside(symbol=update.order.symbol, side=update.order.side,
                                                      qty=update.qty, broker_id=update.order.broker_id,
                                                      execution_id=outside_fill_key(update.order.broker_id,
                                                                                    update.order.filled_qty,
                                                                                    update.execution_id)))
        elif update.event in ORDER_OUTSIDE_ENDED:
            # A hand order that held shares (a limit sell still working) let go of them: a position that protected
            # only the shares left free beside it may protect the rest now, not at the doctor's next pass.
            ended = m.OrderOutsideEnded(symbol=update.order.symbol, side=update.order.side,
                                        broker_id=update.order.broker_id, event=update.event)
            for owner in self._owners_in(update.order.symbol):
                tell_if_alive(owner, ended)

    def _stop_leg_not_named(self, order: OrderReport) -> Tracked | None:
        """Our OCO stop leg in `order`'s symbol and side that still has no broker id, when `order` could be it: an OCO
        stop leg whose client_order_id is no catalyst daemon's (Alpaca makes a leg's up). Its events can come before
        the OCO's submit answer names it (the answer slow or lost while the price runs through the stop)."""
        if order.order_class != "oco" or order.type not in ("stop", "stop_limit") \
                or catalyst_instance(order.client_order_id) is not None:
            return None
        return next((t for t in self.by_order.values()
                     if t.role == "stop_loss" and t.broker_id is None and t.symbol == order.symbol
                     and t.side == order.side and t.status in OPEN_ORDER_STATUSES), None)

    def _settle_suspected_legs(self, leg: Tracked) -> None:
        """`leg` is paired with its broker id, or its OCO was rejected (no id ever): an update held as probably its own
        (_keep_unmatched) whose order is another was placed outside Catalyst after all, and is said so now."""
        for broker_id, order_id in list(self._suspected_legs.items()):
            if order_id != leg.order_id:
                continue
            if broker_id not in self.by_broker and (broker_id in self._replacing or leg.status is OrderStatus.REPLACED):
                continue  # the leg was moved by hand (paired with the leg first placed): this may be its replacement
            del self._suspected_legs[broker_id]
            if broker_id != leg.broker_id and broker_id not in self.by_broker:
                for update in self.unmatched.get(broker_id, []):
                    self._say_placed_elsewhere(update)

    def _tell_filled_outside(self, notice: m.FilledOutside) -> None:
        """A fill of an order no catalyst daemon placed (its client_order_id is not one of ours): the live positions
        in its symbol hear of it, so a market exit waits for the broker's positions to show that sale (ALPACA.md §7)
        before it reads them (PositionActor._held_for_exit); sized from a list that still shows those shares, it
        would sell them again, short."""
        self._filled_outside[notice.symbol] = (time.monotonic(), notice)
        for owner in self._owners_in(notice.symbol):
            tell_if_alive(owner, notice)

    def _owners_in(self, symbol: str) -> list[Any]:
        """The live position actors with an order in `symbol`, each once."""
        return list({t.owner.actor_urn: t.owner for t in self.by_order.values()
                     if t.symbol == symbol and t.owner is not None}.values())

    def _tell_recent_fill_outside(self, owner: Any, symbols: set[str]) -> None:
        """A position actor rebuilt (a crash, a restart's rebuild) a moment after a fill outside Catalyst in its
        symbol is told of it again: the actor it replaces knew, and the positions list may not show it yet."""
        for symbol in symbols:
            heard_at, notice = self._filled_outside.get(symbol, (None, None))
            if heard_at is not None and (ago := time.monotonic() - heard_at) < FILLED_OUTSIDE_RETOLD_S:
                tell_if_alive(owner, notice.model_copy(update={"seconds_ago": ago}))

    def _tell_working_outside(self, owner: Any, symbols: set[str]) -> None:
        """A position actor started (its entry placed) or rebuilt is told the orders Catalyst did not place working in
        its symbols: heard of before it was, they are not told again until they change."""
        for broker_id, order in list(self._working_outside.items()):
            if order.symbol in symbols:
                tell_if_alive(owner, m.OrderOutsideWorking(symbol=order.symbol, side=order.side, broker_id=broker_id,
                                                           qty=order.qty))

    def _placed_outside(self, order: OrderReport) -> bool:
        """An order the router found no row of, in a list of the broker's: placed by no catalyst daemon, and not one of
        ours it cannot name yet (a replacement being followed, an OCO stop leg whose broker id is not known yet), as
        _keep_unmatched tells them apart for a stream event."""
        return (catalyst_instance(order.client_order_id) is None and order.broker_id not in self._replacing
                and order.broker_id not in self._suspected_legs and (order.replaces or "") not in self.by_broker
                and self._stop_leg_not_named(order) is None)

    def _note_outside(self, order: OrderReport, listed: bool = False) -> None:
        """What an order no catalyst daemon placed holds now (outside_holds), from its stream event or, `listed`, a
        list of the broker's (a catch-up's): the positions in its symbol are told when that changes. When a list shows
        ended an order they were told works (its events lost: an outage), they are told it ended too, as its own event
        would have told them (_say_placed_elsewhere)."""
        broker_id = order.broker_id
        if broker_id in self._outside_ended:
            return  # a list read before it ended
        holds = outside_holds(order)
        if holds is None:
            return
        known = self._working_outside.get(broker_id)
        if known is not None:
            holds = min(holds, known.qty)  # an order only ever holds fewer: a list read before its last fill
            if holds == known.qty:
                return
        if holds > 0:
            if known is None and len(self._working_outside) >= MAX_UNMATCHED:
                return
            self._working_outside[broker_id] = WorkingOutside(order.symbol, order.side, holds)
            if listed and known is None:
                log.info(f"router an order Catalyst did not place works at the broker: {order.symbol} {order.side} "
                         f"{holds} left to fill, id={broker_id} cid={order.client_order_id}: its positions told")
        else:
            ended = order.status != "held"  # not an OCO's stop leg parked: the order has ended
            if ended:
                if len(self._outside_ended) >= MAX_UNMATCHED:
                    del self._outside_ended[next(iter(self._outside_ended))]
                self._outside_ended[broker_id] = None
            if known is None:
                return
            del self._working_outside[broker_id]
        notice = m.OrderOutsideWorking(symbol=order.symbol, side=order.side, broker_id=broker_id, qty=holds)
        owners = self._owners_in(order.symbol)
        for owner in owners:
            tell_if_alive(owner, notice)
        if listed and known is not None and holds <= 0 and order.status in ORDER_OUTSIDE_ENDED:
            log.info(f"router an order Catalyst did not place ended {order.status} at the broker (a list's word, its "
                     f"event not heard): {order.symbol} id={broker_id}: its positions told")
            ended_notice = m.OrderOutsideEnded(symbol=order.symbol, side=order.side, broker_id=broker_id,
                                               event=order.status)
            for owner in owners:
                tell_if_alive(owner, ended_notice)

    def _recent_outside(self, fill: FillReport) -> bool:
        """A fill a catch-up lists, of an order no catalyst daemon placed (a FILL activity names none: taken as not
        placed by one), within FILLED_OUTSIDE_RECENT_S exchange seconds: the positions list may not show it yet."""
        if fill.client_order_id is not None and catalyst_instance(fill.client_order_id) is not None:
            return False
        return (self.clock.now() - fill.at).total_seconds() <= FILLED_OUTSIDE_RECENT_S

    def _our_instance(self) -> str:
        if self._instance is None:
            self._instance = self.writer.instance_id().get()
        return self._instance

    def _replay_unmatched(self, tracked: Tracked) -> None:
        for update in self.unmatched.pop(tracked.broker_id or "", []):
            self._on_TradeUpdateReceived(m.TradeUpdateReceived(update=update))
