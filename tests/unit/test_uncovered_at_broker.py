"""Which shares at the broker its working stops leave uncovered: what the daemon names when its database refuses
writes and no order can be sent (catalyst.daemon, `_shares_without_a_stop`)."""

from __future__ import annotations

from decimal import Decimal as D

from catalyst.domain.reconcile import BrokerOrder, BrokerPosition, BrokerView, Uncovered, uncovered_at_broker


def order(broker_id: str, side: str, qty: str, type_: str, status: str = "new", filled: str = "0",
          symbol: str = "AAPL", parent: str | None = None) -> BrokerOrder:
    return BrokerOrder(broker_id, f"cid-{broker_id}", symbol, side, D(qty), D(filled), status, type_, parent)


def test_a_long_whose_oco_stop_leg_is_held_is_covered():
    view = BrokerView(orders=(order("tp", "sell", "100", "limit"), order("sl", "sell", "100", "stop", "held",
                                                                         parent="tp")),
                      positions=(BrokerPosition("AAPL", "long", D(100)),))
    assert uncovered_at_broker(view) == ()


def test_a_long_with_only_its_take_profit_or_nothing_is_named_with_what_covers_it():
    view = BrokerView(orders=(order("tp", "sell", "100", "limit"),),
                      positions=(BrokerPosition("MSFT", "long", D(10)), BrokerPosition("AAPL", "long", D(100))))
    assert uncovered_at_broker(view) == (Uncovered("AAPL", "long", D(100), D(0), listed=D(100)),
                                         Uncovered("MSFT", "long", D(10), D(0), listed=D(10)))
    assert uncovered_at_broker(view)[0].describe() == "AAPL 100 long, 0 under a working stop"


def test_a_short_is_covered_by_buy_stops_only_and_a_stop_partly_filled_covers_what_is_left():
    view = BrokerView(orders=(order("s1", "sell", "50", "stop", symbol="TSLA"),
                              order("b1", "buy", "30", "stop_limit", "partially_filled", filled="10", symbol="TSLA"),
                              order("b2", "buy", "50", "stop", "canceled", symbol="TSLA")),
                      positions=(BrokerPosition("TSLA", "short", D(50)),))
    assert uncovered_at_broker(view) == (Uncovered("TSLA", "short", D(50), D(20), listed=D(-50)),)


def test_no_position_no_finding_whatever_orders_work():
    assert uncovered_at_broker(BrokerView(orders=(order("s1", "sell", "100", "stop"),))) == ()


# Fills the positions list may not show yet (Alpaca's can lag its orders for several seconds after a fill): both
# readings judged, the worse said with what the fills were.
def test_shares_just_bought_that_the_list_does_not_show_are_named_with_the_fills():
    (found,) = uncovered_at_broker(BrokerView(), {"MSFT": (D(10), D(0))})
    assert found.describe() == ("MSFT up to 10 long, 0 under a working stop (its positions list shows none; fills "
                                "bought 10 in the last minutes, which it may not show yet)")


def test_shares_just_bought_under_their_oco_are_covered_in_either_reading():
    view = BrokerView(orders=(order("tp", "sell", "100", "limit"), order("sl", "sell", "100", "stop", "held",
                                                                         parent="tp")))
    assert uncovered_at_broker(view, {"AAPL": (D(100), D(0))}) == ()


def test_a_round_trip_the_list_no_longer_shows_is_no_finding_and_one_it_still_shows_says_what_was_sold():
    recent = {"AAPL": (D(100), D(100))}  # bought and sold by its stop in the last minutes
    assert uncovered_at_broker(BrokerView(), recent) == ()
    (found,) = uncovered_at_broker(BrokerView(positions=(BrokerPosition("AAPL", "long", D(100)),)), recent)
    assert found.describe() == ("AAPL up to 100 long, 0 under a working stop (its positions list shows 100 long; fills "
                                "bought 100 and sold 100 in the last minutes, which it may not show yet)")


def test_a_short_just_opened_is_named_as_a_short():
    (found,) = uncovered_at_broker(BrokerView(), {"TSLA": (D(0), D(25))})
    assert (found.side, found.held) == ("short", D(25))
