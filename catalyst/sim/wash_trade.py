"""Alpaca's wash-trade protection: a new order refused, 403 40310000 "potential wash trade detected. use complex
orders", when it could trade against an order of the other side the account has working in the same symbol.

"alpaca" is Alpaca's published table (docs.alpaca.markets/us/docs/user-protection, "Preventing Wash Trades"): an
order of the other side always conflicts, except when both carry a limit price (limit or stop_limit), where only a
buy limit at or above the sell limit does; "these complex orders [bracket, OCO] and trailing stop orders are
exceptions", so a new bracket, OCO or OTO is never refused. The table is read as written: an existing order counts
whatever its class (a working OCO's legs refuse a market buy), the stricter reading of what the page leaves open.

"strict" also refuses complex orders: what some users report seeing from Alpaca (an OCO refused while a buy limit
of the same symbol worked), kept so the daemon's handling of such a refusal can be exercised.
"""

from __future__ import annotations

from typing import Iterable, Literal, get_args

from catalyst.sim.order_entry import OrderSpec
from catalyst.sim.orders import OrderClass, OrderType, Side, SimOrder

WashTradeCheck = Literal["off", "alpaca", "strict"]
WASH_TRADE_CHECKS: tuple[str, ...] = get_args(WashTradeCheck)
WASH_TRADE_MESSAGE = "potential wash trade detected. use complex orders"

_COMPLEX = frozenset({OrderClass.OCO, OrderClass.BRACKET, OrderClass.OTO})
_PRICED = frozenset({OrderType.LIMIT, OrderType.STOP_LIMIT})


def wash_trade_conflict(check: WashTradeCheck, spec: OrderSpec, orders: Iterable[SimOrder]) -> SimOrder | None:
    """The working order of the account's that `spec` would be refused against, or None."""
    if check == "off" or (check == "alpaca" and spec.order_class in _COMPLEX):
        return None
    for order in orders:
        if not order.is_open or order.symbol != spec.symbol or order.side is spec.side:
            continue
        if check == "strict" or _could_cross(order, spec):
            return order
    return None


def _could_cross(existing: SimOrder, spec: OrderSpec) -> bool:
    if existing.type not in _PRICED or spec.type not in _PRICED:
        return True  # a market or stop order on either side: "always rejected"
    if existing.limit_price is None or spec.limit_price is None:
        return True
    buy_limit, sell_limit = ((spec.limit_price, existing.limit_price) if spec.side is Side.BUY
                             else (existing.limit_price, spec.limit_price))
    return buy_limit >= sell_limit
