"""Order machine (spec §2.3), Alpaca status map (§2.4) and the catch-up rule for broker reports."""

from __future__ import annotations

import itertools
from decimal import Decimal

import pytest
from alpaca.trading.enums import OrderStatus as AlpacaOrderStatus
from hypothesis import given, settings
from hypothesis import strategies as st

from catalyst.domain.errors import IllegalTransition, InvalidQuantity, UnknownBrokerStatus
from catalyst.domain.orders import (
    ALPACA_STATUS_MAP,
    ORDER_MACHINE,
    ORDER_TRANSITIONS,
    CatchUpKind,
    OrderStatus,
    plan_catch_up,
    replacement_chain,
    status_from_broker,
)

# Written out from the spec text (§2.3), not read from the table under test.
SPEC_PAIRS = {
    ("created", "submitted"), ("created", "cancelled"), ("created", "rejected"),
    ("submitted", "accepted"), ("submitted", "rejected"), ("submitted", "cancelled"),
    ("accepted", "partial_fill"), ("accepted", "filled"), ("accepted", "cancelled"),
    ("accepted", "expired"), ("accepted", "replaced"),
    ("partial_fill", "partial_fill"), ("partial_fill", "filled"), ("partial_fill", "cancelled"),
}
# The few pairs real Alpaca needs beyond the spec.
REAL_WORLD_PAIRS = {
    ("accepted", "rejected"),  # rejected at routing after Alpaca's `accepted`
    ("partial_fill", "expired"),  # a partially filled DAY order expires at the close
    ("partial_fill", "replaced"),  # a partially filled order can be replaced
}
LEGAL_ORDER_PAIRS = SPEC_PAIRS | REAL_WORLD_PAIRS
ORDER_STATES = ["created", "submitted", "accepted", "partial_fill", "filled",
                "cancelled", "rejected", "expired", "replaced"]
TERMINAL_ORDER_STATES = {"filled", "cancelled", "rejected", "expired", "replaced"}  # §2.2

ALPACA_STATUSES = [
    "new", "partially_filled", "filled", "done_for_day", "canceled", "expired", "replaced",
    "pending_cancel", "pending_replace", "pending_review", "accepted", "pending_new",
    "accepted_for_bidding", "stopped", "rejected", "suspended", "calculated", "held",
]


def test_order_states_are_exactly_the_spec_states():
    assert [str(status) for status in OrderStatus] == ORDER_STATES


@pytest.mark.parametrize(("current", "target"), list(itertools.product(ORDER_STATES, repeat=2)))
def test_every_order_state_pair_is_legal_exactly_when_the_spec_says(current, target):
    legal = (current, target) in LEGAL_ORDER_PAIRS

    assert ORDER_MACHINE.can(OrderStatus(current), OrderStatus(target)) is legal
    if not legal:
        with pytest.raises(IllegalTransition, match=f"order transition ord-1: {current} -> {target}"):
            ORDER_MACHINE.check(OrderStatus(current), OrderStatus(target), subject="ord-1")


def test_order_table_contains_every_spec_pair():
    table_pairs = {(str(a), str(b)) for a, targets in ORDER_TRANSITIONS.items() for b in targets}

    assert SPEC_PAIRS <= table_pairs


def test_terminal_order_states_are_those_of_the_spec():
    assert {str(status) for status in ORDER_MACHINE.terminal} == TERMINAL_ORDER_STATES


# --- Alpaca status map -------------------------------------------------------------------------


def test_the_map_covers_exactly_the_statuses_alpaca_py_knows():
    assert sorted(ALPACA_STATUSES) == sorted(status.value for status in AlpacaOrderStatus)
    assert sorted(ALPACA_STATUS_MAP) == sorted(ALPACA_STATUSES)


@pytest.mark.parametrize("alpaca_status", ALPACA_STATUSES)
@pytest.mark.parametrize("filled", ["0", "4", "10"])
def test_every_alpaca_status_maps_to_a_local_status(alpaca_status, filled):
    assert isinstance(status_from_broker(alpaca_status, Decimal(filled), Decimal(10)), OrderStatus)


@pytest.mark.parametrize(
    ("alpaca_status", "expected"),
    [
        ("new", "submitted"), ("pending_new", "submitted"), ("accepted", "accepted"),
        ("pending_cancel", "accepted"), ("partially_filled", "partial_fill"), ("filled", "filled"),
        ("canceled", "cancelled"), ("expired", "expired"), ("rejected", "rejected"), ("replaced", "replaced"),
    ],
)
def test_spec_rows_map_as_the_spec_says(alpaca_status, expected):
    assert status_from_broker(alpaca_status, Decimal(0), Decimal(10)) == expected


@pytest.mark.parametrize(
    ("alpaca_status", "unfilled", "partly"),
    [
        ("pending_review", "submitted", "submitted"),  # not yet accepted by Alpaca
        ("accepted_for_bidding", "accepted", "accepted"),  # waiting for the auction
        ("held", "accepted", "accepted"),  # a bracket/OCO leg parked at the broker, cancellable
        ("pending_replace", "accepted", "partial_fill"),  # still working until the replacement lands
        ("suspended", "accepted", "partial_fill"),  # not tradable for now, not dead
    ],
)
def test_statuses_beyond_the_spec_map_as_decided(alpaca_status, unfilled, partly):
    assert status_from_broker(alpaca_status, Decimal(0), Decimal(10)) == unfilled
    assert status_from_broker(alpaca_status, Decimal(4), Decimal(10)) == partly


@pytest.mark.parametrize("alpaca_status", ["done_for_day", "calculated", "stopped"])
def test_fill_dependent_statuses_follow_the_fill(alpaca_status):
    assert status_from_broker(alpaca_status, Decimal(0), Decimal(10)) == OrderStatus.ACCEPTED
    assert status_from_broker(alpaca_status, Decimal("2.5"), Decimal(10)) == OrderStatus.PARTIAL_FILL
    assert status_from_broker(alpaca_status, Decimal(10), Decimal(10)) == OrderStatus.FILLED


def test_pending_cancel_after_some_fills_is_still_partially_filled_not_cancelled():
    assert status_from_broker("pending_cancel", Decimal(3), Decimal(10)) == OrderStatus.PARTIAL_FILL


def test_alpaca_py_enum_values_and_sloppy_spelling_are_understood():
    assert status_from_broker(AlpacaOrderStatus.CANCELED, Decimal(0), Decimal(1)) == OrderStatus.CANCELLED
    assert status_from_broker(" Filled ", Decimal(1), Decimal(1)) == OrderStatus.FILLED
    # The spec's table spells Alpaca's status with two l's.
    assert status_from_broker("cancelled", Decimal(0), Decimal(1)) == OrderStatus.CANCELLED


@pytest.mark.parametrize("nonsense", ["exploded", "", None, 7])
def test_an_unknown_broker_status_is_a_named_one_line_error(nonsense):
    with pytest.raises(UnknownBrokerStatus) as refused:
        status_from_broker(nonsense, Decimal(0), Decimal(1))

    assert str(refused.value) == f"unknown broker order status {nonsense!r}"


@pytest.mark.parametrize(("filled", "qty"), [(Decimal(11), Decimal(10)), (Decimal(-1), Decimal(10)), (0.5, Decimal(1))])
def test_impossible_fill_amounts_for_a_fill_dependent_status_are_refused(filled, qty):
    with pytest.raises(InvalidQuantity, match="done_for_day"):
        status_from_broker("done_for_day", filled, qty)


# --- catch-up ----------------------------------------------------------------------------------


def test_same_status_needs_nothing():
    plan = plan_catch_up(OrderStatus.PARTIAL_FILL, OrderStatus.PARTIAL_FILL)

    assert (plan.kind, plan.path) == (CatchUpKind.SAME, ())


def test_submitted_reported_filled_advances_through_accepted():
    plan = plan_catch_up(OrderStatus.SUBMITTED, OrderStatus.FILLED)

    assert plan.kind == CatchUpKind.ADVANCE
    assert plan.path == (OrderStatus.ACCEPTED, OrderStatus.FILLED)
    assert str(plan) == "advance: submitted -> accepted -> filled"


def test_created_reported_partially_filled_walks_every_step():
    plan = plan_catch_up(OrderStatus.CREATED, OrderStatus.PARTIAL_FILL)

    assert plan.path == (OrderStatus.SUBMITTED, OrderStatus.ACCEPTED, OrderStatus.PARTIAL_FILL)


def test_a_delayed_accepted_after_filled_is_stale():
    plan = plan_catch_up(OrderStatus.FILLED, OrderStatus.ACCEPTED)

    assert (plan.kind, plan.path) == (CatchUpKind.STALE, ())


def test_alpacas_new_after_accepted_is_stale_not_a_conflict():
    reported = status_from_broker("new", Decimal(0), Decimal(10))

    assert plan_catch_up(OrderStatus.ACCEPTED, reported).kind == CatchUpKind.STALE


def test_filled_locally_but_cancelled_at_the_broker_is_a_conflict():
    plan = plan_catch_up(OrderStatus.FILLED, OrderStatus.CANCELLED)

    assert (plan.kind, plan.path) == (CatchUpKind.CONFLICT, ())


def test_a_fill_that_beats_a_cancel_request_still_advances():
    during_cancel = status_from_broker("pending_cancel", Decimal(0), Decimal(10))

    plan = plan_catch_up(during_cancel, status_from_broker("filled", Decimal(10), Decimal(10)))

    assert (plan.kind, plan.path) == (CatchUpKind.ADVANCE, (OrderStatus.FILLED,))


def _reachable(start: str, goal: str) -> bool:
    """Reachability over the test's own pair list, independent of the machine under test."""
    seen, frontier = {start}, [start]
    while frontier:
        state = frontier.pop()
        for a, b in LEGAL_ORDER_PAIRS:
            if a == state and b not in seen:
                seen.add(b)
                frontier.append(b)
    return goal in seen and goal != start


@pytest.mark.parametrize(("current", "reported"), list(itertools.product(ORDER_STATES, repeat=2)))
def test_every_catch_up_verdict_follows_reachability(current, reported):
    if current == reported:
        expected = CatchUpKind.SAME
    elif _reachable(current, reported):
        expected = CatchUpKind.ADVANCE
    elif _reachable(reported, current):
        expected = CatchUpKind.STALE
    else:
        expected = CatchUpKind.CONFLICT

    assert plan_catch_up(OrderStatus(current), OrderStatus(reported)).kind == expected


broker_reports = st.lists(
    st.tuples(st.sampled_from(ALPACA_STATUSES), st.integers(min_value=0, max_value=10)), max_size=25
)


@settings(max_examples=2500, deadline=None)
@given(broker_reports)
def test_random_broker_reports_never_drive_an_order_through_an_illegal_step(reports):
    state = "created"
    for alpaca_status, filled in reports:
        reported = status_from_broker(alpaca_status, Decimal(filled), Decimal(10))
        before = state

        plan = plan_catch_up(OrderStatus(state), reported)

        for step in plan.path:
            assert (state, str(step)) in LEGAL_ORDER_PAIRS
            state = str(step)
        if plan.kind == CatchUpKind.ADVANCE:
            assert state == reported
        else:
            assert state == before and plan.path == ()
        if before in TERMINAL_ORDER_STATES:
            assert state == before
        assert plan.kind == CatchUpKind.SAME or reported != before


def test_a_replacement_chain_follows_each_replace_to_the_working_order_and_cannot_loop():
    assert replacement_chain(3, {}) == [3]
    assert replacement_chain(3, {3: 6, 6: 9, 2: 7}) == [3, 6, 9]
    assert replacement_chain(2, {3: 6, 6: 9, 2: 7}) == [2, 7]
    assert len(replacement_chain(3, {3: 6, 6: 3})) == 3  # a bad database's cycle ends, never hangs
