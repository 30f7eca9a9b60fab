"""Multi-leg orders: building OCO/bracket/OTO groups, activating exits, one-cancels-other, replacement."""

from __future__ import annotations

import uuid
from dataclasses import replace as copy_with
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Callable

from catalyst.sim.accounts import Account
from catalyst.sim.order_entry import OrderSpec, decimal_field, enum_field
from catalyst.sim.orders import (
    ZERO, ExchangeError, OrderClass, OrderType, SimOrder, Status, TimeInForce, unprocessable,
)

if TYPE_CHECKING:
    from catalyst.sim.engine import Engine


def build(spec: OrderSpec, now: datetime, new_id: Callable[[], uuid.UUID]) -> tuple[SimOrder, list[SimOrder]]:
    """The parent order and its legs. OCO: the take-profit limit is the parent and the stop its one leg;
    bracket: the entry is the parent, legs are [take-profit, stop-loss]; OTO: the entry and one exit."""

    def order(**fields: Any) -> SimOrder:
        base: dict[str, Any] = dict(
            id=new_id(), client_order_id=str(new_id()), symbol=spec.symbol, side=spec.side, qty=spec.qty,
            time_in_force=spec.time_in_force, order_class=spec.order_class, created_at=now, updated_at=now,
            status=Status.NEW, extended_hours=spec.extended_hours,
        )
        base.update(fields)
        return SimOrder(**base)

    def stop_leg(side: Any, active: bool) -> SimOrder:
        kind = OrderType.STOP_LIMIT if spec.stop_loss_limit is not None else OrderType.STOP
        return order(type=kind, side=side, stop_price=spec.stop_loss_stop, limit_price=spec.stop_loss_limit,
                     status=Status.HELD, active=active)

    def take_profit_leg(side: Any) -> SimOrder:
        return order(type=OrderType.LIMIT, side=side, limit_price=spec.take_profit_limit, status=Status.HELD,
                     active=False)

    client_id = spec.client_order_id or str(new_id())
    if spec.order_class is OrderClass.OCO:
        parent = order(client_order_id=client_id, type=OrderType.LIMIT, limit_price=spec.take_profit_limit)
        legs = [stop_leg(spec.side, active=True)]  # shows `held` like Alpaca's, but is live from the start
    else:
        parent = order(client_order_id=client_id, type=spec.type, limit_price=spec.limit_price,
                       stop_price=spec.stop_price)
        exit_side = spec.side.opposite
        legs = []
        if spec.order_class in (OrderClass.BRACKET, OrderClass.OTO) and spec.take_profit_limit is not None:
            legs.append(take_profit_leg(exit_side))
        if spec.order_class in (OrderClass.BRACKET, OrderClass.OTO) and spec.stop_loss_stop is not None:
            legs.append(stop_leg(exit_side, active=False))
    for leg in legs:
        leg.parent_id = parent.id
    parent.leg_ids = [leg.id for leg in legs]
    return parent, legs


def group(account: Account, order: SimOrder) -> list[SimOrder]:
    """Every open order that lives or dies with `order`: its root and the root's legs."""
    root = account.orders[order.parent_id] if order.parent_id else order
    members = [root, *(account.orders[leg_id] for leg_id in root.leg_ids)]
    return [m for m in members if m.is_open]


def exit_sibling(account: Account, order: SimOrder) -> SimOrder | None:
    """The other half of an exit pair (OCO parent/leg, or a bracket's take-profit/stop), if any."""
    if order.parent_id is None:
        if order.order_class is OrderClass.OCO and order.leg_ids:
            return account.orders[order.leg_ids[0]]
        return None
    parent = account.orders[order.parent_id]
    if parent.order_class is OrderClass.OCO:
        return parent
    if parent.order_class is OrderClass.BRACKET and len(parent.leg_ids) == 2:
        other = parent.leg_ids[1] if parent.leg_ids[0] == order.id else parent.leg_ids[0]
        return account.orders[other]
    return None


def report_trigger(engine: Engine, account: Account, stop: SimOrder) -> None:
    """A triggered OCO stop as Alpaca was reported to show it (alpaca-py #198: "if the stop loss price is hit, the take
    profit order status changes to Replaced and the stop loss order status changes to Filled"): the take-profit ends
    `replaced` at the trigger, and the stop fills as the bars allow (at once, or over minutes in a thin market)."""
    if stop.parent_id is None:
        return
    parent = account.orders[stop.parent_id]
    if parent.order_class is OrderClass.OCO and parent.is_open:
        engine.finish(account, parent, Status.REPLACED, "replaced")


def after_fill(engine: Engine, account: Account, order: SimOrder, qty: Decimal, at: datetime) -> None:
    if order.parent_id is None and order.leg_ids and order.order_class in (OrderClass.BRACKET, OrderClass.OTO):
        if order.status is Status.FILLED:
            _activate_exits(engine, account, order, at)
        return
    sibling = exit_sibling(account, order)
    if sibling is None or not sibling.is_open:
        return
    if order.status is Status.FILLED:
        engine.finish(account, sibling, Status.CANCELED, "canceled")
    else:
        # The pair protects one quantity: what one leg sold, the other no longer needs to.
        sibling.qty = max(sibling.filled_qty, sibling.qty - qty)
        sibling.updated_at = at


def _activate_exits(engine: Engine, account: Account, entry: SimOrder, at: datetime) -> None:
    """Exits go live only once the entry is completely filled. The take-profit turns `new`; a stop leg
    keeps showing `held` (Alpaca routes only one leg at a time) but now triggers."""
    for leg_id in entry.leg_ids:
        leg = account.orders[leg_id]
        if not leg.is_open:
            continue
        leg.active, leg.working_since, leg.qty = True, at, entry.filled_qty
        if leg.type is OrderType.LIMIT or entry.order_class is OrderClass.OTO:
            leg.touch(Status.NEW, at)
            engine.emit(account, "new", leg)


def replacement(engine: Engine, account: Account, old: SimOrder, body: dict[str, Any]) -> SimOrder:
    """The new order that replaces `old` (PATCH): same group place, new id, the changed fields."""
    if not isinstance(body, dict):
        raise unprocessable("replace body must be a JSON object")
    if not old.is_open:
        raise unprocessable(f"order is not open (status {old.status}) and cannot be replaced")
    if old.order_class is OrderClass.OTO:
        raise unprocessable("oto orders cannot be replaced")
    client_id = body.get("client_order_id") or str(uuid.uuid4())
    if client_id in account.by_client_id:
        raise ExchangeError(422, 40010001, "client_order_id must be unique")
    qty = decimal_field(body, "qty") or old.remaining
    if qty != qty.to_integral_value():
        raise unprocessable(f"qty must be a whole number of shares, got {qty}")
    limit = decimal_field(body, "limit_price") or old.limit_price
    stop = decimal_field(body, "stop_price") or old.stop_price
    if body.get("limit_price") is not None and old.type not in (OrderType.LIMIT, OrderType.STOP_LIMIT):
        raise unprocessable(f"limit_price cannot be set on a {old.type} order")
    if body.get("stop_price") is not None and old.type not in (OrderType.STOP, OrderType.STOP_LIMIT):
        raise unprocessable(f"stop_price cannot be set on a {old.type} order")
    tif = enum_field(body, "time_in_force", TimeInForce, old.time_in_force)
    now = engine.clock.now()
    status = old.status if old.status in (Status.HELD, Status.ACCEPTED) else Status.NEW
    new = copy_with(old, id=uuid.uuid4(), client_order_id=client_id, qty=qty, limit_price=limit, stop_price=stop,
                    time_in_force=tif, created_at=now, updated_at=now, status=status, working_since=now,
                    triggered=False, filled_qty=ZERO, filled_notional=ZERO, consumed={}, leg_ids=list(old.leg_ids),
                    filled_at=None, canceled_at=None, expired_at=None, replaced_at=None, replaced_by=None)
    if old.parent_id is not None:
        parent = account.orders[old.parent_id]
        parent.leg_ids = [new.id if leg_id == old.id else leg_id for leg_id in parent.leg_ids]
    for leg_id in new.leg_ids:
        account.orders[leg_id].parent_id = new.id
    return new
