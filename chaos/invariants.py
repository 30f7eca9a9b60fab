"""The invariant checker: the daemon's SQLite database (opened read-only) against the emulator's own truth.

Invariants (docs/RELIABILITY.md): nothing lost, nothing doubled, no fill applied twice, every open position
protected, positions equal, cash explained by the recorded fills (`check`, the daemon at rest); the subset that holds at
every moment, order-first above all (`check_mid_flight`, right after a kill -9). Each broken one is a `Violation` naming the order or
symbol, so a chaos log says exactly what to look at.
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

ZERO = Decimal(0)
# Alpaca statuses after which an order can no longer fill; anything else (new, accepted, held, partially_filled,
# pending_*) still protects its shares.
BROKER_TERMINAL = frozenset({"filled", "canceled", "expired", "rejected", "replaced", "done_for_day"})
DB_WORKING = frozenset({"created", "submitted", "accepted", "partial_fill"})
# Every order row's client_order_id starts so (catalyst.store.order_ops.client_order_id_for: cat-<database id>-<n>);
# an OCO leg's is the broker's own.
OUR_CLIENT_ID_PREFIX = "cat-"


@dataclass(frozen=True)
class Violation:
    kind: str  # lost | doubled | stale | fill_twice | fill_missing | fill_invented | unprotected | positions | cash | status
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail}"


@dataclass(frozen=True)
class DbOrder:
    order_id: int
    client_order_id: str
    broker_id: str | None
    symbol: str
    role: str
    status: str
    filled_qty: Decimal


@dataclass
class DbView:
    orders: list[DbOrder]
    fills_by_broker_id: dict[str, Decimal]
    invented: dict[int, Decimal]  # DB order id -> shares of fills recorded with no broker order behind them
    fill_cash: Decimal  # sells minus buys over every recorded fill
    open_positions: dict[str, Decimal]  # symbol -> signed quantity


@dataclass
class Report:
    violations: list[Violation] = field(default_factory=list)
    broker_orders: int = 0
    db_orders: int = 0
    fills: int = 0

    @property
    def ok(self) -> bool:
        return not self.violations

    def summary(self) -> str:
        kinds = defaultdict(int)
        for v in self.violations:
            kinds[v.kind] += 1
        listed = ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())) or "none"
        return (f"{self.broker_orders} broker orders, {self.db_orders} db orders, {self.fills} broker fills; "
                f"violations: {listed}")


def _decimal(value: Any) -> Decimal:
    return ZERO if value in (None, "") else Decimal(str(value))


def read_database(path: Path) -> DbView:
    """Read the daemon's tables without ever writing the file (mode=ro): the daemon may be running or killed."""
    if not Path(path).exists():
        raise FileNotFoundError(f"no database at {path}")
    connection = sqlite3.connect(f"file:{Path(path).resolve()}?mode=ro", uri=True, timeout=30)
    try:
        rows = connection.execute(
            "SELECT o.order_id, o.client_order_id, o.alpaca_order_id, s.symbol, o.role, o.status, o.filled_qty "
            "FROM orders o JOIN securities s ON s.security_id = o.security_id ORDER BY o.order_id").fetchall()
        orders = [DbOrder(r[0], r[1], r[2], r[3], r[4], r[5], _decimal(r[6])) for r in rows]
        fills: dict[str, Decimal] = defaultdict(lambda: ZERO)
        invented: dict[int, Decimal] = defaultdict(lambda: ZERO)
        cash = ZERO
        for order_id, broker_id, side, qty, price in connection.execute(
                "SELECT order_id, alpaca_order_id, side, qty, price FROM fills"):
            if broker_id:
                fills[broker_id] += _decimal(qty)
            else:
                invented[order_id or 0] += _decimal(qty)
            amount = _decimal(qty) * _decimal(price)
            cash += amount if side == "sell" else -amount
        positions: dict[str, Decimal] = defaultdict(lambda: ZERO)
        for symbol, side, qty in connection.execute(
                "SELECT s.symbol, p.side, p.quantity FROM positions p JOIN securities s ON s.security_id = p.security_id "
                "WHERE p.status = 'open'"):
            positions[symbol] += _decimal(qty) if side == "long" else -_decimal(qty)
    finally:
        connection.close()
    return DbView(orders, dict(fills), dict(invented), cash, {s: q for s, q in positions.items() if q != 0})


def check(db: DbView, snapshot: dict[str, Any], starting_cash: Decimal | None = None) -> Report:
    """Every invariant over one database view and one broker snapshot (`GET /sim/v1/accounts/{key}/snapshot`)."""
    report, seen = _report(db, snapshot)
    out = report.violations
    # An OCO leg carries the broker's own client_order_id: at rest it is matched by its broker id instead.
    _check_known(db, seen, out, leg_ids_recorded=True)
    for row in db.orders:
        broker = seen.broker_by_id.get(row.broker_id or "") or seen.broker_by_cid.get(row.client_order_id)
        label = f"o-{row.order_id} {row.symbol} {row.role} cid={row.client_order_id}"
        if row.status in DB_WORKING and broker is None:
            out.append(Violation("stale", f"{label} is {row.status} in the database but the broker has no such order"))
        elif broker is not None and (row.status in DB_WORKING) == (broker.get("status") in BROKER_TERMINAL):
            out.append(Violation("status", f"{label} is {row.status} in the database, {broker.get('status')} at the broker"))
    _check_fills(db, seen, out, at_rest=True)
    _check_positions(db, snapshot, seen.broker_orders, out)
    if starting_cash is not None:
        expected = starting_cash + db.fill_cash
        actual = _decimal(snapshot.get("cash"))
        if abs(expected - actual) > Decimal("0.01"):
            out.append(Violation("cash", f"broker cash {actual} but starting cash + recorded fills = {expected}"))
    return report


def check_mid_flight(db: DbView, snapshot: dict[str, Any]) -> Report:
    """What must hold at ANY moment, not only once the daemon has caught up: checked on the database a daemon left
    when it was killed (-9) in the middle of its work, against the broker right after.

    - order first: every broker order carrying one of our client ids has its row (the row is committed before the
      order is sent, so a kill can never leave the broker with an order the database never had);
    - nothing doubled: no client id on two broker orders, no row whose broker id is another order's;
    - no broker id in the database that the broker does not know;
    - no fill recorded twice or invented: the fills rows of an order never exceed what the broker executed.
    Statuses, missing fills, positions, protection and cash may lag at a kill (the restart's catch-up settles them):
    `check` judges those once the daemon is quiet.
    """
    report, seen = _report(db, snapshot)
    _check_known(db, seen, report.violations, leg_ids_recorded=False)
    _check_fills(db, seen, report.violations, at_rest=False)
    return report


@dataclass
class _Seen:
    """Both sides indexed once per check."""

    broker_orders: list[dict[str, Any]]
    db_by_cid: dict[str, DbOrder]
    db_by_broker_id: dict[str, DbOrder]
    broker_by_id: dict[str, dict[str, Any]]
    broker_by_cid: dict[str, dict[str, Any]]  # the first broker order carrying each client id
    broker_cid_count: dict[str, int]


def _report(db: DbView, snapshot: dict[str, Any]) -> tuple[Report, _Seen]:
    broker_orders: list[dict[str, Any]] = list(snapshot.get("orders") or [])
    by_cid: dict[str, dict[str, Any]] = {}
    count: dict[str, int] = defaultdict(int)
    for order in broker_orders:
        by_cid.setdefault(order.get("client_order_id"), order)
        count[str(order.get("client_order_id"))] += 1
    seen = _Seen(broker_orders, {o.client_order_id: o for o in db.orders},
                 {o.broker_id: o for o in db.orders if o.broker_id}, {str(o["id"]): o for o in broker_orders},
                 by_cid, count)
    report = Report(broker_orders=len(broker_orders), db_orders=len(db.orders), fills=len(snapshot.get("fills") or []))
    return report, seen


def _check_known(db: DbView, seen: _Seen, out: list[Violation], leg_ids_recorded: bool) -> None:
    """Lost and doubled orders. `leg_ids_recorded=False` (mid-flight): an OCO leg, whose client id is the broker's
    own, may not have its broker id recorded yet; its parent, which carries our client id, stands for it."""
    for order in seen.broker_orders:
        cid, bid = str(order.get("client_order_id")), str(order["id"])
        ours = cid.startswith(OUR_CLIENT_ID_PREFIX)
        if cid not in seen.db_by_cid and bid not in seen.db_by_broker_id and (leg_ids_recorded or ours):
            out.append(Violation("lost", f"broker order {bid} cid={cid} {order.get('side')} {order.get('qty')} "
                                         f"{order.get('symbol')} {order.get('type')} ({order.get('status')}) is not in the database"))
        if seen.broker_cid_count[cid] > 1:
            out.append(Violation("doubled", f"{seen.broker_cid_count[cid]} broker orders carry cid={cid}"))
    for row in db.orders:
        same_cid = seen.broker_by_cid.get(row.client_order_id)
        if row.broker_id and row.broker_id not in seen.broker_by_id:
            out.append(Violation("lost", f"o-{row.order_id} {row.symbol} {row.role} has broker id {row.broker_id} "
                                         f"the broker does not know"))
        if row.broker_id and same_cid is not None and str(same_cid["id"]) != row.broker_id:
            out.append(Violation("doubled", f"o-{row.order_id} {row.symbol} {row.role} cid={row.client_order_id} has "
                                            f"broker id {row.broker_id} in the database and {same_cid['id']} at the broker"))


def _check_fills(db: DbView, seen: _Seen, out: list[Violation], at_rest: bool) -> None:
    """Fills recorded twice or invented, always; at rest (`at_rest`) also fills missing and filled_qty behind."""
    broker_orders, by_broker_id, by_cid = seen.broker_orders, seen.db_by_broker_id, seen.db_by_cid
    for order in broker_orders:
        bid = str(order["id"])
        broker_filled = _decimal(order.get("filled_qty"))
        recorded = db.fills_by_broker_id.get(bid, ZERO)
        row = by_broker_id.get(bid) or by_cid.get(str(order.get("client_order_id")))
        label = f"o-{row.order_id} {row.symbol} {row.role}" if row else f"broker order {bid}"
        if recorded > broker_filled:
            out.append(Violation("fill_twice", f"{label}: fills rows sum to {recorded}, the broker filled {broker_filled}"))
        elif recorded < broker_filled and at_rest:
            out.append(Violation("fill_missing", f"{label}: fills rows sum to {recorded}, the broker filled {broker_filled}"))
        if at_rest and row is not None and row.filled_qty != broker_filled:
            out.append(Violation("status", f"{label}: filled_qty {row.filled_qty} in the database, {broker_filled} at the broker"))
    known = {str(o["id"]) for o in broker_orders}
    for bid, qty in db.fills_by_broker_id.items():
        if bid not in known:
            out.append(Violation("fill_twice", f"fills rows of {qty} shares for broker order {bid} the broker does not know"))
    by_id = {o.order_id: o for o in db.orders}
    for order_id, qty in db.invented.items():
        row = by_id.get(order_id)
        label = f"o-{order_id} {row.symbol} {row.role} cid={row.client_order_id}" if row else "fills with no order"
        out.append(Violation("fill_invented", f"{label}: {qty} shares of fills with no broker order behind them "
                                              f"(the broker never executed them)"))


def _check_positions(db: DbView, snapshot: dict[str, Any], broker_orders: list[dict[str, Any]],
                     out: list[Violation]) -> None:
    broker_positions: dict[str, Decimal] = {}
    for position in snapshot.get("positions") or []:
        qty = _decimal(position.get("qty"))
        if qty != 0:
            broker_positions[str(position["symbol"])] = qty
    for symbol in sorted(set(broker_positions) | set(db.open_positions)):
        broker_qty, db_qty = broker_positions.get(symbol, ZERO), db.open_positions.get(symbol, ZERO)
        if broker_qty != db_qty:
            out.append(Violation("positions", f"{symbol}: {broker_qty} at the broker, {db_qty} open in the database"))
    out += unprotected_at_broker(snapshot)


def unprotected_at_broker(snapshot: dict[str, Any]) -> list[Violation]:
    """Every position at the broker whose working stops do not cover exactly its quantity."""
    found = []
    broker_orders: list[dict[str, Any]] = list(snapshot.get("orders") or [])
    for position in sorted(snapshot.get("positions") or [], key=lambda p: str(p["symbol"])):
        symbol, qty = str(position["symbol"]), _decimal(position.get("qty"))
        if qty == 0:
            continue
        exit_side = "sell" if qty > 0 else "buy"
        stops = sum((_decimal(o.get("qty")) - _decimal(o.get("filled_qty")) for o in broker_orders
                     if o.get("symbol") == symbol and o.get("side") == exit_side
                     and o.get("type") in ("stop", "stop_limit") and o.get("status") not in BROKER_TERMINAL), ZERO)
        if stops != abs(qty):
            found.append(Violation("unprotected", f"{symbol}: position {qty}, working stop quantity {stops} at the "
                                                  "broker"))
    return found


def check_files(database: Path, snapshot: dict[str, Any], starting_cash: Decimal | None = None) -> Report:
    return check(read_database(database), snapshot, starting_cash)
