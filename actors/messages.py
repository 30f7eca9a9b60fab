"""Messages between actors: frozen pydantic models (pykka does not copy messages between threads).

Commands are imperative (`PlaceEntry`), events past tense (`OrderUpdated`).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict

from catalyst.broker.reports import FillReport, OrderReport, TradeUpdateReport
from catalyst.domain.orders import OrderStatus
from catalyst.domain.positions import OrderSide, PositionSide


class Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)


class TradePlan(Message):
    """What a position actor is started with: everything a restart needs is also on the entry order row."""

    symbol: str
    side: PositionSide
    qty: Decimal
    order_type: str = "market"  # market | limit
    limit_price: Decimal | None = None
    stop_loss: Decimal
    take_profit: Decimal
    cycle_id: int
    scan_id: int | None = None
    # The price risk sized the trade at. Given, the first entry fill moves the stop and target by its difference
    # from it (catalyst.domain.positions.exits_from_fill); None (a restart's plan, a test's): they stay as planned.
    entry_price: Decimal | None = None


# --- to the order router -------------------------------------------------------------------------------------

class PlaceEntry(Message):
    owner: Any  # pykka.ActorRef of the position actor
    plan: TradePlan


class SubmitProtection(Message):
    """An OCO exit whose two rows (take-profit limit + stop-loss) the position actor has committed: send it.

    The position actor writes these rows in the same commit as the fill's position change (order first, and one
    commit fewer between a fill and its stop); the router tracks them and hands them to a protection worker.
    """

    owner: Any
    take_profit: Any  # OrderRecord
    stop_loss: Any  # OrderRecord


class PlaceExit(Message):
    """A market exit (flatten) for `qty` shares."""

    owner: Any
    position_id: int
    cycle_id: int
    symbol: str
    side: OrderSide
    qty: Decimal
    reason: str


class CancelOrders(Message):
    order_ids: tuple[int, ...]
    reason: str
    # Asked again by a flatten's recheck its position does not say (said about once a minute through an outage): the
    # broker not answering these cancels is a DEBUG line, of the router's and of their calls'
    quiet: bool = False


class VerifyOrders(Message):
    """Ask the broker (REST) for these orders' truth: an OCO sibling's cancel may come with no event."""

    order_ids: tuple[int, ...]
    quiet: bool = False  # as CancelOrders'


class ReadBrokerPosition(Message):
    """Ask the broker (REST) what it holds of `symbol`; the answer (BrokerPositionRead) goes to `reply_to`."""

    symbol: str
    reply_to: Any
    for_exit: bool = False  # asked to size a market exit (else: whether late entry shares are there to sell)
    for_protection: bool = False  # asked to protect what is held, protection refused for want of shares


class BrokerPositionRead(Message):
    """The broker's position in `symbol`: signed quantity (a short negative, 0 if it holds none), or why it could
    not be read."""

    symbol: str
    qty: Decimal = Decimal(0)
    available: Decimal | None = None  # of them, not promised to open orders closing them (unsigned; None: not said)
    error: str | None = None
    for_exit: bool = False  # the question's
    for_protection: bool = False  # the question's


class FilledOutside(Message):
    """An order Catalyst did not place (by hand in the dashboard, another program on the key) filled in the symbol of
    the position told: its shares may be gone, and the broker's positions list can take seconds to show it."""

    symbol: str
    side: str
    qty: Decimal
    broker_id: str
    seconds_ago: float = 0.0  # wall seconds since the router heard of it (told again to an actor rebuilt since)
    # The order of ours it probably is (an OCO stop leg not named yet) or replaces (its label): not placed by hand
    own_leg: str | None = None
    # Its key (the order and its cumulative shares: order_router.outside_fill_key), so a stream's duplicate, or a
    # catch-up's listing of a fill the stream told, is counted once
    execution_id: str | None = None


class OrderOutsideEnded(Message):
    """An order Catalyst did not place ended without filling in full (canceled, expired, or replaced by the trader) in
    the symbol of the position told: shares it held on the exit side may be free for a stop again."""

    symbol: str
    side: str
    broker_id: str
    event: str


class OrderOutsideWorking(Message):
    """An order Catalyst did not place (a trader's limit sell in the dashboard, another program on the key) works in
    the symbol of the position told, holding `qty` shares on its side: the broker does not count them free for a
    stop. 0 once it holds none (filled, ended): told again at each change, so the last word is what it holds now."""

    symbol: str
    side: str
    broker_id: str
    qty: Decimal  # shares it has still to fill


class Register(Message):
    """A rebuilt position actor claims its orders after a restart."""

    owner: Any
    order_ids: tuple[int, ...]
    # Some of them report more filled than their recorded executions add up to: catch up from this moment on.
    executions_missing_since: datetime | None = None
    executions_missing: str | None = None  # which, for the log: "o-7 60 of 100"
    # The executions it was rebuilt from: one the router records between the book's read and this message went to
    # the actor it replaces, and is told to this one instead.
    known_executions: tuple[str, ...] = ()
    # Each order's status as the book read it: a move the router made since without an execution (a leg cancelled,
    # an OCO rejected) also went to the actor it replaces, and is told to this one.
    book_statuses: tuple[tuple[int, str], ...] = ()


class ResendUnsent(Message):
    """From the doctor: stops and exits of a live position whose submit ended with its outcome unknown, which the
    broker does not have under their client_order_id. Sent again with that same id (so a late first attempt is
    refused as a duplicate, never doubled); an OCO is named by its take-profit row."""

    order_ids: tuple[int, ...]
    reason: str


class RetireUnsent(Message):
    """From the doctor: rows created but never sent, of positions that have closed (or a pending position's entry
    whose submit's outcome stayed unknown), unknown to the broker by their client_order_id. Nothing will send them
    now; they end as cancelled with `reason`, and a live owner hears it."""

    order_ids: tuple[int, ...]
    reason: str


class TradeUpdateReceived(Message):
    update: TradeUpdateReport
    received_at: datetime | None = None  # when the stream handed it over (its trade_updates row's received_at)


class StreamConnected(Message):
    count: int


class StreamLoginFailed(Message):
    reason: str


class SubmitResult(Message):
    """A broker worker's answer for one submission (a simple order or an OCO pair)."""

    order_ids: tuple[int, ...]
    report: OrderReport | None = None
    rejected: str | None = None
    unknown: str | None = None  # outcome still unknown after the lookup budget: the doctor settles it
    # ... and the look-up by client_order_id failed too: the broker answered nothing (an outage), so no answer of
    # its says whether the order is there; a stop or an exit is sent again until one comes
    unanswered: bool = False
    # Every attempt refused before the broker acted (429s, a refused connection, the rate budget): nothing placed;
    # the router sends it again with the same client_order_id, after `retry_after_s` if the broker named a reset.
    refused: str | None = None
    retry_after_s: float | None = None


class CancelResult(Message):
    order_id: int
    ok: bool
    detail: str = ""
    ended: bool = False  # refused as not cancelable: the order had already ended (filled, or cancelled with its OCO)
    unanswered: bool = False  # the broker gave no answer (a 5xx, a connection refused or lost): an outage
    quiet: bool = False  # the Cancel's, echoed


class OrdersVerified(Message):
    reports: tuple[OrderReport, ...]
    missing: tuple[int, ...] = ()


class OrderRead(Message):
    """A broker order read by its id (REST) for the router: the one that replaced `replaced_order_id`. `report` is
    None when it could not be read (`error` says why)."""

    replaced_order_id: int
    broker_id: str
    report: Any = None  # OrderReport
    error: str | None = None
    not_found: bool = False  # the broker has no such order: reading it again would not help


class FirstOrderRead(Message):
    """The order first placed as our row `order_id` (an OCO stop leg since replaced at the broker), read back through
    its replacements for the router; `report` is None when it could not be read (`error` says why)."""

    order_id: int
    report: Any = None  # OrderReport
    error: str | None = None


class CatchUpResult(Message):
    orders: tuple[OrderReport, ...]
    fills: tuple[FillReport, ...]
    since: datetime
    # Every order working at the broker however old (legs inside their parents); None: the CatchUp did not ask
    working: tuple[OrderReport, ...] | None = None
    from_doctor: bool = False  # the doctor's healing batch, not the answer to the router's own CatchUp
    failed: str | None = None  # why the broker could not be read (nothing in it): the router asks again


# --- to a position actor -------------------------------------------------------------------------------------

class Execution(Message):
    key: str  # `<broker order id>:<cumulative qty>`, see OrderRouter
    qty: Decimal
    price: Decimal
    at: datetime


class OrderUpdated(Message):
    order_id: int
    role: str
    status: OrderStatus
    filled_qty: Decimal  # the broker's cumulative filled quantity (may be ahead of the executions told so far)
    execution: Execution | None = None
    reason: str | None = None
    # Cancelled at Catalyst's request (the router sent the cancel): maybe asked by an actor since rebuilt, which must
    # not take it for a cancel made by hand at the broker.
    cancel_asked: bool = False


class OrderReplaced(Message):
    """One of the position's orders was replaced at the broker (Alpaca's PATCH: by hand in the dashboard, or another
    program on the key): `replaced_order_id` ended `replaced`, and `new_order_id` (its row written, its broker id
    known) now does its work, an OCO leg staying in its OCO. Told before any update of the new order."""

    replaced_order_id: int
    new_order_id: int
    role: str
    qty: Decimal
    detail: str  # what changed, for the log line: "stop 147.00 → 146.00"


class PrepareEntryFill(Message):
    """Asked by the router before it commits a fresh entry execution: the owner's writes for it (position row, the
    OCO rows covering the new shares), so the execution, the position and its protection land in ONE commit. The
    owner changes nothing yet; the answer is an EntryFillPlan, or None to be told the usual way after the commit."""

    order_id: int
    execution: Execution


class EntryFillPlan(Message):
    calls: tuple[Any, ...]  # StoreCalls, run after the router's own writes for the execution, in the same commit
    protection_at: int | None = None  # index of the call whose value holds the OCO rows (take-profit, stop-loss)

    def protection_rows(self, values: Any) -> list[Any]:
        """The OCO rows among the calls' results (none, or take-profit and stop-loss): open_position_with_orders
        yields (position, rows), create_orders the rows."""
        if self.protection_at is None:
            return []
        value = values[self.protection_at]
        return list(value[1] if isinstance(value, tuple) else value)


class EntryFillCommitted(Message):
    """The router committed the execution with the owner's planned writes; `values` are those calls' results. The
    OCO rows, if any, are already on their way to the broker (the router sent them on at once)."""

    update: OrderUpdated
    plan: EntryFillPlan  # the plan the owner answered with: its state may have moved since (a flatten)
    values: tuple[Any, ...]


class OrdersCreated(Message):
    """Rows committed (order first!) before any broker call: the owner now knows its order ids."""

    roles: dict[str, int]


class Flatten(Message):
    reason: str
    scheduled: bool = False  # the day's planned flatten before the close: news, not a warning


class WithdrawEntry(Message):
    """The daemon is stopping gracefully: cancel the rest of the entry still working at the broker (its fills while
    the daemon is down would have no stop until it starts again); the shares bought keep their stops."""

    reason: str


class KeepOvernight(Message):
    """The market has closed: a position still flattening stops it and keeps its shares under stops overnight (an exit
    that has not filled by the close cannot fill before the next open); the next open flattens it."""


class CheckProtection(Message):
    """The doctor found the broker's working stop short of the position: protect what is not covered."""


# --- to the doctor -------------------------------------------------------------------------------------------

class StreamReconnected(Message):
    """The trade stream came back: events may have been lost in the gap, so reconcile now."""

    count: int = 0


class PassWanted(Message):
    """A position left shares to the doctor's pass (a stop the broker refuses for shares it no longer holds, an exit
    with none held): a pass now rather than at the next periodic one, minutes away (at most one asked a while)."""

    reason: str


# --- to the system --------------------------------------------------------------------------------------------

class PositionFinished(Message):
    key: str
    status: str
    realized_pnl: Decimal


class PositionEntry(Message):
    """A position actor's entry order id, told to the supervisor once the router has created the row."""

    entry_order_id: int
    owner: Any


class PositionCrashed(Message):
    key: str
    entry_order_id: int
    error: str
    owner: Any = None  # the actor that crashed: a live actor under its entry is another one, not rebuilt beside
    # What the actor rebuilt in its place is told first (a Flatten put off until the market opens): in no database.
    for_successor: Any = None


class StaleBook(Message):
    """To a position actor rebuilt after a crash, from the router: the book it was rebuilt from was read before the
    router committed rows of its position (an entry fill with its OCO, planned by the actor that crashed). Rebuilt on
    that book it would protect those shares a second time; it hands the position over to be read again."""

    detail: str


class RebuildFromDatabase(Message):
    """A position actor handing its position over to the supervisor to be rebuilt from what the database holds now
    (StaleBook)."""

    entry_order_id: int
    subject: str
    detail: str
    handed_over_by: Any


class ForSuccessor(Message):
    """A flatten or a close of the day told to a position actor that had handed its position over to be rebuilt (late
    shares, a stale book): the supervisor passes it to the actor rebuilt in its place, which may not have been listed
    among the live ones when the cycle told them."""

    entry_order_id: int
    message: Any


class LateEntryShares(Message):
    """Entry shares recorded after their position closed (their fill event lost, brought by a catch-up or the
    doctor): at the broker with no stop, and no actor left to sell them. The supervisor rebuilds the position from
    the database; its recorded fills say those shares are still held, and the rebuilt actor sells them.

    `handed_over_by`: the closed position's own actor, which heard of them and stops (not a live owner to leave
    them to)."""

    entry_order_id: int
    subject: str  # the order or position that names them in the log
    qty: Decimal
    handed_over_by: Any = None
