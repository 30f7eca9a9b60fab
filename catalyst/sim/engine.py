"""The matching engine: per-account order books that execute against the replayed market on the virtual clock.

Not thread-safe by design: the server runs every call on its one event loop thread.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, Callable, Protocol

from catalyst.sim import oco
from catalyst.sim.accounts import Account
from catalyst.sim.market import EXCHANGE_TZ, Market, Session
from catalyst.sim.matching import capacity, executable_qty, price_in_bar, price_on_submit
from catalyst.sim.order_entry import OrderSpec
from catalyst.sim.wash_trade import WASH_TRADE_MESSAGE, WashTradeCheck, wash_trade_conflict
from catalyst.sim.orders import (
    ZERO, ExchangeError, OrderClass, OrderType, Side, SimOrder, Status, TimeInForce, forbidden, iso_z, money,
    not_found, unprocessable,
)

CENT = Decimal("0.01")
# Alpaca's buying power check of an opening market order ("Buying Power", Orders at Alpaca): a buy's value is taken
# 2.5-4 % above the last price (the top of that range here), a short's 3 % above the ask.
MARKET_BUY_MARKUP, MARKET_SHORT_MARKUP = Decimal("1.04"), Decimal("1.03")

EventSink = Callable[[str, dict[str, Any]], None]  # (key_id, trade_updates `data` payload)
EXTENDED_OPEN, EXTENDED_CLOSE = timedelta(hours=-5, minutes=-30), timedelta(hours=4)  # 04:00 / 20:00 from 09:30 / 16:00
ONE_MINUTE = timedelta(minutes=1)


class Clock(Protocol):
    def now(self) -> datetime: ...


def minute_of(moment: datetime) -> datetime:
    return moment.astimezone(EXCHANGE_TZ).replace(second=0, microsecond=0)


@dataclass(frozen=True)
class Submitted:
    """A new order and Alpaca's answer to its POST: the order as accepted, before it was routed or executed.

    Why not the order as it stands after its first fill: Alpaca answers a market order during the session with
    `status: accepted` and `filled_qty: "0"` (both examples of POST /v2/orders in its OpenAPI file), then routes it;
    the `new` and `fill` updates come by the stream. A client must learn fills from the stream (or by REST), never
    from the submit reply, and the emulator makes it so.
    """

    order: SimOrder
    answer: dict[str, Any]


class Engine:
    def __init__(self, market: Market, clock: Clock, *, starting_cash: Decimal, participation: Decimal,
                 sink: EventSink, wash_trade_check: WashTradeCheck = "off", positions_lag_s: float = 0.0,
                 exit_shares_lag_s: float = 0.0, trigger_replaces_take_profit: bool = False) -> None:
        self.market, self.clock = market, clock
        self.positions_lag_s = positions_lag_s  # the positions endpoints answer as of this many wall seconds ago
        self.exit_shares_lag_s = exit_shares_lag_s  # an exit sells only shares held this many wall seconds ago too
        self.trigger_replaces_take_profit = trigger_replaces_take_profit  # oco.report_trigger
        self.wash_trade_check = wash_trade_check
        self.starting_cash, self.participation = starting_cash, participation
        self.accounts: dict[str, Account] = {}
        self._sink = sink
        self._processed_until = minute_of(clock.now())  # bars starting before this have been matched

    # -- lookups --
    def account(self, key_id: str) -> Account:
        if key_id not in self.accounts:
            self.accounts[key_id] = Account(key_id, self.starting_cash, positions_lag_s=self.positions_lag_s,
                                             exit_shares_lag_s=self.exit_shares_lag_s)
        return self.accounts[key_id]

    def price_of(self, symbol: str) -> Decimal | None:
        return self.market.price_at(symbol, self.clock.now())

    def order(self, account: Account, order_id: str | uuid.UUID) -> SimOrder:
        try:
            found = account.orders.get(uuid.UUID(str(order_id)))
        except ValueError:
            found = None
        if found is None:
            raise not_found()
        return found

    def order_json(self, account: Account, order: SimOrder, nested: bool = True) -> dict[str, Any]:
        legs = [account.orders[leg_id] for leg_id in order.leg_ids] if nested and order.leg_ids else None
        return order.to_json(legs)

    def session_of(self, day: date) -> Session | None:
        sessions = self.market.sessions(day, day)
        return sessions[0] if sessions else None

    def next_session(self, moment: datetime) -> Session | None:
        """The session whose close is still ahead of `moment` (today's, or the next one)."""
        for session in self.market.sessions(moment.date(), moment.date() + timedelta(days=10)):
            if session.close > moment:
                return session
        return None

    def can_trade_now(self, extended_hours: bool) -> bool:
        now = self.clock.now()
        session = self.session_of(now.date())
        if session is None:
            return False
        if extended_hours:
            return session.open + EXTENDED_OPEN <= now < session.close + EXTENDED_CLOSE
        return session.open <= now < session.close

    # -- events --
    def emit(self, account: Account, event: str, order: SimOrder, **extra: Any) -> None:
        payload: dict[str, Any] = {"event": event, "order": self.order_json(account, order),
                                   "timestamp": iso_z(self.clock.now()), **extra}
        self._sink(account.key_id, payload)

    def execute(self, account: Account, order: SimOrder, qty: Decimal, price: Decimal, at: datetime,
                minute_key: datetime) -> None:
        fill = account.apply_fill(order, qty, price, at)
        order.consumed[minute_key] = order.consumed.get(minute_key, ZERO) + qty
        self.emit(account, "fill" if order.status is Status.FILLED else "partial_fill", order,
                  execution_id=str(fill.execution_id), price=money(price), qty=money(qty),
                  position_qty=money(account.position_qty(order.symbol)))
        oco.after_fill(self, account, order, qty, at)

    def finish(self, account: Account, order: SimOrder, status: Status, event: str) -> None:
        if not order.is_open:
            return
        order.touch(status, self.clock.now())
        self.emit(account, event, order)

    # -- submission --
    def submit(self, key_id: str, spec: OrderSpec) -> Submitted:
        account = self.account(key_id)
        if not account.may_trade:
            raise forbidden("account is not allowed to trade")
        if spec.client_order_id is not None and spec.client_order_id in account.by_client_id:
            raise ExchangeError(422, 40010001, "client_order_id must be unique")
        if wash_trade_conflict(self.wash_trade_check, spec, account.orders.values()) is not None:
            raise forbidden(WASH_TRADE_MESSAGE)
        if spec.order_class is OrderClass.OCO:
            self._require_exit(account, spec)
            self._require_stop_clear_of_base(spec)
        reserve = self._check_funds(account, spec)
        parent, legs = oco.build(spec, self.clock.now(), uuid.uuid4)
        parent.reserve_price = reserve
        self._accept(account, parent, legs)
        answer = self.order_json(account, parent)
        self._route(account, parent)
        return Submitted(parent, answer)

    def _accept(self, account: Account, order: SimOrder, legs: list[SimOrder]) -> None:
        now = self.clock.now()
        order.status = Status.ACCEPTED  # received, not yet routed: what Alpaca's answer to the POST says
        for item in (order, *legs):
            item.working_since = now
            if item.time_in_force is TimeInForce.DAY:
                session = self.next_session(now)
                item.session_day = session.day if session else None
            account.add(item)

    def _route(self, account: Account, order: SimOrder) -> None:
        tradeable = self.can_trade_now(order.extended_hours)
        if tradeable or order.time_in_force in (TimeInForce.IOC, TimeInForce.FOK):
            order.status = Status.NEW  # routed; after hours it stays accepted, queued for the next open
        self.emit(account, "accepted" if order.status is Status.ACCEPTED else "new", order)
        if order.time_in_force in (TimeInForce.IOC, TimeInForce.FOK) and not tradeable:
            self.finish(account, order, Status.CANCELED, "canceled")
        elif order.status is Status.NEW:
            self.execute_on_submit(account, order)

    def execute_on_submit(self, account: Account, order: SimOrder) -> None:
        now = self.clock.now()
        minute = minute_of(now)
        price = price_on_submit(order, self.price_of(order.symbol))
        recent = self.market.minute_bars(order.symbol, minute - 5 * ONE_MINUTE, now + timedelta(microseconds=1))
        cap = capacity(self.participation, recent[-1].volume if recent else None)
        qty = executable_qty(order, cap, minute) if price is not None else ZERO
        if order.time_in_force is TimeInForce.FOK and qty < order.qty:
            self.finish(account, order, Status.CANCELED, "canceled")  # all or nothing
            return
        if qty > ZERO:
            assert price is not None
            self.execute(account, order, qty, price, now, minute)
        if order.time_in_force is TimeInForce.IOC and order.is_open:
            self.finish(account, order, Status.CANCELED, "canceled")  # the unfilled rest of an IOC

    def _require_stop_clear_of_base(self, spec: OrderSpec) -> None:
        """Alpaca refuses an OCO whose stop is not a cent clear of its "base price": the take-profit's limit, and
        also the current market price (its orders docs, "Threshold on stop price of stop-loss orders"; the answer
        `422 stop_loss.stop_price must be <= base_price - 0.01`). A stop already through the market is refused,
        not filled at once."""
        stop = spec.stop_loss_stop
        if stop is None:
            return
        bases = [p for p in (spec.take_profit_limit, self.price_of(spec.symbol)) if p is not None]
        if spec.side is Side.SELL and bases and stop > min(bases) - CENT:
            raise unprocessable("stop_loss.stop_price must be <= base_price - 0.01")
        if spec.side is Side.BUY and bases and stop < max(bases) + CENT:
            raise unprocessable("stop_loss.stop_price must be >= base_price + 0.01")

    def _require_exit(self, account: Account, spec: OrderSpec) -> None:
        held = account.exit_qty(spec.symbol)
        owned = held if spec.side is Side.SELL else -held
        available = owned - account.held_qty(spec.symbol, spec.side)
        if owned <= ZERO or spec.qty > available:
            raise forbidden(f"insufficient qty available for order (requested: {spec.qty}, available: {max(available, ZERO)})")

    def _check_funds(self, account: Account, spec: OrderSpec) -> Decimal:
        """Returns the per-share buying power reservation for the new order (0 for exits).

        An order may close (part of) a position or open one, never flip it: like Alpaca, a sell larger
        than the shares available is refused rather than turned into a short."""
        if spec.order_class is OrderClass.OCO:
            return ZERO
        position = account.position_qty(spec.symbol)
        closing = (position > 0 and spec.side is Side.SELL) or (position < 0 and spec.side is Side.BUY)
        if closing:
            available = abs(account.exit_qty(spec.symbol)) - account.held_qty(spec.symbol, spec.side)
            if spec.qty > available:
                raise forbidden(f"insufficient qty available for order (requested: {spec.qty}, available: {max(available, ZERO)})")
            return ZERO
        last = self.price_of(spec.symbol)
        if last is not None and spec.limit_price is None and spec.stop_price is None:
            # As Alpaca values an opening market order: a buy up to 4 % above the last price, a short 3 % above it.
            last = last * (MARKET_BUY_MARKUP if spec.side is Side.BUY else MARKET_SHORT_MARKUP)
        candidates = [p for p in (spec.limit_price, spec.stop_price, last) if p is not None]
        reference = max(candidates) if candidates else ZERO
        if spec.qty * reference > account.buying_power(self.price_of):
            raise forbidden("insufficient buying power")
        return reference

    # -- cancel / replace --
    def cancel(self, key_id: str, order_id: str) -> None:
        account = self.account(key_id)
        order = self.order(account, order_id)
        if not order.is_open:
            # Alpaca's answer since 2026 (422, code 42210000); it said "order is not cancelable" before.
            raise unprocessable(f'order is already in "{order.status}" state')
        for member in oco.group(account, order):
            self.finish(account, member, Status.CANCELED, "canceled")

    def cancel_all(self, key_id: str) -> list[SimOrder]:
        account = self.account(key_id)
        canceled = []
        for order in list(account.orders.values()):
            if order.is_open and order.parent_id is None:
                self.cancel(key_id, str(order.id))
                canceled.append(order)
        for order in list(account.orders.values()):  # legs of filled entries
            if order.is_open:
                self.cancel(key_id, str(order.id))
                canceled.append(order)
        return canceled

    def replace(self, key_id: str, order_id: str, body: dict[str, Any]) -> SimOrder:
        account = self.account(key_id)
        old = self.order(account, order_id)
        new = oco.replacement(self, account, old, body)
        now = self.clock.now()
        account.add(new)
        old.replaced_by, new.replaces = new.id, old.id
        old.touch(Status.REPLACED, now)
        self.emit(account, "replaced", old)
        self.emit(account, "new", new)
        if new.status is Status.NEW and self.can_trade_now(new.extended_hours):
            self.execute_on_submit(account, new)
        return new

    # -- positions --
    def close_position(self, key_id: str, symbol: str, qty: Decimal | None, percentage: Decimal | None) -> Submitted:
        account = self.account(key_id)
        position = account.positions.get(symbol.upper())
        if position is None:
            raise not_found("position does not exist")
        size = abs(position.qty)
        if percentage is not None:
            if percentage > 100:
                raise unprocessable(f"percentage must be at most 100, got {percentage}")
            size = (size * percentage / 100).to_integral_value()
        elif qty is not None:
            size = qty
        side = Side.SELL if position.qty > 0 else Side.BUY
        spec = OrderSpec(position.symbol, size, side, OrderType.MARKET, TimeInForce.DAY, OrderClass.SIMPLE,
                         None, None, False, None, None, None, None)
        return self.submit(key_id, spec)

    # -- time --
    def catch_up(self) -> None:
        """Match working orders against every minute bar that ended since the last call, and open/expire
        orders at the session boundaries crossed, all in time order."""
        boundary = minute_of(self.clock.now())
        start = self._processed_until
        if boundary <= start:
            return
        self._processed_until = boundary
        timeline: list[tuple[datetime, int, str, Any]] = []
        for session in self.market.sessions(start.date(), boundary.date()):
            for moment, rank, kind in ((session.open, 0, "open"), (session.close, 2, "close"),
                                       (session.close + EXTENDED_CLOSE, 2, "extended_close")):
                if start < moment <= boundary:
                    timeline.append((moment, rank, kind, session))
        symbols = {o.symbol for a in self.accounts.values() for o in a.orders.values() if o.is_open}
        for symbol in sorted(symbols):
            for bar in self.market.minute_bars(symbol, start, boundary):
                timeline.append((bar.start + ONE_MINUTE, 1, "bar", bar))
        timeline.sort(key=lambda item: (item[0], item[1]))
        for moment, _, kind, subject in timeline:
            if kind == "bar":
                self._match_bar(subject)
            else:
                self._session_boundary(kind, subject, moment)

    def _session_boundary(self, kind: str, session: Session, moment: datetime) -> None:
        for account in self.accounts.values():
            for order in list(account.orders.values()):
                if kind == "open" and order.status is Status.ACCEPTED:
                    order.touch(Status.NEW, moment)
                    self.emit(account, "new", order)
                elif (kind == "close" and not order.extended_hours) or (kind == "extended_close" and order.extended_hours):
                    if order.time_in_force is TimeInForce.DAY and order.session_day == session.day and order.is_open:
                        self.finish(account, order, Status.EXPIRED, "expired")

    def _match_bar(self, bar: Any) -> None:
        session = self.session_of(bar.start.date())
        regular = session is not None and session.open <= bar.start < session.close
        bar_end = bar.start + ONE_MINUTE
        cap = capacity(self.participation, bar.volume)
        for account in self.accounts.values():
            # Decide who may trade in this bar before anything executes: exits activated by an entry fill
            # inside this bar start with the next one (the bar's low may have come before the fill).
            eligible = [
                order for order in account.orders.values()
                if order.symbol == bar.symbol and order.is_open and order.active
                and order.status is not Status.ACCEPTED and order.working_since is not None
                and order.working_since < bar_end and (regular or (order.extended_hours and session is not None))
            ]
            for order in eligible:
                if not order.is_open:  # canceled by a sibling's fill earlier in this bar
                    continue
                was_triggered = order.triggered
                price = price_in_bar(order, bar, working_before_bar=order.working_since <= bar.start)
                if order.triggered and not was_triggered and self.trigger_replaces_take_profit:
                    oco.report_trigger(self, account, order)
                if price is None:
                    continue
                qty = executable_qty(order, cap, bar.start)
                if qty > ZERO:
                    self.execute(account, order, qty, price, bar.start + timedelta(seconds=59), bar.start)

    # -- truth for tests --
    def snapshot(self, key_id: str) -> dict[str, Any]:
        account = self.account(key_id)
        return {
            "key_id": key_id,
            "cash": money(account.cash),
            "orders": [self.order_json(account, o, nested=False) for o in account.orders.values()],
            "positions": [p.to_json(self.price_of(p.symbol)) for p in account.positions.values()],
            "fills": [f.to_activity(account.id) for f in account.fills],
        }
