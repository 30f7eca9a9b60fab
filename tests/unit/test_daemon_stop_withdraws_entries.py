"""What a graceful stop waits for once it has asked the positions to cancel the rest of their working entries
(catalyst.daemon._withdraw_working_entries; end to end in tests/e2e/test_stop_with_a_working_entry.py)."""

from __future__ import annotations

from types import SimpleNamespace

from actors.refs import BUSY
from catalyst.daemon import _entry_working, _not_settled_for_stop, _withdrawal_bound_s

TOLD = SimpleNamespace(actor_urn="urn:told")
NOT_TOLD = SimpleNamespace(actor_urn="urn:started-after")


def state(label="AAPL#p-1", entry="partial_fill", qty="283", protected="283", flattening=None):
    return {"position": label, "qty": qty, "protected": protected, "flattening": flattening,
            "orders": {1: f"entry:{entry}", 2: "take_profit:accepted", 3: "stop_loss:accepted"}}


def test_an_entry_is_working_until_its_order_has_ended():
    assert [_entry_working(state(entry=s)) for s in ("created", "submitted", "accepted", "partial_fill")] == [True] * 4
    assert [_entry_working(state(entry=s)) for s in ("filled", "cancelled", "rejected", "expired")] == [False] * 4


def test_a_told_position_waits_while_its_entry_works_or_its_shares_are_not_all_under_a_stop():
    told = {TOLD.actor_urn}
    assert _not_settled_for_stop([(TOLD, state())], told) == ["AAPL#p-1"]  # the cancel not yet answered
    assert _not_settled_for_stop([(TOLD, state(entry="cancelled", qty="400"))], told) == ["AAPL#p-1"]  # a last OCO
    assert _not_settled_for_stop([(TOLD, state(entry="cancelled"))], told) == []
    # Flattening (its stops cancelled for a market exit): nothing more to wait for here.
    assert _not_settled_for_stop([(TOLD, state(entry="cancelled", protected="0", flattening="15:55"))], told) == []


def test_a_position_whose_label_changed_with_its_first_fill_is_still_waited_for():
    # From a review: told while pending (AAPL#o-1), its entry filled 200 as the cancel went out (AAPL#p-1 now, no
    # stop yet): matched by label, it counted as settled and the stop went on with the entry still filling.
    assert _not_settled_for_stop([(TOLD, state(protected="0", qty="200"))], {TOLD.actor_urn}) == ["AAPL#p-1"]


def test_positions_not_told_are_not_waited_for_and_a_told_one_that_does_not_answer_is():
    told = {TOLD.actor_urn}
    assert _not_settled_for_stop([(NOT_TOLD, state(label="MSFT#p-2", protected="0"))], told) == []
    assert _not_settled_for_stop([(TOLD, BUSY)], told) != []
    assert _not_settled_for_stop([(NOT_TOLD, BUSY)], told) == []
    assert _not_settled_for_stop("the position supervisor (gone)", told) == []


def test_the_wait_stays_inside_the_stops_own_bound():
    assert _withdrawal_bound_s(20.0) == 5.0
    assert _withdrawal_bound_s(8.0) == 2.0
