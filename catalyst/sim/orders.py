"""The emulator's order record, its states and its Alpaca JSON shape."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from decimal import Decimal
from enum import StrEnum
from uuid import UUID, uuid5

ASSET_NAMESPACE = UUID("6f1c0e52-3b6e-4c1e-9a51-3c0d6f0f6a10")
ZERO = Decimal(0)


class Status(StrEnum):
    """Alpaca's spelling (`canceled`), not the spec's."""

    NEW = "new"
    ACCEPTED = "accepted"  # submitted while the market is closed; becomes `new` at the open
    HELD = "held"  # a bracket/OCO/OTO leg; see SimOrder.active for whether it may execute
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELED = "canceled"
    EXPIRED = "expired"
    REPLACED = "replaced"
    REJECTED = "rejected"


OPEN_STATUSES = frozenset({Status.NEW, Status.ACCEPTED, Status.HELD, Status.PARTIALLY_FILLED})


class Side(StrEnum):
    BUY = "buy"
    SELL = "sell"

    @property
    def opposite(self) -> Side:
        return Side.SELL if self is Side.BUY else Side.BUY


class OrderType(StrEnum):
    MARKET = "market"
    LIMIT = "limit"
    STOP = "stop"
    STOP_LIMIT = "stop_limit"


class TimeInForce(StrEnum):
    DAY = "day"
    GTC = "gtc"
    IOC = "ioc"
    FOK = "fok"


class OrderClass(StrEnum):
    SIMPLE = "simple"
    OCO = "oco"
    BRACKET = "bracket"
    OTO = "oto"


def asset_id_for(symbol: str) -> UUID:
    """Stable per symbol, so assets, orders and positions agree without a table."""
    return uuid5(ASSET_NAMESPACE, symbol)


def iso_z(moment: datetime | None) -> str | None:
    """Alpaca's timestamps: UTC with a `Z`."""
    if moment is None:
        return None
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def money(value: Decimal | None) -> str | None:
    if value is None:
        return None
    return format(value.normalize(), "f")  # "100", "98.75": no exponent, no trailing zeros


@dataclass
class SimOrder:
    id: UUID
    client_order_id: str
    symbol: str
    side: Side
    type: OrderType
    time_in_force: TimeInForce
    qty: Decimal
    order_class: OrderClass
    created_at: datetime
    status: Status
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    extended_hours: bool = False
    # Whether the order may execute now. A bracket's exits are `held` and inactive until the entry
    # fills; afterwards the stop leg still shows `held` (as on Alpaca) but is active.
    active: bool = True
    working_since: datetime | None = None
    session_day: date | None = None  # for `day` orders: the session whose close expires them
    triggered: bool = False  # a stop whose stop price was touched now works as market/limit
    parent_id: UUID | None = None
    leg_ids: list[UUID] = field(default_factory=list)
    filled_qty: Decimal = ZERO
    filled_notional: Decimal = ZERO
    reserve_price: Decimal = ZERO  # buying power held per unfilled share that opens exposure
    consumed: dict[datetime, Decimal] = field(default_factory=dict)  # per-minute participation used
    updated_at: datetime | None = None
    filled_at: datetime | None = None
    canceled_at: datetime | None = None
    expired_at: datetime | None = None
    failed_at: datetime | None = None
    replaced_at: datetime | None = None
    replaced_by: UUID | None = None
    replaces: UUID | None = None

    @property
    def remaining(self) -> Decimal:
        return self.qty - self.filled_qty

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    @property
    def avg_fill_price(self) -> Decimal | None:
        if self.filled_qty == ZERO:
            return None
        return (self.filled_notional / self.filled_qty).quantize(Decimal("0.0001"))

    def touch(self, status: Status, at: datetime) -> None:
        self.status = status
        self.updated_at = at
        if status is Status.FILLED:
            self.filled_at = at
        elif status is Status.CANCELED:
            self.canceled_at = at
        elif status is Status.EXPIRED:
            self.expired_at = at
        elif status is Status.REPLACED:
            self.replaced_at = at
        elif status is Status.REJECTED:
            self.failed_at = at

    def to_json(self, legs: list[SimOrder] | None = None) -> dict[str, object]:
        return {
            "id": str(self.id),
            "client_order_id": self.client_order_id,
            "created_at": iso_z(self.created_at),
            "updated_at": iso_z(self.updated_at or self.created_at),
            "submitted_at": iso_z(self.created_at),
            "filled_at": iso_z(self.filled_at),
            "expired_at": iso_z(self.expired_at),
            "canceled_at": iso_z(self.canceled_at),
            "failed_at": iso_z(self.failed_at),
            "replaced_at": iso_z(self.replaced_at),
            "replaced_by": str(self.replaced_by) if self.replaced_by else None,
            "replaces": str(self.replaces) if self.replaces else None,
            "asset_id": str(asset_id_for(self.symbol)),
            "symbol": self.symbol,
            "asset_class": "us_equity",
            "notional": None,
            "qty": money(self.qty),
            "filled_qty": money(self.filled_qty),
            "filled_avg_price": money(self.avg_fill_price),
            "order_class": self.order_class.value,
            "order_type": self.type.value,
            "type": self.type.value,
            "side": self.side.value,
            "position_intent": None,
            "time_in_force": self.time_in_force.value,
            "limit_price": money(self.limit_price),
            "stop_price": money(self.stop_price),
            "status": self.status.value,
            "extended_hours": self.extended_hours,
            "legs": [leg.to_json() for leg in legs] if legs is not None else None,
            "trail_percent": None,
            "trail_price": None,
            "hwm": None,
        }


class ExchangeError(Exception):
    """An Alpaca error answer: HTTP status, Alpaca's numeric code and a one-line message."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def unprocessable(message: str) -> ExchangeError:
    return ExchangeError(422, 42210000, message)


def not_found(message: str = "order not found") -> ExchangeError:
    return ExchangeError(404, 40410000, message)


def forbidden(message: str) -> ExchangeError:
    return ExchangeError(403, 40310000, message)
