"""Reconciliation (spec §7): a pure diff of the database's view against the broker's, as findings with a policy.

Rules it keeps (see DESIGN "Broker truth wins, through the machine"):
- An order status only ever catches up along the order machine (`plan_catch_up`); a report with no legal path
  is a conflict, never forced.
- Shares move only by executions the broker reported (its fills). A position difference that the broker's fills
  explain is healed by applying those fills; one they do not explain is never papered over: it halts new entries.
- Protection is judged by what is WORKING AT THE BROKER, not by what the database believes.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from catalyst.domain.money import ZERO
from catalyst.domain.orders import (ORDER_MACHINE, CatchUpKind, OrderStatus, oco_take_profit_id, plan_catch_up,
                                     status_from_broker)
from catalyst.domain.positions import exit_side


class FindingType(StrEnum):
    ORDER_STATUS_MISMATCH = "ORDER_STATUS_MISMATCH"  # local behind the broker: catch up along the machine
    ORDER_STATUS_CONFLICT = "ORDER_STATUS_CONFLICT"  # no legal path, or the broker has a live order the DB closed
    ORDER_NOT_AT_BROKER = "ORDER_NOT_AT_BROKER"
    ORPHAN_ORDER = "ORPHAN_ORDER"  # at the broker, not in the DB: placed by hand
    ORPHAN_POSITION = "ORPHAN_POSITION"
    PHANTOM_POSITION = "PHANTOM_POSITION"
    POSITION_QTY_MISMATCH = "POSITION_QTY_MISMATCH"
    MISSING_FILL = "MISSING_FILL"  # a broker execution not recorded
    STUCK_CREATED = "STUCK_CREATED"  # created, never sent
    STUCK_SUBMITTED = "STUCK_SUBMITTED"  # sent, never acknowledged by the broker
    OUTCOME_UNKNOWN = "OUTCOME_UNKNOWN"  # a submit whose answer was lost: settled by client_order_id
    MISSING_PROTECTION = "MISSING_PROTECTION"  # working stop quantity at the broker < position quantity
    EXCESS_PROTECTION = "EXCESS_PROTECTION"
    OTHER_INSTANCE = "OTHER_INSTANCE"  # a working order another catalyst daemon (another database) placed here


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class Policy(StrEnum):
    """What the doctor does with a finding. `heal` is each type's own repair (catch up, apply the fill,
    re-protect, close from the broker's fills, settle); `halt` halts new entries."""

    HEAL = "heal"
    ADOPT = "adopt"
    FLATTEN = "flatten"
    ALERT = "alert"
    HALT = "halt"


_T = FindingType
SEVERITY: dict[FindingType, Severity] = {
    _T.ORDER_STATUS_MISMATCH: Severity.INFO, _T.ORDER_STATUS_CONFLICT: Severity.CRITICAL,
    _T.ORDER_NOT_AT_BROKER: Severity.WARNING, _T.ORPHAN_ORDER: Severity.WARNING,
    _T.ORPHAN_POSITION: Severity.CRITICAL, _T.PHANTOM_POSITION: Severity.CRITICAL,
    _T.POSITION_QTY_MISMATCH: Severity.CRITICAL, _T.MISSING_FILL: Severity.WARNING,
    _T.STUCK_CREATED: Severity.WARNING, _T.STUCK_SUBMITTED: Severity.WARNING,
    _T.OUTCOME_UNKNOWN: Severity.WARNING, _T.MISSING_PROTECTION: Severity.CRITICAL,
    _T.EXCESS_PROTECTION: Severity.WARNING, _T.OTHER_INSTANCE: Severity.CRITICAL,
}  # fmt: skip

DEFAULT_POLICIES: dict[FindingType, Policy] = {
    _T.ORDER_STATUS_MISMATCH: Policy.HEAL, _T.ORDER_STATUS_CONFLICT: Policy.HALT,
    _T.ORDER_NOT_AT_BROKER: Policy.ALERT, _T.ORPHAN_ORDER: Policy.ALERT,
    _T.ORPHAN_POSITION: Policy.ADOPT, _T.PHANTOM_POSITION: Policy.HEAL,
    _T.POSITION_QTY_MISMATCH: Policy.HEAL, _T.MISSING_FILL: Policy.HEAL,
    _T.STUCK_CREATED: Policy.HEAL, _T.STUCK_SUBMITTED: Policy.ALERT,
    _T.OUTCOME_UNKNOWN: Policy.HEAL, _T.MISSING_PROTECTION: Policy.HEAL,
    _T.EXCESS_PROTECTION: Policy.ALERT, _T.OTHER_INSTANCE: Policy.HALT,
}  # fmt: skip

HEAL_ACTIONS: dict[FindingType, str] = {
    _T.MISSING_PROTECTION: "re-protect", _T.MISSING_FILL: "apply fill", _T.PHANTOM_POSITION: "close from fills",
    _T.OUTCOME_UNKNOWN: "settle", _T.POSITION_QTY_MISMATCH: "apply fills",
    _T.STUCK_CREATED: "retire if its position closed (or an entry lost)",
}
POLICY_ACTIONS = {Policy.HEAL: "heal", Policy.ADOPT: "adopt and protect", Policy.FLATTEN: "flatten",
                  Policy.ALERT: "alert", Policy.HALT: "halt entries"}


class DoctorSettings(BaseModel):
    """Config section `[doctor]`. Times are exchange seconds."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)  # see catalyst.config.Section

    interval_s: float = Field(300.0, gt=0)
    stuck_after_s: float = Field(120.0, ge=0)  # created/submitted/unknown this long means stuck, not in flight
    list_margin_s: float = Field(300.0, ge=0)  # list broker orders from the oldest working one minus this
    lookback_s: float = Field(86_400.0, ge=0)  # and at least this far back (hand orders, today's fills)
    # WALL seconds: a halt (or a missing fill, missing protection, unknown outcome) must hold on a second look this
    # much later
    confirm_halt_after_s: float = Field(1.0, ge=0)
    adopt_stop_pct: Decimal = Field(Decimal("0.03"), gt=0, lt=1)  # stop of an adopted position, from its price
    adopt_target_pct: Decimal = Field(Decimal("0.06"), gt=0)
    policies: dict[FindingType, Policy] = Field(default_factory=lambda: dict(DEFAULT_POLICIES))

    @field_validator("policies", mode="before")
    @classmethod
    def _finding_types_in_any_case(cls, value: Any) -> Any:
        # pydantic-settings lower-cases environment names: CATALYST_DOCTOR__POLICIES__ORPHAN_ORDER=halt arrives as
        # {"orphan_order": "halt"}, which the README says overrides the file's ORPHAN_ORDER.
        if isinstance(value, dict):
            return {key.upper() if isinstance(key, str) else key: policy for key, policy in value.items()}
        return value

    def policy(self, kind: FindingType) -> Policy:
        return self.policies.get(kind, DEFAULT_POLICIES[kind])


# --- the views ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LocalOrder:
    order_id: int
    client_order_id: str
    broker_id: str | None
    symbol: str
    role: str
    side: str
    qty: Decimal
    status: OrderStatus
    filled_qty: Decimal
    position_id: int | None
    created_at: datetime
    updated_at: datetime
    outcome_unknown: bool = False

    @property
    def label(self) -> str:
        return f"{self.symbol}#o-{self.order_id}"


@dataclass(frozen=True)
class LocalPosition:
    position_id: int
    symbol: str
    side: str  # long / short
    qty: Decimal


@dataclass(frozen=True)
class LocalView:
    orders: tuple[LocalOrder, ...] = ()
    positions: tuple[LocalPosition, ...] = ()
    execution_keys: frozenset[str] = frozenset()  # `<broker order id>:<cum qty>` of every recorded execution
    # Orders committed after the snapshot above, read again once the broker had answered: every order of ours the
    # broker lists is among `orders` or these (the golden rule). They only say which broker orders are ours: their
    # status may already be ahead of the broker's answer, so it is not judged (the next pass does).
    placed_during_pass: tuple[LocalOrder, ...] = ()
    # Execution keys recorded by the time the broker had answered: a fill the router recorded while the pass talked
    # to the broker is not missing, though the snapshot above (which its shares are counted against) lacks it.
    recorded_since: frozenset[str] = frozenset()
    # Orders of the snapshot with no broker id there that had one by the time the broker had answered: the router
    # recorded the broker's answer to their submit while the pass ran, so their outcome is known, not to settle.
    acknowledged_during_pass: frozenset[int] = frozenset()
    # This database's id, the middle of its client_order_ids: an order with another one came from another daemon.
    instance_id: str = ""
    # Closed positions (of symbols the broker holds and no open position does) whose recorded fills still hold
    # shares, `qty` those shares: entry executions recorded after the close, not sold (a stop of the daemon came
    # between). Their own position actor, rebuilt, sells them once the broker says it holds them.
    closed_holding: tuple[LocalPosition, ...] = ()


@dataclass(frozen=True)
class BrokerOrder:
    broker_id: str
    client_order_id: str
    symbol: str
    side: str
    qty: Decimal
    filled_qty: Decimal
    status: str  # Alpaca's spelling
    type: str = "market"
    parent_id: str | None = None  # set on a flattened OCO/bracket leg


@dataclass(frozen=True)
class BrokerPosition:
    symbol: str
    side: str
    qty: Decimal


@dataclass(frozen=True)
class BrokerFill:
    broker_order_id: str
    cum_qty: Decimal
    qty: Decimal
    price: Decimal
    at: datetime


@dataclass(frozen=True)
class BrokerView:
    orders: tuple[BrokerOrder, ...] = ()
    positions: tuple[BrokerPosition, ...] = ()
    fills: tuple[BrokerFill, ...] = ()


@dataclass(frozen=True)
class Finding:
    type: FindingType
    severity: Severity
    subject: str
    db_value: str | None
    broker_value: str | None
    policy: Policy
    action: str
    symbol: str = ""
    order_id: int | None = None
    position_id: int | None = None
    broker_ids: tuple[str, ...] = ()  # broker orders the heal applies (the order, or the fills' orders)
    reason: str = ""

    def line(self) -> str:
        return f"doctor {self.type} {self.subject} db={self.db_value} broker={self.broker_value} → {self.action}"


# Every order a catalyst database makes is `cat-<its instance id>-<order id>` (catalyst.store.order_ops).
_CATALYST_CLIENT_ID = re.compile(r"^cat-([0-9a-z]+)-\d+$")


def catalyst_instance(client_order_id: str) -> str | None:
    """The database that made this client_order_id, if catalyst did; None for an order placed any other way."""
    found = _CATALYST_CLIENT_ID.match(client_order_id or "")
    return found.group(1) if found else None


def execution_key(broker_order_id: str, cum_qty: Decimal) -> str:
    """The router's exactly-once key for an execution (see actors/order_router.py)."""
    return f"{broker_order_id}:{cum_qty.normalize():f}"


def execution_cum(key: str) -> Decimal | None:
    """The cumulative quantity an execution key (execution_key) names; None for a key not of that form."""
    try:
        return Decimal(key.rpartition(":")[2])
    except ArithmeticError:
        return None


WORKING_BROKER = frozenset({"new", "accepted", "held", "partially_filled", "pending_new", "pending_replace",
                            "accepted_for_bidding", "calculated", "stopped", "suspended", "done_for_day"})
STOP_TYPES = frozenset({"stop", "stop_limit", "trailing_stop"})
UNACKNOWLEDGED = frozenset({"pending_new", "pending_review"})


def signed_qty(side: str, qty: Decimal) -> Decimal:
    """Shares bought or held long count up, sold or held short down."""
    return qty if side in ("buy", "long") else -qty



@dataclass
class _Diff:
    settings: DoctorSettings
    now: datetime
    findings: list[Finding] = field(default_factory=list)

    def add(self, kind: FindingType, subject: str, db: object, broker: object, *, explained: bool = True,
            **extra: object) -> None:
        severity = extra.pop("severity", SEVERITY[kind])
        acting = extra.pop("action", None)  # what a policy that acts does here, when it is not the type's usual
        policy = self.settings.policy(kind)
        if not explained and policy in (Policy.HEAL, Policy.ADOPT):
            policy = Policy.HALT  # a repair needs the broker's fills to explain the difference
        action = HEAL_ACTIONS.get(kind, "heal") if policy is Policy.HEAL else POLICY_ACTIONS[policy]
        if acting is not None and policy in (Policy.HEAL, Policy.ADOPT, Policy.FLATTEN):
            action = str(acting)
        self.findings.append(Finding(kind, severity, subject, None if db is None else str(db),  # type: ignore[arg-type]
                                     None if broker is None else str(broker), policy, action, **extra))  # type: ignore[arg-type]

    def old(self, at: datetime) -> bool:
        return (self.now - at).total_seconds() >= self.settings.stuck_after_s


def reconcile(local: LocalView, broker: BrokerView, now: datetime, settings: DoctorSettings) -> list[Finding]:
    """Every difference between the database and the broker, each with its policy's action."""
    diff = _Diff(settings, now)
    by_id = {o.broker_id: o for o in broker.orders}
    by_cid = {o.client_order_id: o for o in broker.orders}
    matched: dict[str, LocalOrder] = {}

    def at_broker(order: LocalOrder) -> BrokerOrder | None:
        return by_id.get(order.broker_id or "") or by_cid.get(order.client_order_id)

    seen_of = {order.order_id: at_broker(order) for order in local.orders}
    _pair_stop_legs(local.orders, broker.orders, seen_of)
    for order in local.orders:
        seen = seen_of[order.order_id]
        if seen is not None:
            matched[seen.broker_id] = order
        _order(diff, order, seen, order.order_id in local.acknowledged_during_pass)
    for order in local.placed_during_pass:
        seen = at_broker(order)
        if seen is not None and seen.broker_id not in matched:
            matched[seen.broker_id] = order
    # A leg of one of our own OCOs is ours even while its row has no broker id yet (the submit reply is not committed):
    # Alpaca makes up a leg's client_order_id, so until then only its parent matches a row.
    orphans = [o for o in broker.orders if o.broker_id not in matched and o.parent_id not in matched]
    orphan_ids = {o.broker_id for o in orphans}
    others = _other_instances(orphans, local.instance_id)
    for order in orphans:
        if order.parent_id in orphan_ids:
            continue  # one finding per hand-placed order, not one per leg
        subject, shown = f"order {order.symbol}#{order.broker_id[:8]}", \
            f"{order.side} {order.qty} {order.type} {order.status} filled={order.filled_qty}"
        other = others.get(order.broker_id)
        working = order.status in WORKING_BROKER or any(
            leg.parent_id == order.broker_id and leg.status in WORKING_BROKER for leg in orphans)
        if other is not None and working:
            diff.add(_T.OTHER_INSTANCE, subject, None, f"{shown} cid={order.client_order_id}", symbol=order.symbol,
                     broker_ids=(order.broker_id,), explained=False,
                     reason=f"another catalyst daemon (database {other}) has working orders on this account: run one "
                            f"daemon per account; if none runs, they are an earlier database's orders: cancel them "
                            f"at the broker or go back to that database")
        elif other is not None:
            # An earlier database's order that has ended: worth a line (the account has a history), not a warning
            # per order on a fresh database's first pass.
            diff.add(_T.ORPHAN_ORDER, subject, None, f"{shown} cid={order.client_order_id}", symbol=order.symbol,
                     broker_ids=(order.broker_id,), severity=Severity.INFO,
                     reason=f"an order of another catalyst database ({other}), ended: nothing of ours at stake")
        else:
            diff.add(_T.ORPHAN_ORDER, subject, None, shown, symbol=order.symbol, broker_ids=(order.broker_id,))
    # Another daemon's fills are not hand trades to attach or adopt: its shares are its own, so a difference they
    # make stays unexplained here, and halts (adopting them would protect the same shares twice).
    missing, orphan_moves, missing_by_position = _fills(diff, local, broker, matched, orphan_ids - set(others), by_id)
    late_beside_open = _positions(diff, local, broker, missing, orphan_moves, _own_shares(matched, by_id, broker.fills),
                                  {by_id[i].symbol: other for i, other in others.items()},
                                  _OursAtBroker(_filled_by_order(matched, by_id), missing_by_position, seen_of))
    _protection(diff, local, broker, set(others), late_beside_open)
    return diff.findings


def _pair_stop_legs(orders: tuple[LocalOrder, ...], at_broker: tuple[BrokerOrder, ...],
                    seen_of: dict[int, BrokerOrder | None]) -> None:
    """An OCO's stop row with no broker id is the stop leg of the broker order its take-profit row matched. Alpaca
    makes up a leg's client_order_id, so only its parent names it; a stop row acknowledged without it (an answer read
    un-nested, the router's re-reads failing) matched nothing: its fill was no one's, and the position it closed an
    unexplained phantom (a halt). Matched, the row's outcome is settled from the leg (OUTCOME_UNKNOWN's heal gives the
    row its id) and the leg's fills are its MISSING_FILLs."""
    by_row = {o.order_id: o for o in orders}
    for order in orders:
        take_profit = by_row.get(oco_take_profit_id(order.order_id))
        if (order.role != "stop_loss" or order.broker_id is not None or seen_of[order.order_id] is not None
                or take_profit is None or take_profit.role != "take_profit"):
            continue
        parent = seen_of[take_profit.order_id]
        if parent is not None:
            seen_of[order.order_id] = next((o for o in at_broker if o.parent_id == parent.broker_id), None)


def _order(diff: _Diff, order: LocalOrder, seen: BrokerOrder | None, acknowledged_since: bool = False) -> None:
    subject = f"order {order.label}"
    ids = (seen.broker_id,) if seen else ()
    common = dict(symbol=order.symbol, order_id=order.order_id, position_id=order.position_id, broker_ids=ids)
    status = OrderStatus(order.status)
    if order.outcome_unknown or (status is OrderStatus.CREATED and seen is not None):
        if seen is not None and acknowledged_since:
            return  # sent while the pass ran, its answer already recorded: the next pass judges its status
        if seen is not None:
            diff.add(_T.OUTCOME_UNKNOWN, subject, f"{status} unknown", seen.status, **common)
        elif status not in ORDER_MACHINE.terminal and diff.old(order.updated_at):
            # Ended (retired after the broker was asked for it) and still not at the broker: settled, no finding.
            # An entry lost this way holds its position pending (no shares) until a restart would send it, late:
            # retired instead, once the broker is asked by its client_order_id (its heal). Any other is reported
            # here; a stop or exit lost this way is sent again by MISSING_PROTECTION's heal.
            entry = order.role == "entry" and status is OrderStatus.CREATED
            diff.add(_T.STUCK_CREATED if entry else _T.ORDER_NOT_AT_BROKER, subject, f"{status} unknown", None, **common)
        return
    if status is OrderStatus.CREATED:
        if diff.old(order.created_at):
            diff.add(_T.STUCK_CREATED, subject, status, None, **common)
        return
    if seen is None:
        if status not in ORDER_MACHINE.terminal and order.broker_id and diff.old(order.updated_at):
            diff.add(_T.ORDER_NOT_AT_BROKER, subject, status, None, **common)
        return
    try:
        reported = status_from_broker(seen.status, seen.filled_qty, seen.qty or order.qty)
    except ValueError as exc:
        diff.add(_T.ORDER_STATUS_CONFLICT, subject, status, seen.status, explained=False, reason=str(exc), **common)
        return
    plan = plan_catch_up(status, reported)
    if plan.kind is CatchUpKind.ADVANCE:
        diff.add(_T.ORDER_STATUS_MISMATCH, subject, status, seen.status, reason=str(plan), **common)
    elif plan.kind is CatchUpKind.CONFLICT or (plan.kind is CatchUpKind.STALE and status in ORDER_MACHINE.terminal
                                               and reported not in ORDER_MACHINE.terminal):
        # A broker order still working that the DB holds for done can fill with nobody watching it.
        diff.add(_T.ORDER_STATUS_CONFLICT, subject, status, seen.status, explained=False,
                 reason=f"{subject}: database {status}, broker {seen.status}", **common)
    elif seen.filled_qty < order.filled_qty:
        diff.add(_T.ORDER_STATUS_CONFLICT, subject, f"filled {order.filled_qty}", f"filled {seen.filled_qty}",
                 explained=False, reason=f"{subject}: database has more shares filled than the broker", **common)
    elif status is OrderStatus.SUBMITTED and seen.status in UNACKNOWLEDGED and diff.old(order.updated_at):
        diff.add(_T.STUCK_SUBMITTED, subject, status, seen.status, **common)


def _fills(diff: _Diff, local: LocalView, broker: BrokerView, matched: dict[str, LocalOrder],
           orphan_ids: set[str], by_id: dict[str, BrokerOrder],
           ) -> tuple[dict[str, Decimal], dict[str, list[str]], dict[int, Decimal]]:
    """MISSING_FILL per unrecorded execution of a known order. Returns the signed shares those missing fills
    move per symbol, the hand-placed orders that moved shares per symbol, and the missing fills' signed shares per
    position."""
    missing: dict[str, Decimal] = defaultdict(lambda: ZERO)
    missing_by_position: dict[int, Decimal] = defaultdict(lambda: ZERO)
    orphan_moves: dict[str, list[str]] = defaultdict(list)
    late = {o.order_id for o in local.placed_during_pass}
    for fill in broker.fills:
        order = matched.get(fill.broker_order_id)
        key = execution_key(fill.broker_order_id, fill.cum_qty)
        if order is not None and key not in local.execution_keys:
            if not _unlinked_entry(order):  # those shares are counted from the entry's filled_qty (_positions)
                missing[order.symbol] += signed_qty(order.side, fill.qty)
                if order.position_id is not None:
                    missing_by_position[order.position_id] += signed_qty(order.side, fill.qty)
            if order.order_id in late or key in local.recorded_since:
                continue  # the router is applying (or has applied) it: not missing, and the next pass judges it
            diff.add(_T.MISSING_FILL, f"order {order.label}", f"filled {order.filled_qty}",
                     f"{fill.qty} @ {fill.price} (cum {fill.cum_qty})", symbol=order.symbol, order_id=order.order_id,
                     position_id=order.position_id, broker_ids=(fill.broker_order_id,))
        elif fill.broker_order_id in orphan_ids:
            hand = by_id[fill.broker_order_id]
            if fill.broker_order_id not in orphan_moves[hand.symbol]:
                orphan_moves[hand.symbol].append(fill.broker_order_id)
    return missing, orphan_moves, missing_by_position


def _other_instances(orphans: list[BrokerOrder], ours: str) -> dict[str, str]:
    """Broker id → the other catalyst database that placed it, for orders (and their legs, whose client ids Alpaca
    makes up) with a catalyst client_order_id that is not this database's. None without our own id to compare."""
    if not ours:
        return {}
    others = {o.broker_id: instance for o in orphans
              if (instance := catalyst_instance(o.client_order_id)) is not None and instance != ours}
    for order in orphans:
        if order.parent_id in others:
            others[order.broker_id] = others[order.parent_id]
    return others


@dataclass(frozen=True)
class _OursAtBroker:
    """Our orders as the broker has them, for judging late entry shares."""

    filled: list[tuple[LocalOrder, Decimal]]  # each order matched to the broker's, with the signed shares it filled
    missing_by_position: dict[int, Decimal]  # per position, the signed shares of fills the broker reports, we lack
    seen_of: dict[int, BrokerOrder | None]  # per order id, the broker's order (by id, client id or OCO leg)


def _late_shares_of(local: LocalView, symbol: str, held: Decimal, at_broker: Decimal, ours: _OursAtBroker,
                    hand: list[str], other_traders: dict[str, str]) -> LocalPosition | None:
    """The one closed position whose recorded fills hold exactly `held` shares (signed) of the broker's `at_broker`
    (the rest our open positions'), when those are ours alone: every one bought by our own orders, none moved by hand
    or by another daemon. Its late entry shares, then; anything less exact is not this case (and halts).

    Our orders counted: that position's, the open positions' (`held` is beside them) and those of no position yet (an
    entry filled, unrecorded); not those of other closed positions, whose shares are settled: the listing's window
    can hold such a position's exit and not its entry (one carried from the day before and flattened at the open:
    a review found a halt)."""
    late = [p for p in local.closed_holding if p.symbol == symbol]
    if len(late) != 1 or signed_qty(late[0].side, late[0].qty) != held or hand or symbol in other_traders:
        return None
    # `held` is net of fills the broker reports and we lack; the late shares with their own such fills must still be
    # on their side and no more of them (a review: their sale and their stop both filled unrecorded, the account
    # short 300, was settled as the late 300; another position's missing fills are that position's, a later review).
    with_missing = signed_qty(late[0].side, late[0].qty) + ours.missing_by_position.get(late[0].position_id, ZERO)
    if not ZERO < signed_qty(late[0].side, with_missing) <= late[0].qty:
        return None
    # Nor may an open position beside them be sold past nothing by its own missing fills (a review: its sale and stop
    # both filled unrecorded, the account short, was taken for the late shares beside a short-sold open position).
    for position in local.positions:
        moved = ours.missing_by_position.get(position.position_id, ZERO)
        if position.symbol == symbol and signed_qty(position.side, signed_qty(position.side, position.qty) + moved) < 0:
            return None
    counted = {late[0].position_id} | {p.position_id for p in local.positions}
    own = sum((qty for order, qty in ours.filled if order.symbol == symbol
               and (order.position_id is None or order.position_id in counted)), ZERO)
    return late[0] if own == at_broker else None


def _in_hand(orders: tuple[LocalOrder, ...], seen_of: dict[int, BrokerOrder | None], late: LocalPosition,
             held: Decimal) -> bool:
    """The position's own market exits (`flatten` rows) and stops, working at the broker, are for exactly the `held`
    shares (signed): their sale (queued for the open if the market is closed), or their stops while it is closed
    (their actor sells them at the next open; a closed position with an exit order working gets one at a restart too,
    recovery_ops). As the broker has them, not as our rows say (a review: a stop cancelled at the broker, its event
    lost, counted); together, not each (a sale and a stop both working for the same shares would sell them twice).
    Matched as everywhere here: by id, by client id, an OCO's stop leg by its take-profit (a review)."""
    side = "sell" if held > 0 else "buy"
    working = ZERO
    for order in orders:
        seen = seen_of.get(order.order_id)
        if (order.position_id == late.position_id and order.role in ("flatten", "stop_loss") and order.side == side
                and seen is not None and seen.status in WORKING_BROKER):
            working += seen.qty - seen.filled_qty
    return working == abs(held)


def _settle_late_shares(diff: _Diff, local: LocalView, ours: _OursAtBroker, symbol: str, late: LocalPosition,
                        shares: Decimal, latest: datetime, reason: str) -> None:
    """Closed position `late`'s entry shares recorded after it closed, `shares` (signed) of them at the broker (its own
    fills we lack taken off). Its own market exit for them working, or its own stops (the market closed), they are in
    hand: "flatten it by hand" would sell them twice. Neither once its orders have settled: rebuilt to sell them."""
    if not _in_hand(local.orders, ours.seen_of, late, shares) and diff.old(latest):
        diff.add(_T.ORPHAN_POSITION, f"position {symbol}#p-{late.position_id}", 0, shares, symbol=symbol,
                 position_id=late.position_id, action="rebuild and sell", reason=reason)


def _unlinked_entry(order: LocalOrder) -> bool:
    """An entry the broker filled (filled_qty > 0) that has no position row yet: a crash came in between."""
    return order.role == "entry" and order.position_id is None and order.filled_qty > 0


def _own_shares(matched: dict[str, LocalOrder], by_id: dict[str, BrokerOrder],
                fills: tuple[BrokerFill, ...]) -> dict[str, tuple[Decimal, datetime]]:
    """Per symbol: the signed shares the broker filled for orders that are ours (matched to a database row), and
    the latest update of those rows or fill of those orders at the broker (a fill whose event was lost leaves its
    row as it was, often long before: a review found the lag of the positions list behind it halting entries)."""
    filled_at: dict[str, datetime] = {}
    for fill in fills:
        filled_at[fill.broker_order_id] = max(fill.at, filled_at.get(fill.broker_order_id, fill.at))
    own: dict[str, tuple[Decimal, datetime]] = {}
    for broker_id, order in matched.items():
        seen = by_id[broker_id]
        if seen.filled_qty:
            shares, latest = own.get(order.symbol, (ZERO, order.updated_at))
            at = max(latest, order.updated_at, filled_at.get(broker_id, order.updated_at))
            own[order.symbol] = (shares + signed_qty(seen.side, seen.filled_qty), at)
    return own


def _filled_by_order(matched: dict[str, LocalOrder], by_id: dict[str, BrokerOrder]) -> list[tuple[LocalOrder, Decimal]]:
    """Each of our orders (matched to a row) with the signed shares the broker filled for it."""
    return [(order, signed_qty(by_id[broker_id].side, by_id[broker_id].filled_qty))
            for broker_id, order in matched.items() if by_id[broker_id].filled_qty]


def _hand_shares(broker: BrokerView, ids: list[str]) -> Decimal:
    orders = {o.broker_id: o for o in broker.orders}
    return sum((signed_qty(orders[i].side, orders[i].filled_qty) for i in ids), ZERO)


def _positions(diff: _Diff, local: LocalView, broker: BrokerView, missing: dict[str, Decimal],
               orphan_moves: dict[str, list[str]], own: dict[str, tuple[Decimal, datetime]],
               other_traders: dict[str, str], ours_at_broker: _OursAtBroker) -> dict[str, LocalPosition]:
    """Position findings; returns the closed positions whose late entry shares were found beside an open position of
    their symbol (per symbol): not the open position's shares, nor are its stops theirs, so the open position's
    protection is judged without both."""
    late_beside_open: dict[str, LocalPosition] = {}
    held: dict[str, Decimal] = defaultdict(lambda: ZERO)
    first: dict[str, LocalPosition] = {}
    open_in: dict[str, int] = defaultdict(int)
    for position in local.positions:
        held[position.symbol] += signed_qty(position.side, position.qty)
        first.setdefault(position.symbol, position)
        open_in[position.symbol] += 1
    at_broker = {p.symbol: signed_qty(p.side, p.qty) for p in broker.positions if p.qty != 0}
    for order in local.orders:
        # An entry whose fills are recorded but whose position row a crash prevented is being rebuilt by its
        # position actor: the broker's shares are ours. Adopting them as an orphan would book them twice.
        if _unlinked_entry(order) and order.symbol in at_broker and order.symbol not in first:
            held[order.symbol] += signed_qty(order.side, order.filled_qty)
    for symbol in sorted(set(held) | set(at_broker)):
        ours, theirs = held[symbol] + missing[symbol], at_broker.get(symbol, ZERO)
        if ours == theirs:
            continue  # equal, or made equal by the missing fills the MISSING_FILL findings apply
        hand = orphan_moves.get(symbol, [])
        explained = ours + _hand_shares(broker, hand) == theirs
        own_shares, latest = own.get(symbol, (ZERO, diff.now))
        if symbol in own and own_shares == ours and not hand and not diff.old(latest):
            # Alpaca's positions can lag its orders for several seconds after a fill (ALPACA.md §7): the broker's own
            # orders say what the database says, its positions list not yet. Judged by a pass once our orders have
            # settled; a review found a fill at the close's pass halting entries ("database 100, broker 0").
            continue
        if symbol not in first:
            # Net of fills the broker reports and we lack (a sale of them filling with its event lost: a review found a
            # halt here, where beside an open position the same was only the missing fill), as beside one.
            late = _late_shares_of(local, symbol, theirs - ours, theirs, ours_at_broker, hand, other_traders)
            if late is not None:
                _settle_late_shares(diff, local, ours_at_broker, symbol, late,
                                    theirs - ours + ours_at_broker.missing_by_position.get(late.position_id, ZERO),
                                    latest,
                                    f"{symbol}: broker holds {theirs}, the entry shares of closed position "
                                    f"#p-{late.position_id} recorded after it closed: rebuilt to sell them")
                continue
            if own_shares:
                # Shares our own orders bought are never adopted: that would book them a second time. Usually a
                # fill and its position row are being written right now (a restart's catch-up, a race with this
                # pass): the next pass sees them. Still missing once those orders have settled, the database has
                # lost track of them: halt and say so, never invent a position for them.
                if diff.old(latest):
                    diff.add(_T.ORPHAN_POSITION, f"position {symbol}", 0, theirs, symbol=symbol,
                             broker_ids=tuple(hand), explained=False,
                             reason=f"{symbol}: broker holds {theirs}, {own_shares} of them filled for our own "
                                    f"orders, but the database has no open position")
                continue
            reason = "" if explained else f"{symbol}: broker holds {theirs} not explained by its fills"
            if symbol in other_traders:
                reason = (f"{symbol}: broker holds {theirs}, traded by another catalyst daemon (database "
                          f"{other_traders[symbol]}): its shares are not ours to adopt")
            diff.add(_T.ORPHAN_POSITION, f"position {symbol}", 0, theirs, symbol=symbol, broker_ids=tuple(hand),
                     explained=explained, reason=reason)
            continue
        late = _late_shares_of(local, symbol, theirs - ours, theirs, ours_at_broker, hand, other_traders)
        if late is not None:
            # Beside our open position in the symbol, the broker holds exactly the late entry shares of one closed
            # before it (recorded after it closed): settled by that position's own exit, or rebuilt to sell them, as
            # with none open. Halting over them stopped entries until an operator resumed (a review).
            late_beside_open[symbol] = late
            _settle_late_shares(diff, local, ours_at_broker, symbol, late,
                                theirs - ours + ours_at_broker.missing_by_position.get(late.position_id, ZERO),
                                latest,
                                f"{symbol}: broker holds {theirs}, {ours} of them open position "
                                f"#p-{first[symbol].position_id}'s and {theirs - ours} the entry shares of closed "
                                f"position #p-{late.position_id} recorded after it closed: rebuilt to sell them")
            continue
        position = first[symbol]
        common = dict(symbol=symbol, position_id=position.position_id, broker_ids=tuple(hand))
        subject = f"position {symbol}#p-{position.position_id}"
        # Only hand orders that reduce our position can be attached to it (an exit by hand); anything else halts.
        # Each of them, not only their sum: a hand buy beside a larger hand sale of a long position nets to a
        # reduction, but written as an exit its fill is applied as a sale (a review: the position actor crashed on
        # "exit fill exceeds the held" at every rebuild, its shares bare). Not with two open positions in the symbol
        # (an adoption beside one): which one the hand sold is not known, and a sale larger than the first's shares
        # attached to it would sell more than it holds.
        by_side = {o.broker_id: o.side for o in broker.orders}
        reduces = (explained and abs(theirs) < abs(ours) and (theirs == 0 or (theirs > 0) == (ours > 0))
                   and all(by_side[i] == exit_side(position.side) for i in hand) and open_in[symbol] == 1)
        reason = "" if reduces else f"{subject}: database {ours}, broker {theirs}, not explained by broker fills"
        if not reduces and symbol in other_traders:
            reason += f" (another catalyst daemon, database {other_traders[symbol]}, trades it too)"
        kind = _T.PHANTOM_POSITION if symbol not in at_broker else _T.POSITION_QTY_MISMATCH
        diff.add(kind, subject, ours, theirs, explained=reduces, reason=reason, **common)
    return late_beside_open


def working_stop_qty(orders: tuple[BrokerOrder, ...], symbol: str, exit_side: str,
                     not_ours: set[str] | frozenset[str] = frozenset()) -> Decimal:
    """Shares of `symbol` a working stop at the broker would close (an OCO's stop leg is `held` until triggered)."""
    return sum((o.qty - o.filled_qty for o in orders if o.symbol == symbol and o.side == exit_side
                and o.type in STOP_TYPES and o.status in WORKING_BROKER and o.broker_id not in not_ours), ZERO)


@dataclass(frozen=True)
class Uncovered:
    """Shares held at the broker beyond what its working stops would close."""

    symbol: str
    side: str  # long or short
    held: Decimal
    covered: Decimal

    def describe(self) -> str:
        return f"{self.symbol} {self.held:f} {self.side}, {self.covered:f} under a working stop"


def uncovered_at_broker(broker: BrokerView) -> tuple[Uncovered, ...]:
    """Every position the broker holds whose shares its working stops do not all cover, whoever placed either: what
    an operator must protect by hand when the daemon cannot send an order (its database refuses writes)."""
    found = []
    for position in sorted(broker.positions, key=lambda p: p.symbol):
        held = abs(position.qty)
        covered = working_stop_qty(broker.orders, position.symbol, exit_side(position.side))
        if held and covered < held:
            found.append(Uncovered(position.symbol, position.side, held, covered))
    return tuple(found)


def _protection(diff: _Diff, local: LocalView, broker: BrokerView, not_ours: set[str],
                late_beside_open: dict[str, LocalPosition]) -> None:
    """`not_ours`: another daemon's orders, which protect its shares, not ours. `late_beside_open`: closed positions
    whose late shares the broker holds beside the open ones (_positions): neither their shares nor their own orders
    (an OCO its rebuilt actor placed for them) are the open positions'."""
    at_broker = {p.symbol: abs(signed_qty(p.side, p.qty) - (signed_qty(late.side, late.qty)
                                                             if (late := late_beside_open.get(p.symbol)) else ZERO))
                 for p in broker.positions}
    for symbol in sorted({p.symbol for p in local.positions}):
        positions = [p for p in local.positions if p.symbol == symbol]
        qty = sum((p.qty for p in positions), ZERO)
        if symbol not in at_broker or at_broker[symbol] != qty:
            continue  # a position finding comes first; protecting a quantity we are unsure of could oversell
        late = late_beside_open.get(symbol)
        theirs = {o.broker_id for o in local.orders if late is not None and o.position_id == late.position_id
                  and o.broker_id is not None}
        theirs |= {o.broker_id for o in broker.orders if o.parent_id is not None and o.parent_id in theirs}
        working = working_stop_qty(broker.orders, symbol, exit_side(positions[0].side), not_ours | theirs)
        ids = {p.position_id for p in positions}
        # Stops created locally but not yet at the broker are on their way: not missing, just in flight.
        in_flight = sum((o.qty for o in (*local.orders, *local.placed_during_pass)
                         if o.position_id in ids and o.role == "stop_loss"
                         and o.status is OrderStatus.CREATED and not o.outcome_unknown), ZERO)
        subject = f"position {symbol}#p-{positions[0].position_id}"
        common = dict(symbol=symbol, position_id=positions[0].position_id)
        if working + in_flight < qty:
            diff.add(_T.MISSING_PROTECTION, subject, qty, working, **common)
        elif working > qty:
            diff.add(_T.EXCESS_PROTECTION, subject, qty, working, **common)
