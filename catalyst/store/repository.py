"""The Store: one method, one transaction, plain frozen records out (safe across actor threads).

Each public method is a thin wrapper that runs one operation from *_ops.py / queries.py in its own
transaction. The operations take a session and never commit, so `batch` runs many of them in one
transaction and one commit, a failing call rolled back alone while the others still commit (group
commit, see actors/db_writer.py).
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Any, TypeVar

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from catalyst.store.batch import CallOutcome, StoreCall, unwrap_all
from catalyst.store import cycle_ops, doctor_ops, order_ops, position_ops, queries, raw_sql, recovery_ops, security_ops
from catalyst.store.errors import ConstraintViolationError, is_busy
from catalyst.store.records import (
    CycleRecord, FillRecord, LiveBook, NewFinding, NewOrder, NewScanResult, OrderProgress,
    OrderRecord, PositionRecord, ScanResultRecord, SecurityRecord,
)  # fmt: skip

T = TypeVar("T")

# The batch being run, if any (its session or plain transaction, and whether each call has its own savepoint):
# Store methods called inside `batch` join its transaction.
_BATCH: ContextVar[tuple[AsyncSession | raw_sql.PlainTransaction, bool] | None] = ContextVar(
    "catalyst_store_batch", default=None)

# The operations that are plain SQL only (raw_sql), and the Store methods that run nothing else: a batch made only
# of these methods, or one of these operations alone, runs in a raw_sql.PlainTransaction, not an ORM session. The
# operations on the fill → protection path are all here. A method listed here whose operation touched the ORM
# would fail in every plain batch (tests/unit/test_store_plain.py runs each one that way).
PLAIN_SQL_OPERATIONS = frozenset({
    order_ops.create_orders, order_ops.mark_submitted, order_ops.update_order_status, order_ops.record_fill,
    order_ops.record_trade_update, position_ops.open_position_for_entry, position_ops.open_position_with_orders,
})
PLAIN_SQL_METHODS = frozenset({
    "create_order", "create_orders", "mark_submitted", "update_order_status", "record_fill", "record_trade_update",
    "open_position_for_entry", "open_position_with_orders",
})

# The Store methods that only record what the broker has reported: a status, a broker id, an execution, a raw trade
# update. With `defer_report_sync`, a transaction made only of these commits without waiting for its fsync (see
# Store). Creating an order row is never among them: that commit is the one a broker call waits on.
REPORT_METHODS = frozenset({"mark_submitted", "update_order_status", "record_fill", "record_trade_update"})
REPORT_OPERATIONS = frozenset(getattr(order_ops, name) for name in REPORT_METHODS)  # each method's own operation
_WAITS_FOR_FSYNC = ("FULL", "EXTRA")


def _plain_call(one: StoreCall) -> bool:
    if one.method in ("together", "batch"):
        return bool(one.args) and all(_plain_call(inner) for inner in one.args[0])
    return one.method in PLAIN_SQL_METHODS


def runs_plain(calls: Sequence[StoreCall]) -> bool:
    """Whether these calls, alone or batched, run only plain SQL (no ORM session): such a call's coroutine never
    needs a running event loop once the store is open (Store.open)."""
    return all(_plain_call(one) for one in calls)


class _CallFailed(Exception):
    """A call failed in an optimistic batch: roll it all back and run again with savepoints."""


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


class Store:
    """Async access to the Catalyst database. `clock` stamps rows when a caller gives no time.

    `synchronous` is the level the engine set on its connections (make_engine). With `defer_report_sync` and a
    level that fsyncs every commit (FULL, EXTRA), a transaction that only records broker reports (REPORT_METHODS)
    runs at NORMAL: committed in the WAL, so it survives the process being killed, but not waited on until the next
    fsync'd commit, which carries it to the disk with its own (the WAL is one file, written in order). Why that is
    safe: every broker call is preceded by an fsync'd commit (the order row it sends), and whatever a power loss
    could still take back is held by the broker and re-learned at the restart's catch-up (statuses, broker ids by
    client_order_id, executions from the fill activities). Why it matters: two of the three commits between a
    fill and its acknowledged stop-loss are such records, and an fsync is a third to a half of each here.
    """

    def __init__(self, engine: AsyncEngine, clock: Callable[[], datetime] = utc_now, *, synchronous: str = "FULL",
                 defer_report_sync: bool = False) -> None:
        self._engine = engine
        self._clock = clock
        self._synchronous = synchronous.upper()
        self._defer_report_sync = defer_report_sync and self._synchronous in _WAITS_FOR_FSYNC
        # The store's one connection, opened on first use and held: ORM sessions are bound to it and plain
        # transactions run on its sqlite3 connection. One connection, not one per kind: SQLite drops a connection's
        # page cache whenever another connection has written, so a second writer connection made every read after a
        # write start cold (a restart rebuilding 900 positions took a third longer).
        self._held: AsyncConnection | None = None
        self._held_sqlite3: sqlite3.Connection | None = None  # its sqlite3 connection, once a plain one needed it

    async def open(self) -> None:
        """Open the store's connection now rather than on first use (its plain transactions then need no loop)."""
        await self._plain_sqlite3()

    async def close(self) -> None:
        if self._held is not None:
            await self._held.close()
            self._held, self._held_sqlite3 = None, None
        await self._engine.dispose()

    async def _connection(self) -> AsyncConnection:
        if self._held is None:
            self._held = await self._engine.connect()
        return self._held

    async def _session(self) -> AsyncSession:
        """A session on the held connection: it begins, commits or rolls back its own transaction there."""
        return AsyncSession(bind=await self._connection(), expire_on_commit=False)

    async def _plain_sqlite3(self) -> sqlite3.Connection:
        if self._held_sqlite3 is None:
            driver = (await (await self._connection()).get_raw_connection()).driver_connection
            self._held_sqlite3 = raw_sql.inline_sqlite3(driver)
        return self._held_sqlite3

    async def _transaction(
        self, operation: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any
    ) -> T:
        try:
            enclosing = _BATCH.get()
            if enclosing is not None:
                return await operation(enclosing[0], *args, **kwargs)
            if operation in PLAIN_SQL_OPERATIONS:
                return await self._plain_transaction(operation, operation in REPORT_OPERATIONS, *args, **kwargs)
            async with self._session_scope() as session:
                return await operation(session, *args, **kwargs)
        except IntegrityError as error:
            detail = str(error.orig).splitlines()[0] if error.orig is not None else str(error)
            raise ConstraintViolationError(f"{operation.__name__} refused by the database: {detail}") from error

    async def batch(self, calls: Sequence[StoreCall]) -> list[CallOutcome]:
        """Run the calls in order in ONE transaction with ONE commit; each gets its own outcome.

        Optimistic first: the calls run back to back in one transaction. If any raises, that
        transaction is rolled back and the batch runs again with each call under its own savepoint,
        so the failing call is rolled back alone and the others commit (savepoints cost about as
        much as the call itself, so they are paid only when needed). If the commit fails, nothing is
        written and every outcome carries that error. Inside another batch, the calls join it.
        """
        enclosing = _BATCH.get()
        if enclosing is not None:
            session, isolated = enclosing
            return [await self._one(session, one, isolated) for one in calls]
        plain = all(_plain_call(one) for one in calls)
        reports = all(one.method in REPORT_METHODS for one in calls)
        try:
            return await self._batch_transaction(calls, isolated=False, plain=plain, reports=reports)
        except _CallFailed as failed:
            if is_busy(failed.__cause__):
                # Another program's lock, refused at this transaction's first write: nothing of it was written, and
                # each call run again would wait for the lock again. All refused, as when a COMMIT is (the DbWriter
                # waits the lock out and makes them again: catalyst.store.db.past_a_held_lock).
                return [CallOutcome(error=failed.__cause__) for _ in calls]
        try:
            return await self._batch_transaction(calls, isolated=True, plain=plain, reports=reports)
        except _CallFailed as failed:  # only for a lock (_one): rolled back, nothing of it written
            return [CallOutcome(error=failed.__cause__) for _ in calls]

    async def together(self, calls: Sequence[StoreCall]) -> list[Any]:
        """The calls in order, all or none: their values, or the first one's exception with none of them written.

        In a batch, a call that fails is rolled back alone and the others commit; calls that only make sense
        together (a position row and the OCO rows protecting it, planned by one actor) go in as ONE `together`
        call, so a failure in one never leaves the others committed half-done."""
        enclosing = _BATCH.get()
        if enclosing is None:
            return unwrap_all(await self.batch([StoreCall("together", (tuple(calls),))]))[0]
        values = []
        for one in calls:
            if one.method == "batch":  # its calls would each be isolated again: not all or none
                raise AttributeError("Store has no batchable method 'batch' inside together")
            values.append(await self._batchable(one)(*one.args, **one.kwargs))
        return values

    def _batchable(self, one: StoreCall) -> Callable[..., Awaitable[Any]]:
        """The public Store coroutine a StoreCall names; AttributeError for anything else (private, lifecycle)."""
        method = getattr(self, one.method, None)
        if one.method.startswith("_") or one.method == "close" or method is None:
            raise AttributeError(f"Store has no batchable method {one.method!r}")
        return method

    @asynccontextmanager
    async def _plain_scope(self, reports: bool = False) -> AsyncIterator[raw_sql.PlainTransaction]:
        """BEGIN … COMMIT on the held sqlite3 connection; anything raised (the COMMIT included) rolls it all back.
        `reports`: the transaction only records broker reports, so its commit may skip the fsync (see Store)."""
        raw = await self._plain_sqlite3()
        deferred = reports and self._defer_report_sync
        if deferred:
            raw.execute("PRAGMA synchronous=NORMAL")
        try:
            raw.execute("BEGIN")
            try:
                yield raw_sql.PlainTransaction(raw)
                raw.execute("COMMIT")
            finally:
                if raw.in_transaction:  # the work or the COMMIT failed: nothing of it stays
                    raw.execute("ROLLBACK")
        finally:
            if deferred:  # every other commit on this connection waits for its fsync again
                raw.execute(f"PRAGMA synchronous={self._synchronous}")

    @asynccontextmanager
    async def _session_scope(self) -> AsyncIterator[AsyncSession]:
        async with await self._session() as session, session.begin():
            yield session

    async def _plain_transaction(self, operation: Callable[..., Awaitable[T]], reports: bool, *args: Any,
                                 **kwargs: Any) -> T:
        async with self._plain_scope(reports) as plain:
            token = _BATCH.set((plain, False))
            try:
                return await operation(plain, *args, **kwargs)
            finally:
                _BATCH.reset(token)

    async def _batch_transaction(self, calls: Sequence[StoreCall], isolated: bool, plain: bool,
                                 reports: bool) -> list[CallOutcome]:
        """The calls in one transaction, a plain one or an ORM session's (each call in a SAVEPOINT if isolated)."""
        try:
            async with (self._plain_scope(reports) if plain else self._session_scope()) as transaction:
                token = _BATCH.set((transaction, isolated))
                try:
                    outcomes = [await self._one(transaction, one, isolated) for one in calls]
                finally:
                    _BATCH.reset(token)
        except _CallFailed:
            raise
        except Exception as error:  # the commit (or BEGIN) failed: no call's writes reached the disk
            return [CallOutcome(error=error) for _ in calls]
        return outcomes

    async def _one(self, session: AsyncSession | raw_sql.PlainTransaction, one: StoreCall,
                   isolated: bool) -> CallOutcome:
        try:
            method = self._batchable(one)
        except AttributeError as error:
            return CallOutcome(error=error)
        if not isolated:
            try:
                return CallOutcome(value=await method(*one.args, **one.kwargs))
            except Exception as error:
                raise _CallFailed from error
        if isinstance(session, raw_sql.PlainTransaction):
            outcome = await self._one_in_savepoint(session.raw, method, one)
        else:
            outcome = await self._one_nested(session, method, one)
        if outcome.error is not None and is_busy(outcome.error):
            # Another program's lock, met in the savepoint pass (a transaction that has read is refused at once, with
            # no busy wait): as one call's own failure, the others would commit without it, and its write (a fill's
            # update) would be lost with nothing to say so. The whole batch is refused instead, and made again whole.
            raise _CallFailed from outcome.error
        return outcome

    @staticmethod
    async def _one_nested(session: AsyncSession, method: Any, one: StoreCall) -> CallOutcome:
        try:
            async with session.begin_nested():
                return CallOutcome(value=await method(*one.args, **one.kwargs))
        except IntegrityError as error:  # raised when the savepoint is released (flushed), not inside the method
            detail = str(error.orig).splitlines()[0] if error.orig is not None else str(error)
            return CallOutcome(error=ConstraintViolationError(f"{one.method} refused by the database: {detail}"))
        except Exception as error:  # noqa: BLE001 - the caller gets it; the other calls carry on
            return CallOutcome(error=error)

    @staticmethod
    async def _one_in_savepoint(raw: sqlite3.Connection, method: Any, one: StoreCall) -> CallOutcome:
        raw.execute("SAVEPOINT catalyst_call")
        try:
            outcome = CallOutcome(value=await method(*one.args, **one.kwargs))
        except Exception as error:  # noqa: BLE001 - the caller gets it; the other calls carry on
            raw.execute("ROLLBACK TO catalyst_call")
            outcome = CallOutcome(error=error)
        raw.execute("RELEASE catalyst_call")
        return outcome

    def _at(self, at: datetime | None) -> datetime:
        return self._clock() if at is None else at

    # --- securities and cycles ------------------------------------------------------------
    async def ensure_security(self, symbol: str, name: str | None = None, sector: str | None = None) -> SecurityRecord:
        return await self._transaction(security_ops.ensure_security, symbol, name, sector)

    async def get_or_create_cycle(self, day: date, at: datetime | None = None) -> CycleRecord:
        return await self._transaction(security_ops.get_or_create_cycle, day, self._at(at))

    async def get_cycle(self, day: date) -> CycleRecord | None:
        return await self._transaction(security_ops.get_cycle, day)

    async def unfinished_cycles_before(self, day: date) -> list[CycleRecord]:
        return await self._transaction(security_ops.unfinished_cycles_before, day)

    async def set_cycle_phase(self, cycle_id: int, phase: str, at: datetime | None = None) -> CycleRecord:
        return await self._transaction(security_ops.set_cycle_phase, cycle_id, phase, self._at(at))

    async def set_cycle_state(
        self, cycle_id: int, state: str, halt_reason: str | None = None, at: datetime | None = None
    ) -> CycleRecord:
        return await self._transaction(security_ops.set_cycle_state, cycle_id, state, self._at(at), halt_reason)

    async def set_daily_pnl(self, cycle_id: int, daily_pnl: Decimal, at: datetime | None = None) -> CycleRecord:
        return await self._transaction(security_ops.set_daily_pnl, cycle_id, daily_pnl, self._at(at))

    # --- scans and findings ---------------------------------------------------------------
    async def insert_scan_results(self, cycle_id: int, results: Sequence[NewScanResult]) -> list[int]:
        return await self._transaction(security_ops.insert_scan_results, cycle_id, results)

    async def set_scan_status(self, scan_id: int, status: str, reason: str | None = None) -> None:
        await self._transaction(security_ops.set_scan_status, scan_id, status, reason)

    async def scan_results(self, cycle_id: int) -> list[ScanResultRecord]:
        return await self._transaction(security_ops.scan_results, cycle_id)

    async def orders_behind_halts_since(self, since: datetime) -> dict[str, str]:
        return await self._transaction(security_ops.orders_behind_halts_since, since)

    async def insert_findings(self, findings: Sequence[NewFinding]) -> list[int]:
        return await self._transaction(security_ops.insert_findings, findings)

    # --- orders ---------------------------------------------------------------------------
    async def create_order(self, *, at: datetime | None = None, **fields: Any) -> OrderRecord:
        """Insert one order (status created) with its client_order_id; fields are NewOrder's."""
        (order,) = await self._transaction(order_ops.create_orders, [NewOrder(**fields)], self._at(at))
        return order

    async def create_orders(self, orders: Sequence[NewOrder], at: datetime | None = None) -> list[OrderRecord]:
        """Several orders in one transaction (an OCO's stop-loss and take-profit legs)."""
        return await self._transaction(order_ops.create_orders, list(orders), self._at(at))

    async def mark_submitted(
        self, order_id: int, alpaca_order_id: str, broker_status: str | None, submitted_at: datetime | None = None,
        read_back: bool = True, progress: OrderProgress | None = None, at: datetime | None = None,
    ) -> OrderRecord | None:
        """The broker's id and status on the row: the row as written, or None with `read_back=False`. With
        `progress`, the order's new state (update_order_status's) in the same write, stamped `at`."""
        return await self._transaction(
            order_ops.mark_submitted, order_id, alpaca_order_id, broker_status, self._at(submitted_at), read_back,
            progress, at,
        )

    async def record_submit_attempt(self, order_id: int, at: datetime | None = None) -> int:
        """Count one more submit try before the broker call; returns the attempts so far."""
        return await self._transaction(order_ops.record_submit_attempt, order_id, self._at(at))

    async def set_outcome_unknown(self, order_id: int, unknown: bool = True, at: datetime | None = None) -> OrderRecord:
        return await self._transaction(order_ops.set_outcome_unknown, order_id, unknown, self._at(at))

    async def update_order_status(
        self,
        order_id: int,
        status: str,
        broker_status: str | None,
        filled_qty: Decimal,
        filled_avg_price: Decimal | None,
        at: datetime | None = None,
        reason: str | None = None,
        replaced_by_order_id: int | None = None,
        read_back: bool = True,
    ) -> OrderRecord | None:
        """The order's new state: the row as written, or None with `read_back=False`."""
        progress = OrderProgress(status, broker_status, filled_qty, filled_avg_price, reason)
        return await self._transaction(
            order_ops.update_order_status, order_id, progress, self._at(at), replaced_by_order_id, read_back
        )

    async def record_fill(self, *, received_at: datetime | None = None, **fill: Any) -> bool:
        """Record an execution exactly once (False if its execution_id is known). With
        `order_progress=OrderProgress(...)` the order's new state is written in the same transaction."""
        return await self._transaction(order_ops.record_fill, received_at=self._at(received_at), **fill)

    async def record_trade_update(
        self,
        event: str,
        payload: dict[str, Any],
        received_at: datetime | None = None,
        alpaca_order_id: str | None = None,
        client_order_id: str | None = None,
        execution_id: str | None = None,
    ) -> int:
        return await self._transaction(
            order_ops.record_trade_update,
            event=event,
            payload=payload,
            received_at=self._at(received_at),
            alpaca_order_id=alpaca_order_id,
            client_order_id=client_order_id,
            execution_id=execution_id,
        )

    # --- positions ------------------------------------------------------------------------
    async def open_position_for_entry(
        self,
        entry_order_id: int,
        quantity: Decimal,
        entry_price: Decimal,
        entry_time: datetime | None = None,
        stop_loss: Decimal | None = None,
        take_profit: Decimal | None = None,
        replacements: Sequence[int] = (),
    ) -> PositionRecord:
        return await self._transaction(
            position_ops.open_position_for_entry,
            entry_order_id, quantity, entry_price, self._at(entry_time), stop_loss, take_profit, tuple(replacements),
        )  # fmt: skip

    async def open_position_with_orders(
        self,
        entry_order_id: int,
        quantity: Decimal,
        entry_price: Decimal,
        entry_time: datetime,
        stop_loss: Decimal | None,
        take_profit: Decimal | None,
        orders: Sequence[NewOrder],
        at: datetime | None = None,
        replacements: Sequence[int] = (),
    ) -> tuple[PositionRecord, list[OrderRecord]]:
        """open_position_for_entry and its first protection rows (their position_id filled in), one transaction."""
        return await self._transaction(
            position_ops.open_position_with_orders,
            entry_order_id, quantity, entry_price, entry_time, stop_loss, take_profit, list(orders), self._at(at),
            tuple(replacements),
        )  # fmt: skip

    async def update_position(self, position_id: int, at: datetime | None = None, **changes: Any) -> PositionRecord:
        return await self._transaction(position_ops.update_position, position_id, self._at(at), **changes)

    async def mark_open_position(self, position_id: int, last_price: Decimal, unrealized_pnl: Decimal,
                                 at: datetime | None = None) -> bool:
        """Mark an open position to a price; a position closed meanwhile is left as its close wrote it (False)."""
        return await self._transaction(position_ops.mark_open_position, position_id, last_price, unrealized_pnl,
                                       self._at(at))

    async def close_position(
        self, position_id: int, exit_price: Decimal, realized_pnl: Decimal, exit_time: datetime | None = None
    ) -> PositionRecord:
        return await self._transaction(
            position_ops.close_position, position_id, exit_price, self._at(exit_time), realized_pnl
        )

    # --- reads ----------------------------------------------------------------------------
    async def get_order(self, order_id: int) -> OrderRecord | None:
        return await self._transaction(queries.get_order, order_id)

    async def get_order_by_client_id(self, client_order_id: str) -> OrderRecord | None:
        return await self._transaction(queries.get_order_by_client_id, client_order_id)

    async def get_order_by_alpaca_id(self, alpaca_order_id: str) -> OrderRecord | None:
        return await self._transaction(queries.get_order_by_alpaca_id, alpaca_order_id)

    async def orders_for_position(self, position_id: int) -> list[OrderRecord]:
        return await self._transaction(queries.orders_for_position, position_id)

    async def working_orders(self) -> list[OrderRecord]:
        return await self._transaction(queries.working_orders)

    async def orders_with_unknown_outcome(self) -> list[OrderRecord]:
        return await self._transaction(queries.orders_with_unknown_outcome)

    async def orders_needing_reconciliation(self, older_than: datetime) -> list[OrderRecord]:
        return await self._transaction(queries.orders_needing_reconciliation, older_than)

    async def get_position(self, position_id: int) -> PositionRecord | None:
        return await self._transaction(queries.get_position, position_id)

    async def open_positions_for_reconciliation(self) -> list[PositionRecord]:
        return await self._transaction(queries.open_positions_for_reconciliation)

    async def live_positions(self) -> LiveBook:
        return await self._transaction(queries.live_positions)

    async def fills_for_order(self, order_id: int) -> list[FillRecord]:
        return await self._transaction(queries.fills_for_order, order_id)

    async def position_book(self, entry_order_id: int) -> recovery_ops.PositionBook | None:
        """A position actor's whole history, to rebuild it after a crash or a restart."""
        return await self._transaction(recovery_ops.position_book, entry_order_id)

    async def cycle_pnl(self, cycle_id: int) -> tuple[Decimal, Decimal]:
        """(realized, unrealized) P&L of the cycle's positions."""
        return await self._transaction(cycle_ops.cycle_pnl, cycle_id)

    async def live_entry_ids(self) -> list[int]:
        """Entry order ids of every position that needs an actor: working entries and open positions."""
        return await self._transaction(recovery_ops.entry_order_ids_of_live_positions)

    # --- the doctor -----------------------------------------------------------------------
    async def instance_id(self) -> str:
        """This database's id, part of every client_order_id it made: the doctor tells another daemon's orders by it."""
        return await self._transaction(doctor_ops.instance_id)

    async def reconciliation_orders(self, since: datetime) -> list[OrderRecord]:
        """Working and unknown-outcome orders plus every order created since `since`."""
        return await self._transaction(doctor_ops.reconciliation_orders, since)

    async def execution_keys(self, order_ids: Sequence[int]) -> list[str]:
        """The recorded execution keys of these orders."""
        return await self._transaction(doctor_ops.execution_keys, list(order_ids))

    async def oldest_entry_kept_after_close(self) -> datetime | None:
        return await self._transaction(doctor_ops.oldest_entry_kept_after_close)

    async def closed_positions_holding_shares(self, symbols: Sequence[str],
                                              closed_since: datetime) -> list[PositionRecord]:
        return await self._transaction(doctor_ops.closed_positions_holding_shares, list(symbols), closed_since)

    async def record_replacement(self, replaced_order_id: int, new: order_ops.Replacement,
                                 at: datetime | None = None) -> OrderRecord:
        """The broker order that replaced one of ours, as a row of its own linked from the replaced one."""
        return await self._transaction(order_ops.record_replacement, replaced_order_id, new, self._at(at))

    async def adopt_order(self, spec: doctor_ops.BrokerOrderRow, at: datetime | None = None) -> OrderRecord:
        """A broker order placed by hand, written as one of ours with the broker's ids."""
        return await self._transaction(doctor_ops.adopt_order, spec, self._at(at))

    async def adopt_position(
        self, entry: doctor_ops.BrokerOrderRow, fills: Sequence[doctor_ops.AdoptedFill], at: datetime | None = None
    ) -> tuple[OrderRecord, PositionRecord]:
        """A broker position we did not open: its adopted entry, executions and open position, in one go."""
        return await self._transaction(doctor_ops.adopt_position, entry, list(fills), self._at(at))
