"""Broker workers: the actors that make broker calls, so a slow broker never stalls fill routing.

The router keeps two small pools: one for protection, exits and cancels, one for entries, lookups and catch-up,
so an entry waiting on a slow broker never delays a stop-loss. Each worker owns its own alpaca-py clients.

A pool's jobs wait in one line, taken by whichever of its workers is free (BrokerPool). They used to be dealt to
the workers in turn, each into its own mailbox: a call that hung (a lost reply waits out the HTTP timeout, 10 s)
then held up every job dealt to its worker after it while the other worker sat idle. Seen in a day with faults:
two entries sent 10 s (40 exchange minutes) late, after the day's emergency stop, and held overnight.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any

import pykka
from loguru import logger

from actors import messages as m
from actors.refs import tell_if_alive
from pydantic import ValidationError

from catalyst.broker.calls import failures_quiet
from catalyst.broker.errors import (BrokerError, LookupFailedToo, NotFound, PermanentError, SubmitRefused,
                                    answered_nothing, is_not_cancelable)
from catalyst.broker.orders import NewOrder
from catalyst.broker.reports import OrderReport
from catalyst.broker.ratelimit import Priority
from catalyst.domain.cycle import exchange_time

log = logger.bind(actor="broker")


class SubmitOrder(m.Message):
    row: Any
    reply_to: Any
    quiet: bool = False  # a resend through a broker outage its router says nothing of: its calls' failures are DEBUG


class SubmitOco(m.Message):
    take_profit: Any
    stop_loss: Any
    reply_to: Any
    quiet: bool = False  # as SubmitOrder's


class Cancel(m.Message):
    order_id: int
    broker_id: str
    reply_to: Any
    quiet: bool = False  # m.CancelOrders': its call's failure is DEBUG


class Verify(m.Message):
    orders: tuple[tuple[int, str], ...]  # (order id, broker id)
    reply_to: Any
    quiet: bool = False  # m.VerifyOrders': its calls' failures are DEBUG, and so is a read the broker did not answer


class CatchUp(m.Message):
    since: datetime
    reply_to: Any
    quiet: bool = False  # asked again through an outage its router says nothing of: its calls' failures are DEBUG
    # Also every order working at the broker, however old (`since` lists those placed after it only): a start's, so
    # a trader's order placed on an earlier day (good till cancelled) is known too
    working: bool = False


class ReadPosition(m.Message):
    symbol: str
    reply_to: Any
    for_exit: bool = False  # echoed in the answer
    for_protection: bool = False  # echoed in the answer


class ReadReplacement(m.Message):
    """The order that replaced one of ours, read by its broker id; the answer (m.OrderRead) goes to `reply_to`."""

    replaced_order_id: int
    broker_id: str
    reply_to: Any


class ReadFirstOrder(m.Message):
    """The order first placed where `broker_id` now stands: its `replaces` followed back (an OCO's stop leg moved by
    hand before the leg's id was recorded). The answer (m.FirstOrderRead) goes to `reply_to`."""

    order_id: int  # our row of it
    broker_id: str  # the order the current leg replaced
    reply_to: Any


FIRST_ORDER_READS = 20  # replacements followed back at most: a chain of hand moves is short


Job = SubmitOrder | SubmitOco | Cancel | Verify | CatchUp | ReadPosition | ReadReplacement | ReadFirstOrder


def submit_order_ids(submit: SubmitOrder | SubmitOco) -> tuple[int, ...]:
    """The rows a submit carries: one, or an OCO's two legs (take-profit first)."""
    if isinstance(submit, SubmitOco):
        return submit.take_profit.order_id, submit.stop_loss.order_id
    return (submit.row.order_id,)


def _job_orders(job: Any) -> str:
    if isinstance(job, SubmitOrder | SubmitOco):
        ids: tuple[int, ...] = submit_order_ids(job)
    elif isinstance(job, Cancel):
        ids = (job.order_id,)
    elif isinstance(job, Verify):
        ids = tuple(order_id for order_id, _ in job.orders)
    else:
        return ""
    return " for " + ", ".join(f"o-{i}" for i in ids)


class _TakeJobs(m.Message):
    """To an idle worker: its pool has a job."""


_TAKE_JOBS = _TakeJobs()  # frozen: one for every wake-up


class BrokerPool:
    """One line of jobs for a pool of BrokerWorkers, each job taken by whichever worker is free (module docstring).

    Thread-safe: the router tells jobs and withdraws them, each worker takes them on its own thread. A worker that
    finds the line empty is marked idle; the next job wakes one idle worker, so no job waits while a worker is free
    and no worker is woken for nothing."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: deque[Job] = deque()
        self._idle: list[Any] = []  # refs of the workers waiting for a job
        self.workers: list[Any] = []
        self.names: dict[str, str] = {}  # worker urn → its name (protect-0), for the log
        self._closes_at: float | None = None  # time.monotonic() past which no job is taken (the system stopping)
        self._taken: dict[str, Job] = {}  # worker urn → the job it took last and is on (until it takes again)

    def add(self, worker: Any, name: str = "") -> None:
        with self._lock:
            self.workers.append(worker)
            self.names[worker.actor_urn] = name or worker.actor_urn
            self._idle.append(worker)

    def tell(self, job: Job) -> None:
        with self._lock:
            self._jobs.append(job)
            worker = self._idle.pop() if self._idle else None
        while worker is not None and not tell_if_alive(worker, _TAKE_JOBS):  # a worker that died (pykka logged it)
            with self._lock:
                worker = self._idle.pop() if self._idle else None

    def take(self, worker: Any) -> Job | None:
        """The next job, or None: the worker is idle until told _TakeJobs again."""
        with self._lock:
            if self._jobs and (self._closes_at is None or time.monotonic() < self._closes_at):
                job = self._taken[worker.actor_urn] = self._jobs.popleft()
                return job
            self._taken.pop(worker.actor_urn, None)
            if worker not in self._idle:
                self._idle.append(worker)
            return None

    def close_at(self, deadline: float) -> None:
        """The system stopping: jobs are still taken until `deadline` (time.monotonic()), so what the router has
        asked for (an OCO for the last fill, say) goes out while the router is there to record its answer; none
        after it. A broker that has stopped answering then holds the stop only for the calls already on the wire:
        a line of cancels each hanging broker.timeout_s took a stop past its bound (a review)."""
        with self._lock:
            self._closes_at = deadline

    def on_the_wire(self, worker: Any) -> str:
        """The job `worker` took and has not finished (the stop's line about a call it does not wait for)."""
        with self._lock:
            job = self._taken.get(worker.actor_urn)
        return f"{type(job).__name__}{_job_orders(job)}" if job is not None else "its last job"

    def left_in_line(self) -> list[str]:
        """The orders and cancels never sent, each once (their rows are durable; the next start sends or asks again).
        Reads (Verify, CatchUp, ReadPosition) are left out: nothing waits on them past the stop."""
        with self._lock:
            jobs = [job for job in self._jobs if isinstance(job, SubmitOrder | SubmitOco | Cancel)]
        return list(dict.fromkeys(f"{type(job).__name__}{_job_orders(job)}" for job in jobs))

    def withdraw(self, order_id: int) -> bool:
        """Take back the submit of simple order `order_id` if no worker has taken it yet: True means it will never
        be sent. False: it is being sent or was sent (or is not here); its acknowledgement will tell."""
        with self._lock:
            for job in self._jobs:
                if isinstance(job, SubmitOrder) and job.row.order_id == order_id:
                    self._jobs.remove(job)
                    return True
        return False


class BrokerWorker(pykka.ThreadingActor):
    # A call the broker never answers (an outage) may outlive the stop's bound: the process must still exit. What the
    # call did is found again at the next start, as for a kill: its row was committed before it was sent.
    use_daemon_thread = True

    def __init__(self, broker: Any, name: str, pool: BrokerPool | None = None) -> None:
        super().__init__()
        self.broker = broker
        self.name = name
        self.pool = pool


    def on_receive(self, message: Any) -> None:
        if isinstance(message, _TakeJobs):
            assert self.pool is not None, "_TakeJobs is sent by a pool"
            while (job := self.pool.take(self.actor_ref)) is not None:
                self._survive(job)
            return
        self._survive(message)

    def _survive(self, job: Any) -> None:
        """A job that fails in a way no broker error explains (a bug) is logged and answered; the worker lives on.
        Left to pykka, the worker would die quietly mid-line: its pool's jobs would wait for workers that are gone,
        and a submit's row, never answered, would stay `created` with its position waiting. A submit is answered
        `outcome unknown` (it may have reached the broker): the doctor then looks it up by its client id."""
        try:
            self._handle(job)
        except Exception as exc:  # noqa: BLE001 - the last guard; each call's broker errors are handled below
            log.error(f"broker worker {self.name}: {type(job).__name__}{_job_orders(job)} failed unexpectedly: "
                      f"{type(exc).__name__}: {exc}")
            if isinstance(job, SubmitOrder | SubmitOco):
                tell_if_alive(job.reply_to, m.SubmitResult(order_ids=submit_order_ids(job),
                                                           unknown=f"unexpected {type(exc).__name__}: {exc}"))
            elif isinstance(job, ReadPosition):  # its asker waits for an answer, with shares and no stop
                tell_if_alive(job.reply_to, m.BrokerPositionRead(symbol=job.symbol, for_exit=job.for_exit,
                                                                 for_protection=job.for_protection,
                                                                 error=f"unexpected {type(exc).__name__}: {exc}"))
            elif isinstance(job, ReadFirstOrder):  # its leg stays unpaired until answered
                tell_if_alive(job.reply_to, m.FirstOrderRead(order_id=job.order_id,
                                                             error=f"unexpected {type(exc).__name__}: {exc}"))
            elif isinstance(job, ReadReplacement):  # its position waits to hear what its order became
                tell_if_alive(job.reply_to, m.OrderRead(replaced_order_id=job.replaced_order_id,
                                                        broker_id=job.broker_id,
                                                        error=f"unexpected {type(exc).__name__}: {exc}"))

    def _handle(self, message: Any) -> None:
        if isinstance(message, SubmitOrder):
            self._submit(message)
        elif isinstance(message, SubmitOco):
            self._submit_oco(message)
        elif isinstance(message, Cancel):
            self._cancel(message)
        elif isinstance(message, Verify):
            self._verify(message)
        elif isinstance(message, CatchUp):
            self._catch_up(message)
        elif isinstance(message, ReadPosition):
            self._read_position(message)
        elif isinstance(message, ReadReplacement):
            self._read_replacement(message)
        elif isinstance(message, ReadFirstOrder):
            self._read_first_order(message)

    def _submit(self, msg: SubmitOrder) -> None:
        row = msg.row
        priority = Priority.ENTRY if row.role == "entry" else Priority.PROTECT
        self._send((row.order_id,), lambda: NewOrder(
            symbol=row.symbol, side=row.side, qty=row.quantity, type=row.order_type, tif=row.time_in_force,
            limit_price=row.limit_price, stop_price=row.stop_price, client_order_id=row.client_order_id,
        ), priority, msg.reply_to, msg.quiet)

    def _submit_oco(self, msg: SubmitOco) -> None:
        tp, sl = msg.take_profit, msg.stop_loss
        self._send((tp.order_id, sl.order_id), lambda: NewOrder.oco_exit(
            symbol=tp.symbol, side=tp.side, qty=tp.quantity, take_profit_limit=tp.limit_price,
            stop_price=sl.stop_price, client_order_id=tp.client_order_id, tif=tp.time_in_force,
        ), Priority.PROTECT, msg.reply_to, msg.quiet)

    def _send(self, order_ids: tuple[int, ...], make_order: Callable[[], NewOrder], priority: Priority,
              reply_to: Any, quiet: bool = False) -> None:
        """Submit, tell the router, and only then log the broker's answer: the acknowledgement (and, for a stop, the
        end of the wait for protection) is not held up by a log line."""
        sent: list[NewOrder] = []

        def submit() -> OrderReport:
            sent.append(make_order())  # built inside _result: a row alpaca-py cannot express is refused, not sent
            return self.broker.submit_with_lookup(sent[0], priority=priority, announce=False)

        with failures_quiet(quiet):
            result = self._result(order_ids, submit)
        tell_if_alive(reply_to, result)  # a router stopped first (shutdown): the row is resent at the next start
        if result.report is not None:
            try:  # answered already: a failure here must not answer the submit a second time (_survive)
                self.broker.announce_submit(sent[0], result.report)
            except Exception as exc:  # noqa: BLE001
                log.error(f"broker worker {self.name}: logging the answer for o-{order_ids[0]} failed: "
                          f"{type(exc).__name__}: {exc}")

    def _result(self, order_ids: tuple[int, ...], call: Any) -> m.SubmitResult:
        try:
            return m.SubmitResult(order_ids=order_ids, report=call())
        except PermanentError as exc:
            return m.SubmitResult(order_ids=order_ids, rejected=str(exc))
        except ValidationError as exc:  # a row the broker request cannot express: refuse it, never send it
            return m.SubmitResult(order_ids=order_ids, rejected=f"invalid order: {exc.errors()[0]['msg']}")
        except SubmitRefused as exc:
            return m.SubmitResult(order_ids=order_ids, refused=str(exc), retry_after_s=exc.retry_after_s)
        except LookupFailedToo as exc:
            return m.SubmitResult(order_ids=order_ids, unknown=str(exc), unanswered=True)
        except BrokerError as exc:
            return m.SubmitResult(order_ids=order_ids, unknown=str(exc))

    def _cancel(self, msg: Cancel) -> None:
        try:
            with failures_quiet(msg.quiet):
                self.broker.cancel_order(msg.broker_id)
            tell_if_alive(msg.reply_to, m.CancelResult(order_id=msg.order_id, ok=True))
        except BrokerError as exc:
            # 422 "order is not cancelable" typically means it already filled or was canceled: verify by REST.
            tell_if_alive(msg.reply_to, m.CancelResult(order_id=msg.order_id, ok=False, detail=str(exc),
                                                       ended=is_not_cancelable(exc),
                                                       unanswered=answered_nothing(exc), quiet=msg.quiet))

    def _verify(self, msg: Verify) -> None:
        reports, missing = [], []
        for order_id, broker_id in msg.orders:
            try:
                with failures_quiet(msg.quiet):
                    reports.append(self.broker.get_order(broker_id))
            except NotFound:
                missing.append(order_id)
            except BrokerError as exc:
                log.log("DEBUG" if msg.quiet and answered_nothing(exc) else "WARNING",
                        f"broker verify o-{order_id} failed: {exc}")
        tell_if_alive(msg.reply_to, m.OrdersVerified(reports=tuple(reports), missing=tuple(missing)))

    def _read_position(self, msg: ReadPosition) -> None:
        try:
            # A position waits on it with shares and no stop (a market exit's size, late entry shares' sale)
            held = self.broker.position(msg.symbol, priority=Priority.PROTECT)
        except BrokerError as exc:
            tell_if_alive(msg.reply_to, m.BrokerPositionRead(symbol=msg.symbol, error=str(exc), for_exit=msg.for_exit,
                                                             for_protection=msg.for_protection))
            return
        qty = Decimal(0) if held is None else (held.qty if held.side == "long" else -held.qty)
        available = Decimal(0) if held is None else held.qty_available
        tell_if_alive(msg.reply_to, m.BrokerPositionRead(symbol=msg.symbol, qty=qty, available=available,
                                                         for_exit=msg.for_exit, for_protection=msg.for_protection))

    def _read_replacement(self, msg: ReadReplacement) -> None:
        try:
            report = self.broker.get_order(msg.broker_id, priority=Priority.PROTECT)
        except BrokerError as exc:
            tell_if_alive(msg.reply_to, m.OrderRead(replaced_order_id=msg.replaced_order_id, broker_id=msg.broker_id,
                                                    error=str(exc), not_found=isinstance(exc, NotFound)))
            return
        tell_if_alive(msg.reply_to, m.OrderRead(replaced_order_id=msg.replaced_order_id, broker_id=msg.broker_id,
                                                report=report))

    def _read_first_order(self, msg: ReadFirstOrder) -> None:
        try:
            report = self.broker.get_order(msg.broker_id, priority=Priority.PROTECT)
            for _ in range(FIRST_ORDER_READS):
                if not report.replaces:
                    break
                report = self.broker.get_order(report.replaces, priority=Priority.PROTECT)
        except BrokerError as exc:
            tell_if_alive(msg.reply_to, m.FirstOrderRead(order_id=msg.order_id, error=str(exc)))
            return
        tell_if_alive(msg.reply_to, m.FirstOrderRead(order_id=msg.order_id, report=report))

    def _catch_up(self, msg: CatchUp) -> None:
        try:
            with failures_quiet(msg.quiet):
                orders = self.broker.list_orders(status="all", after=msg.since, nested=True)
                fills = self.broker.fill_activities(after=msg.since)
                working = self.broker.list_orders(status="open", nested=True) if msg.working else None
        except BrokerError as exc:  # the router says so, and asks again (OrderRouter._catch_up_later)
            log.debug(f"broker catch-up since {exchange_time(msg.since):%H:%M:%S} failed: {exc}")
            tell_if_alive(msg.reply_to, m.CatchUpResult(orders=(), fills=(), since=msg.since, failed=str(exc)))
            return
        flat = []
        for order in orders:
            flat.append(order)
            flat.extend(order.legs)
        tell_if_alive(msg.reply_to, m.CatchUpResult(orders=tuple(flat), fills=tuple(fills), since=msg.since,
                                                    working=None if working is None else tuple(working)))
