"""Risk approval: position sizing by risk per trade, book and account limits, the daily loss limit (pure)."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_FLOOR, Decimal
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from catalyst.domain.errors import InvalidQuantity
from catalyst.domain.money import MONEY_CONTEXT, ZERO, positive
from catalyst.domain.positions import PositionSide

_CTX = MONEY_CONTEXT
_ONE_SHARE = Decimal(1)
HUNDRED = Decimal(100)


class RiskSettings(BaseModel):
    """The `[risk]` section. Percentages are in percent (0.5 means 0.5 %), money in account currency."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)  # see catalyst.config.Section

    risk_per_trade_pct: Decimal = Field(default=Decimal("0.5"), gt=0, le=100)
    max_open_positions: int = Field(default=5, ge=1)
    max_position_notional: Decimal = Field(default=Decimal("20000"), gt=0)
    max_total_notional: Decimal = Field(default=Decimal("60000"), gt=0)
    # Realized + unrealized P&L today at or below -limit trips the emergency stop.
    daily_loss_limit: Decimal = Field(default=Decimal("1000"), gt=0)
    # Optional second limit as a percent of equity; when both are set the tighter one applies.
    daily_loss_limit_pct: Decimal | None = Field(default=None, gt=0, le=100)
    # Stop distance below (long) / above (short) the entry when the scanner found no pattern stop.
    default_stop_pct: Decimal = Field(default=Decimal("2"), gt=0, lt=100)
    reward_risk: Decimal = Field(default=Decimal("2.0"), gt=0)  # target = entry + reward_risk × R
    min_shares: int = Field(default=1, ge=1)
    allow_short: bool = False  # the gate for short candidates; the shipped scanner finds long setups only


class RejectionReason(StrEnum):
    """Why a candidate was not approved; the value is the text a trader reads in the log and report."""

    DAILY_LOSS_LIMIT = "daily loss limit reached"
    SHORT_NOT_ALLOWED = "short selling is not allowed"
    ALREADY_HELD = "one position per symbol: already held or working"
    MAX_OPEN_POSITIONS = "max open positions reached"
    INVALID_STOP = "stop is not on the losing side of the entry"
    RISK_BUDGET_TOO_SMALL = "risk per trade buys fewer than min_shares at this stop distance"
    MAX_POSITION_NOTIONAL = "max position notional buys fewer than min_shares"
    MAX_TOTAL_NOTIONAL = "max total notional reached"
    BUYING_POWER = "not enough buying power"
    DAY_TRADES = ("day-trade protection: the account's equity at the last close is under $25,000 and its day trades "
                  "in five business days would reach 4, which Alpaca refuses (the stop and the exit with it)")


APPROVED = "approved"


@dataclass(frozen=True)
class Candidate:
    """A setup the scanner ranked: planned entry price and, when a pattern gave one, its stop."""

    symbol: str
    entry: Decimal
    stop: Decimal | None = None
    side: PositionSide = PositionSide.LONG
    scan_id: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "side", PositionSide(self.side))
        object.__setattr__(self, "entry", positive(self.entry, f"candidate {self.symbol} entry"))
        if self.stop is not None:
            object.__setattr__(self, "stop", positive(self.stop, f"candidate {self.symbol} stop"))


@dataclass(frozen=True)
class Holding:
    """One open position or working entry in the book: its symbol and the money it ties up."""

    symbol: str
    notional: Decimal

    def __post_init__(self) -> None:
        object.__setattr__(self, "notional", _non_negative(self.notional, f"holding {self.symbol} notional"))


@dataclass(frozen=True)
class Book:
    """What is already held or being entered today."""

    holdings: tuple[Holding, ...] = ()

    @property
    def symbols(self) -> frozenset[str]:
        return frozenset(h.symbol for h in self.holdings)

    @property
    def notional(self) -> Decimal:
        return sum((h.notional for h in self.holdings), ZERO)


PDT_EQUITY = Decimal("25000")
PDT_DAY_TRADES = 3


def day_trades_left(last_equity: Decimal | None, daytrade_count: int | None, opened_today: int) -> int | None:
    """Positions that may still be opened today on an account Alpaca's pattern day trader protection watches, or None
    when it does not (equity at the last close of $25,000 or more, or no day-trade count reported).

    Alpaca ended that protection on 2026-07-06 (FINRA's intraday margin standards replaced the rule) and no longer
    reports `daytrade_count`, so against Alpaca today this is None. Kept for an account that still reports a count:
        there the rule's cost, shares without a stop, is too high to assume it gone. (The new standards let a broker block
    a transaction that would create or increase an intraday margin deficit: an entry, refused like any rejected entry;
    an exit lowers the exposure and so is not the order they block.)

    Why a limit, not a retry: under $25,000 Alpaca refuses any order that could make a 4th day trade in five business
    days, and it judges the order that would close the position, not the one that opens it. Every position opened
    here closes the same day (its stop, its target or the 15:55 flatten): a day trade. An entry past the limit would
    fill, and then its OCO and its market exit would both be refused: shares with no stop until the next day.
    Positions opened today and still open count already (Alpaca counts pending orders as potential day trades)."""
    if last_equity is None or daytrade_count is None or last_equity >= PDT_EQUITY:
        return None
    return max(PDT_DAY_TRADES - daytrade_count - opened_today, 0)


# Alpaca checks an opening market order against buying power at more than the last price: a buy at 2.5-4 % above
# it, a short at 3 % above the ask ("Buying Power", Orders at Alpaca). Sized at the last price, an entry for all the
# buying power left was refused, 403 insufficient buying power (a review): entries are sized to what the broker counts.
MARKET_ORDER_MARKUP = Decimal("1.04")


def _counted_by_broker(notional: Decimal) -> Decimal:
    """What an opening market order of `notional` at the last price takes of buying power at the broker."""
    return _CTX.multiply(notional, MARKET_ORDER_MARKUP)


@dataclass(frozen=True)
class Account:
    """The broker account now: equity, buying power left, today's P&L so far, and, on an account the pattern day
    trader protection watches, how many positions it may still open today (day_trades_left; None: no such limit)."""

    equity: Decimal
    buying_power: Decimal
    realized_pnl: Decimal = ZERO
    unrealized_pnl: Decimal = ZERO
    day_trades_left: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "equity", positive(self.equity, "account equity"))
        object.__setattr__(self, "buying_power", _non_negative(self.buying_power, "account buying power"))
        for name in ("realized_pnl", "unrealized_pnl"):
            object.__setattr__(self, name, _decimal(getattr(self, name), f"account {name}"))


@dataclass(frozen=True)
class Decision:
    """The verdict on one candidate. Rejected decisions keep the planned prices so the log explains them.

    `emergency_stop` is set on every decision when the daily loss limit tripped: the cycle must stop.
    """

    candidate: Candidate
    approved: bool
    reason: str
    qty: Decimal = ZERO
    stop: Decimal | None = None
    target: Decimal | None = None
    risk_per_share: Decimal | None = None
    emergency_stop: bool = False

    @property
    def symbol(self) -> str:
        return self.candidate.symbol

    @property
    def entry(self) -> Decimal:
        return self.candidate.entry

    @property
    def notional(self) -> Decimal:
        return _CTX.multiply(self.qty, self.candidate.entry)


@dataclass
class _Room:
    """What is left of the limits while candidates are approved one by one, best ranked first."""

    symbols: set[str]
    open_count: int
    total_notional_left: Decimal
    buying_power_left: Decimal
    budget: Decimal = field(default=ZERO)
    day_trades_left: int | None = None


def risk_budget(equity: Decimal, settings: RiskSettings) -> Decimal:
    """Money one trade may lose at its stop: equity × risk_per_trade_pct %."""
    return _CTX.divide(_CTX.multiply(positive(equity, "equity"), settings.risk_per_trade_pct), HUNDRED)


def daily_loss_limit(settings: RiskSettings, equity: Decimal | None = None) -> Decimal:
    """The loss that trips the stop: the absolute limit, or the percent-of-equity one when tighter."""
    if settings.daily_loss_limit_pct is None or equity is None:
        return settings.daily_loss_limit
    of_equity = _CTX.divide(_CTX.multiply(equity, settings.daily_loss_limit_pct), HUNDRED)
    return min(settings.daily_loss_limit, of_equity)


def daily_loss_breached(
    realized: Decimal, unrealized: Decimal, settings: RiskSettings, equity: Decimal | None = None
) -> bool:
    """True when today's realized + unrealized P&L has lost the daily limit (reaching it counts)."""
    pnl = _CTX.add(_decimal(realized, "realized P&L"), _decimal(unrealized, "unrealized P&L"))
    return pnl <= -daily_loss_limit(settings, equity)


def default_stop(entry: Decimal, side: PositionSide, settings: RiskSettings) -> Decimal:
    """entry ∓ default_stop_pct % when the candidate has no pattern stop."""
    distance = _CTX.divide(_CTX.multiply(entry, settings.default_stop_pct), HUNDRED)
    return _CTX.subtract(entry, distance) if side is PositionSide.LONG else _CTX.add(entry, distance)


def size_position(
    equity: Decimal, entry: Decimal, stop: Decimal, settings: RiskSettings, buying_power: Decimal | None = None
) -> Decimal:
    """Whole shares: risk budget / |entry − stop|, capped by the notional limits and buying power.

    100k equity at 0.5 % is $500 of risk; entry 50, stop 48 risks $2 a share → 250 shares.
    """
    entry = positive(entry, "entry")
    risk_per_share = abs(_CTX.subtract(entry, positive(stop, "stop")))
    if risk_per_share == 0:
        return ZERO
    caps = [settings.max_position_notional, settings.max_total_notional]
    if buying_power is not None:
        caps.append(_CTX.divide(_non_negative(buying_power, "buying power"), MARKET_ORDER_MARKUP))
    qty, _ = _shares(risk_budget(equity, settings), risk_per_share, entry, *caps)
    return qty


def approve(
    candidates: list[Candidate] | tuple[Candidate, ...], book: Book, account: Account, settings: RiskSettings
) -> list[Decision]:
    """One decision per candidate, in the given (ranked) order; earlier approvals use up the limits."""
    if daily_loss_breached(account.realized_pnl, account.unrealized_pnl, settings, account.equity):
        return [
            Decision(c, False, RejectionReason.DAILY_LOSS_LIMIT.value, emergency_stop=True) for c in candidates
        ]
    room = _Room(
        symbols=set(book.symbols),
        open_count=len(book.symbols),
        total_notional_left=_CTX.subtract(settings.max_total_notional, book.notional),
        buying_power_left=account.buying_power,
        budget=risk_budget(account.equity, settings),
        day_trades_left=account.day_trades_left,
    )
    return [_decide(candidate, room, settings) for candidate in candidates]


def _decide(candidate: Candidate, room: _Room, settings: RiskSettings) -> Decision:
    side, entry = candidate.side, candidate.entry
    stop = candidate.stop if candidate.stop is not None else default_stop(entry, side, settings)
    risk_per_share = _CTX.subtract(entry, stop) if side is PositionSide.LONG else _CTX.subtract(stop, entry)
    reward = _CTX.multiply(settings.reward_risk, risk_per_share) * _direction(side)
    target = _CTX.add(entry, reward) if risk_per_share > 0 else None
    plan: dict[str, Any] = {"stop": stop, "target": target, "risk_per_share": risk_per_share}

    def rejected(reason: RejectionReason) -> Decision:
        return Decision(candidate, False, reason.value, **plan)

    if side is PositionSide.SHORT and not settings.allow_short:
        return rejected(RejectionReason.SHORT_NOT_ALLOWED)
    if candidate.symbol in room.symbols:
        return rejected(RejectionReason.ALREADY_HELD)
    if room.open_count >= settings.max_open_positions:
        return rejected(RejectionReason.MAX_OPEN_POSITIONS)
    if risk_per_share <= 0:
        return rejected(RejectionReason.INVALID_STOP)
    if room.day_trades_left is not None and room.day_trades_left <= 0:
        return rejected(RejectionReason.DAY_TRADES)
    qty, binding = _shares(
        room.budget, risk_per_share, entry,
        settings.max_position_notional, room.total_notional_left,
        _CTX.divide(room.buying_power_left, MARKET_ORDER_MARKUP),
    )  # fmt: skip
    if qty < settings.min_shares:
        return rejected(binding)
    notional = _CTX.multiply(qty, entry)
    room.symbols.add(candidate.symbol)
    room.open_count += 1
    room.total_notional_left = _CTX.subtract(room.total_notional_left, notional)
    room.buying_power_left = _CTX.subtract(room.buying_power_left, _counted_by_broker(notional))
    if room.day_trades_left is not None:
        room.day_trades_left -= 1
    return Decision(candidate, True, APPROVED, qty=qty, **plan)


_CAP_REASONS = (
    RejectionReason.MAX_POSITION_NOTIONAL,
    RejectionReason.MAX_TOTAL_NOTIONAL,
    RejectionReason.BUYING_POWER,
)


def _shares(
    budget: Decimal, risk_per_share: Decimal, entry: Decimal, *notional_caps: Decimal
) -> tuple[Decimal, RejectionReason]:
    """Whole shares within the risk budget and every notional cap, and the limit that bound them.

    Caps are given in _CAP_REASONS order (position, total, buying power); a negative cap (the book
    already over the limit) allows nothing.
    """
    qty = _whole(_CTX.divide(budget, risk_per_share))
    binding = RejectionReason.RISK_BUDGET_TOO_SMALL
    for cap, reason in zip(notional_caps, _CAP_REASONS):
        allowed = _whole(_CTX.divide(max(cap, ZERO), entry))
        if allowed < qty:
            qty, binding = allowed, reason
    return qty, binding


def _whole(shares: Decimal) -> Decimal:
    # Always down: rounding up would exceed the budget or the cap it was computed from. quantize, not
    # to_integral_value, which keeps a quotient's exponent: 500 / 0.08 stays 6.25E+3, and log lines said "buy 6.25E+3".
    return shares.quantize(_ONE_SHARE, rounding=ROUND_FLOOR)


def _direction(side: PositionSide) -> int:
    return 1 if side is PositionSide.LONG else -1


def _decimal(value: object, what: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (Decimal, int)):
        raise InvalidQuantity(f"{what} must be a Decimal, got {type(value).__name__} {value!r}")
    number = Decimal(value)
    if not number.is_finite():
        raise InvalidQuantity(f"{what} must be finite, got {value!r}")
    return number


def _non_negative(value: object, what: str) -> Decimal:
    number = _decimal(value, what)
    if number < 0:
        raise InvalidQuantity(f"{what} must be >= 0, got {value!r}")
    return number
