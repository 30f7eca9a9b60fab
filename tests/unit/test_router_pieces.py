"""The router's account of an order's pieces: which shares its recorded executions cover, and whether one is missing
below a piece recorded (an earlier piece's fill event lost while a later one arrived)."""

from __future__ import annotations

from decimal import Decimal as D

from actors.order_router import Tracked
from catalyst.domain.orders import OrderStatus


def tracked(filled="0") -> Tracked:
    return Tracked(order_id=1, client_order_id="c", role="entry", symbol="AAPL", side="buy", qty=D(500),
                   status=OrderStatus.ACCEPTED, filled_qty=D(filled), recorded_to=D(filled))


def test_pieces_in_order_leave_nothing_missing():
    order = tracked()
    for cum, qty in (("200", "200"), ("400", "200"), ("500", "100")):
        order.piece_recorded(D(cum), D(qty))
        assert not order.pieces_missing
    assert order.recorded_to == 500


def test_a_piece_past_a_lost_one_is_missing_until_the_lost_one_is_recorded():
    order = tracked()
    order.piece_recorded(D(400), D(200))  # the 200 before it: not recorded
    assert order.pieces_missing and order.recorded_to == 0
    order.piece_recorded(D(500), D(100))
    assert order.pieces_missing
    order.piece_recorded(D(200), D(200))  # the lost piece, by REST (or its event only late)
    assert not order.pieces_missing and order.recorded_to == 500


def test_a_duplicate_or_a_piece_below_what_was_filled_when_tracked_changes_nothing():
    order = tracked(filled="300")  # read back from a row: what is below is the start's catch-up's
    order.piece_recorded(D(200), D(200))
    order.piece_recorded(D(300), D(100))
    assert not order.pieces_missing and order.recorded_to == 300
    order.piece_recorded(D(400), D(100))
    order.piece_recorded(D(400), D(100))
    assert not order.pieces_missing and order.recorded_to == 400


def test_two_gaps_are_missing_until_both_are_recorded():
    order = tracked()
    order.piece_recorded(D(200), D(100))
    order.piece_recorded(D(500), D(100))
    order.piece_recorded(D(100), D(100))
    assert order.pieces_missing and order.recorded_to == 200
    order.piece_recorded(D(400), D(200))
    assert not order.pieces_missing and order.recorded_to == 500
