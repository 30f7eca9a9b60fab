"""Pure price rules: when an order executes against the last trade or a minute bar, and at what price."""

from __future__ import annotations

from decimal import ROUND_FLOOR, Decimal

from catalyst.sim.market import Bar
from catalyst.sim.orders import ZERO, OrderType, Side, SimOrder


def price_on_submit(order: SimOrder, last: Decimal | None) -> Decimal | None:
    """The price a newly accepted order executes at against the last trade, or None if it rests.

    Stops never execute on submit: they are triggered by the bars that follow.
    """
    if last is None:
        return None
    if order.type is OrderType.MARKET:
        return last
    if order.type is OrderType.LIMIT:
        assert order.limit_price is not None
        if order.side is Side.BUY and last <= order.limit_price:
            return last
        if order.side is Side.SELL and last >= order.limit_price:
            return last
    return None


def _limit_price_in_bar(side: Side, limit: Decimal, bar: Bar, reference: Decimal) -> Decimal | None:
    # "Trades through": the bar must go beyond the limit, touching it is not enough (queue position).
    # A bar that opens beyond the limit gives the better opening price.
    if side is Side.BUY and bar.low < limit:
        return min(limit, reference)
    if side is Side.SELL and bar.high > limit:
        return max(limit, reference)
    return None


def price_in_bar(order: SimOrder, bar: Bar, working_before_bar: bool) -> Decimal | None:
    """The price `order` executes at during `bar`, or None. Triggers stops (sets `order.triggered`).

    `working_before_bar`: the order was live when the bar opened, so a gap at the open fills at the open;
    an order that arrived mid-minute gets the bar's close for market-like executions.
    """
    reference = bar.open if working_before_bar else bar.close
    kind = order.type
    if kind in (OrderType.STOP, OrderType.STOP_LIMIT) and not order.triggered:
        assert order.stop_price is not None
        stop = order.stop_price
        touched = bar.low <= stop if order.side is Side.SELL else bar.high >= stop
        if not touched:
            return None
        order.triggered = True
        # The trigger trade is the stop price, or the open if the bar gapped past it.
        trigger = (min(stop, bar.open) if order.side is Side.SELL else max(stop, bar.open)) if working_before_bar else stop
        if kind is OrderType.STOP:
            return trigger
        assert order.limit_price is not None
        limit = order.limit_price
        if (order.side is Side.SELL and trigger >= limit) or (order.side is Side.BUY and trigger <= limit):
            return trigger
        return _limit_price_in_bar(order.side, limit, bar, limit)
    if kind is OrderType.MARKET or kind is OrderType.STOP:
        return reference
    assert order.limit_price is not None
    return _limit_price_in_bar(order.side, order.limit_price, bar, reference if working_before_bar else order.limit_price)


def capacity(participation: Decimal, volume: int | None) -> Decimal | None:
    """Shares one order may take from one minute: a share of the bar's volume, at least one share.
    None means unlimited (no bar known to cap against)."""
    if volume is None:
        return None
    return max(Decimal(1), (participation * volume).to_integral_value(rounding=ROUND_FLOOR))


def executable_qty(order: SimOrder, minute_capacity: Decimal | None, minute_key: object) -> Decimal:
    if minute_capacity is None:
        return order.remaining
    used = order.consumed.get(minute_key, ZERO)  # type: ignore[arg-type]
    return max(ZERO, min(order.remaining, minute_capacity - used))
