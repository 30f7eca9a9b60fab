"""reconcile() on hand-built views: one test per finding type, plus the rules that keep it honest."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal as D

import pytest

from catalyst.domain.orders import OrderStatus, status_from_broker
from catalyst.domain.reconcile import (
    BrokerFill, BrokerOrder, BrokerPosition, BrokerView, DoctorSettings, FindingType as T, LocalOrder,
    LocalPosition, LocalView, Policy, Severity, execution_key, reconcile,
)  # fmt: skip

NOW = datetime(2024, 3, 4, 15, 0, tzinfo=timezone.utc)
OLD = NOW - timedelta(minutes=10)
SETTINGS = DoctorSettings()


def order(order_id=1, status="accepted", broker_id="b-1", role="entry", side="buy", qty="100", filled="0",
          position_id=None, at=OLD, unknown=False, symbol="AAPL") -> LocalOrder:
    return LocalOrder(order_id, f"cat-x-{order_id}", broker_id, symbol, role, side, D(qty), OrderStatus(status),
                      D(filled), position_id, at, at, unknown)


def border(broker_id="b-1", status="new", side="buy", qty="100", filled="0", cid="cat-x-1", type="market",
           parent=None, symbol="AAPL") -> BrokerOrder:
    return BrokerOrder(broker_id, cid, symbol, side, D(qty), D(filled), status, type, parent)


def position(qty="100", position_id=3, side="long", symbol="AAPL") -> LocalPosition:
    return LocalPosition(position_id, symbol, side, D(qty))


def stop(qty="100", status="held", broker_id="b-sl", cid="cat-x-3") -> BrokerOrder:
    return border(broker_id, status, "sell", qty, cid=cid, type="stop")


def ours(*stops: BrokerOrder, position_id: int = 3) -> tuple[LocalOrder, ...]:
    """The local rows of our own broker stop orders, in the status the broker reports."""
    return tuple(LocalOrder(10 + i, s.client_order_id, s.broker_id, s.symbol, "stop_loss", s.side, s.qty,
                            status_from_broker(s.status, s.filled_qty, s.qty), s.filled_qty, position_id, OLD, OLD)
                 for i, s in enumerate(stops))


def kinds(findings):
    return [f.type for f in findings]


def run(local: LocalView, broker: BrokerView, settings: DoctorSettings = SETTINGS):
    return reconcile(local, broker, NOW, settings)


def test_views_that_agree_yield_no_findings():
    local = LocalView(orders=(order(status="filled", filled="100", position_id=3),
                              order(3, "accepted", "b-sl", "stop_loss", "sell", position_id=3)),
                      positions=(position(),), execution_keys=frozenset({execution_key("b-1", D(100))}))
    broker = BrokerView(orders=(border(status="filled", filled="100"), stop()),
                        positions=(BrokerPosition("AAPL", "long", D(100)),),
                        fills=(BrokerFill("b-1", D(100), D(100), D("150"), OLD),))
    assert run(local, broker) == []


def test_an_order_behind_the_broker_is_a_status_mismatch_healed_along_the_machine():
    (finding,) = run(LocalView(orders=(order(status="submitted"),)),
                     BrokerView(orders=(border(status="filled", filled="100"),)))
    assert finding.type is T.ORDER_STATUS_MISMATCH and finding.policy is Policy.HEAL
    assert (finding.db_value, finding.broker_value) == ("submitted", "filled")
    assert "submitted -> accepted -> filled" in finding.reason and finding.subject == "order AAPL#o-1"


def test_a_stale_broker_report_is_not_a_finding():
    assert run(LocalView(orders=(order(status="partial_fill", filled="10"),)),
               BrokerView(orders=(border(status="accepted", filled="10"),))) == []


def test_a_live_broker_order_the_database_holds_for_cancelled_is_a_conflict_that_halts():
    (finding,) = run(LocalView(orders=(order(status="cancelled"),)), BrokerView(orders=(border(status="new"),)))
    assert finding.type is T.ORDER_STATUS_CONFLICT and finding.policy is Policy.HALT
    assert finding.severity is Severity.CRITICAL and "cancelled" in finding.reason


def test_filled_locally_but_cancelled_at_the_broker_is_a_conflict():
    (finding,) = run(LocalView(orders=(order(status="filled", filled="100"),)),
                     BrokerView(orders=(border(status="canceled", filled="0"),)))
    assert finding.type is T.ORDER_STATUS_CONFLICT


def test_a_working_order_the_broker_does_not_know_is_not_at_broker():
    (finding,) = run(LocalView(orders=(order(status="accepted"),)), BrokerView())
    assert finding.type is T.ORDER_NOT_AT_BROKER and finding.policy is Policy.ALERT


def test_a_fresh_order_missing_from_the_list_is_given_time():
    assert run(LocalView(orders=(order(status="accepted", at=NOW),)), BrokerView()) == []


def test_a_broker_order_not_in_the_database_is_an_orphan_reported_once_with_its_legs():
    parent = border("b-9", "new", "sell", cid="hand-1", type="limit")
    leg = border("b-10", "held", "sell", cid="hand-1-leg", type="stop", parent="b-9")
    (finding,) = run(LocalView(), BrokerView(orders=(parent, leg)))
    assert finding.type is T.ORPHAN_ORDER and finding.broker_ids == ("b-9",)


def test_the_stop_leg_of_our_own_oco_is_not_an_orphan_while_its_row_waits_for_the_broker_id():
    # The OCO was sent and the broker lists it; our take-profit row matches by client_order_id, but the stop-loss
    # row gets the leg's broker id only when the submit reply is committed (Alpaca makes up a leg's cid).
    local = LocalView(orders=(order(status="filled", filled="100", position_id=3),
                              order(2, "created", None, "take_profit", "sell", position_id=3, at=NOW),
                              order(3, "created", None, "stop_loss", "sell", position_id=3, at=NOW)),
                      positions=(position(),), execution_keys=frozenset({execution_key("b-1", D(100))}))
    tp = border("b-tp", "new", "sell", cid="cat-x-2", type="limit")
    leg = border("b-sl", "held", "sell", cid="made-up-by-alpaca", type="stop", parent="b-tp")
    broker = BrokerView(orders=(border(status="filled", filled="100"), tp, leg),
                        positions=(BrokerPosition("AAPL", "long", D(100)),),
                        fills=(BrokerFill("b-1", D(100), D(100), D(150), OLD),))

    assert T.ORPHAN_ORDER not in kinds(run(local, broker))


def test_orders_placed_during_the_pass_make_the_broker_orders_ours_without_their_status_being_judged():
    # The doctor reads the database, then the broker, then our orders again: an entry sent in between is among
    # the late ones. Its shares are ours (a fill still to apply), never an orphan to adopt.
    entry = order(status="filled", filled="100", position_id=3, at=NOW)
    broker = BrokerView(orders=(border(status="filled", filled="100"),),
                        positions=(BrokerPosition("AAPL", "long", D(100)),),
                        fills=(BrokerFill("b-1", D(100), D(100), D(150), NOW),))
    assert run(LocalView(placed_during_pass=(entry,)), broker) == []  # its fill is the router's to apply now
    assert kinds(run(LocalView(), broker)) == [T.ORPHAN_ORDER, T.ORPHAN_POSITION]  # what the first read alone said
    # Read after the broker answered, a late row can be ahead of it: not a conflict, not judged at all.
    ahead = order(status="filled", filled="100", at=NOW)
    assert run(LocalView(placed_during_pass=(ahead,)), BrokerView(orders=(border(status="new"),))) == []
    assert kinds(run(LocalView(orders=(ahead,)), BrokerView(orders=(border(status="new"),)))) == \
        [T.ORDER_STATUS_CONFLICT]  # the same row in the first read would be


def test_a_fill_the_router_recorded_while_the_pass_read_the_broker_is_not_missing():
    # The snapshot (positions and execution keys) was read before the broker; the fill came in between and the
    # router recorded it before the pass read the keys again. Its shares still count against the snapshot.
    key = execution_key("b-1", D(100))
    local = LocalView(orders=(order(status="accepted", at=NOW),), recorded_since=frozenset({key}))
    broker = BrokerView(orders=(border(status="filled", filled="100"),),
                        positions=(BrokerPosition("AAPL", "long", D(100)),),
                        fills=(BrokerFill("b-1", D(100), D(100), D(150), NOW),))
    assert kinds(run(local, broker)) == [T.ORDER_STATUS_MISMATCH]  # the status catch-up only (info, harmless)
    assert kinds(run(LocalView(orders=local.orders), broker)) == [T.ORDER_STATUS_MISMATCH, T.MISSING_FILL]


def test_a_broker_position_with_no_local_one_is_an_orphan_to_adopt():
    hand = border("b-9", "filled", "buy", "50", "50", cid="hand-1")
    findings = run(LocalView(), BrokerView(orders=(hand,), positions=(BrokerPosition("AAPL", "long", D(50)),),
                                           fills=(BrokerFill("b-9", D(50), D(50), D(150), OLD),)))
    assert kinds(findings) == [T.ORPHAN_ORDER, T.ORPHAN_POSITION]
    assert findings[1].policy is Policy.ADOPT and findings[1].broker_ids == ("b-9",)
    assert (findings[1].db_value, findings[1].broker_value) == ("0", "50")


def test_a_position_closed_by_hand_is_a_phantom_closed_from_the_hand_orders_fills():
    hand = border("b-9", "filled", "sell", "100", "100", cid="hand-1")
    local = LocalView(orders=(order(status="filled", filled="100", position_id=3),), positions=(position(),),
                      execution_keys=frozenset({execution_key("b-1", D(100))}))
    findings = run(local, BrokerView(orders=(border(status="filled", filled="100"), hand),
                                     fills=(BrokerFill("b-1", D(100), D(100), D(150), OLD),
                                            BrokerFill("b-9", D(100), D(100), D(152), OLD))))
    phantom = next(f for f in findings if f.type is T.PHANTOM_POSITION)
    assert phantom.policy is Policy.HEAL and phantom.action == "close from fills"
    assert phantom.broker_ids == ("b-9",) and phantom.position_id == 3


@pytest.mark.parametrize("cid, heals", [("hand-1", True), ("cat-0th3r000-4", False)], ids=["by-hand", "other-daemon"])
def test_a_position_partly_sold_by_hand_is_healed_from_that_sale_but_not_from_another_daemons(cid, heals):
    # Healed by default since the thirty-seventh session (its shares left bare for good under a halt before). Another
    # catalyst daemon's sale on the account is its own database's exit, never ours too: that still halts.
    sale = border("b-9", "filled", "sell", "40", "40", cid=cid)
    local = LocalView(orders=(order(status="filled", filled="100", position_id=3),), positions=(position(),),
                      execution_keys=frozenset({execution_key("b-1", D(100))}), instance_id="x")
    findings = run(local, BrokerView(orders=(border(status="filled", filled="100"), sale),
                                     positions=(BrokerPosition("AAPL", "long", D(60)),),
                                     fills=(BrokerFill("b-1", D(100), D(100), D(150), OLD),
                                            BrokerFill("b-9", D(40), D(40), D(152), OLD))))
    mismatch = next(f for f in findings if f.type is T.POSITION_QTY_MISMATCH)
    assert (mismatch.db_value, mismatch.broker_value) == ("100", "60")
    if heals:
        assert mismatch.policy is Policy.HEAL and mismatch.action == "apply fills" and mismatch.broker_ids == ("b-9",)
    else:
        assert mismatch.policy is Policy.HALT and "another catalyst daemon, database 0th3r000" in mismatch.reason


@pytest.mark.parametrize("sold, kind", [("120", T.POSITION_QTY_MISMATCH), ("150", T.PHANTOM_POSITION)])
def test_a_hand_sale_beside_two_open_positions_of_the_symbol_halts_and_is_attached_to_neither(sold, kind):
    # Which of the two the hand sold is not known, and attached to the first (100 shares) a sale of 120 or 150 would
    # be an exit of more than it holds.
    entries = (order(status="filled", filled="100", position_id=3),
               order(2, "filled", "b-2", filled="50", qty="50", position_id=4))
    local = LocalView(orders=entries, positions=(position("100"), position("50", position_id=4)),
                      execution_keys=frozenset({execution_key("b-1", D(100)), execution_key("b-2", D(50))}))
    hand = border("b-9", "filled", "sell", sold, sold, cid="hand-1")
    left = 150 - int(sold)
    findings = run(local, BrokerView(
        orders=(border(status="filled", filled="100"), border("b-2", "filled", filled="50", qty="50"), hand),
        positions=(BrokerPosition("AAPL", "long", D(left)),) if left else (),
        fills=(BrokerFill("b-1", D(100), D(100), D(150), OLD), BrokerFill("b-2", D(50), D(50), D(150), OLD),
               BrokerFill("b-9", D(sold), D(sold), D(152), OLD))))
    found = next(f for f in findings if f.type is kind)
    assert found.policy is Policy.HALT and (found.db_value, found.broker_value) == ("150", str(left))


def test_a_hand_buy_beside_a_larger_hand_sale_is_never_written_as_an_exit():
    # From a review: bought 40 by hand, then sold 80 by hand: net they reduce the 100 long to 60, but the buy
    # written as an exit had its fill applied as a sale (40 past the 20 left: the position actor crashed).
    buy = border("b-8", "filled", "buy", "40", "40", cid="hand-1")
    sale = border("b-9", "filled", "sell", "80", "80", cid="hand-2")
    local = LocalView(orders=(order(status="filled", filled="100", position_id=3),), positions=(position(),),
                      execution_keys=frozenset({execution_key("b-1", D(100))}), instance_id="x")
    findings = run(local, BrokerView(orders=(border(status="filled", filled="100"), buy, sale),
                                     positions=(BrokerPosition("AAPL", "long", D(60)),),
                                     fills=(BrokerFill("b-1", D(100), D(100), D(150), OLD),
                                            BrokerFill("b-8", D(40), D(40), D(151), OLD),
                                            BrokerFill("b-9", D(80), D(80), D(152), OLD))))
    mismatch = next(f for f in findings if f.type is T.POSITION_QTY_MISMATCH)
    assert mismatch.policy is Policy.HALT and "not explained" in mismatch.reason


def test_a_phantom_no_broker_fill_explains_halts_entries():
    (finding,) = run(LocalView(positions=(position(),)), BrokerView())
    assert finding.type is T.PHANTOM_POSITION and finding.policy is Policy.HALT and finding.reason


def test_a_quantity_difference_no_fill_explains_is_a_mismatch_that_halts():
    (finding,) = run(LocalView(orders=ours(stop("100")), positions=(position("100"),)),
                     BrokerView(orders=(stop("100"),), positions=(BrokerPosition("AAPL", "long", D(60)),)))
    assert finding.type is T.POSITION_QTY_MISMATCH and finding.policy is Policy.HALT
    assert (finding.db_value, finding.broker_value) == ("100", "60")


def test_an_unrecorded_execution_is_a_missing_fill_and_explains_the_quantity():
    local = LocalView(orders=(order(status="partial_fill", filled="40", position_id=3), *ours(stop("100"))),
                      positions=(position("40"),), execution_keys=frozenset({execution_key("b-1", D(40))}))
    broker = BrokerView(orders=(border(status="filled", filled="100"), stop("100")),
                        positions=(BrokerPosition("AAPL", "long", D(100)),),
                        fills=(BrokerFill("b-1", D(40), D(40), D(150), OLD), BrokerFill("b-1", D(100), D(60), D(151), OLD)))
    findings = run(local, broker)
    assert kinds(findings) == [T.ORDER_STATUS_MISMATCH, T.MISSING_FILL]
    assert findings[1].policy is Policy.HEAL and findings[1].action == "apply fill"
    assert findings[1].broker_value == "60 @ 151 (cum 100)"


def test_an_old_created_order_never_sent_is_stuck_created():
    (finding,) = run(LocalView(orders=(order(status="created", broker_id=None),)), BrokerView())
    assert finding.type is T.STUCK_CREATED


def test_an_entry_lost_with_its_outcome_unknown_is_stuck_created_to_be_retired_but_a_lost_stop_is_reported():
    (entry,) = run(LocalView(orders=(order(status="created", broker_id=None, unknown=True),)), BrokerView())
    assert entry.type is T.STUCK_CREATED and entry.policy is Policy.HEAL and entry.db_value == "created unknown"
    (stop_leg,) = run(LocalView(orders=(order(status="created", broker_id=None, unknown=True, role="stop_loss",
                                              side="sell"),)), BrokerView())
    assert stop_leg.type is T.ORDER_NOT_AT_BROKER and stop_leg.policy is Policy.ALERT  # MISSING_PROTECTION resends it
    fresh = run(LocalView(orders=(order(status="created", broker_id=None, unknown=True, at=NOW),)), BrokerView())
    assert fresh == []  # not yet stuck_after_s: a hung first attempt may still land


def test_an_order_retired_after_its_outcome_was_unknown_is_no_finding():
    """Seen in a chaos run: an entry lost with its outcome unknown, retired as cancelled after the broker was asked,
    kept its mark, and every later pass (and every restart) reported it as ORDER_NOT_AT_BROKER. Ended, it is settled."""
    for status in ("cancelled", "rejected", "expired"):
        assert run(LocalView(orders=(order(status=status, broker_id=None, unknown=True),)), BrokerView()) == [], status


def test_a_submitted_order_the_broker_never_acknowledged_is_stuck_submitted():
    (finding,) = run(LocalView(orders=(order(status="submitted"),)), BrokerView(orders=(border(status="pending_new"),)))
    assert finding.type is T.STUCK_SUBMITTED


def test_an_unknown_outcome_found_by_client_order_id_is_settled():
    (finding,) = run(LocalView(orders=(order(status="created", broker_id=None, unknown=True),)),
                     BrokerView(orders=(border(status="new"),)))
    assert finding.type is T.OUTCOME_UNKNOWN and finding.action == "settle" and finding.broker_ids == ("b-1",)


def test_an_order_the_router_sent_and_recorded_while_the_pass_ran_is_not_an_outcome_to_settle():
    # The snapshot had the row `created`; before the pass read our orders again, the submit reply was recorded.
    created = order(status="created", broker_id=None, at=NOW)
    broker = BrokerView(orders=(border(status="new"),))
    assert run(LocalView(orders=(created,), acknowledged_during_pass=frozenset({1})), broker) == []
    (finding,) = run(LocalView(orders=(created,)), broker)  # still unanswered in the second read: settled
    assert finding.type is T.OUTCOME_UNKNOWN and finding.action == "settle"
    # Only the orders the broker lists: a row it does not know is judged as before.
    stuck = order(status="created", broker_id=None)
    assert kinds(run(LocalView(orders=(stuck,), acknowledged_during_pass=frozenset({1})), BrokerView())) == \
        [T.STUCK_CREATED]


def test_a_position_whose_broker_stop_covers_less_than_its_quantity_is_missing_protection():
    stops = (stop("40"), stop("60", status="canceled", broker_id="b-sl2", cid="c2"))
    (finding,) = run(LocalView(orders=ours(*stops), positions=(position(),)),
                     BrokerView(orders=stops,
                                positions=(BrokerPosition("AAPL", "long", D(100)),)))
    assert finding.type is T.MISSING_PROTECTION and finding.action == "re-protect"
    assert finding.line() == "doctor MISSING_PROTECTION position AAPL#p-3 db=100 broker=40 → re-protect"


def test_a_stop_created_locally_but_not_yet_sent_counts_as_in_flight():
    local = LocalView(orders=(order(4, "created", None, "stop_loss", "sell", position_id=3, at=NOW),),
                      positions=(position(),))
    assert run(local, BrokerView(positions=(BrokerPosition("AAPL", "long", D(100)),))) == []


def test_stops_for_more_than_the_position_are_excess_protection():
    stops = (stop("100"), stop("50", broker_id="b-sl2", cid="c2"))
    (finding,) = run(LocalView(orders=ours(*stops), positions=(position(),)),
                     BrokerView(orders=stops,
                                positions=(BrokerPosition("AAPL", "long", D(100)),)))
    assert finding.type is T.EXCESS_PROTECTION and finding.broker_value == "150"


def test_a_configured_policy_replaces_the_default():
    settings = DoctorSettings(policies={T.MISSING_PROTECTION: Policy.FLATTEN})
    (finding,) = run(LocalView(positions=(position(),)),
                     BrokerView(positions=(BrokerPosition("AAPL", "long", D(100)),)), settings)
    assert finding.policy is Policy.FLATTEN and finding.action == "flatten"


def test_settings_refuse_unknown_keys_and_policies():
    with pytest.raises(ValueError):
        DoctorSettings(interval=5)
    with pytest.raises(ValueError):
        DoctorSettings(policies={"MISSING_PROTECTION": "ignore"})


def test_shares_our_own_entry_filled_are_never_adopted_while_its_fill_is_being_recorded():
    # The race a restart's catch-up opens: the execution is recorded, the entry row not yet moved to filled and
    # its position row not yet written, when the doctor reads the database. Adopting would book the shares twice.
    just_now = NOW - timedelta(seconds=1)
    local = LocalView(orders=(order(status="submitted", at=just_now),),
                      execution_keys=frozenset({execution_key("b-1", D(188))}))
    broker = BrokerView(orders=(border(status="filled", qty="188", filled="188"),),
                        positions=(BrokerPosition("AAPL", "long", D(188)),),
                        fills=(BrokerFill("b-1", D(188), D(188), D("54.86"), just_now),))

    assert T.ORPHAN_POSITION not in kinds(run(local, broker))


def test_shares_our_own_orders_filled_with_no_position_row_long_after_halt_and_are_not_adopted():
    local = LocalView(orders=(order(status="accepted", qty="188"),),
                      execution_keys=frozenset({execution_key("b-1", D(188))}))
    broker = BrokerView(orders=(border(status="filled", qty="188", filled="188"),),
                        positions=(BrokerPosition("AAPL", "long", D(188)),),
                        fills=(BrokerFill("b-1", D(188), D(188), D("54.86"), OLD),))

    (finding,) = [f for f in run(local, broker) if f.type is T.ORPHAN_POSITION]
    assert finding.policy is Policy.HALT and "our own orders" in finding.reason


@pytest.mark.parametrize("role, exit_qty, exit_status, exit_position, expected", [
    ("flatten", "188", "accepted", 3, None),
    ("flatten", "100", "accepted", 3, "rebuild and sell"),
    ("flatten", "188", "cancelled", 3, "rebuild and sell"),
    ("flatten", "188", "accepted", 9, "rebuild and sell"),
    ("exit", "188", "accepted", 3, "rebuild and sell"),
    ("stop_loss", "188", "accepted", 3, None),
    ("stop_loss", "100", "accepted", 3, "rebuild and sell"),
    ("stop_loss", "188", "cancelled", 3, "rebuild and sell"),
], ids=["covered", "short-of-them", "exit-ended", "another-positions-exit", "a-hand-exit", "under-its-own-stop",
        "its-stop-short-of-them", "its-stop-ended"])
def test_late_shares_whose_own_market_exit_works_are_being_sold(role, exit_qty, exit_status, exit_position, expected):
    # Entry shares recorded after their position (3) closed: the rebuilt position's market exit for them works
    # (queued for the open, say), or its stop does (kept under stops while the market is closed, sold at the open).
    # Halting with "flatten it by hand" would have the operator sell them a second time. Only that position's own
    # market exit (a `flatten` row) or stop for exactly those shares counts; else it is rebuilt.
    local = LocalView(orders=(order(status="filled", qty="188", filled="188", position_id=3),
                              order(order_id=2, broker_id="b-2", role=role, side="sell", qty=exit_qty,
                                    status=exit_status, position_id=exit_position)),
                      execution_keys=frozenset({execution_key("b-1", D(188))}), closed_holding=(position("188"),))
    broker = BrokerView(orders=(border(status="filled", qty="188", filled="188"),
                                border("b-2", {"accepted": "accepted", "cancelled": "canceled"}[exit_status], "sell",
                                       exit_qty, cid="cat-x-2")),
                        positions=(BrokerPosition("AAPL", "long", D(188)),),
                        fills=(BrokerFill("b-1", D(188), D(188), D("54.86"), OLD),))

    found = [f.action for f in run(local, broker) if f.type is T.ORPHAN_POSITION]
    assert found == ([] if expected is None else [expected])


def test_our_own_shares_with_no_closed_position_holding_them_still_halt():
    local = LocalView(orders=(order(status="filled", qty="188", filled="188", position_id=3),),
                      execution_keys=frozenset({execution_key("b-1", D(188))}))
    broker = BrokerView(orders=(border(status="filled", qty="188", filled="188"),),
                        positions=(BrokerPosition("AAPL", "long", D(188)),),
                        fills=(BrokerFill("b-1", D(188), D(188), D("54.86"), OLD),))

    assert [f.action for f in run(local, broker) if f.type is T.ORPHAN_POSITION] == ["halt entries"]


@pytest.mark.parametrize("closed_holding, at, expected", [
    ((position("188", position_id=7),), OLD, ("rebuild and sell", 7)),
    ((position("100", position_id=7),), OLD, ("halt entries", None)),  # they hold other shares than the broker's
    ((position("100", position_id=7), position("88", position_id=8)), OLD, ("halt entries", None)),  # whose?
    ((position("188", position_id=7),), NOW - timedelta(seconds=1), None),  # being recorded right now: next pass
], ids=["exactly-theirs", "not-theirs", "two-positions", "not-settled"])
def test_shares_our_own_orders_bought_that_one_closed_positions_fills_still_hold_rebuild_it(closed_holding, at,
                                                                                          expected):
    # Entry shares recorded after their position closed and left unsold by a stop of the daemon: its actor, rebuilt,
    # sells them (once the broker says it holds them). Anything less exact halts, as before.
    local = LocalView(orders=(order(status="filled", qty="188", filled="188", position_id=7, at=at),),
                      execution_keys=frozenset({execution_key("b-1", D(188))}), closed_holding=closed_holding)
    broker = BrokerView(orders=(border(status="filled", qty="188", filled="188"),),
                        positions=(BrokerPosition("AAPL", "long", D(188)),),
                        fills=(BrokerFill("b-1", D(188), D(188), D("54.86"), at),))

    found = [(f.action, f.position_id) for f in run(local, broker) if f.type is T.ORPHAN_POSITION]
    assert found == ([] if expected is None else [expected])


def test_late_shares_moved_by_hand_since_halt_rather_than_being_rebuilt_and_sold():
    # From a review: the late 188 sold by hand, then 188 bought by hand. The broker's 188 are not those.
    local = LocalView(orders=(order(status="filled", qty="188", filled="188", position_id=7),),
                      execution_keys=frozenset({execution_key("b-1", D(188))}),
                      closed_holding=(position("188", position_id=7),))
    broker = BrokerView(orders=(border(status="filled", qty="188", filled="188"),
                                border("h-1", "filled", "sell", "188", "188", cid="by-hand-1"),
                                border("h-2", "filled", "buy", "188", "188", cid="by-hand-2")),
                        positions=(BrokerPosition("AAPL", "long", D(188)),),
                        fills=(BrokerFill("b-1", D(188), D(188), D("54.86"), OLD),
                               BrokerFill("h-1", D(188), D(188), D("54.00"), OLD),
                               BrokerFill("h-2", D(188), D(188), D("53.00"), OLD)))

    assert [f.action for f in run(local, broker) if f.type is T.ORPHAN_POSITION] == ["halt entries"]


def test_late_shares_beside_shares_of_ours_not_yet_recorded_halt_rather_than_being_rebuilt_and_sold():
    # From a review: our own entry of 100 more has filled at the broker, unrecorded; the broker's 188 are not all
    # the closed position's (ours filled 288 in all, 100 of those sold by hand).
    local = LocalView(orders=(order(status="filled", qty="188", filled="188", position_id=7),
                              order(order_id=2, broker_id="b-2", status="accepted", qty="100")),
                      execution_keys=frozenset({execution_key("b-1", D(188))}),
                      closed_holding=(position("188", position_id=7),))
    broker = BrokerView(orders=(border(status="filled", qty="188", filled="188"),
                                border("b-2", "filled", "buy", "100", "100", cid="cat-x-2")),
                        positions=(BrokerPosition("AAPL", "long", D(188)),),
                        fills=(BrokerFill("b-1", D(188), D(188), D("54.86"), OLD),
                               BrokerFill("b-2", D(100), D(100), D("54.00"), OLD)))

    assert "rebuild and sell" not in [f.action for f in run(local, broker) if f.type is T.ORPHAN_POSITION]


def test_a_broker_position_no_reported_fill_explains_halts_instead_of_being_adopted():
    findings = run(LocalView(), BrokerView(positions=(BrokerPosition("AAPL", "long", D(50)),)))
    assert kinds(findings) == [T.ORPHAN_POSITION]
    assert findings[0].policy is Policy.HALT and "not explained" in findings[0].reason


# --- another catalyst daemon on the same account -------------------------------------------------------------

def test_another_daemons_working_oco_halts_entries_once_and_its_shares_are_not_adopted():
    """A second daemon on the account (another database: its client ids carry another instance id). Its shares are
    not ours to adopt: adopting them would protect the same shares twice."""
    entry = border("b-7", "filled", "buy", "100", "100", cid="cat-0th3r000-4")
    tp = border("b-8", "new", "sell", "100", cid="cat-0th3r000-5", type="limit")
    sl = border("b-9", "held", "sell", "100", cid="b-8-leg", type="stop", parent="b-8")
    local = LocalView(instance_id="0ur5elf0")
    findings = run(local, BrokerView(orders=(entry, tp, sl), positions=(BrokerPosition("AAPL", "long", D(100)),),
                                     fills=(BrokerFill("b-7", D(100), D(100), D(150), OLD),)))

    assert kinds(findings) == [T.ORPHAN_ORDER, T.OTHER_INSTANCE, T.ORPHAN_POSITION]
    other = findings[1]
    assert other.policy is Policy.HALT and other.severity is Severity.CRITICAL and other.broker_ids == ("b-8",)
    assert "cid=cat-0th3r000-5" in (other.broker_value or "")
    assert other.reason.startswith("another catalyst daemon (database 0th3r000) has working orders on this account")
    assert findings[2].policy is Policy.HALT  # not ADOPT
    assert findings[2].reason == ("AAPL: broker holds 100, traded by another catalyst daemon (database 0th3r000): "
                                  "its shares are not ours to adopt")


def test_another_daemons_stop_does_not_count_as_protection_of_our_position():
    local = LocalView(orders=(order(status="filled", filled="100", position_id=3),), positions=(position(),),
                      execution_keys=frozenset({execution_key("b-1", D(100))}), instance_id="x")
    theirs = stop(broker_id="b-their-sl", cid="cat-0th3r000-9")
    findings = run(local, BrokerView(orders=(border(status="filled", filled="100"), theirs),
                                     positions=(BrokerPosition("AAPL", "long", D(100)),)))
    assert kinds(findings) == [T.OTHER_INSTANCE, T.MISSING_PROTECTION]


def test_orders_of_an_earlier_database_that_are_done_are_only_reported_and_hand_orders_stay_hand_orders():
    done = border("b-5", "canceled", "buy", cid="cat-0ld00000-1", type="limit")
    hand = border("b-6", "new", "buy", cid="my-own-order", type="limit")
    ours_unsent = border("b-7", "new", "buy", cid="cat-x-77", type="limit")  # ours: same instance, row not read
    findings = run(LocalView(instance_id="x"), BrokerView(orders=(done, hand, ours_unsent)))
    assert kinds(findings) == [T.ORPHAN_ORDER, T.ORPHAN_ORDER, T.ORPHAN_ORDER]
    assert all(f.policy is Policy.ALERT for f in findings)
    # The earlier database's ended order is said at INFO, naming whose it is (a fresh database on a used account
    # gave a WARNING per such order on its first pass); a hand order still warns.
    assert [f.severity for f in findings] == [Severity.INFO, Severity.WARNING, Severity.WARNING]
    assert "cid=cat-0ld00000-1" in (findings[0].broker_value or "")
    assert findings[0].reason == "an order of another catalyst database (0ld00000), ended: nothing of ours at stake"


def test_without_our_own_instance_id_no_order_is_taken_for_another_daemons():
    findings = run(LocalView(), BrokerView(orders=(border("b-8", "new", "sell", cid="cat-0th3r000-5", type="limit"),)))
    assert kinds(findings) == [T.ORPHAN_ORDER]


def test_an_unpaired_stop_row_matches_the_leg_of_its_take_profits_broker_order():
    # Acknowledged without its leg (a look-up reads un-nested), the stop row has no broker id, and Alpaca made up the
    # leg's client_order_id. Its fill was no one's: the position it closed an unexplained phantom, a halt.
    rows = (order(1, "filled", "b-1", "entry", "buy", filled="100", position_id=3),
            order(5, "accepted", "b-tp", "take_profit", "sell", position_id=3),
            order(6, "created", None, "stop_loss", "sell", position_id=3))
    broker = BrokerView(orders=(border(status="filled", filled="100"),
                                border("b-tp", "canceled", "sell", cid="cat-x-5", type="limit"),
                                border("b-sl", "filled", "sell", filled="100", cid="made-up", type="stop", parent="b-tp")),
                        fills=(BrokerFill("b-1", D(100), D(100), D("150"), OLD),
                               BrokerFill("b-sl", D(100), D(100), D("147"), OLD)))
    findings = run(LocalView(orders=rows, positions=(position(),),
                             execution_keys=frozenset({execution_key("b-1", D(100))})), broker)
    by_kind = {f.type: f for f in findings}
    assert by_kind[T.OUTCOME_UNKNOWN].order_id == 6 and by_kind[T.OUTCOME_UNKNOWN].broker_ids == ("b-sl",)
    assert by_kind[T.MISSING_FILL].broker_ids == ("b-sl",)
    assert T.PHANTOM_POSITION not in by_kind and T.ORPHAN_ORDER not in by_kind
    assert all(f.policy is not Policy.HALT for f in findings)


def late_shares_beside_an_open_position(exit_status: str | None) -> tuple[LocalView, BrokerView]:
    """Position 7 (closed): entry 100, its stop sold 60, its other 40 entry shares recorded after it closed, and
    `exit_status` its own market exit for them (None: none). Position 8 (open, opened after 7 closed): 100 under
    its stop. The broker holds 140."""
    exits = (order(3, exit_status, "b-3", "flatten", "sell", qty="40", position_id=7),) if exit_status else ()
    local = LocalView(
        orders=(order(1, "filled", "b-1", qty="100", filled="100", position_id=7),
                order(2, "filled", "b-2", "stop_loss", "sell", qty="60", filled="60", position_id=7), *exits,
                order(4, "filled", "b-4", qty="100", filled="100", position_id=8),
                order(5, "accepted", "b-5", "stop_loss", "sell", qty="100", position_id=8)),
        positions=(position("100", position_id=8),),
        execution_keys=frozenset({execution_key("b-1", D(100)), execution_key("b-2", D(60)),
                                  execution_key("b-4", D(100))}),
        closed_holding=(position("40", position_id=7),))
    broker_exits = (border("b-3", exit_status, "sell", "40", cid="cat-x-3"),) if exit_status else ()
    broker = BrokerView(
        orders=(border("b-1", "filled", qty="100", filled="100", cid="cat-x-1"),
                border("b-2", "filled", "sell", "60", "60", cid="cat-x-2", type="stop"), *broker_exits,
                border("b-4", "filled", qty="100", filled="100", cid="cat-x-4"),
                stop("100", broker_id="b-5", cid="cat-x-5")),
        positions=(BrokerPosition("AAPL", "long", D(140)),),
        fills=(BrokerFill("b-1", D(100), D(100), D("50"), OLD), BrokerFill("b-2", D(60), D(60), D("48"), OLD),
               BrokerFill("b-4", D(100), D(100), D("50"), OLD)))
    return local, broker


def test_late_shares_being_sold_by_their_own_exit_beside_an_open_position_of_the_symbol_do_not_halt():
    """Found by a review: the exemption held only with no open position in the symbol, so a position opened after
    the closed one made the broker's 140 a quantity mismatch, and entries halted until an operator resumed."""
    assert run(*late_shares_beside_an_open_position("accepted")) == []


def test_late_shares_left_unsold_beside_an_open_position_of_the_symbol_are_rebuilt_to_sell_not_halted():
    (finding,) = run(*late_shares_beside_an_open_position(None))
    assert (finding.type, finding.position_id, finding.broker_value) == (T.ORPHAN_POSITION, 7, "40")
    assert finding.policy is not Policy.HALT
    assert "closed position #p-7 recorded after it closed: rebuilt to sell them" in finding.reason


def test_shares_beyond_an_open_position_that_are_not_one_closed_positions_late_shares_still_halt():
    local, broker = late_shares_beside_an_open_position("accepted")
    broker = BrokerView(orders=broker.orders, positions=(BrokerPosition("AAPL", "long", D(150)),), fills=broker.fills)
    findings = run(local, broker)
    assert [(f.type, f.policy) for f in findings] == [(T.POSITION_QTY_MISMATCH, Policy.HALT)]


@pytest.mark.parametrize("exit_status", ["accepted", None])
def test_an_open_positions_missing_stop_is_found_beside_late_shares_of_a_closed_one(exit_status):
    """The late shares are not the open position's: its own stop, cancelled at the broker, is still missing (a
    review found the first version of the late-shares rule beside an open position reported nothing)."""
    local, broker = late_shares_beside_an_open_position(exit_status)
    local = LocalView(orders=tuple(order(5, "cancelled", "b-5", "stop_loss", "sell", qty="100", position_id=8)
                                   if o.order_id == 5 else o for o in local.orders),
                      positions=local.positions, execution_keys=local.execution_keys,
                      closed_holding=local.closed_holding)
    broker = BrokerView(orders=tuple(border("b-5", "canceled", "sell", "100", cid="cat-x-5", type="stop")
                                     if o.broker_id == "b-5" else o for o in broker.orders),
                        positions=broker.positions, fills=broker.fills)
    missing = [f for f in run(local, broker) if f.type is T.MISSING_PROTECTION]
    assert [(f.position_id, f.db_value, f.broker_value) for f in missing] == [(8, "100", "0")]


def late_shares_under_their_own_oco_beside_an_open_position(open_stop_qty: str) -> tuple[LocalView, BrokerView]:
    """Closed position 7's market exit for its 40 late shares expired, and its rebuilt actor protected them with an
    OCO of its own (rows under position 7), beside open position 8 whose stop covers `open_stop_qty`."""
    local, broker = late_shares_beside_an_open_position("expired")
    local = LocalView(orders=(*(order(5, "accepted", "b-5", "stop_loss", "sell", qty=open_stop_qty, position_id=8)
                                if o.order_id == 5 else o for o in local.orders),
                              order(20, "accepted", "b-20", "take_profit", "sell", qty="40", position_id=7),
                              order(21, "accepted", "b-21", "stop_loss", "sell", qty="40", position_id=7)),
                      positions=local.positions, execution_keys=local.execution_keys,
                      closed_holding=local.closed_holding)
    broker = BrokerView(orders=(*(border("b-5", "held", "sell", open_stop_qty, cid="cat-x-5", type="stop")
                                  if o.broker_id == "b-5" else o for o in broker.orders),
                                border("b-20", "new", "sell", "40", cid="cat-x-20", type="limit"),
                                border("b-21", "held", "sell", "40", cid="cat-x-21", type="stop", parent="b-20")),
                        positions=broker.positions, fills=broker.fills)
    return local, broker


@pytest.mark.parametrize(("open_stop_qty", "expected"), [("100", []), ("60", [(8, "100", "60")])])
def test_a_closed_positions_own_stop_over_its_late_shares_is_not_counted_for_the_open_position(
        open_stop_qty, expected):
    """Counted, it made a fully protected open position look over-protected (140 of 100), and one 40 short look
    covered (a review)."""
    findings = run(*late_shares_under_their_own_oco_beside_an_open_position(open_stop_qty))
    assert [f for f in findings if f.type is T.EXCESS_PROTECTION] == []
    assert [(f.position_id, f.db_value, f.broker_value) for f in findings
            if f.type is T.MISSING_PROTECTION] == expected


def late_short_shares_beside_an_open_position(open_side: str) -> tuple[LocalView, BrokerView]:
    """Position 7 (closed short): sold 100 short, its stop bought 60 back, its other 40 sold-short shares recorded
    after it closed. Position 8 (`open_side`, opened after): 100, with no stop at the broker."""
    entry_side, held = ("buy", BrokerPosition("AAPL", "long", D(60))) if open_side == "long" else \
        ("sell", BrokerPosition("AAPL", "short", D(140)))
    local = LocalView(
        orders=(order(1, "filled", "b-1", "entry", "sell", qty="100", filled="100", position_id=7),
                order(2, "filled", "b-2", "stop_loss", "buy", qty="60", filled="60", position_id=7),
                order(4, "filled", "b-4", "entry", entry_side, qty="100", filled="100", position_id=8)),
        positions=(position("100", position_id=8, side=open_side),),
        execution_keys=frozenset({execution_key("b-1", D(100)), execution_key("b-2", D(60)),
                                  execution_key("b-4", D(100))}),
        closed_holding=(position("40", position_id=7, side="short"),))
    broker = BrokerView(
        orders=(border("b-1", "filled", "sell", qty="100", filled="100", cid="cat-x-1"),
                border("b-2", "filled", "buy", "60", "60", cid="cat-x-2", type="stop"),
                border("b-4", "filled", entry_side, qty="100", filled="100", cid="cat-x-4")),
        positions=(held,),
        fills=(BrokerFill("b-1", D(100), D(100), D("50"), OLD), BrokerFill("b-2", D(60), D(60), D("52"), OLD),
               BrokerFill("b-4", D(100), D(100), D("50"), OLD)))
    return local, broker


@pytest.mark.parametrize("open_side", ["long", "short"])
def test_an_open_positions_missing_stop_beside_late_short_shares_of_a_closed_short_is_reported(open_side):
    """Beside an open long the broker nets them: 100 long and the closed short's 40 late shares show as one long of
    60. Taken off unsigned (60 - 40), the open position's quantity looked uncertain and its protection was not
    judged (a review)."""
    findings = run(*late_short_shares_beside_an_open_position(open_side))
    assert [(f.type, f.position_id) for f in findings if f.type is T.ORPHAN_POSITION] == [(T.ORPHAN_POSITION, 7)]
    assert [(f.position_id, f.db_value, f.broker_value) for f in findings
            if f.type is T.MISSING_PROTECTION] == [(8, "100", "0")]


def test_closed_positions_stop_leg_without_its_broker_id_is_still_not_counted_for_the_open_position():
    """Its row without the leg's broker id yet (acknowledged un-nested: Alpaca makes up the leg's client id), the
    leg was matched to no row and its 40 covered the open position's 40 short of a stop (a review)."""
    local, broker = late_shares_under_their_own_oco_beside_an_open_position("60")
    local = LocalView(orders=tuple(order(21, "accepted", None, "stop_loss", "sell", qty="40", position_id=7)
                                   if o.order_id == 21 else o for o in local.orders),
                      positions=local.positions, execution_keys=local.execution_keys,
                      closed_holding=local.closed_holding)
    broker = BrokerView(orders=tuple(border("b-21", "held", "sell", "40", cid="made-up-by-alpaca", type="stop",
                                            parent="b-20") if o.broker_id == "b-21" else o for o in broker.orders),
                        positions=broker.positions, fills=broker.fills)
    findings = run(local, broker)
    assert [(f.position_id, f.db_value, f.broker_value) for f in findings
            if f.type is T.MISSING_PROTECTION] == [(8, "100", "60")]


def closed_3_with_300_late(orders=(), broker_orders=(), fills=(), keys=(), holds=("long", "300"), still_held="300"):
    """Closed position 3: its entry bought 500, its stop sold the 200 recorded, the other 300 recorded after the
    close (late entry shares). `orders`, `broker_orders`, `fills` and execution `keys` are added to that; the broker
    holds `holds`, our records `still_held` of the late shares. (local, broker)"""
    local = LocalView(orders=(order(status="filled", qty="500", filled="500", position_id=3),
                              order(2, "filled", "b-2", "stop_loss", "sell", "200", "200", position_id=3), *orders),
                      execution_keys=frozenset({execution_key("b-1", D(500)), execution_key("b-2", D(200)), *keys}),
                      closed_holding=(position(still_held),))
    broker = BrokerView(orders=(border(status="filled", qty="500", filled="500"),
                                border("b-2", "filled", "sell", "200", "200", cid="cat-x-2", type="stop"),
                                *broker_orders),
                        positions=(BrokerPosition("AAPL", holds[0], D(holds[1])),),
                        fills=(BrokerFill("b-1", D(500), D(500), D("50"), OLD),
                               BrokerFill("b-2", D(200), D(200), D("48"), OLD), *fills))
    return local, broker


def test_late_shares_are_judged_without_another_closed_positions_exit_whose_entry_the_listing_misses():
    # From a review: Thursday's 100, carried over, flattened at Friday's open (its exit in the doctor's window, its
    # entry before it); Friday's entry bought 500, its stop sold the 200 recorded, the other 300 recorded after the
    # close. All of ours in the window add up to 200, not the broker's 300: it halted instead of selling them.
    local, broker = closed_3_with_300_late(
        orders=(order(4, "filled", "b-4", "flatten", "sell", "100", "100", position_id=9),),
        broker_orders=(border("b-4", "filled", "sell", "100", "100", cid="cat-x-4"),),
        fills=(BrokerFill("b-4", D(100), D(100), D("51"), OLD),), keys=(execution_key("b-4", D(100)),))

    assert [f.action for f in run(local, broker) if f.type is T.ORPHAN_POSITION] == ["rebuild and sell"]


def test_late_shares_whose_sale_fills_with_its_event_lost_are_the_missing_fill_not_a_halt():
    # From a review: closed position 3 holds 300 late shares; their sale, queued overnight, filled 100 at the open
    # with its event lost. The broker holds 200: the missing fill explains it, as it does beside an open position.
    local, broker = closed_3_with_300_late(
        orders=(order(4, "accepted", "b-4", "flatten", "sell", "300", "0", position_id=3),),
        broker_orders=(border("b-4", "partially_filled", "sell", "300", "100", cid="cat-x-4"),),
        fills=(BrokerFill("b-4", D(100), D(100), D("51"), OLD),), holds=("long", "200"))

    found = run(local, broker)
    assert T.MISSING_FILL in kinds(found)
    assert [f.action for f in found if f.type is T.ORPHAN_POSITION] == []


@pytest.mark.parametrize("second", ["stop_loss", "flatten"], ids=["sale-and-stop", "two-sales"])
def test_late_shares_sold_twice_leaving_the_broker_short_halt(second):
    # From a review: netted of the fills we lack, late shares whose sale and stop (or two sales) both filled with
    # their events lost, the account now short 300, looked like the late 300: settled, or rebuilt to sell a third
    # time, where they must halt.
    local, broker = closed_3_with_300_late(
        orders=(order(4, "accepted", "b-4", "flatten", "sell", "300", "0", position_id=3),
                order(5, "accepted", "b-5", second, "sell", "300", "0", position_id=3)),
        broker_orders=(border("b-4", "filled", "sell", "300", "300", cid="cat-x-4"),
                       border("b-5", "filled", "sell", "300", "300", cid="cat-x-5",
                              type="stop" if second == "stop_loss" else "market")),
        fills=(BrokerFill("b-4", D(300), D(300), D("51"), OLD), BrokerFill("b-5", D(300), D(300), D("47"), OLD)),
        holds=("short", "300"))

    assert [f.action for f in run(local, broker) if f.type is T.ORPHAN_POSITION] == ["halt entries"]


# From a review of the late-shares judgement (each case's docstring says what it guards).
def late_40_beside_open_8(p8_stop_filled_unrecorded: str = "0", p8_entry_broker_filled: str = "100"):
    """Closed 7: entry 100, its stop sold 60, 40 late entry shares recorded after close, its own flatten for 40
    working. Open 8: 100 (entry recorded 100), its stop 100 working. Optionally: 8's stop filled N at the broker
    with its event lost, or 8's entry filled more at the broker than recorded."""
    sl_filled = D(p8_stop_filled_unrecorded)
    entry_filled = D(p8_entry_broker_filled)
    local = LocalView(
        orders=(order(1, "filled", "b-1", qty="100", filled="100", position_id=7),
                order(2, "filled", "b-2", "stop_loss", "sell", qty="60", filled="60", position_id=7),
                order(3, "accepted", "b-3", "flatten", "sell", qty="40", position_id=7),
                order(4, "partial_fill" if entry_filled > 100 else "filled", "b-4", qty=str(max(entry_filled, D(100))),
                      filled="100", position_id=8),
                order(5, "accepted", "b-5", "stop_loss", "sell", qty="100", position_id=8)),
        positions=(position("100", position_id=8),),
        execution_keys=frozenset({execution_key("b-1", D(100)), execution_key("b-2", D(60)),
                                  execution_key("b-4", D(100))}),
        closed_holding=(position("40", position_id=7),))
    fills = [BrokerFill("b-1", D(100), D(100), D("50"), OLD), BrokerFill("b-2", D(60), D(60), D("48"), OLD),
             BrokerFill("b-4", D(100), D(100), D("50"), OLD)]
    if entry_filled > 100:
        fills.append(BrokerFill("b-4", entry_filled, entry_filled - 100, D("50"), OLD))
    if sl_filled:
        fills.append(BrokerFill("b-5", sl_filled, sl_filled, D("47"), OLD))
    broker = BrokerView(
        orders=(border("b-1", "filled", qty="100", filled="100", cid="cat-x-1"),
                border("b-2", "filled", "sell", "60", "60", cid="cat-x-2", type="stop"),
                border("b-3", "accepted", "sell", "40", cid="cat-x-3"),
                border("b-4", "filled", qty=str(max(entry_filled, D(100))), filled=str(entry_filled), cid="cat-x-4"),
                border("b-5", "filled" if sl_filled == 100 else "held", "sell", "100", str(sl_filled),
                       cid="cat-x-5", type="stop")),
        positions=(BrokerPosition("AAPL", "long", D(40) + entry_filled - sl_filled),),
        fills=tuple(fills))
    return local, broker


def test_late_shares_beside_an_open_position_whose_stop_filled_unrecorded_are_settled_not_halted():
    """A review: late 40 (their sale working) beside open 8 whose stop filled 100 with its event lost; the broker's 40
    are the late 40, the missing fill explains the rest: it is healed, never a halt."""
    findings = run(*late_40_beside_open_8(p8_stop_filled_unrecorded="100"))
    assert [f for f in findings if f.policy is Policy.HALT] == []


def test_late_shares_beside_an_open_position_whose_entry_filled_more_unrecorded_are_settled_not_halted():
    """Open 8's entry (for 150) filled 150 at the broker, 100 recorded; late 40 selling. Broker 190 = 150 + 40."""
    findings = run(*late_40_beside_open_8(p8_entry_broker_filled="150"))
    assert [f for f in findings if f.policy is Policy.HALT] == []


def late_300_sold_twice(new_entry_filled: str, open_beside: bool = False):
    """Closed 3: entry 500, its stop sold 200, 300 late shares; its flatten (300) AND its stop (300) both filled at
    the broker with their events lost: the late position is oversold by 300. Beside it, our entry 6 (no position
    yet, nothing recorded) filled `new_entry_filled` at the broker with its event lost too."""
    n = D(new_entry_filled)
    return closed_3_with_300_late(
        orders=(order(4, "accepted", "b-4", "flatten", "sell", "300", "0", position_id=3),
                order(5, "accepted", "b-5", "stop_loss", "sell", "300", "0", position_id=3),
                order(6, "accepted", "b-6", "entry", "buy", new_entry_filled, "0")),
        broker_orders=(border("b-4", "filled", "sell", "300", "300", cid="cat-x-4"),
                       border("b-5", "filled", "sell", "300", "300", cid="cat-x-5", type="stop"),
                       border("b-6", "filled", "buy", new_entry_filled, new_entry_filled, cid="cat-x-6")),
        fills=(BrokerFill("b-4", D(300), D(300), D("51"), OLD), BrokerFill("b-5", D(300), D(300), D("47"), OLD),
               BrokerFill("b-6", n, n, D("52"), OLD)),
        holds=("long", str(D(300) - D(600) + n)))


def test_late_shares_sold_twice_halt_even_when_another_entrys_missing_fill_makes_up_the_count():
    """The eighth review's double sale (late 300 sold twice, 300 short of them), plus entry 6 filling 400 unrecorded:
    broker long 100. Net of missing fills the broker's 100 looks like 'the late 300 with 200 of them sold'."""
    findings = run(*late_300_sold_twice("400"))
    assert any(f.policy is Policy.HALT for f in findings), "double sale of late shares not halted"


def test_late_shares_beside_a_new_entry_filled_unrecorded_are_settled_not_halted():
    """Clean: late 300 (its sale working, not filled) and our new entry 6 filled 100 with its event lost; broker 400.
    Every share is explained by our own fills."""
    local, broker = closed_3_with_300_late(
        orders=(order(4, "accepted", "b-4", "flatten", "sell", "300", "0", position_id=3),
                order(6, "accepted", "b-6", "entry", "buy", "100", "0")),
        broker_orders=(border("b-4", "accepted", "sell", "300", "0", cid="cat-x-4"),
                       border("b-6", "filled", "buy", "100", "100", cid="cat-x-6")),
        fills=(BrokerFill("b-6", D(100), D(100), D("52"), OLD),), holds=("long", "400"))

    findings = run(local, broker)
    assert [f for f in findings if f.policy is Policy.HALT] == []


def test_late_shares_with_both_their_sale_and_their_stop_working_are_reported():
    """Late 300 with a flatten for 300 AND a stop for 300 working at the broker (600 of exits for 300 shares: the
    state whose double fill the eighth review found): not in hand, reported."""
    local, broker = closed_3_with_300_late(
        orders=(order(4, "accepted", "b-4", "flatten", "sell", "300", "0", position_id=3),
                order(5, "accepted", "b-5", "stop_loss", "sell", "300", "0", position_id=3)),
        broker_orders=(border("b-4", "accepted", "sell", "300", "0", cid="cat-x-4"),
                       stop("300", "new", "b-5", "cat-x-5")))
    findings = run(local, broker)
    assert findings != [], "600 shares of exits working for 300 late shares: nothing reported"


def test_late_shares_whose_stop_the_broker_cancelled_are_not_in_hand_by_their_stale_row():
    """Late 300 kept under their own stop; the broker cancelled it (event lost; the row still `accepted`). The
    shares are bare: judged as the broker has the stop, they get a finding this pass."""
    local, broker = closed_3_with_300_late(
        orders=(order(5, "accepted", "b-5", "stop_loss", "sell", "300", "0", position_id=3),),
        broker_orders=(stop("300", "canceled", "b-5", "cat-x-5"),))
    findings = run(local, broker)
    assert T.ORPHAN_POSITION in [f.type for f in findings] or T.MISSING_PROTECTION in [f.type for f in findings]


# From a tenth review of the late-shares judgement.
@pytest.mark.parametrize("sale_working", [True, False], ids=["their-sale-working", "no-sale"])
def test_an_open_position_sold_twice_unrecorded_beside_late_shares_halts(sale_working):
    """Closed 7: 40 late shares, with or without their flatten for 40 working. Open 8: 100, its stop AND its flatten
    both sold 100 at the broker, events lost. The broker is SHORT 60 (7's sale of 40 would take it to short 100): a
    halt, not the late shares settled or rebuilt to sell (the first version judging late shares with their own
    missing fills only halted nothing)."""
    sale = (order(3, "accepted", "b-3", "flatten", "sell", qty="40", position_id=7),) if sale_working else ()
    sale_at_broker = (border("b-3", "accepted", "sell", "40", cid="cat-x-3"),) if sale_working else ()
    local = LocalView(
        orders=(order(1, "filled", "b-1", qty="100", filled="100", position_id=7),
                order(2, "filled", "b-2", "stop_loss", "sell", qty="60", filled="60", position_id=7), *sale,
                order(4, "filled", "b-4", qty="100", filled="100", position_id=8),
                order(5, "accepted", "b-5", "stop_loss", "sell", qty="100", position_id=8),
                order(6, "accepted", "b-6", "flatten", "sell", qty="100", position_id=8)),
        positions=(position("100", position_id=8),),
        execution_keys=frozenset({execution_key("b-1", D(100)), execution_key("b-2", D(60)),
                                  execution_key("b-4", D(100))}),
        closed_holding=(position("40", position_id=7),))
    broker = BrokerView(
        orders=(border("b-1", "filled", qty="100", filled="100", cid="cat-x-1"),
                border("b-2", "filled", "sell", "60", "60", cid="cat-x-2", type="stop"), *sale_at_broker,
                border("b-4", "filled", qty="100", filled="100", cid="cat-x-4"),
                border("b-5", "filled", "sell", "100", "100", cid="cat-x-5", type="stop"),
                border("b-6", "filled", "sell", "100", "100", cid="cat-x-6")),
        positions=(BrokerPosition("AAPL", "short", D(60)),),
        fills=(BrokerFill("b-1", D(100), D(100), D("50"), OLD), BrokerFill("b-2", D(60), D(60), D("48"), OLD),
               BrokerFill("b-4", D(100), D(100), D("50"), OLD), BrokerFill("b-5", D(100), D(100), D("47"), OLD),
               BrokerFill("b-6", D(100), D(100), D("47"), OLD)))
    findings = run(local, broker)
    assert any(f.policy is Policy.HALT for f in findings), "account short 60: no halt"


def test_late_shares_whose_sale_works_at_the_broker_with_its_submit_answer_lost_are_in_hand():
    """Late 300; their flatten (row o-4, outcome unknown, no broker id yet) is working at the broker (found by cid)."""
    local, broker = closed_3_with_300_late(
        orders=(order(4, "created", None, "flatten", "sell", "300", "0", position_id=3, unknown=True),),
        broker_orders=(border("b-4", "accepted", "sell", "300", "0", cid="cat-x-4"),))
    findings = run(local, broker)
    assert [f.action for f in findings if f.type is T.ORPHAN_POSITION] == []


def test_late_shares_under_an_oco_whose_stop_row_lacks_its_broker_id_are_in_hand():
    """Market closed: late 300 under their OCO (take-profit o-4 = b-4; stop leg b-5 `held`, nested under b-4, its row
    o-5 acknowledged without the leg's id). Paired with the leg as everywhere here (_pair_stop_legs): in hand."""
    local, broker = closed_3_with_300_late(
        orders=(order(4, "accepted", "b-4", "take_profit", "sell", "300", "0", position_id=3),
                order(5, "accepted", None, "stop_loss", "sell", "300", "0", position_id=3)),
        broker_orders=(border("b-4", "new", "sell", "300", "0", cid="cat-x-4", type="limit"),
                       border("b-5", "held", "sell", "300", "0", cid="made-up", type="stop", parent="b-4")))
    findings = run(local, broker)
    assert [f.action for f in findings if f.type is T.ORPHAN_POSITION] == []


def test_short_late_shares_with_their_buy_to_cover_working_are_in_hand():
    local = LocalView(orders=(order(1, "filled", "b-1", side="sell", qty="500", filled="500", position_id=3),
                              order(2, "filled", "b-2", "stop_loss", "buy", "200", "200", position_id=3),
                              order(4, "partial_fill", "b-4", "flatten", "buy", "300", "100", position_id=3)),
                      execution_keys=frozenset({execution_key("b-1", D(500)), execution_key("b-2", D(200)),
                                                execution_key("b-4", D(100))}),
                      closed_holding=(position("200", side="short"),))
    broker = BrokerView(orders=(border(status="filled", side="sell", qty="500", filled="500"),
                                border("b-2", "filled", "buy", "200", "200", cid="cat-x-2", type="stop"),
                                border("b-4", "partially_filled", "buy", "300", "150", cid="cat-x-4")),
                        positions=(BrokerPosition("AAPL", "short", D(150)),),
                        fills=(BrokerFill("b-1", D(500), D(500), D("50"), OLD),
                               BrokerFill("b-2", D(200), D(200), D("48"), OLD),
                               BrokerFill("b-4", D(100), D(100), D("48"), OLD),
                               BrokerFill("b-4", D(150), D(50), D("48"), OLD)))
    findings = run(local, broker)
    assert [f for f in findings if f.type is T.ORPHAN_POSITION or f.policy is Policy.HALT] == []


def test_late_shares_under_an_oco_whose_take_profit_filled_in_part_are_in_hand():
    """Late 300 under their OCO; its take-profit (b-4) sold 100 of them, recorded, the broker holding 200 and the stop
    leg resized to the 200 the take-profit left, as the emulator does (whether Alpaca resizes it is not verified):
    the pair protects exactly the late shares left, in hand, neither rebuilt to sell them again nor a halt."""
    local, broker = closed_3_with_300_late(
        orders=(order(4, "partial_fill", "b-4", "take_profit", "sell", "300", "100", position_id=3),
                order(5, "accepted", "b-5", "stop_loss", "sell", "300", "0", position_id=3)),
        broker_orders=(border("b-4", "partially_filled", "sell", "300", "100", cid="cat-x-4", type="limit"),
                       border("b-5", "held", "sell", "200", "0", cid="made-up", type="stop", parent="b-4")),
        fills=(BrokerFill("b-4", D(100), D(100), D("52"), OLD),), keys=(execution_key("b-4", D(100)),),
        holds=("long", "200"), still_held="200")
    findings = run(local, broker)
    assert [f.action for f in findings if f.type is T.ORPHAN_POSITION or f.policy is Policy.HALT] == []


# Alpaca's positions can lag its orders for several seconds right after a fill (ALPACA.md §7). A review fed both lags
# through reconcile: a fresh entry fill read "database 100, broker 0" (PHANTOM_POSITION) and a fresh exit "broker holds
# 100 not explained by its fills" (ORPHAN_POSITION), each halting entries.
def entry_filled_at(at: datetime) -> tuple[LocalOrder, BrokerOrder]:
    return order(status="filled", filled="100", position_id=3, at=at), border(status="filled", filled="100")


def exit_filled_at(at: datetime) -> tuple[LocalOrder, BrokerOrder]:
    return (order(2, "filled", "b-2", "exit", "sell", filled="100", position_id=3, at=at),
            border("b-2", "filled", "sell", filled="100", cid="cat-x-2"))


def test_a_fresh_entry_fill_the_positions_list_does_not_show_yet_is_no_finding():
    entry, at_broker = entry_filled_at(NOW - timedelta(seconds=3))
    local = LocalView(orders=(entry,), positions=(position(),),
                      execution_keys=frozenset({execution_key("b-1", D(100))}))

    found = kinds(run(local, BrokerView(orders=(at_broker,))))
    assert T.PHANTOM_POSITION not in found and T.POSITION_QTY_MISMATCH not in found


def test_an_entry_fill_the_positions_list_still_does_not_show_once_settled_halts():
    entry, at_broker = entry_filled_at(OLD)
    local = LocalView(orders=(entry,), positions=(position(),),
                      execution_keys=frozenset({execution_key("b-1", D(100))}))

    (finding,) = [f for f in run(local, BrokerView(orders=(at_broker,))) if f.type is T.PHANTOM_POSITION]
    assert finding.policy is Policy.HALT


@pytest.mark.parametrize("exit_at, halts", [(NOW - timedelta(seconds=3), False), (OLD, True)], ids=["fresh", "settled"])
def test_a_sale_the_positions_list_still_shows_halts_only_once_settled(exit_at, halts):
    entry, entry_at_broker = entry_filled_at(exit_at)
    sale, sale_at_broker = exit_filled_at(exit_at)
    local = LocalView(orders=(entry, sale),
                      execution_keys=frozenset({execution_key("b-1", D(100)), execution_key("b-2", D(100))}))
    broker = BrokerView(orders=(entry_at_broker, sale_at_broker), positions=(BrokerPosition("AAPL", "long", D(100)),))

    orphans = [f for f in run(local, broker) if f.type is T.ORPHAN_POSITION]
    assert bool(orphans) is halts and all(f.policy is Policy.HALT for f in orphans)


def test_shares_at_the_broker_no_order_of_ours_ever_traded_are_judged_at_once():
    # Not a lag: no order of ours in the symbol, so nothing says the positions list is behind.
    (finding,) = run(LocalView(), BrokerView(positions=(BrokerPosition("AAPL", "long", D(100)),)))
    assert finding.type is T.ORPHAN_POSITION


@pytest.mark.parametrize("filled_at, halts", [(NOW - timedelta(seconds=3), False), (OLD, True)], ids=["fresh", "settled"])
def test_a_stop_fill_whose_event_was_lost_judged_by_the_brokers_fill_time_not_the_rows(filled_at, halts):
    # From a review (an emulator whose positions lag 3 s): the stop filled a moment ago, its event lost, so its row
    # still says `accepted` as it did long before; the positions list still shows the 100 sold. Judged by the row's
    # time, the lag halted entries ("database 0, broker 100, not explained by broker fills") for a whole pass.
    local = LocalView(orders=(order(status="filled", filled="100", position_id=3, at=OLD),
                              order(3, "accepted", "b-sl", "stop_loss", "sell", position_id=3, at=OLD)),
                      positions=(position(),), execution_keys=frozenset({execution_key("b-1", D(100))}))
    broker = BrokerView(orders=(border(status="filled", filled="100"),
                                border("b-sl", "filled", "sell", filled="100", cid="cat-x-3", type="stop")),
                        positions=(BrokerPosition("AAPL", "long", D(100)),),
                        fills=(BrokerFill("b-sl", D(100), D(100), D("48"), filled_at),))

    found = kinds(run(local, broker))
    assert T.MISSING_FILL in found
    assert (T.POSITION_QTY_MISMATCH in found or T.PHANTOM_POSITION in found) is halts
