"""NewOrder, the neutral order request, and its translation into alpaca-py's request objects."""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from alpaca.trading.enums import OrderClass, OrderSide, TimeInForce
from alpaca.trading.requests import (
    LimitOrderRequest,
    MarketOrderRequest,
    OrderRequest,
    StopLimitOrderRequest,
    StopLossRequest,
    StopOrderRequest,
    TakeProfitRequest,
)

from catalyst.broker.errors import InvalidRequest


class NewOrder(BaseModel):
    """What to submit. Prices and quantities are Decimal; alpaca-py's requests take floats, so the
    conversion happens once, here (cent prices and whole shares survive float exactly enough)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    symbol: str = Field(min_length=1)
    side: Literal["buy", "sell"]
    qty: Decimal = Field(gt=0)
    type: Literal["market", "limit", "stop", "stop_limit"] = "market"
    tif: Literal["day", "gtc", "ioc", "fok", "opg", "cls"] = "day"
    limit_price: Decimal | None = Field(default=None, gt=0)
    stop_price: Decimal | None = Field(default=None, gt=0)
    client_order_id: str = Field(min_length=1, max_length=128)  # Alpaca's limit is 128 characters
    order_class: Literal["simple", "bracket", "oco", "oto"] = "simple"
    take_profit_limit: Decimal | None = Field(default=None, gt=0)
    stop_loss_stop: Decimal | None = Field(default=None, gt=0)
    stop_loss_limit: Decimal | None = Field(default=None, gt=0)
    extended_hours: bool = False

    @model_validator(mode="after")
    def _prices_fit_type(self) -> NewOrder:
        if self.type in ("limit", "stop_limit") and self.limit_price is None and self.order_class != "oco":
            raise ValueError(f"{self.type} order needs limit_price")
        if self.type in ("stop", "stop_limit") and self.stop_price is None:
            raise ValueError(f"{self.type} order needs stop_price")
        if self.order_class == "oco":
            if self.type != "limit":
                raise ValueError("an OCO exit must be type limit (Alpaca: take-profit parent, stop child)")
            if self.take_profit_limit is None or self.stop_loss_stop is None:
                raise ValueError("an OCO exit needs take_profit_limit and stop_loss_stop")
        if self.order_class == "bracket" and (self.take_profit_limit is None or self.stop_loss_stop is None):
            raise ValueError("a bracket needs take_profit_limit and stop_loss_stop")
        return self

    @classmethod
    def oco_exit(
        cls,
        *,
        symbol: str,
        side: Literal["buy", "sell"],
        qty: Decimal,
        take_profit_limit: Decimal,
        stop_price: Decimal,
        client_order_id: str,
        stop_limit: Decimal | None = None,
        tif: Literal["day", "gtc"] = "day",
    ) -> NewOrder:
        """Alpaca OCO: type limit; the take-profit limit is the parent, the stop the child leg."""
        return cls(
            symbol=symbol,
            side=side,
            qty=qty,
            type="limit",
            tif=tif,
            client_order_id=client_order_id,
            order_class="oco",
            take_profit_limit=take_profit_limit,
            stop_loss_stop=stop_price,
            stop_loss_limit=stop_limit,
        )

    def describe(self) -> str:
        return f"{self.side} {self.qty} {self.symbol} {self.order_class}/{self.type} cid={self.client_order_id}"


def alpaca_request(order: NewOrder) -> OrderRequest:
    """The alpaca-py request for `order`; InvalidRequest (nothing sent) if alpaca-py refuses it."""
    common: dict[str, object] = {
        "symbol": order.symbol,
        "qty": float(order.qty),
        "side": OrderSide(order.side),
        "time_in_force": TimeInForce(order.tif),
        "client_order_id": order.client_order_id,
    }
    if order.extended_hours:
        common["extended_hours"] = True
    if order.order_class != "simple":
        common["order_class"] = OrderClass(order.order_class)
    if order.take_profit_limit is not None:
        common["take_profit"] = TakeProfitRequest(limit_price=float(order.take_profit_limit))
    if order.stop_loss_stop is not None:
        common["stop_loss"] = StopLossRequest(
            stop_price=float(order.stop_loss_stop),
            limit_price=float(order.stop_loss_limit) if order.stop_loss_limit is not None else None,
        )
    try:
        if order.type == "market":
            return MarketOrderRequest(**common)
        if order.type == "limit":
            limit = float(order.limit_price) if order.limit_price is not None else None
            return LimitOrderRequest(limit_price=limit, **common)
        if order.type == "stop":
            return StopOrderRequest(stop_price=float(order.stop_price or 0), **common)
        return StopLimitOrderRequest(
            stop_price=float(order.stop_price or 0), limit_price=float(order.limit_price or 0), **common
        )
    except (ValidationError, ValueError) as exc:
        raise InvalidRequest(f"{order.describe()}: {_first_error(exc)}", operation="submit") from exc


def _first_error(exc: Exception) -> str:
    if isinstance(exc, ValidationError) and exc.errors():
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        return f"{where}: {first.get('msg')}" if where else str(first.get("msg"))
    return str(exc)
