"""Neutral, frozen broker reports (Alpaca's status spelling, Decimal money) and converters from alpaca-py models."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any, Mapping
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from alpaca.trading.enums import OrderClass, OrderSide, OrderStatus, OrderType, TimeInForce
from alpaca.trading.models import Calendar, Clock

from catalyst.domain.reconcile import BrokerOrder, BrokerPosition

EXCHANGE_TZ = ZoneInfo("America/New_York")


class Report(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class OrderReport(Report):
    broker_id: str
    client_order_id: str
    symbol: str
    side: str  # buy / sell
    type: str  # market / limit / stop / stop_limit / trailing_stop
    order_class: str  # simple / bracket / oco / oto
    tif: str
    qty: Decimal | None
    filled_qty: Decimal
    filled_avg_price: Decimal | None
    limit_price: Decimal | None
    stop_price: Decimal | None
    status: str  # Alpaca's spelling: "canceled", not the spec's "cancelled"
    created_at: datetime
    updated_at: datetime
    submitted_at: datetime
    filled_at: datetime | None
    canceled_at: datetime | None
    legs: tuple[OrderReport, ...] = ()
    replaced_by: str | None = None
    replaces: str | None = None


class FillReport(Report):
    execution_id: str  # the stream's execution_id or the FILL activity's id
    broker_order_id: str
    client_order_id: str | None
    symbol: str
    side: str
    qty: Decimal  # this execution's quantity, not the order's cumulative one
    price: Decimal
    cum_qty: Decimal | None
    leaves_qty: Decimal | None
    order_status: str
    at: datetime


class PositionReport(Report):
    symbol: str
    side: str  # long / short
    qty: Decimal  # always positive; Alpaca reports shorts as negative qty
    avg_entry_price: Decimal
    market_value: Decimal | None
    unrealized_pl: Decimal | None
    current_price: Decimal | None
    # Shares not promised to open orders that would close it (Alpaca's qty_available, unsigned); None if not sent.
    qty_available: Decimal | None = None


def order_views(reports: list[OrderReport]) -> list[tuple[OrderReport, BrokerOrder]]:
    """Each order and each leg of it (an OCO's stop leg travels inside its take-profit), with reconciliation's view."""
    return [(item, BrokerOrder(item.broker_id, item.client_order_id, item.symbol, item.side, item.qty or Decimal(0),
                               item.filled_qty, item.status, item.type, parent))
            for report in reports
            for item, parent in ((report, None), *((leg, report.broker_id) for leg in report.legs))]


def position_view(position: PositionReport) -> BrokerPosition:
    return BrokerPosition(position.symbol, position.side, position.qty)


class AccountReport(Report):
    account_id: str
    account_number: str
    status: str
    currency: str | None
    cash: Decimal | None
    equity: Decimal | None
    last_equity: Decimal | None
    buying_power: Decimal | None
    long_market_value: Decimal | None
    short_market_value: Decimal | None
    trading_blocked: bool
    account_blocked: bool
    shorting_enabled: bool | None
    trade_suspended_by_user: bool = False
    daytrade_count: int | None = None  # day trades in the last five business days, as Alpaca counts them

    def why_no_orders(self) -> str | None:
        """Why Alpaca would refuse every order of this account (its status and restrictions), or None."""
        reasons = [why for flagged, why in (
            (self.account_blocked, "account_blocked: the account's activity is prohibited"),
            (self.trading_blocked, "trading_blocked: the account may not place orders"),
            (self.trade_suspended_by_user, "trade_suspended_by_user: trading is suspended in the account's settings"),
            (self.status.upper() != "ACTIVE", f"status {self.status}: only an ACTIVE account trades"),
        ) if flagged]
        return "; ".join(reasons) or None


class TradeUpdateReport(Report):
    event: str
    order: OrderReport
    at: datetime
    execution_id: str | None = None
    price: Decimal | None = None  # this execution's price (fill events only)
    qty: Decimal | None = None  # this execution's quantity (fill events only)
    position_qty: Decimal | None = None


class ClockReport(Report):
    at: datetime
    is_open: bool
    next_open: datetime
    next_close: datetime


class CalendarDay(Report):
    day: date
    open: datetime  # timezone-aware, America/New_York
    close: datetime


class CancelOutcome(Report):
    broker_id: str
    http_status: int
    body: dict[str, Any] | None = None


def dec(value: object) -> Decimal | None:
    """Decimal from Alpaca's str-or-float money fields; floats go through str() so 105.89 stays 105.89."""
    if value is None or value == "":
        return None
    return Decimal(str(value))


# The values alpaca-py's Order model accepts for these fields; an order payload with any other is refused as its
# model would refuse it (MalformedResponse for a REST answer, a one-line error for a stream message).
_ORDER_ENUMS = {
    "order_class": frozenset(e.value for e in OrderClass),
    "type": frozenset(e.value for e in OrderType),
    "side": frozenset(e.value for e in OrderSide),
    "time_in_force": frozenset(e.value for e in TimeInForce),
    "status": frozenset(e.value for e in OrderStatus),
}


def order_report(raw: Mapping[str, Any]) -> OrderReport:
    """From an order object as Alpaca sends it (REST answer or trade update), checked as alpaca-py's Order model
    checks what the daemon reads of it: ids, enum values, quantities and prices, timestamps.

    Why not through that model: building it, then this report from it, cost twice the parsing on every submit
    answer and every trade update (60–68 µs of CPU per OCO answer in a loop against 25–36 µs read directly, more
    on a busy CPU), on the path between a fill and its stop. The REST client is asked for the raw JSON (alpaca-py's
    `raw_data`), as the stream already is."""
    if not isinstance(raw, Mapping):
        raise ValueError(f"order is {type(raw).__name__}, not an object")
    kind = _enum_field(raw, "type", required=False) or _enum_field(raw, "order_type", "type", required=False)
    legs = raw.get("legs") or ()
    if not isinstance(legs, (list, tuple)):
        raise ValueError(f"order legs is {type(legs).__name__}, not a list")
    return OrderReport(
        broker_id=_required_text(raw, "id"),
        client_order_id=_required_text(raw, "client_order_id"),
        symbol=raw.get("symbol") or "",
        side=_enum_field(raw, "side", required=False),
        type=kind,
        order_class=_enum_field(raw, "order_class", required=False) or OrderClass.SIMPLE.value,
        tif=_enum_field(raw, "time_in_force"),
        qty=_number(raw, "qty"),
        filled_qty=_number(raw, "filled_qty") or Decimal(0),
        filled_avg_price=_number(raw, "filled_avg_price"),
        limit_price=_number(raw, "limit_price"),
        stop_price=_number(raw, "stop_price"),
        status=_enum_field(raw, "status"),
        created_at=raw.get("created_at"),
        updated_at=raw.get("updated_at"),
        submitted_at=raw.get("submitted_at"),
        filled_at=raw.get("filled_at"),
        canceled_at=raw.get("canceled_at"),
        legs=tuple(order_report(leg) for leg in legs),
        replaced_by=str(raw["replaced_by"]) if raw.get("replaced_by") else None,
        replaces=str(raw["replaces"]) if raw.get("replaces") else None,
    )


def _number(raw: Mapping[str, Any], field: str) -> Decimal | None:
    try:
        return dec(raw.get(field))
    except ArithmeticError:  # decimal.InvalidOperation: not a number at all
        raise ValueError(f"order {field} {raw.get(field)!r} is not a number") from None


def _required_text(raw: Mapping[str, Any], field: str) -> str:
    value = raw.get(field)
    if value is None or value == "":
        raise ValueError(f"order has no {field}")
    return str(value)


def _enum_field(raw: Mapping[str, Any], field: str, allowed_as: str | None = None, required: bool = True) -> str:
    """The field's text if it is one of alpaca-py's values for it ("" or missing: "" unless required)."""
    value = raw.get(field)
    if value is None or value == "":  # alpaca-py reads "" as absent (multi-leg answers)
        if required:
            raise ValueError(f"order has no {field}")
        return ""
    text = str(value)
    if text not in _ORDER_ENUMS[allowed_as or field]:
        raise ValueError(f"order {field} {text!r} is not one of Alpaca's values")
    return text


def _number_field(raw: Mapping[str, Any], field: str, subject: str) -> Decimal | None:
    """A money or quantity field of a raw broker object as an exact Decimal (None if absent or empty); anything that
    is not a finite number (a word, NaN, a JSON true) is refused naming `subject` and the field."""
    value = raw.get(field)
    try:
        amount = None if isinstance(value, bool) else dec(value)
    except ArithmeticError:  # decimal.InvalidOperation: not a number at all
        amount = Decimal("NaN")
    if isinstance(value, bool) or (amount is not None and not amount.is_finite()):
        raise ValueError(f"{subject} {field} {value!r} is not a number")
    return amount


def position_report(raw: Mapping[str, Any]) -> PositionReport:
    """From a position object as Alpaca sends it, read from the raw JSON as orders and assets are: alpaca-py's
    Position model refuses one over an exchange or asset class value it does not know yet (its Asset model did:
    issues #276, #340, #624), and one such position failed every read of the account's positions (the doctor's
    passes, the emergency stop's check of what is still held). The fields read are checked here."""
    if not isinstance(raw, Mapping):
        raise ValueError(f"position is {type(raw).__name__}, not an object")
    symbol = raw.get("symbol")
    if not isinstance(symbol, str) or not symbol:
        raise ValueError("position has no symbol")
    side = raw.get("side")
    if side not in _POSITION_SIDES:
        raise ValueError(f"position {symbol} side {side!r} is not long or short")

    def number(field: str) -> Decimal | None:
        return _number_field(raw, field, f"position {symbol}")

    qty = number("qty")
    if qty is None:
        raise ValueError(f"position {symbol} has no qty")
    # Alpaca signs a short's qty; the side is what the daemon reads, and a sign that contradicts it means the answer
    # cannot be trusted either way (netting late shares or flattening by the wrong side would double a position).
    if (side == "long" and qty < 0) or (side == "short" and qty > 0):
        raise ValueError(f"position {symbol} side {side} contradicts its qty {raw.get('qty')!r}")
    return PositionReport(
        symbol=symbol,
        side=str(side),
        qty=abs(qty),
        avg_entry_price=number("avg_entry_price") or Decimal(0),
        market_value=number("market_value"),
        unrealized_pl=number("unrealized_pl"),
        current_price=number("current_price"),
        qty_available=abs(available) if (available := number("qty_available")) is not None else None,
    )


_POSITION_SIDES = frozenset({"long", "short"})


_OPTIONAL_FLAG: TypeAdapter[bool | None] = TypeAdapter(bool | None)
_OPTIONAL_COUNT: TypeAdapter[int | None] = TypeAdapter(int | None)


def account_report(raw: Mapping[str, Any]) -> AccountReport:
    """From the account object as Alpaca sends it (GET /v2/account), read from the raw JSON as positions are:
    alpaca-py's TradeAccount model has refused real answers (its issue #216: an account still onboarding, with a null
    account_number and no balances; #436: an enum value it did not know yet), which stopped the daemon's start (taken
    for an unreachable broker for broker.startup_wait_s) and every approval. Only the fields read are checked; a
    status this code does not know is kept as text, and only ACTIVE trades (AccountReport.why_no_orders)."""
    if not isinstance(raw, Mapping):
        raise ValueError(f"account is {type(raw).__name__}, not an object")
    account_id = raw.get("id")
    if not isinstance(account_id, str) or not account_id:
        raise ValueError("account has no id")
    status = raw.get("status")
    if not isinstance(status, str) or not status:
        raise ValueError(f"account status {status!r} is not a status")

    def number(field: str) -> Decimal | None:
        return _number_field(raw, field, "account")

    def read(field: str, kind: TypeAdapter[Any], what: str) -> Any:
        # pydantic's lax reading, as alpaca-py's model read these ("false" is false, "2" is 2): nothing it accepted
        # is refused here, and nothing it refused is read as something else
        try:
            return kind.validate_python(raw.get(field))
        except ValidationError:
            raise ValueError(f"account {field} {raw.get(field)!r} is not {what}") from None

    def flag(field: str) -> bool | None:
        return read(field, _OPTIONAL_FLAG, "true or false")

    day_trades = read("daytrade_count", _OPTIONAL_COUNT, "a whole number")
    number_text = raw.get("account_number")
    currency = raw.get("currency")
    return AccountReport(
        account_id=account_id,
        # null while the account is onboarding (#216): the id names it in the daemon's lines instead
        account_number=number_text if isinstance(number_text, str) and number_text else account_id,
        status=status,
        currency=currency if isinstance(currency, str) else None,
        cash=number("cash"),
        equity=number("equity"),
        last_equity=number("last_equity"),
        buying_power=number("buying_power"),
        long_market_value=number("long_market_value"),
        short_market_value=number("short_market_value"),
        trading_blocked=bool(flag("trading_blocked")),
        account_blocked=bool(flag("account_blocked")),
        shorting_enabled=flag("shorting_enabled"),
        trade_suspended_by_user=bool(flag("trade_suspended_by_user")),
        daytrade_count=day_trades,
    )


def clock_report(clock: Clock) -> ClockReport:
    return ClockReport(at=clock.timestamp, is_open=clock.is_open, next_open=clock.next_open, next_close=clock.next_close)


def calendar_day(day: Calendar) -> CalendarDay:
    # alpaca-py builds naive datetimes from "HH:MM" strings that are exchange-local time.
    return CalendarDay(day=day.date, open=_exchange_local(day.open), close=_exchange_local(day.close))


def _exchange_local(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=EXCHANGE_TZ)


def trade_update_report(data: Mapping[str, Any]) -> TradeUpdateReport:
    """From the raw `data` of a trade_updates message; raw so that price/qty stay exact decimals
    (alpaca-py's TradeUpdate model turns them into floats)."""
    if not isinstance(data, Mapping):
        raise ValueError(f"trade update data is {type(data).__name__}, not an object")
    if "order" not in data or not isinstance(data["order"], Mapping):
        raise ValueError("trade update has no order object")
    if "event" not in data:
        raise ValueError("trade update has no event")
    if "timestamp" not in data:
        raise ValueError("trade update has no timestamp")
    execution_id = data.get("execution_id")
    return TradeUpdateReport.model_validate(
        {
            "event": str(data["event"]),
            "order": order_report(data["order"]),
            "at": data["timestamp"],
            "execution_id": str(execution_id) if execution_id else None,
            "price": dec(data.get("price")),
            "qty": dec(data.get("qty")),
            "position_qty": dec(data.get("position_qty")),
        }
    )


def fill_from_update(update: TradeUpdateReport) -> FillReport | None:
    """The execution carried by a fill/partial_fill event; None for other events."""
    if update.event not in ("fill", "partial_fill") or update.qty is None or update.price is None:
        return None
    order = update.order
    return FillReport(
        execution_id=update.execution_id or f"{order.broker_id}:{order.filled_qty}",
        broker_order_id=order.broker_id,
        client_order_id=order.client_order_id,
        symbol=order.symbol,
        side=order.side,
        qty=update.qty,
        price=update.price,
        cum_qty=order.filled_qty,
        leaves_qty=(order.qty - order.filled_qty) if order.qty is not None else None,
        order_status=order.status,
        at=update.at,
    )


class _FillActivityWire(BaseModel):
    """GET /v2/account/activities/FILL item; parsed here because alpaca-py has no typed call for it
    and its TradeActivity model uses floats."""

    model_config = ConfigDict(extra="ignore")

    id: str
    activity_type: str = "FILL"
    transaction_time: datetime
    type: str = "fill"
    price: Decimal
    qty: Decimal
    side: str
    symbol: str
    leaves_qty: Decimal | None = None
    cum_qty: Decimal | None = None
    order_id: str
    order_status: str = ""
    client_order_id: str | None = None


# A FILL activity's side is the execution's, from a longer list than an order's buy/sell (Alpaca's TradeActivitySide):
# a short sale is `sell_short`. Our records keep the order's side; "cross"-like values name no direction and are
# passed on unchanged for the caller to judge against the order it knows.
_EXECUTION_SIDES = {"buy": "buy", "buy_minus": "buy", "sell": "sell", "sell_plus": "sell", "sell_short": "sell",
                    "sell_short_exempt": "sell"}


def execution_side(side: str) -> str:
    """The order side (buy/sell) of a FILL activity's execution side, as far as the side itself tells it."""
    return _EXECUTION_SIDES.get(side, side)


def fill_activity_report(raw: Mapping[str, Any]) -> FillReport:
    wire = _FillActivityWire.model_validate(raw)
    return FillReport(
        execution_id=wire.id,
        broker_order_id=wire.order_id,
        client_order_id=wire.client_order_id,
        symbol=wire.symbol,
        side=execution_side(wire.side),
        qty=wire.qty,
        price=wire.price,
        cum_qty=wire.cum_qty,
        leaves_qty=wire.leaves_qty,
        order_status=wire.order_status,
        at=wire.transaction_time,
    )
