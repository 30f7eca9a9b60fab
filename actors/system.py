"""The actor system: starts actors in dependency order, stops them in reverse, and supervises position actors.

pykka has no supervision: a position actor that dies tells the supervisor (`PositionCrashed` from its
`on_failure`), and the supervisor rebuilds it from the database (its orders and recorded fills), so a crash
loses nothing and its shares stay protected.
"""

from __future__ import annotations

import threading
import time

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Callable

import pykka
from loguru import logger

from actors import messages as m
from actors.broker_worker import BrokerPool, BrokerWorker
from actors.db_writer import DbWriter, StorageHealth
from actors.order_router import OrderRouter
from actors.position import PositionActor
from actors.refs import tell_if_alive
from catalyst.config import sqlite_path
from catalyst.domain.orders import oco_stop_leg_id, replacement_chain
from catalyst.domain.positions import PositionSide
from catalyst.router_settings import RouterSettings
from catalyst.store.reserve import DiskReserve

log = logger.bind(actor="system")
BROKER_DRAIN_S = 5.0  # at most; the daemon's stop gives less when less of its bound is left (catalyst.daemon._StopBudget)
WORKER_STOP_GRACE_S = 0.5  # past the drain: a worker between two jobs answers its stop in well under this
MAX_REBUILDS = 3  # per position; a position that keeps crashing is left to the doctor, loudly


def plan_from_entry(entry: Any, entries: tuple[Any, ...] = ()) -> m.TradePlan:
    """The trade plan a pending entry was placed with: it is all on the entry order row. `entries`: the entry rows of
    its chain, first to working, when the entry was replaced at the broker (a limit moved by hand): the working one's
    shares and price, beside those the replaced ones filled."""
    last = entries[-1] if entries else entry
    qty = last.quantity + sum((e.filled_qty for e in entries[:-1]), Decimal(0))
    return m.TradePlan(
        symbol=entry.symbol, side=PositionSide.LONG if entry.side == "buy" else PositionSide.SHORT,
        qty=qty, order_type=last.order_type, limit_price=last.limit_price,
        stop_loss=entry.planned_stop_loss, take_profit=entry.planned_take_profit, cycle_id=entry.cycle_id,
        entry_price=entry.planned_entry_price,
    )


@dataclass(frozen=True)
class Restored:
    """What PositionActor._restore reads, derived from a store PositionBook."""

    entry_order_id: int
    position_id: int | None
    orders: tuple[Any, ...]
    pairs: tuple[tuple[int, int, Decimal], ...]
    fills: tuple[tuple[str, Decimal, Decimal], ...]
    # (order id, shares of its recorded executions), per order; no default: without it every exit's reported fills
    # would count as leaving, never protected
    recorded: tuple[tuple[int, Decimal], ...]
    executions: tuple[str, ...]  # the execution ids of those fills
    position_row: Any = None  # the positions row as committed (PositionRecord), if there is one
    last_fill_at: Any = None  # when the last recorded execution happened
    entries: tuple[Any, ...] = ()  # its entry rows, first to working (more than one: replaced at the broker)

    @classmethod
    def from_book(cls, book: Any) -> Restored:
        roles = {o.order_id: o.role for o in book.orders}
        by_id = {o.order_id: o for o in book.orders}
        # Legs replaced at the broker (m.OrderReplaced): each OCO is its two rows made together, followed through
        # their replacements; a replacement's row is never the start of a pair.
        replaced_by = {o.order_id: o.replaced_by_order_id for o in book.orders if o.replaced_by_order_id in roles}
        replacements = set(replaced_by.values())
        pairs = []
        for o in book.orders:
            stop_id = oco_stop_leg_id(o.order_id)
            if (o.role != "take_profit" or roles.get(stop_id) != "stop_loss" or o.order_id in replacements
                    or stop_id in replacements):
                continue
            take_profits, stops = replacement_chain(o.order_id, replaced_by), replacement_chain(stop_id, replaced_by)
            sold = sum((by_id[i].filled_qty for i in (*take_profits[:-1], *stops[:-1])), Decimal(0))
            qty = o.quantity - sold
            # A replacement covers its own qty beyond what the other leg has sold (PositionActor._on_order_replaced).
            for chain, other in ((take_profits, stops[-1]), (stops, take_profits[-1])):
                if len(chain) > 1:
                    qty = min(qty, by_id[chain[-1]].quantity + by_id[other].filled_qty)
            pairs.append((take_profits[-1], stops[-1], qty))
        mine = [f for f in book.fills if f.order_id in roles]
        fills = tuple((roles[f.order_id], f.qty, f.price) for f in mine)
        recorded: dict[int, Decimal] = {}
        for f in mine:
            recorded[f.order_id] = recorded.get(f.order_id, Decimal(0)) + f.qty
        entries = tuple(by_id[i] for i in replacement_chain(book.entry.order_id, replaced_by)
                        if by_id.get(i) is not None and by_id[i].role == "entry")
        return cls(book.entry.order_id, book.position.position_id if book.position else book.entry.position_id,
                   book.orders, tuple(pairs), fills, tuple(recorded.items()), tuple(f.execution_id for f in mine),
                   book.position, mine[-1].occurred_at if mine else None, entries)


class Supervisor(pykka.ThreadingActor):
    """Keeps the registry of live position actors and rebuilds crashed ones."""

    def __init__(self, writer: Any, make_position: Callable[..., Any]) -> None:
        super().__init__()
        self.writer = writer
        self.make_position = make_position
        self.live: dict[str, Any] = {}  # actor urn -> ActorRef
        self.by_entry: dict[int, Any] = {}  # entry order id -> the position's ActorRef
        self.rebuilds: dict[int, int] = {}
        self.stale_rebuilds: dict[int, int] = {}  # rebuilt again, its book read too early (m.RebuildFromDatabase)
        self.finished: list[m.PositionFinished] = []
        self.stopping = False  # the system is stopping: nothing is rebuilt (the next start rebuilds from the database)

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, m.PositionFinished):
            self.finished.append(message)
            self.live = {k: v for k, v in self.live.items() if v.is_alive()}
            self.by_entry = {k: v for k, v in self.by_entry.items() if v.is_alive()}
        elif isinstance(message, m.PositionCrashed):
            self._rebuild(message)
        elif isinstance(message, m.LateEntryShares):
            self._rebuild_for_late_shares(message)
        elif isinstance(message, m.ForSuccessor):
            self._pass_to_successor(message)
        elif isinstance(message, m.RebuildFromDatabase):
            # The rebuild of a crash whose book came too early: not one of the position's crashes (MAX_REBUILDS),
            # counted on its own so that it cannot go round for ever either.
            self._rebuild_in_place_of(message.entry_order_id, message.handed_over_by, message.subject,
                                      f"was rebuilt from a book read before {message.detail}",
                                      if_not="its orders at the broker stay in place; the doctor will report it, and "
                                             "a restart rebuilds it from the database", counts=self.stale_rebuilds)
        elif isinstance(message, _Adopt):
            self.live[message.ref.actor_urn] = message.ref
        elif isinstance(message, m.PositionEntry):
            self.by_entry[message.entry_order_id] = message.owner
        elif isinstance(message, _Stopping):
            self.stopping = True
        return None

    def restore(self, entry_order_id: int) -> Any:
        """A position actor rebuilt from the database, or the live one if its entry has one: two actors for one
        position would each place stops and exits for it."""
        owner = self.by_entry.get(entry_order_id)
        if owner is not None and owner.is_alive():
            log.warning(f"system entry o-{entry_order_id} has a live position actor: not rebuilt beside it")
            return owner
        if self.stopping:
            # An actor started now would outlive the stop (the position actors are stopped already) and keep the
            # process from exiting. What it would have done waits in the database for the next start.
            log.info(f"system entry o-{entry_order_id} not rebuilt: the system is stopping; the next start rebuilds it")
            return None
        book = self.writer.position_book(entry_order_id).get()
        if book is None:
            log.error(f"system cannot restore entry o-{entry_order_id}: not in the database")
            return None
        owner = self.by_entry.get(book.entry.order_id)  # asked by an entry that replaced the position's first
        if owner is not None and owner.is_alive():
            log.warning(f"system entry o-{book.entry.order_id} has a live position actor: not rebuilt beside it")
            return owner
        restored = Restored.from_book(book)
        ref = self.make_position(plan_from_entry(book.entry, restored.entries), restored=restored)
        self.live[ref.actor_urn] = ref
        for order_id in {entry_order_id, *(entry.order_id for entry in restored.entries)}:
            self.by_entry[order_id] = ref
        return ref

    def _rebuild(self, msg: m.PositionCrashed) -> None:
        rebuilt = self._rebuild_in_place_of(msg.entry_order_id, msg.owner, f"position {msg.key}",
                                            f"crashed ({msg.error})",
                                            if_not="its broker-side protection stays in place; the doctor will report "
                                                   "it, and a restart rebuilds it from the database")
        if rebuilt is not None and msg.for_successor is not None:
            rebuilt.tell(msg.for_successor)

    def _rebuild_for_late_shares(self, msg: m.LateEntryShares) -> None:
        self._rebuild_in_place_of(msg.entry_order_id, msg.handed_over_by, msg.subject,
                                  f"{msg.qty} entry shares recorded with no live position actor (closed before they "
                                  "were; a closed one rebuilt sells them)",
                                  if_not="if its position is closed, those shares are at the broker with no stop; the "
                                         "doctor's pass reports them")

    def _rebuild_in_place_of(self, entry_order_id: int, leaving: Any, subject: str, why: str, if_not: str,
                             counts: dict[int, int] | None = None) -> Any:
        """The position of `entry_order_id` rebuilt from the database in place of `leaving`, its actor that crashed or
        hands it over (None: not known). Not beside another live actor: a rebuild already made (the router can find
        a crashing actor dead, and tell of its late shares, before its on_failure tells of the crash: pykka marks it
        stopped first); two would each sell and protect the same shares. At most MAX_REBUILDS times a position.
        The actor now in its place (rebuilt, or the live one), None if there is none."""
        live = self.by_entry.get(entry_order_id)
        if live is not None and live.is_alive() and (leaving is None or live.actor_urn != leaving.actor_urn):
            log.info(f"system {subject} {why}; its position has a live actor (rebuilt already): not rebuilt again")
            return live
        counts = self.rebuilds if counts is None else counts
        count = counts.get(entry_order_id, 0) + 1
        counts[entry_order_id] = count
        if count > MAX_REBUILDS:
            log.critical(f"system {subject} {why}; rebuilt {count - 1} times already, not again: {if_not}")
            return None
        log.warning(f"system {subject} {why}: rebuilding it from the database (#{count})")
        self.by_entry.pop(entry_order_id, None)  # the actor leaving: never handed out again
        try:
            return self.restore(entry_order_id)
        except Exception as exc:  # noqa: BLE001 - the supervisor must outlive one rebuild (a disk refusing reads)
            log.error(f"system {subject} could not be rebuilt: {type(exc).__name__}: {exc}; {if_not}")
            return None

    def _pass_to_successor(self, msg: m.ForSuccessor) -> None:
        """Told after the hand-over it follows (the same actor told both, in order): the rebuild is made by now."""
        successor = self.by_entry.get(msg.entry_order_id)
        if successor is None or not successor.is_alive():
            log.warning(f"system entry o-{msg.entry_order_id} {type(msg.message).__name__} reached its position after "
                        "it was handed over, and no actor was rebuilt in its place: the cycle's retry or the next "
                        "start asks again")
            return
        successor.tell(msg.message)

    def live_count(self) -> int:
        return sum(1 for ref in self.live.values() if ref.is_alive())

    def live_refs(self) -> list[Any]:
        return [ref for ref in self.live.values() if ref.is_alive()]


@dataclass
class TradingSystem:
    """Wires the actors. `broker_factory(name)` returns a new AlpacaBroker; `stream_factory(router_ref)` a
    started-later TradeStream whose callbacks tell the router."""

    database_url: str
    broker_factory: Callable[[str], Any]
    stream_factory: Callable[[Any], Any] | None
    clock: Any
    protect_workers: int | None = None  # None: the router settings' protection_workers
    general_workers: int | None = None  # None: the router settings' general_workers
    synchronous: str = "FULL"
    defer_report_sync: bool = True
    router_settings: Any = None
    disk_reserve_mb: int = 0  # space set aside beside the database for a write a full disk refuses (DiskReserve)
    # How long a stop lets the broker workers finish what the router asked of them (see _stop_broker_workers).
    broker_drain_s: float = BROKER_DRAIN_S
    # Whether the market is closed now (catalyst.hooks.MarketHours), for the position actors to ask before a market
    # exit of their own accord; None (tests, the benchmarks): only the cycle's KeepOvernight says so.
    market_closed: Callable[[], bool] | None = None
    # The doctor (filled in once it has started, after this system): a position that leaves shares to its pass asks
    # for one now (m.PassWanted). Empty (tests, the benchmarks): the periodic passes alone.
    doctor_listeners: list[Any] = field(default_factory=list)
    refs: list[Any] = field(default_factory=list)
    storage: StorageHealth = field(default_factory=StorageHealth)  # the writer's word on the disk (Daemon reads it)
    # Set as the daemon begins to stop: the router sends no entry from then on, whatever is already in its mailbox (a
    # review: a TERM as the cycle opened its positions sent every entry after the signal).
    entries_closed: threading.Event = field(default_factory=threading.Event)
    # Every position actor this system started, so stop() ends them even if the supervisor that knows them is gone:
    # one left running is a thread that keeps the process from exiting after it said it stopped.
    _positions: list[Any] = field(default_factory=list, init=False, repr=False)
    _positions_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _positions_kept: int = field(default=16, init=False, repr=False)
    _pools: list[BrokerPool] = field(default_factory=list, init=False, repr=False)

    def start(self) -> TradingSystem:
        try:
            self.writer_ref = DbWriter.start(self.database_url, clock=self.clock.now, synchronous=self.synchronous,
                                           defer_report_sync=self.defer_report_sync, health=self.storage,
                                           reserve=self._disk_reserve())
            self.refs.append(self.writer_ref)
            self.writer = self.writer_ref.proxy()
            settings = self.router_settings or RouterSettings()
            protect = self._pool("protect", self.protect_workers or settings.protection_workers)
            general = self._pool("general", self.general_workers or settings.general_workers)
            self._pools = [protect, general]
            # The supervisor before the router, which tells it of entry shares recorded after their position closed.
            self.supervisor_ref = Supervisor.start(self.writer, self._make_position)
            self.refs.append(self.supervisor_ref)
            self.supervisor = self.supervisor_ref.proxy()
            self.router = OrderRouter.start(self.writer, protect, general, self.clock, settings=self.router_settings,
                                            supervisor=self.supervisor_ref, entries_closed=self.entries_closed)
            self.refs.append(self.router)
            for entry_id in self.writer.live_entry_ids().get():
                self.supervisor.restore(entry_id).get()
            self.stream = self.stream_factory(self.router) if self.stream_factory else None
            if self.stream is not None:
                self.stream.start()
            log.info(f"system started: writer, {len(protect.workers)} protection + {len(general.workers)} general broker"
                     f" workers, router, supervisor"
                     f", {self.supervisor.live_count().get()} positions restored")
        except BaseException:
            self.stop()
            raise
        return self

    def _disk_reserve(self) -> DiskReserve | None:
        database = sqlite_path(self.database_url)
        return DiskReserve.beside(database, self.disk_reserve_mb) if database and self.disk_reserve_mb else None

    def _pool(self, name: str, size: int) -> BrokerPool:
        pool = BrokerPool()
        for i in range(size):
            ref = BrokerWorker.start(self.broker_factory(f"{name}-{i}"), f"{name}-{i}", pool)
            self.refs.append(ref)
            pool.add(ref, f"{name}-{i}")
        return pool

    def _make_position(self, plan: m.TradePlan, restored: Any = None) -> Any:
        ref = PositionActor.start(plan, self.router, self.writer, self.supervisor_ref, self.clock, restored,
                                  market_closed=self.market_closed, ask_doctor=self._ask_doctor)
        with self._positions_lock:  # the supervisor's thread (rebuilds) and the cycle's (new trades) both start them
            self._positions.append(ref)
            if len(self._positions) >= 2 * self._positions_kept:  # closed ones let go now and then, not every time
                self._positions = [known for known in self._positions if known.is_alive()]
                self._positions_kept = max(len(self._positions), 16)
        return ref

    def _ask_doctor(self, reason: str) -> bool:
        """False: no doctor to ask (tests, the benchmarks; or it has stopped)."""
        asked = [tell_if_alive(doctor, m.PassWanted(reason=reason)) for doctor in list(self.doctor_listeners)]
        return any(asked)

    def open_position(self, plan: m.TradePlan) -> Any:
        """Start a position actor for a new trade (the cycle's job; tests and `catalyst trade` call it too)."""
        ref = self._make_position(plan)
        # Registered under its entry id once the router has created the entry row.
        self.supervisor_ref.tell(_Adopt(ref=ref))
        return ref

    def stop(self, timeout: float = 10.0) -> None:
        """Reverse order: stream first (no new events), then the actors, then anything left. Twice is once: a
        start that failed stops itself, and its owner may stop it again."""
        stream = getattr(self, "stream", None)
        if stream is None and not self.refs:
            return
        if stream is not None:
            stream.stop()
            self.stream = None
        supervisor = getattr(self, "supervisor_ref", None)
        if supervisor is not None:
            try:  # before the positions stop: none is rebuilt behind them (late entry shares, a crash)
                supervisor.ask(_Stopping(), timeout=timeout)
            except (pykka.ActorDeadError, pykka.Timeout):
                pass
        with self._positions_lock:
            positions, self._positions = self._positions, []
        _stop_each(positions, timeout)
        left = self._stop_broker_workers()  # before the router: it records the answers to the calls they finish
        _stop_each([ref for ref in reversed(self.refs) if ref.actor_urn not in left], timeout)
        self.refs.clear()
        self._pools.clear()
        log.info("system stopped")

    def _stop_broker_workers(self) -> set[str]:
        """The workers finish what the router asked of them within broker_drain_s, then stop; the ones still waiting
        for the broker after it are left behind (daemon threads: the process exits all the same), named with their
        calls. Before, each worker's stop waited for its whole line, every call in an outage hanging broker.timeout_s,
        and a graceful stop ran past its bound (daemon.shutdown_timeout_s, exit 1)."""
        deadline = time.monotonic() + self.broker_drain_s
        for pool in self._pools:
            pool.close_at(deadline)
        stopping = [(pool, ref, ref.stop(block=False)) for pool in self._pools for ref in pool.workers]
        left: set[str] = set()  # actor urns
        waited_until = deadline + WORKER_STOP_GRACE_S  # one wait for them all: not a grace per worker left (a review)
        for pool, ref, stopped in stopping:
            try:
                stopped.get(timeout=max(waited_until - time.monotonic(), 0))
            except pykka.ActorDeadError:
                pass
            except pykka.Timeout:
                left.add(ref.actor_urn)
                # Busy, not necessarily waiting for an answer: the client may be sleeping out a 429's reset.
                log.warning(f"system stopping: broker worker {pool.names[ref.actor_urn]} still busy with a broker call "
                            f"after {self.broker_drain_s:g} s ({pool.on_the_wire(ref)}); left behind: what the call did "
                            "is read at the next start")
        unsent = [job for pool in self._pools for job in pool.left_in_line()]
        if unsent:
            log.warning(f"system stopping with {len(unsent)} order or cancel call(s) not sent ({', '.join(unsent)}): "
                        "their rows are kept, and the next start sends or asks again")
        return left


def _stop_each(refs: list[Any], timeout: float) -> None:
    for ref in refs:
        try:
            ref.stop(block=True, timeout=timeout)
        except pykka.ActorDeadError:  # closed, or crashed, meanwhile
            pass
        except pykka.Timeout:  # the rest still stop: a router or writer left running would hold the process
            log.warning(f"system {ref.actor_class.__name__} did not stop within {timeout:g} s: going on with the "
                        "others")


class _Adopt(m.Message):
    ref: Any


class _Stopping(m.Message):
    """The system is stopping: rebuild nothing from now on."""


def alpaca_factories(key_id: str, secret: str, trading_url: str | None, stream_url: str | None, *,
                     paper: bool = True, timeout_s: float = 10.0, limiter: Any = None, data_url: str | None = None,
                     data_feed: str = "auto",
                     reconnect_listeners: list[Any] | None = None,
                     ) -> tuple[Callable[[str], Any], Callable[[Any], Any]]:
    """Broker and stream factories over the real alpaca-py clients (emulator, paper or live: only URLs differ).

    All workers share one rate limiter: Alpaca's 200 requests/minute is per account, not per connection.
    Every stream (re)connection is told to the router (REST catch-up); reconnections after the first are also
    told to `reconnect_listeners` (the doctor), since events in the gap are never replayed.
    """
    listeners = reconnect_listeners if reconnect_listeners is not None else []

    def connected(router: Any, count: int) -> None:
        router.tell(m.StreamConnected(count=count))
        if count > 1:
            for listener in listeners:
                listener.tell(m.StreamReconnected(count=count))

    from catalyst.broker.adapter import AlpacaBroker
    from catalyst.broker.stream import TradeStream

    def broker(name: str) -> Any:
        return AlpacaBroker(key_id, secret, trading_url=trading_url, stream_url=stream_url, data_url=data_url,
                            paper=paper, timeout_s=timeout_s, limiter=limiter, name=name, data_feed=data_feed)

    def stream(router: Any) -> Any:
        return TradeStream(
            key_id, secret, stream_url,
            on_update=lambda report: router.tell(m.TradeUpdateReceived(update=report)),
            on_connected=lambda count: connected(router, count),
            on_auth_failed=lambda reason: router.tell(m.StreamLoginFailed(reason=reason)),
            paper=paper,
        )

    return broker, stream
