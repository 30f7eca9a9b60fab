"""The chaos checker's two judgements: `check` (the daemon at rest) and `check_mid_flight` (right after a kill -9).

Mid-flight, only what the order-first rule guarantees at every moment may be judged: a broker order of ours always has
its row, nothing is doubled, no fill is recorded twice. What the restart's catch-up settles (statuses, fills not yet
recorded, a leg's broker id) must not count then, and must count at rest.
"""

from __future__ import annotations

from decimal import Decimal

from chaos.invariants import DbOrder, DbView, check, check_mid_flight


def row(order_id: int, status: str = "submitted", broker_id: str | None = None, filled: str = "0",
        role: str = "entry") -> DbOrder:
    return DbOrder(order_id, f"cat-db1-{order_id}", broker_id, "AAPL", role, status, Decimal(filled))


def broker(bid: str, cid: str, status: str = "new", filled: str = "0", side: str = "buy",
           type_: str = "market") -> dict:
    return {"id": bid, "client_order_id": cid, "status": status, "filled_qty": filled, "qty": "10",
            "side": side, "symbol": "AAPL", "type": type_}


def view(orders: list[DbOrder], fills: dict[str, str] | None = None) -> DbView:
    return DbView(orders, {k: Decimal(v) for k, v in (fills or {}).items()}, {}, Decimal(0), {})


def kinds(report) -> list[str]:
    return sorted(v.kind for v in report.violations)


def test_a_broker_order_of_ours_without_its_row_breaks_order_first_even_mid_flight():
    db = view([row(1, broker_id="b-1")])
    snapshot = {"orders": [broker("b-1", "cat-db1-1"), broker("b-2", "cat-db1-2")]}

    mid = check_mid_flight(db, snapshot)

    assert kinds(mid) == ["lost"] and "cid=cat-db1-2" in mid.violations[0].detail


def test_a_row_sent_but_not_yet_acknowledged_is_fine_mid_flight():
    # Killed between the broker call and its acknowledgement's commit: the row has no broker id yet.
    db = view([row(1, status="created")])
    snapshot = {"orders": [broker("b-1", "cat-db1-1", status="filled", filled="10")]}

    assert check_mid_flight(db, snapshot).ok
    assert {"status", "fill_missing"} <= set(kinds(check(db, snapshot)))  # at rest the catch-up must have run


def test_an_oco_leg_whose_broker_id_is_not_recorded_yet_counts_only_at_rest():
    db = view([row(1, broker_id="b-1", status="filled", filled="10"),
               row(2, status="submitted", broker_id="b-2", role="take_profit"),
               row(3, status="created", role="stop_loss")])
    snapshot = {"orders": [broker("b-1", "cat-db1-1", status="filled", filled="10"),
                           broker("b-2", "cat-db1-2", side="sell", type_="limit"),
                           broker("b-3", "0f1e2d3c-leg-of-b-2", status="held", side="sell", type_="stop")]}
    db = view(db.orders, {"b-1": "10"})

    assert check_mid_flight(db, snapshot).ok
    assert "lost" in kinds(check(db, snapshot))


def test_fills_beyond_what_the_broker_executed_are_a_violation_at_any_moment():
    db = view([row(1, broker_id="b-1", status="filled", filled="10")], {"b-1": "20"})
    snapshot = {"orders": [broker("b-1", "cat-db1-1", status="filled", filled="10")]}

    assert kinds(check_mid_flight(db, snapshot)) == ["fill_twice"]
    assert "fill_twice" in kinds(check(db, snapshot))


def test_a_broker_id_the_broker_does_not_know_and_a_doubled_cid_are_violations_mid_flight():
    db = view([row(1, broker_id="b-9"), row(2, broker_id="b-2")])
    snapshot = {"orders": [broker("b-1", "cat-db1-1"), broker("b-2", "cat-db1-2"), broker("b-3", "cat-db1-2")]}

    found = kinds(check_mid_flight(db, snapshot))

    assert "lost" in found  # b-9 is unknown to the broker
    assert found.count("doubled") >= 2  # cat-db1-2 on two broker orders
