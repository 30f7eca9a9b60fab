"""The broker's API down while its orders keep working (the emulator's `down` fault, chaos's `--outage`): what
filled meanwhile is learned once it is back, over REST, and every share ends protected or sold."""

from __future__ import annotations

from decimal import Decimal

from chaos.harness import BrokerOutage
from tests.actors.test_chaos_hand_sale import unstarted
from tests.actors.test_doctor_heals import open_protected
from tests.actors.test_trade_scenarios import broker_working_stop_qty, legs, position_of, protected_qty, wait_closed


def test_a_stop_filled_while_the_broker_is_down_closes_the_position_once_it_is_back(trading, tmp_path):
    open_protected(trading)
    outage = BrokerOutage(unstarted(trading, tmp_path), "")

    outage.begin(2.0)
    trading.trade("AAPL", "146.50")  # the stop triggers and fills at the broker; its event goes nowhere
    assert position_of(trading).status == "open"  # nothing heard yet
    outage.finish()

    position = wait_closed(trading)
    stop = next(o for o in legs(trading) if o.role == "stop_loss")
    take_profit = next(o for o in legs(trading) if o.role == "take_profit")
    assert stop.status == "filled" and take_profit.status == "cancelled"
    assert position.realized_pnl == (stop.filled_avg_price - Decimal("149.95")) * 100 < 0
    assert all(Decimal(p["qty"]) == 0 for p in trading.broker_view()["positions"])
    assert [o["side"] for o in trading.broker_view()["orders"] if o["status"] == "filled"] == ["buy", "sell"]


def test_entry_shares_filled_while_the_broker_is_down_are_protected_once_it_is_back(trading, tmp_path):
    trading.exchange.set_price("AAPL", "50.00", volume=800)  # 25% participation: 200 shares a minute
    trading.open(trading.plan(qty="500", stop="48.00", target="55.00"))
    trading.wait_for(lambda: protected_qty(trading) == Decimal("200"), "the first 200 protected")
    outage = BrokerOutage(unstarted(trading, tmp_path), "")

    outage.begin(2.0)
    for _ in range(3):  # as in test_partial_entry_fills_…: the rest of the 500 bought in these minutes
        trading.trade("AAPL", "50.00", volume=800)  # while the daemon hears nothing
    outage.finish()

    trading.wait_for(lambda: protected_qty(trading) == Decimal("500"), "all 500 protected once the broker is back")
    assert position_of(trading).quantity == Decimal("500")
    assert broker_working_stop_qty(trading) == Decimal("500")
    held = sum(Decimal(p["qty"]) for p in trading.broker_view()["positions"] if p["symbol"] == "AAPL")
    assert held == Decimal("500")


def test_a_rest_outage_leaves_the_stream_up_and_ends_with_the_runs_own_faults(trading, tmp_path):
    # `--outage-rest-only`: fills are heard while every REST call fails; its end puts back the run's own faults.
    import pytest
    from alpaca.common.exceptions import APIError
    from alpaca.trading.client import TradingClient

    client = TradingClient(trading.key, "secret", paper=True, url_override=trading.exchange.base_url)
    outage = BrokerOutage(unstarted(trading, tmp_path), "duplicate=0.5", "http_5xx=1")

    outage.begin(1.0)
    with pytest.raises(APIError):
        client.get_account()
    assert trading.exchange.stream_connected(trading.key)  # not dropped: the stream stays up
    outage.finish()

    assert client.get_account().status is not None
    assert trading.exchange.state.faults.spec == "duplicate=0.5"


def test_a_catch_up_the_broker_did_not_answer_is_asked_again_until_it_is(trading, router_lines):
    """REST down while the stream reconnects (an outage of REST alone): the reconnect's catch-up fails. Before, it
    was dropped, and an entry whose fill event was lost waited for the doctor's next pass, minutes after the broker
    was back; now the router asks again (1, 2, 4 … 15 s) until the broker answers, and the fill is protected."""
    import time

    from tests.actors.test_submit_refused import fill_a_resting_entry_under

    fill_a_resting_entry_under(trading, "http_5xx=1,drop=1")  # the entry fills; its event lost, REST refused
    trading.exchange.drop_stream_connections()  # alpaca-py reconnects at once (the stream is up): a catch-up
    time.sleep(4.0)  # reconnected, its catch-up refused
    assert position_of(trading) is None or position_of(trading).quantity == 0  # nothing heard of the fill yet
    trading.exchange.set_faults("")

    trading.wait_for(lambda: protected_qty(trading) == Decimal("100"), "the fill found and protected", timeout=30)
    failed = [line for line in router_lines if "catch-up since" in line and "failed" in line]
    assert failed[0].endswith("asking the broker again in 1 s (failure 1; until it answers)")
    assert any("the last one failed" in line for line in router_lines)
    assert broker_working_stop_qty(trading) == Decimal("100")


def test_a_catch_up_failing_for_hours_is_still_asked_again_and_said_about_once_a_minute(trading, router_lines):
    # Its waits grow as a resend's do (2.0 ** 1024 overflows at the 1,025th); the tries said at DEBUG are quiet,
    # their broker calls' failures too.
    from loguru import logger

    from tests.actors.test_submit_refused import fill_a_resting_entry_under

    errors: list[str] = []
    warned: list[str] = []
    routed: list[str] = []  # the router's lines, DEBUG ones too
    sinks = [logger.add(lambda message: errors.append(message.record["message"]), level="ERROR"),
             logger.add(lambda message: warned.append(message.record["message"]), level="WARNING",
                        filter=lambda record: record["name"].startswith(("actors", "catalyst.broker"))),
             logger.add(lambda message: routed.append(message.record["message"]), level="DEBUG",
                        filter=lambda record: record["name"] == "actors.order_router")]
    try:
        fill_a_resting_entry_under(trading, "http_5xx=1,drop=1")
        router = trading.system.router.proxy()._actor
        router._catch_up_failures = 1024  # hours of failures in a moment
        trading.exchange.drop_stream_connections()
        trading.wait_for(lambda: any("failure 1025" in line for line in routed) or errors,
                         "the 1,025th failure", timeout=30)
        said = len(warned)
        trading.wait_for(lambda: any("failure 1026" in line for line in routed) or errors,
                         "the 1,026th failure, 15 s later", timeout=40)
        quiet_meanwhile = len(warned) - said  # that try's calls, and its failure's line
        trading.exchange.set_faults("")
        trading.wait_for(lambda: protected_qty(trading) == Decimal("100"), "the fill found and protected", timeout=40)
    finally:
        for sink in sinks:
            logger.remove(sink)
    assert errors == []
    assert quiet_meanwhile == 0  # the try after an unsaid failure (1,025 is not a 4th) says nothing, nor its end
    assert broker_working_stop_qty(trading) == Decimal("100")


def test_a_pending_positions_flatten_whose_entry_cancel_an_outage_refused_asks_again_once_it_is_back(
        trading, router_lines):
    """An emergency stop's flatten of a position whose limit entry still rests: its one cancel met a 503 and was
    never asked again (the router does not, and only a flatten under way rechecked), so after the outage the entry
    worked on at the broker, free to buy once the price came through its limit."""
    from actors import messages as m

    trading.exchange.set_price("AAPL", "150.00")
    actor = trading.open(trading.plan(order_type="limit", limit_price=Decimal("149.00")))
    trading.wait_for(lambda: (o := trading.all_orders()) and o[0].alpaca_order_id and o[0].status == "accepted",
                     "the entry resting")
    trading.exchange.set_faults("http_5xx=1")  # REST down, the stream up
    actor.tell(m.Flatten(reason="emergency: daily loss limit"))
    trading.wait_for(lambda: any("cancel not accepted" in line for line in router_lines), "the cancel refused",
                     timeout=30)
    trading.exchange.set_faults("")

    trading.wait_for(lambda: [o["status"] for o in trading.broker_view()["orders"]] == ["canceled"],
                     "the entry cancelled at the broker once it is back", timeout=20)
    trading.wait_for(lambda: not actor.is_alive(), "the position done with its entry")
    trading.trade("AAPL", "148.50")  # through its old limit: nothing buys
    assert trading.broker_view()["positions"] == []


def test_a_closed_positions_entry_whose_cancels_an_outage_refused_is_asked_again_once_it_is_back(
        trading, router_lines):
    """Its take-profit sold the 200 shares bought while the rest of its limit entry still rested, REST down: the
    close's cancel of that rest, and the siblings' check's one more, each met a 503, and none was asked again. After
    the outage the entry worked on at the broker, free to buy 300 shares for a trade that was over."""
    trading.exchange.set_price("AAPL", "50.00", volume=800)  # 25% participation: 200 of the 500 a minute
    actor = trading.open(trading.plan(qty="500", stop="48.00", target="55.00", order_type="limit",
                                      limit_price=Decimal("50.00")))
    trading.wait_for(lambda: protected_qty(trading) == Decimal("200"), "the first 200 protected")
    trading.exchange.set_faults("http_5xx=1")  # REST down, the stream up: the take-profit's fill is heard
    trading.trade("AAPL", "55.50", volume=100_000)  # through the target at 55: the 200 sold
    trading.wait_for(lambda: (p := position_of(trading)) and p.status == "closed", "the position closed")
    trading.wait_for(lambda: sum("cancel not accepted" in line for line in router_lines) >= 2,
                     "the close's cancel and the siblings' check's both refused", timeout=30)
    trading.exchange.set_faults("")

    trading.wait_for(lambda: [o["status"] for o in trading.broker_view()["orders"] if o["side"] == "buy"]
                     == ["canceled"], "the entry's rest cancelled at the broker once it is back", timeout=20)
    trading.wait_for(lambda: not actor.is_alive(), "the position done with its entry")
    trading.trade("AAPL", "49.00", volume=8000)  # through its old limit: nothing buys
    assert all(Decimal(p["qty"]) == 0 for p in trading.broker_view()["positions"])
