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
    assert uncovered_at_broker(view) == (Uncovered("AAPL", "long", D(100), D(0)),
                                         Uncovered("MSFT", "long", D(10), D(0)))
    assert uncovered_at_broker(view)[0].describe() == "AAPL 100 long, 0 under a working stop"


def test_a_short_is_covered_by_buy_stops_only_and_a_stop_partly_filled_covers_what_is_left():
    view = BrokerView(orders=(order("s1", "sell", "50", "stop", symbol="TSLA"),
                              order("b1", "buy", "30", "stop_limit", "partially_filled", filled="10", symbol="TSLA"),
                              order("b2", "buy", "50", "stop", "canceled", symbol="TSLA")),
                      positions=(BrokerPosition("TSLA", "short", D(50)),))
    assert uncovered_at_broker(view) == (Uncovered("TSLA", "short", D(50), D(20)),)


def test_no_position_no_finding_whatever_orders_work():
    assert uncovered_at_broker(BrokerView(orders=(order("s1", "sell", "100", "stop"),))) == ()
