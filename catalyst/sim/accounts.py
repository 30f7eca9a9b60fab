"""One emulated brokerage account per API key: cash, positions, orders and the fills ledger."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from typing import Callable
from uuid import UUID, uuid4, uuid5

from catalyst.sim.orders import ZERO, OrderClass, Side, SimOrder, Status, asset_id_for, iso_z, money

ACCOUNT_NAMESPACE = UUID("0b7d4c9e-8f3a-4c55-9a0e-5c2f6d1e7b21")
PriceOf = Callable[[str], Decimal | None]


@dataclass
class SimPosition:
    symbol: str
    qty: Decimal  # signed: negative is short
    avg_entry_price: Decimal

    def to_json(self, price: Decimal | None, held: Decimal = ZERO) -> dict[str, object]:
        """`held`: shares promised to open orders that would close this position (Account.held_qty): Alpaca's
        qty_available is the position's quantity without them, signed as the quantity is."""
        current = price if price is not None else self.avg_entry_price
        free = max(abs(self.qty) - held, ZERO)
        cost_basis = self.qty * self.avg_entry_price
        market_value = self.qty * current
        unrealized = market_value - cost_basis
        plpc = (unrealized / abs(cost_basis)).quantize(Decimal("0.0001")) if cost_basis else ZERO
        return {
            "asset_id": str(asset_id_for(self.symbol)),
            "symbol": self.symbol,
            "exchange": "NASDAQ",
            "asset_class": "us_equity",
            "asset_marginable": True,
            "avg_entry_price": money(self.avg_entry_price),
            "qty": money(self.qty),
            "qty_available": money(free if self.qty > 0 else -free),
            "side": "long" if self.qty > 0 else "short",
            "market_value": money(market_value),
            "cost_basis": money(cost_basis),
            "unrealized_pl": money(unrealized),
            "unrealized_plpc": money(plpc),
            "unrealized_intraday_pl": money(unrealized),
            "unrealized_intraday_plpc": money(plpc),
            "current_price": money(current),
            "lastday_price": money(current),
            "change_today": "0",
        }


@dataclass(frozen=True)
class Fill:
    execution_id: UUID
    order_id: UUID
    symbol: str
    side: Side
    qty: Decimal
    price: Decimal
    at: datetime
    cum_qty: Decimal
    leaves_qty: Decimal
    order_status: Status
    short_sale: bool = False  # a sell with no long shares under it: opens or adds to a short

    @property
    def activity_side(self) -> str:
        # Alpaca's FILL activities give an execution's side, not its order's: a short sale is `sell_short` there
        # (its order and its stream events say `sell`).
        return "sell_short" if self.short_sale else self.side.value

    @property
    def activity_id(self) -> str:
        # Alpaca's activity ids sort by time: "<yyyymmddHHMMSSmmm>::<uuid>".
        return f"{self.at.strftime('%Y%m%d%H%M%S%f')[:17]}::{self.execution_id}"

    def to_activity(self, account_id: UUID) -> dict[str, object]:
        return {
            "id": self.activity_id,
            "account_id": str(account_id),
            "activity_type": "FILL",
            "transaction_time": iso_z(self.at),
            "type": "fill" if self.leaves_qty == ZERO else "partial_fill",
            "price": money(self.price),
            "qty": money(self.qty),
            "side": self.activity_side,
            "symbol": self.symbol,
            "leaves_qty": money(self.leaves_qty),
            "order_id": str(self.order_id),
            "cum_qty": money(self.cum_qty),
            "order_status": self.order_status.value,
        }


@dataclass
class Account:
    key_id: str
    cash: Decimal
    id: UUID = field(init=False)
    positions: dict[str, SimPosition] = field(default_factory=dict)
    orders: dict[UUID, SimOrder] = field(default_factory=dict)  # insertion order = submission order
    by_client_id: dict[str, UUID] = field(default_factory=dict)
    fills: list[Fill] = field(default_factory=list)
    # What Alpaca reports of an account that may not trade (set through /sim/v1/accounts/{key}/restrictions).
    status: str = "ACTIVE"
    trading_blocked: bool = False
    account_blocked: bool = False
    trade_suspended_by_user: bool = False
    # Alpaca stopped flagging pattern day traders in June 2026 (its changelog of 2026-06-03: FINRA's intraday margin
    # standards replaced the rule) and dropped `daytrade_count` and `pattern_day_trader` from /v2/account on
    # 2026-07-06: None reports neither, as Alpaca does now; a number reports both, as Alpaca did before (set through
    # /sim/v1; reported only, never enforced).
    daytrade_count: int | None = None
    # Alpaca's /v2/positions can lag /v2/orders for several seconds after a fill (ALPACA.md §7). With a lag, the
    # positions endpoints answer as of this many WALL seconds ago (a broker's processing delay, whatever the clock's
    # speed): every change of `positions` is kept with the moment it happened, and `lagged_positions` replays them.
    positions_lag_s: float = 0.0
    # Alpaca's order entry can lag a fill too (Alpaca-API #276: a sell refused for "insufficient qty" while the
    # positions already showed the shares, for up to 10 s): an exit may sell only shares held both now and this many
    # WALL seconds ago (`exit_qty`). Never more than the live position: a lag makes the broker stricter, not looser.
    exit_shares_lag_s: float = 0.0
    _history: deque[tuple[float, dict[str, SimPosition]]] = field(default_factory=deque, repr=False)

    def __post_init__(self) -> None:
        self.id = uuid5(ACCOUNT_NAMESPACE, self.key_id)

    def _remember_positions(self) -> None:
        """Keeps a copy of the positions as they stand before a change, stamped with the change's moment (none without
        a lag: every fill would copy the whole book, on the benchmarks' path too)."""
        longest = max(self.positions_lag_s, self.exit_shares_lag_s)
        if longest <= 0:
            return
        now = time.monotonic()
        self._history.append((now, {symbol: replace(p) for symbol, p in self.positions.items()}))
        horizon = now - longest
        while self._history and self._history[0][0] <= horizon:  # changes older than the lag are in the live state
            self._history.popleft()

    def lagged_positions(self) -> dict[str, SimPosition]:
        """The positions as they stood `positions_lag_s` wall seconds ago (the live ones without a lag)."""
        return self._positions_as_of(self.positions_lag_s)

    def exit_qty(self, symbol: str) -> Decimal:
        """The signed quantity an exit order may close: the live position's, no larger than it was
        `exit_shares_lag_s` wall seconds ago on the same side (0 if it was flat or on the other side then)."""
        live = self.position_qty(symbol)
        if self.exit_shares_lag_s <= 0 or live == ZERO:
            return live
        then = self._positions_as_of(self.exit_shares_lag_s).get(symbol)
        then_qty = then.qty if then is not None else ZERO
        if (then_qty > ZERO) != (live > ZERO) or then_qty == ZERO:
            return ZERO
        return min(live, then_qty) if live > ZERO else max(live, then_qty)

    def _positions_as_of(self, lag_s: float) -> dict[str, SimPosition]:
        if lag_s <= 0 or not self._history:
            return self.positions
        horizon = time.monotonic() - lag_s
        # Each entry is the state *before* the change stamped at its moment: the state at the horizon is the `before`
        # of the first change after the horizon, or the live state if none came after it.
        for moment, before in self._history:
            if moment > horizon:
                return before
        return self.positions

    @property
    def may_trade(self) -> bool:
        return self.status == "ACTIVE" and not (self.trading_blocked or self.account_blocked
                                                or self.trade_suspended_by_user)

    def add(self, order: SimOrder) -> None:
        self.orders[order.id] = order
        self.by_client_id[order.client_order_id] = order.id

    def position_qty(self, symbol: str) -> Decimal:
        position = self.positions.get(symbol)
        return position.qty if position else ZERO

    def apply_fill(self, order: SimOrder, qty: Decimal, price: Decimal, at: datetime) -> Fill:
        """Moves cash and position for one execution and records it; the order's status follows."""
        signed = qty if order.side is Side.BUY else -qty
        short_sale = order.side is Side.SELL and self.position_qty(order.symbol) <= ZERO
        self.cash -= signed * price
        self._remember_positions()
        position = self.positions.get(order.symbol)
        if position is None:
            self.positions[order.symbol] = SimPosition(order.symbol, signed, price)
        else:
            new_qty = position.qty + signed
            if new_qty == ZERO:
                del self.positions[order.symbol]
            elif (position.qty > 0) == (signed > 0):  # adding to the position: weighted average
                position.avg_entry_price = (
                    (position.qty * position.avg_entry_price + signed * price) / new_qty
                ).quantize(Decimal("0.0001"))
                position.qty = new_qty
            elif (position.qty > 0) == (new_qty > 0):  # reducing: the entry price is unchanged
                position.qty = new_qty
            else:  # flipped through zero (only possible by a close racing an exit): new basis
                position.qty, position.avg_entry_price = new_qty, price
        order.filled_qty += qty
        order.filled_notional += qty * price
        order.touch(Status.FILLED if order.remaining == ZERO else Status.PARTIALLY_FILLED, at)
        fill = Fill(uuid4(), order.id, order.symbol, order.side, qty, price, at,
                    order.filled_qty, order.remaining, order.status, short_sale)
        self.fills.append(fill)
        return fill

    def position_json(self, position: SimPosition, price: Decimal | None) -> dict[str, object]:
        """A position as /v2/positions answers it, its qty_available net of this account's open orders closing it."""
        return position.to_json(price, self.held_qty(position.symbol, Side.SELL if position.qty > 0 else Side.BUY))

    def held_qty(self, symbol: str, side: Side) -> Decimal:
        """Shares already promised to open orders on `side`; an exit pair counts once."""
        held = ZERO
        for order in self.orders.values():
            if order.symbol != symbol or order.side is not side or not order.is_open or not order.active:
                continue
            parent = self.orders.get(order.parent_id) if order.parent_id else None
            if parent is not None and parent.order_class is OrderClass.OCO:
                continue  # the OCO's stop leg protects the same shares as its parent
            if parent is not None and parent.order_class is OrderClass.BRACKET and parent.leg_ids[0] != order.id:
                continue  # a bracket's stop leg protects the same shares as its take-profit
            held += order.remaining
        return held

    def market_values(self, price_of: PriceOf) -> tuple[Decimal, Decimal]:
        long_value = short_value = ZERO
        for position in self.positions.values():
            price = price_of(position.symbol) or position.avg_entry_price
            if position.qty > 0:
                long_value += position.qty * price
            else:
                short_value += position.qty * price
        return long_value, short_value

    def reserved(self) -> Decimal:
        return sum((o.remaining * o.reserve_price for o in self.orders.values() if o.is_open), ZERO)

    def buying_power(self, price_of: PriceOf) -> Decimal:
        """No leverage: longs cost their value in cash, shorts tie up 100% of their market value
        (their sale proceeds sit in cash but are not spendable), open opening orders are reserved."""
        long_value, short_value = self.market_values(price_of)
        equity = self.cash + long_value + short_value
        return equity - long_value + short_value - self.reserved()

    def to_json(self, price_of: PriceOf, starting_cash: Decimal) -> dict[str, object]:
        # Not lagged: the daemon reads the account only to size entries (equity, buying power) before they are sent.
        long_value, short_value = self.market_values(price_of)
        equity = self.cash + long_value + short_value
        buying_power = self.buying_power(price_of)
        return {
            "id": str(self.id),
            "account_number": f"SIM{str(self.id.int)[:9]}",
            "status": self.status,
            "crypto_status": "INACTIVE",
            "currency": "USD",
            "buying_power": money(buying_power),
            "regt_buying_power": money(buying_power),
            "non_marginable_buying_power": money(buying_power),
            "cash": money(self.cash),
            "accrued_fees": "0",
            "pending_transfer_in": "0",
            "pending_transfer_out": "0",
            "portfolio_value": money(equity),
            "equity": money(equity),
            "last_equity": money(starting_cash),
            "long_market_value": money(long_value),
            "short_market_value": money(short_value),
            "initial_margin": money(long_value - short_value),
            "maintenance_margin": money(long_value - short_value),
            "last_maintenance_margin": "0",
            "sma": "0",
            "multiplier": "1",
            "shorting_enabled": True,
            "trading_blocked": self.trading_blocked,
            "transfers_blocked": False,
            "account_blocked": self.account_blocked,
            "trade_suspended_by_user": self.trade_suspended_by_user,
            **({} if self.daytrade_count is None
               else {"pattern_day_trader": False, "daytrade_count": self.daytrade_count}),
        }
