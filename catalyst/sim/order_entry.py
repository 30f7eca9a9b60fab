"""Validating an order submission body the way Alpaca does, before anything touches an account."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Sequence

from catalyst.sim.orders import OrderClass, OrderType, Side, TimeInForce, unprocessable

MAX_CLIENT_ORDER_ID = 128


@dataclass(frozen=True)
class OrderSpec:
    symbol: str
    qty: Decimal
    side: Side
    type: OrderType
    time_in_force: TimeInForce
    order_class: OrderClass
    limit_price: Decimal | None
    stop_price: Decimal | None
    extended_hours: bool
    client_order_id: str | None
    take_profit_limit: Decimal | None
    stop_loss_stop: Decimal | None
    stop_loss_limit: Decimal | None


def decimal_field(body: dict[str, Any], name: str, *, required: bool = False) -> Decimal | None:
    raw = body.get(name)
    if raw is None or raw == "":
        if required:
            raise unprocessable(f"{name} is required")
        return None
    try:
        value = Decimal(str(raw))
    except InvalidOperation:
        raise unprocessable(f"invalid {name}: {raw!r} is not a number") from None
    if not value.is_finite() or value <= 0:
        raise unprocessable(f"invalid {name}: {raw!r} must be positive")
    return value


def enum_field(body: dict[str, Any], name: str, kind: type, default: Any = None) -> Any:
    raw = body.get(name)
    if raw is None or raw == "":
        if default is None:
            raise unprocessable(f"{name} is required")
        return default
    try:
        return kind(str(raw).lower())
    except ValueError:
        allowed = ", ".join(member.value for member in kind)
        raise unprocessable(f"invalid {name}: {raw!r} (expected one of {allowed})") from None


def _nested(body: dict[str, Any], name: str) -> dict[str, Any]:
    value = body.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise unprocessable(f"invalid {name}: expected an object")
    return value


def parse_order_body(body: Any, symbols: Sequence[str]) -> OrderSpec:
    if not isinstance(body, dict):
        raise unprocessable("order body must be a JSON object")
    symbol = str(body.get("symbol") or "").upper()
    if not symbol:
        raise unprocessable("symbol is required")
    if symbol not in symbols:
        raise unprocessable(f'asset "{symbol}" not found')
    if body.get("notional") not in (None, ""):
        raise unprocessable("notional orders are not supported by this emulator: send qty")
    qty = decimal_field(body, "qty", required=True)
    assert qty is not None
    if qty != qty.to_integral_value():
        raise unprocessable(f"qty must be a whole number of shares, got {qty}")
    take_profit, stop_loss = _nested(body, "take_profit"), _nested(body, "stop_loss")
    client_order_id = body.get("client_order_id")
    if client_order_id is not None and (not isinstance(client_order_id, str) or len(client_order_id) > MAX_CLIENT_ORDER_ID):
        raise unprocessable(f"client_order_id must be a string of at most {MAX_CLIENT_ORDER_ID} characters")
    spec = OrderSpec(
        symbol=symbol,
        qty=qty,
        side=enum_field(body, "side", Side),
        type=enum_field(body, "type", OrderType) if body.get("type") else enum_field(body, "order_type", OrderType),
        time_in_force=enum_field(body, "time_in_force", TimeInForce),
        order_class=enum_field(body, "order_class", OrderClass, OrderClass.SIMPLE),
        limit_price=decimal_field(body, "limit_price"),
        stop_price=decimal_field(body, "stop_price"),
        extended_hours=bool(body.get("extended_hours") or False),
        client_order_id=client_order_id or None,
        take_profit_limit=decimal_field(take_profit, "limit_price"),
        stop_loss_stop=decimal_field(stop_loss, "stop_price"),
        stop_loss_limit=decimal_field(stop_loss, "limit_price"),
    )
    _check_combination(spec)
    return spec


def _check_combination(spec: OrderSpec) -> None:
    """Alpaca answers 422 42210000 for these; texts are ours (Alpaca's exact wording is unverified)."""
    if spec.type in (OrderType.LIMIT, OrderType.STOP_LIMIT) and spec.limit_price is None and not (
        spec.order_class is OrderClass.OCO and spec.take_profit_limit is not None
    ):
        raise unprocessable(f"limit_price is required for {spec.type} orders")
    if spec.type in (OrderType.STOP, OrderType.STOP_LIMIT) and spec.stop_price is None:
        raise unprocessable(f"stop_price is required for {spec.type} orders")
    if spec.extended_hours and (spec.type is not OrderType.LIMIT or spec.time_in_force is not TimeInForce.DAY):
        raise unprocessable("extended hours orders must be DAY limit orders")
    if spec.order_class is OrderClass.SIMPLE:
        return
    if spec.extended_hours:
        raise unprocessable(f"{spec.order_class} orders cannot trade in extended hours")
    if spec.time_in_force not in (TimeInForce.DAY, TimeInForce.GTC):
        raise unprocessable(f"{spec.order_class} orders must be day or gtc, not {spec.time_in_force}")
    if spec.order_class is OrderClass.OCO:
        if spec.type is not OrderType.LIMIT:
            raise unprocessable(f"oco orders must be limit orders, not {spec.type}")
        if spec.take_profit_limit is None or spec.stop_loss_stop is None:
            raise unprocessable("oco orders require take_profit.limit_price and stop_loss.stop_price")
    elif spec.order_class is OrderClass.BRACKET:
        if spec.take_profit_limit is None or spec.stop_loss_stop is None:
            raise unprocessable("bracket orders require take_profit.limit_price and stop_loss.stop_price")
    elif spec.order_class is OrderClass.OTO:
        if (spec.take_profit_limit is None) == (spec.stop_loss_stop is None):
            raise unprocessable("oto orders require exactly one of take_profit or stop_loss")
    if spec.take_profit_limit is not None and spec.stop_loss_stop is not None:
        exits_above = spec.side is Side.BUY  # a long's take-profit sits above its stop
        if spec.order_class is OrderClass.OCO:
            exits_above = spec.side is Side.SELL
        if exits_above != (spec.take_profit_limit > spec.stop_loss_stop):
            raise unprocessable(
                f"take_profit.limit_price {spec.take_profit_limit} and stop_loss.stop_price "
                f"{spec.stop_loss_stop} are on the wrong sides for a {spec.side} {spec.order_class}"
            )
