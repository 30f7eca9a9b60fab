"""Order state machine (spec §2), Alpaca status mapping (§2.4) and the catch-up rule for broker reports.

Real-world quirks decided here:

- Events arrive late and out of order (stream vs REST, reconnects). A report *behind* the local state
  (a delayed `accepted` after `filled`) is **stale**: the status is ignored. Fills never travel through
  the status: they are recorded separately, de-duplicated by execution id, so a late fill event after a
  cancel still counts its shares even though its status is stale or conflicting.
- A report *ahead* of the local state **advances** along the shortest legal path, never jumping:
  `submitted -> filled` passes `accepted`, because Alpaca did accept the order before filling it.
- Fill after a cancel request: Alpaca's `pending_cancel` maps to `accepted` (or `partial_fill` when some
  shares filled), not to `cancelled`, so a fill that beats the cancel still advances normally. Only
  Alpaca's `canceled` is cancelled.
- Alpaca's own lifecycle runs `pending_new -> accepted -> new` (accepted = received, not yet routed, e.g.
  before the open; new = live on the book), while the spec maps `new` to `submitted`, below `accepted`.
  A `new` after `accepted` is therefore stale and ignored: harmless, the order is live either way.
- A report with no legal path either way (local `filled`, broker `cancelled`) is a **conflict**: the
  status is left alone and the doctor turns it into a finding. A stale verdict on a terminal local state
  from a REST snapshot (not a delayed event) may mean a live broker order the DB thinks is done: the
  doctor, not this rule, decides that by re-reading the broker.
"""

from __future__ import annotations

from collections.abc import Mapping

from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

from catalyst.domain.errors import InvalidQuantity, UnknownBrokerStatus
from catalyst.domain.machine import StateMachine


class OrderStatus(StrEnum):
    """Local order status (spec §2.2)."""

    CREATED = "created"
    SUBMITTED = "submitted"
    ACCEPTED = "accepted"
    PARTIAL_FILL = "partial_fill"
    FILLED = "filled"
    CANCELLED = "cancelled"
    REJECTED = "rejected"
    EXPIRED = "expired"
    REPLACED = "replaced"


_O = OrderStatus

ORDER_TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    _O.CREATED: frozenset({_O.SUBMITTED, _O.CANCELLED, _O.REJECTED}),
    _O.SUBMITTED: frozenset({_O.ACCEPTED, _O.REJECTED, _O.CANCELLED}),
    _O.ACCEPTED: frozenset({
        _O.PARTIAL_FILL, _O.FILLED, _O.CANCELLED, _O.EXPIRED, _O.REPLACED,
        _O.REJECTED,  # real world: `accepted` is not yet routed; the venue can still reject it at routing
    }),
    _O.PARTIAL_FILL: frozenset({
        _O.PARTIAL_FILL, _O.FILLED, _O.CANCELLED,
        _O.EXPIRED,  # real world: a partially filled DAY order expires at the close with its rest unfilled
        _O.REPLACED,  # real world: Alpaca lets you replace a partially filled order (qty/price of the rest)
    }),
    _O.FILLED: frozenset(),
    _O.CANCELLED: frozenset(),
    _O.REJECTED: frozenset(),
    _O.EXPIRED: frozenset(),
    _O.REPLACED: frozenset(),
}

ORDER_MACHINE: StateMachine[OrderStatus] = StateMachine("order", ORDER_TRANSITIONS)
"""The order machine; its terminal states are filled, cancelled, rejected, expired, replaced (§2.2)."""

OPEN_ORDER_STATUSES: frozenset[OrderStatus] = frozenset(ORDER_TRANSITIONS) - ORDER_MACHINE.terminal
"""Statuses of an order that may still change (and may still receive fills)."""


@dataclass(frozen=True)
class ByFill:
    """A broker status whose local meaning depends on how much of the order has filled."""

    unfilled: OrderStatus
    partly: OrderStatus
    fully: OrderStatus = OrderStatus.FILLED


ALPACA_STATUS_MAP: dict[str, OrderStatus | ByFill] = {
    # Spec §2.4 rows.
    "new": _O.SUBMITTED,  # live on the book at Alpaca; the spec calls it submitted (see module docstring)
    "pending_new": _O.SUBMITTED,  # received, being processed
    "accepted": _O.ACCEPTED,  # received by Alpaca, not yet routed (e.g. before the open)
    # The spec says accepted; when shares already filled that would be stale, partial_fill is exact.
    # Never cancelled: the cancel may still lose the race against a fill.
    "pending_cancel": ByFill(unfilled=_O.ACCEPTED, partly=_O.PARTIAL_FILL),
    "partially_filled": _O.PARTIAL_FILL,
    "filled": _O.FILLED,
    "canceled": _O.CANCELLED,  # Alpaca spells it with one l
    "expired": _O.EXPIRED,  # time in force ran out; from accepted or partial_fill
    "rejected": _O.REJECTED,
    "replaced": _O.REPLACED,  # the replacement is a new order with its own id
    # Statuses the spec does not list.
    "pending_replace": ByFill(unfilled=_O.ACCEPTED, partly=_O.PARTIAL_FILL),  # still working until replaced
    "pending_review": _O.SUBMITTED,  # held for Alpaca review before acceptance
    "accepted_for_bidding": _O.ACCEPTED,  # auction order accepted, waiting for the cross
    "held": _O.ACCEPTED,  # bracket/OCO leg parked until its parent fills: broker-side, cancellable
    "suspended": ByFill(unfilled=_O.ACCEPTED, partly=_O.PARTIAL_FILL),  # not tradable for now, not dead
    # No further executions today, but not terminal (a GTC order resumes tomorrow; a DAY one then expires).
    "done_for_day": ByFill(unfilled=_O.ACCEPTED, partly=_O.PARTIAL_FILL),
    # A trade is guaranteed at a price but has not happened yet: the fill decides.
    "stopped": ByFill(unfilled=_O.ACCEPTED, partly=_O.PARTIAL_FILL),
    # Done for the day (filled or not), settlement calculations pending: the fill decides.
    "calculated": ByFill(unfilled=_O.ACCEPTED, partly=_O.PARTIAL_FILL),
}

# The spec's table spells Alpaca's status `cancelled`; accept it rather than fail on a spec-minded peer.
_SPELLINGS = {"cancelled": "canceled"}


def oco_stop_leg_id(take_profit_order_id: int) -> int:
    """The row id of an OCO's stop-loss, given its take-profit's. The position actor creates the two rows together,
    take-profit first, in one transaction, so the stop-loss is always the next id. The rows are paired this way
    because the stop leg's client_order_id at the broker is one Alpaca makes up, not ours."""
    return take_profit_order_id + 1


def oco_take_profit_id(stop_loss_order_id: int) -> int:
    """The row id of an OCO's take-profit, given its stop-loss's (see oco_stop_leg_id)."""
    return stop_loss_order_id - 1


def replacement_chain(order_id: int, replaced_by: Mapping[int, int]) -> list[int]:
    """`order_id` and the orders that replaced it in turn (each row's replaced_by_order_id), the working one last.
    An OCO leg replaced at the broker (a stop moved by hand) is paired through its chain: the replacement's row is
    not next to its sibling's, so oco_stop_leg_id alone would lose the pair. Bounded: a cycle cannot loop."""
    chain = [order_id]
    while chain[-1] in replaced_by and len(chain) <= len(replaced_by):
        chain.append(replaced_by[chain[-1]])
    return chain


def status_from_broker(alpaca_status: str, filled_qty: Decimal, qty: Decimal) -> OrderStatus:
    """Local status for an Alpaca status string, deciding fill-dependent ones by `filled_qty` of `qty`."""
    if not isinstance(alpaca_status, str):
        raise UnknownBrokerStatus(alpaca_status)
    # alpaca-py's OrderStatus is a (str, Enum): str methods see its value ("new"), never "OrderStatus.NEW".
    key = alpaca_status.strip().lower()
    key = _SPELLINGS.get(key, key)
    try:
        rule = ALPACA_STATUS_MAP[key]
    except KeyError:
        raise UnknownBrokerStatus(alpaca_status) from None
    if isinstance(rule, OrderStatus):
        return rule
    filled, ordered = _fill_amounts(alpaca_status, filled_qty, qty)
    if filled == 0:
        return rule.unfilled
    return rule.fully if filled == ordered else rule.partly


def _fill_amounts(status: str, filled_qty: Decimal, qty: Decimal) -> tuple[Decimal, Decimal]:
    for name, value in (("filled_qty", filled_qty), ("qty", qty)):
        if not isinstance(value, Decimal) or not value.is_finite() or value < 0:
            raise InvalidQuantity(f"order status {status!r}: {name} must be a finite Decimal >= 0, got {value!r}")
    if filled_qty > qty:
        raise InvalidQuantity(f"order status {status!r}: filled_qty {filled_qty} exceeds qty {qty}")
    return filled_qty, qty


class CatchUpKind(StrEnum):
    """What to do with a broker-reported status."""

    SAME = "same"  # nothing to do
    ADVANCE = "advance"  # step through `path`
    STALE = "stale"  # the report is behind the local state: ignore the status
    CONFLICT = "conflict"  # no legal path either way: leave the state, record a finding


@dataclass(frozen=True)
class CatchUp:
    """The verdict of `plan_catch_up`; `path` holds the steps to apply for ADVANCE, else is empty."""

    kind: CatchUpKind
    current: OrderStatus
    reported: OrderStatus
    path: tuple[OrderStatus, ...] = ()

    def __str__(self) -> str:
        steps = " -> ".join((self.current, *self.path)) if self.path else f"{self.current} vs {self.reported}"
        return f"{self.kind}: {steps}"


def plan_catch_up(current: OrderStatus, reported: OrderStatus) -> CatchUp:
    """Decide how the local `current` status follows a broker-`reported` one (see the module docstring)."""
    current, reported = OrderStatus(current), OrderStatus(reported)
    if current == reported:
        return CatchUp(CatchUpKind.SAME, current, reported)
    forward = ORDER_MACHINE.path(current, reported)
    if forward is not None:
        return CatchUp(CatchUpKind.ADVANCE, current, reported, forward)
    if ORDER_MACHINE.path(reported, current) is not None:
        return CatchUp(CatchUpKind.STALE, current, reported)
    return CatchUp(CatchUpKind.CONFLICT, current, reported)
