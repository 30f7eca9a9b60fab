"""Position machine (spec §3), quantity rules (§3.3), average prices and P&L, long and short."""

from __future__ import annotations

import itertools
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from catalyst.domain.errors import ExitExceedsPosition, IllegalTransition, InvalidQuantity
from catalyst.domain.positions import (
    POSITION_MACHINE,
    OrderSide,
    Position,
    PositionSide,
    PositionStatus,
    entry_side,
    exit_size,
    exits_from_fill,
    exit_side,
    held_at_broker,
    replay_fills,
)

D = Decimal

# From the spec diagram (§3.1) as read in positions.py: a never-filled position ends from pending.
LEGAL_POSITION_PAIRS = {
    ("pending", "open"), ("pending", "cancelled"), ("pending", "failed"),
    ("open", "closed"),
}
POSITION_STATES = ["pending", "open", "closed", "cancelled", "failed"]


@pytest.mark.parametrize(("current", "target"), list(itertools.product(POSITION_STATES, repeat=2)))
def test_every_position_state_pair_is_legal_exactly_when_the_spec_says(current, target):
    legal = (current, target) in LEGAL_POSITION_PAIRS

    assert POSITION_MACHINE.can(PositionStatus(current), PositionStatus(target)) is legal
    if not legal:
        with pytest.raises(IllegalTransition):
            POSITION_MACHINE.check(PositionStatus(current), PositionStatus(target))


def test_closed_cancelled_and_failed_are_terminal():
    assert {str(status) for status in POSITION_MACHINE.terminal} == {"closed", "cancelled", "failed"}


def test_entry_and_exit_sides_follow_the_position_side():
    assert (entry_side(PositionSide.LONG), exit_side(PositionSide.LONG)) == (OrderSide.BUY, OrderSide.SELL)
    assert (entry_side(PositionSide.SHORT), exit_side(PositionSide.SHORT)) == (OrderSide.SELL, OrderSide.BUY)


def test_spec_example_long_round_trip_realizes_505():
    position = Position("AAPL", PositionSide.LONG)

    position = position.apply_fill(OrderSide.BUY, D(100), D("149.95"))
    position = position.apply_fill(OrderSide.SELL, D(100), D("155.00"))

    assert position.status == PositionStatus.CLOSED
    assert position.quantity == 0
    assert position.realized_pnl == D("505.00")
    assert position.avg_exit_price == D("155.00")


def test_first_entry_fill_opens_a_pending_position():
    position = Position("AAPL", PositionSide.LONG).apply_fill(OrderSide.BUY, D(40), D("10.00"))

    assert (position.status, position.quantity, position.avg_entry_price) == (PositionStatus.OPEN, 40, D("10.00"))


def test_adding_to_a_long_re_averages_the_entry_price_by_weight():
    position = Position("AAPL", PositionSide.LONG).apply_fill(OrderSide.BUY, D(100), D("10.00"))

    position = position.apply_fill(OrderSide.BUY, D(300), D("12.00"))

    assert position.quantity == 400
    assert position.avg_entry_price == D("11.5")
    assert position.entry_filled_qty == 400


def test_partial_exit_of_a_long_realizes_only_the_sold_shares_and_keeps_the_average():
    position = Position("AAPL", PositionSide.LONG).apply_fill(OrderSide.BUY, D(100), D("50.00"))

    position = position.apply_fill(OrderSide.SELL, D(30), D("52.50"))

    assert position.status == PositionStatus.OPEN
    assert position.quantity == 70
    assert position.avg_entry_price == D("50.00")
    assert position.realized_pnl == D("75.00")


def test_short_adds_on_sells_and_realizes_on_covering_buys():
    position = Position("TSLA", PositionSide.SHORT)
    position = position.apply_fill(OrderSide.SELL, D(10), D("200"))
    position = position.apply_fill(OrderSide.SELL, D(10), D("210"))

    position = position.apply_fill(OrderSide.BUY, D(5), D("190"))

    assert position.avg_entry_price == D("205")
    assert position.quantity == 15
    assert position.realized_pnl == D("75")  # (205 - 190) * 5


def test_a_short_covered_above_its_entry_loses():
    position = Position("TSLA", PositionSide.SHORT).apply_fill(OrderSide.SELL, D(10), D("100"))

    position = position.apply_fill(OrderSide.BUY, D(10), D("104.25"))

    assert position.status == PositionStatus.CLOSED
    assert position.realized_pnl == D("-42.50")


def test_exit_fills_average_their_own_prices():
    position = Position("AAPL", PositionSide.LONG).apply_fill(OrderSide.BUY, D(100), D("10"))

    position = position.apply_fill(OrderSide.SELL, D(25), D("12")).apply_fill(OrderSide.SELL, D(75), D("16"))

    assert position.avg_exit_price == D("15")
    assert position.realized_pnl == D("500")


def test_an_exit_larger_than_the_holding_is_refused_not_clamped():
    position = Position("AAPL", PositionSide.LONG).apply_fill(OrderSide.BUY, D(100), D("10"))

    with pytest.raises(ExitExceedsPosition, match="exit fill of 101 AAPL exceeds the 100 held"):
        position.apply_fill(OrderSide.SELL, D(101), D("11"))


def test_an_exit_fill_on_a_pending_position_is_refused():
    with pytest.raises(ExitExceedsPosition):
        Position("AAPL", PositionSide.LONG).apply_fill(OrderSide.SELL, D(1), D("11"))


def test_a_closed_position_takes_no_new_entry_fill():
    closed = (
        Position("AAPL", PositionSide.LONG)
        .apply_fill(OrderSide.BUY, D(1), D("10"))
        .apply_fill(OrderSide.SELL, D(1), D("11"))
    )

    with pytest.raises(IllegalTransition, match="position transition AAPL: closed -> open"):
        closed.apply_fill(OrderSide.BUY, D(1), D("10"))


@pytest.mark.parametrize(("qty", "price"), [(D(0), D(1)), (D(1), D(0)), (D(-5), D(1)), (1.5, D(1)),
                                            (D(1), 149.95), (D("NaN"), D(1)), (True, D(1))])
def test_bad_fill_amounts_are_refused_with_a_named_error(qty, price):
    with pytest.raises(InvalidQuantity, match="AAPL"):
        Position("AAPL", PositionSide.LONG).apply_fill(OrderSide.BUY, qty, price)


def test_unrealized_pnl_marks_the_held_shares_at_a_price():
    long = Position("AAPL", PositionSide.LONG).apply_fill(OrderSide.BUY, D(100), D("149.95"))
    short = Position("TSLA", PositionSide.SHORT).apply_fill(OrderSide.SELL, D(10), D("200"))

    assert long.unrealized_pnl(D("151.00")) == D("105.00")
    assert short.unrealized_pnl(D("201.50")) == D("-15.00")
    assert Position("AAPL", PositionSide.LONG).unrealized_pnl(D("10")) == 0


def test_a_pending_position_can_be_cancelled_or_failed_but_an_open_one_cannot():
    pending = Position("AAPL", PositionSide.LONG)

    assert pending.cancel().status == PositionStatus.CANCELLED
    assert pending.fail().status == PositionStatus.FAILED
    with pytest.raises(IllegalTransition):
        pending.apply_fill(OrderSide.BUY, D(1), D("1")).cancel()


def test_a_position_whose_quantity_contradicts_its_fills_cannot_be_built():
    with pytest.raises(InvalidQuantity, match="quantity"):
        Position("AAPL", PositionSide.LONG, PositionStatus.OPEN, quantity=D(5), entry_filled_qty=D(4))
    with pytest.raises(InvalidQuantity, match="status closed"):
        Position("AAPL", PositionSide.LONG, PositionStatus.CLOSED, quantity=D(5), entry_filled_qty=D(5))


# --- properties --------------------------------------------------------------------------------

fills = st.lists(
    st.tuples(
        st.booleans(),  # True: entry side
        # None: exactly what is held (random decimals alone would rarely close a position).
        st.none() | st.decimals(min_value=D("0.001"), max_value=D(500), places=3),
        st.decimals(min_value=D("0.0001"), max_value=D(5000), places=4),
    ),
    max_size=30,
)


@settings(max_examples=2000, deadline=None)
@given(st.sampled_from(list(PositionSide)), fills)
def test_random_fills_keep_quantity_and_pnl_consistent(side, sequence):
    position = Position("XYZ", side)
    held, avg, realized, exact_realized = Fraction(0), Fraction(0), D(0), Fraction(0)
    for is_entry, qty, price in sequence:
        order_side = entry_side(side) if is_entry else exit_side(side)
        if qty is None:
            qty = position.quantity if position.quantity > 0 else D(1)
        if position.is_terminal or (not is_entry and qty > position.quantity):
            with pytest.raises((IllegalTransition, ExitExceedsPosition)):
                position.apply_fill(order_side, qty, price)
            continue

        before = position
        position = position.apply_fill(order_side, qty, price)

        if is_entry:
            avg = (avg * held + Fraction(price) * Fraction(qty)) / (held + Fraction(qty))
            held += Fraction(qty)
        else:
            per_share = Fraction(price) - avg if side is PositionSide.LONG else avg - Fraction(price)
            exact_realized += per_share * Fraction(qty)
            own = (price - before.avg_entry_price) if side is PositionSide.LONG else (before.avg_entry_price - price)
            realized += own * qty
            held -= Fraction(qty)
        assert position.quantity >= 0
        assert Fraction(position.quantity) == held
        # Every accepted fill leaves the position open with shares, or closed with none.
        assert position.status == (PositionStatus.OPEN if position.quantity > 0 else PositionStatus.CLOSED)
    # Realized P&L is the sum of each exit fill's own amount while shares are held, and matches exact arithmetic to
    # 1e-12; once closed it is exactly what the fills say (sells minus buys), with no average's rounding left.
    if position.status is PositionStatus.CLOSED:
        assert Fraction(position.realized_pnl) == exact_realized
    else:
        assert position.realized_pnl == realized
    assert abs(Fraction(position.realized_pnl) - exact_realized) < Fraction(1, 10**12)
    if position.avg_entry_price is not None:
        assert abs(Fraction(position.avg_entry_price) - avg) < Fraction(1, 10**18)


@pytest.mark.parametrize(("side", "planned", "stop", "target", "fill", "expected"), [
    ("long", "103.41", "101.34", "107.55", "108.88", ("106.81", "113.02")),  # paid 5.47 more: both up by it
    ("long", "42.90", "41.86", "44.98", "42.50", ("41.86", "44.98")),  # paid less: the plan's prices
    ("long", "42.90", "41.86", "44.98", "41.00", ("41.86", "44.98")),  # through its stop: the plan's (refused, exit)
    ("short", "50.00", "52.00", "48.00", "49.70", ("51.70", "47.70")),  # a short sold lower: both down
    ("short", "50.00", "52.00", "48.00", "50.30", ("52.00", "48.00")),  # a short sold higher: the plan's
    ("long", "4.43", "4.39", "4.51", "4.5327", ("4.49", "4.61")),  # at or above $1 on whole cents (no sub-penny)
    ("long", "0.9000", "0.8000", "1.1000", "0.95005", ("0.8500", "1.15")),  # under $1: 4 decimals
    ("short", "10.00", "26.00", "2.00", "1.50", ("26.00", "2.00")),  # a target that would not be positive: the plan's
])
def test_exits_move_by_a_worse_fills_slippage_keeping_their_distances(side, planned, stop, target, fill, expected):
    moved = exits_from_fill(PositionSide(side), Decimal(planned), Decimal(stop), Decimal(target), Decimal(fill))
    assert moved == (Decimal(expected[0]), Decimal(expected[1]))


# --- replay_fills ----------------------------------------------------------------------------------------------

BUY, SELL = OrderSide.BUY, OrderSide.SELL


def test_replay_in_time_order_when_the_book_allows_it():
    fills = [(BUY, D("100"), D("50")), (SELL, D("40"), D("55")), (BUY, D("20"), D("52"))]
    replayed = replay_fills(Position("AAPL", PositionSide.LONG), fills)
    # Time order: 40 sold 5 over 50, then 20 more at 52 (entries first would average 50.33 and realize 186.67).
    assert (replayed.status, replayed.quantity, replayed.avg_entry_price, replayed.realized_pnl) == (
        PositionStatus.OPEN, D("80"), D("50.5"), D("200"))


def test_entry_shares_recorded_after_the_close_replay_as_still_held():
    # The stop sold the 60 recorded; the entry's other 40 were recorded after it: held, not a closed position reopened.
    fills = [(BUY, D("60"), D("50")), (SELL, D("60"), D("48")), (BUY, D("40"), D("49"))]
    replayed = replay_fills(Position("AAPL", PositionSide.LONG), fills)
    assert (replayed.status, replayed.quantity) == (PositionStatus.OPEN, D("40"))
    sold = replayed.apply_fill(SELL, D("40"), D("47"))
    assert (sold.status, sold.realized_pnl) == (PositionStatus.CLOSED, D("-200"))  # sells 4,760 minus buys 4,960


def test_a_short_replays_its_late_entry_shares_alike():
    fills = [(SELL, D("60"), D("50")), (BUY, D("60"), D("52")), (SELL, D("40"), D("51"))]
    replayed = replay_fills(Position("AAPL", PositionSide.SHORT), fills)
    assert (replayed.status, replayed.quantity) == (PositionStatus.OPEN, D("40"))


def test_a_book_selling_more_than_it_bought_is_still_refused():
    with pytest.raises(ExitExceedsPosition):
        replay_fills(Position("AAPL", PositionSide.LONG), [(BUY, D("60"), D("50")), (SELL, D("60"), D("48")),
                                                          (SELL, D("10"), D("48"))])


@pytest.mark.parametrize("side, entry, exit_", [(PositionSide.LONG, OrderSide.BUY, OrderSide.SELL),
                                                (PositionSide.SHORT, OrderSide.SELL, OrderSide.BUY)])
def test_realized_pnl_at_the_close_is_the_fills_to_the_cent_whatever_the_average(side, entry, exit_):
    # From a review: three lots whose average repeats (149.95 / 3), sold in two pieces. Realized against the rounded
    # average alone the close read -894.9999999999999999999999990, where the fills say -895.00.
    position = replay_fills(Position("AAPL", side), [(entry, D(100), D("50")), (entry, D(100), D("49.98")),
                                                     (entry, D(100), D("49.97")), (exit_, D(100), D("47")),
                                                     (exit_, D(200), D("47"))])
    assert position.status is PositionStatus.CLOSED
    assert position.realized_pnl == (D("-895.00") if side is PositionSide.LONG else D("895.00"))
    assert str(position.realized_pnl) == ("-895.00" if side is PositionSide.LONG else "895.00")


@pytest.mark.parametrize("side, broker, others, held", [
    (PositionSide.LONG, "100", "0", "100"),
    (PositionSide.LONG, "150", "50", "100"),  # another open position's 50 netted in
    (PositionSide.LONG, "50", "50", "0"),  # only the other position's shares: none of this one's
    (PositionSide.LONG, "-20", "0", "-20"),  # short at the broker: less than none
    (PositionSide.SHORT, "-100", "0", "100"),
    (PositionSide.SHORT, "-130", "-30", "100"),
    (PositionSide.SHORT, "0", "0", "0"),
    (PositionSide.SHORT, "40", "0", "-40"),
])
def test_what_the_broker_holds_of_a_position_is_its_side_beyond_the_other_positions(side, broker, others, held):
    assert held_at_broker(side, D(broker), D(others)) == D(held)


@pytest.mark.parametrize("recorded, held, size", [
    ("100", "100", "100"), ("100", "250", "100"), ("100", "60", "60"), ("100", "0", "0"), ("100", "-20", "0"),
])
def test_a_market_exit_never_sells_more_than_the_broker_holds_of_the_shares(recorded, held, size):
    assert exit_size(D(recorded), D(held)) == D(size)
