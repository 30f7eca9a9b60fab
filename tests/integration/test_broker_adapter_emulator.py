"""AlpacaBroker (real alpaca-py clients) against the embedded exchange over loopback HTTP."""

from __future__ import annotations

import time
from datetime import timedelta
from decimal import Decimal
from typing import Any, Callable

import pytest
import requests

from catalyst.broker.adapter import AlpacaBroker
from catalyst.broker.errors import NotFound, OutcomeUnknown, Rejected
from catalyst.broker.orders import NewOrder
from catalyst.broker.ratelimit import RateLimiter
from catalyst.sim.server import EmbeddedExchange

KEY, SECRET = "PKTESTKEY", "test-secret"


def broker_for(exchange: EmbeddedExchange, **kw: Any) -> AlpacaBroker:
    settings: dict[str, Any] = {"timeout_s": 5, "limiter": RateLimiter(0), "retry_wait_initial_s": 0.01,
                                "retry_wait_max_s": 0.05, **kw}
    return AlpacaBroker(KEY, SECRET, exchange.base_url, stream_url=exchange.stream_url, **settings)


def resting_buy(cid: str, symbol: str = "AAPL", qty: int = 1, limit: str = "1.00") -> NewOrder:
    return NewOrder(symbol=symbol, side="buy", qty=Decimal(qty), type="limit", limit_price=Decimal(limit),
                    client_order_id=cid)


def orders_with_cid(exchange: EmbeddedExchange, cid: str) -> list[dict[str, Any]]:
    return [o for o in exchange.account_snapshot(KEY)["orders"] if o["client_order_id"] == cid]


def filled_buy(broker: AlpacaBroker, exchange: EmbeddedExchange, poll: Callable[..., Any], cid: str,
               qty: int = 10) -> str:
    report = broker.submit_order(NewOrder(symbol="AAPL", side="buy", qty=Decimal(qty), client_order_id=cid))
    exchange.advance(timedelta(minutes=1))
    poll(lambda: broker.get_order(report.broker_id).status == "filled", f"entry {cid} to fill")
    return report.broker_id


def test_submit_then_lookup_by_client_id_then_cancel(exchange: EmbeddedExchange, poll: Callable[..., Any]) -> None:
    broker = broker_for(exchange)

    submitted = broker.submit_order(resting_buy("cat-int-1"))
    found = broker.get_order_by_client_id("cat-int-1")
    broker.cancel_order(submitted.broker_id)

    assert found is not None and found.broker_id == submitted.broker_id and found.limit_price == Decimal("1")
    assert submitted.status in ("new", "accepted", "pending_new")
    poll(lambda: broker.get_order(submitted.broker_id).status == "canceled", "order to be canceled")
    assert broker.get_order_by_client_id("cat-int-unknown") is None


def test_an_order_beyond_buying_power_is_rejected_with_a_reason(exchange: EmbeddedExchange) -> None:
    broker = broker_for(exchange)

    with pytest.raises(Rejected) as caught:
        broker.submit_order(resting_buy("cat-int-big", qty=10_000_000, limit="100"))

    assert caught.value.status == 403


@pytest.mark.parametrize("restriction, why", [
    ({"trading_blocked": True}, "trading_blocked: the account may not place orders"),
    ({"account_blocked": True}, "account_blocked: the account's activity is prohibited"),
    ({"trade_suspended_by_user": True}, "trade_suspended_by_user: trading is suspended in the account's settings"),
    ({"status": "ACCOUNT_UPDATED"}, "status ACCOUNT_UPDATED: only an ACTIVE account trades"),
])
def test_an_account_that_may_not_trade_says_why_and_its_orders_are_refused(
        exchange: EmbeddedExchange, restriction: dict[str, Any], why: str) -> None:
    broker = broker_for(exchange)
    assert broker.account().why_no_orders() is None
    requests.put(f"{exchange.base_url}/sim/v1/accounts/{KEY}/restrictions", json=restriction, timeout=5)

    assert broker.account().why_no_orders() == why
    with pytest.raises(Rejected) as caught:
        broker.submit_order(resting_buy("cat-int-blocked"))
    assert caught.value.status == 403 and "account is not allowed to trade" in str(caught.value)
    assert orders_with_cid(exchange, "cat-int-blocked") == []


def test_restrictions_the_emulator_does_not_know_are_refused_naming_them(exchange: EmbeddedExchange) -> None:
    answer = requests.put(f"{exchange.base_url}/sim/v1/accounts/{KEY}/restrictions",
                          json={"trading_blocked": "yes", "frozen": True}, timeout=5)
    assert answer.status_code == 400
    assert answer.json()["message"].startswith("cannot set restrictions: unknown ['frozen'], wrong type "
                                               "['trading_blocked']")


def test_the_account_reports_day_trades_only_when_set_as_alpaca_did_before_its_pdt_protection_ended(
        exchange: EmbeddedExchange) -> None:
    """Alpaca dropped `daytrade_count` and `pattern_day_trader` from /v2/account on 2026-07-06: by default neither is
    there, and alpaca-py and the adapter read that as not reported; a count set through /sim/v1 brings both back."""
    broker = broker_for(exchange)
    account_url = f"{exchange.base_url}/v2/account"
    headers = {"APCA-API-KEY-ID": KEY, "APCA-API-SECRET-KEY": SECRET}

    def set_count(count: int | None) -> None:
        answer = requests.put(f"{exchange.base_url}/sim/v1/accounts/{KEY}/restrictions",
                              json={"daytrade_count": count}, timeout=5)
        assert answer.status_code == 200, answer.text

    payload = requests.get(account_url, headers=headers, timeout=5).json()
    assert not {"daytrade_count", "pattern_day_trader", "daytrading_buying_power"} & set(payload)
    assert broker.account().daytrade_count is None

    set_count(2)
    payload = requests.get(account_url, headers=headers, timeout=5).json()
    assert (payload["daytrade_count"], payload["pattern_day_trader"]) == (2, False)
    assert broker.account().daytrade_count == 2

    set_count(None)
    assert "daytrade_count" not in requests.get(account_url, headers=headers, timeout=5).json()
    assert broker.account().daytrade_count is None


def test_list_orders_pages_through_more_than_500(exchange_factory: Callable[..., EmbeddedExchange]) -> None:
    exchange = exchange_factory(rate_limit_per_minute=0, starting_cash=Decimal("10000000"))
    broker = broker_for(exchange)
    for i in range(1203):
        broker.submit_order(resting_buy(f"cat-page-{i}"))
        if i % 7 == 6:  # several orders share each instant, so page edges fall between equal times
            exchange.advance(timedelta(milliseconds=1))

    orders = broker.list_orders(status="all")

    assert len(orders) == 1203 == len(exchange.account_snapshot(KEY)["orders"])
    assert {o.client_order_id for o in orders} == {f"cat-page-{i}" for i in range(1203)}
    assert [o.submitted_at for o in orders] == sorted(o.submitted_at for o in orders)


def test_oco_exit_puts_take_profit_as_parent_and_stop_as_child_leg(
    exchange: EmbeddedExchange, poll: Callable[..., Any]
) -> None:
    broker = broker_for(exchange)
    filled_buy(broker, exchange, poll, "cat-entry-1")

    exit_order = broker.submit_oco_exit("AAPL", "sell", Decimal(10), take_profit_limit=Decimal("110"),
                                        stop_price=Decimal("95"), client_order_id="cat-oco-1")
    parent = broker.get_order(exit_order.broker_id)

    assert parent.order_class == "oco" and parent.type == "limit" and parent.limit_price == Decimal("110")
    assert len(parent.legs) == 1 and parent.legs[0].stop_price == Decimal("95")
    exchange.set_price("AAPL", "111")
    exchange.advance(timedelta(minutes=1))
    poll(lambda: broker.get_order(exit_order.broker_id).status == "filled", "take-profit to fill")
    poll(lambda: broker.get_order(exit_order.broker_id).legs[0].status == "canceled", "stop leg to be canceled")
    assert broker.position("AAPL") is None


def test_fill_activities_report_each_execution_with_its_order(
    exchange: EmbeddedExchange, poll: Callable[..., Any]
) -> None:
    broker = broker_for(exchange)
    order_id = filled_buy(broker, exchange, poll, "cat-fill-1", qty=5)

    fills = broker.fill_activities()

    mine = [f for f in fills if f.broker_order_id == order_id]
    assert mine and sum(f.qty for f in mine) == Decimal(5)
    assert all(f.symbol == "AAPL" and f.side == "buy" and f.price > 0 for f in mine)
    position = broker.position("AAPL")
    assert position is not None and position.qty == Decimal(5) and position.side == "long"


def test_positions_close_and_account_read_back(exchange: EmbeddedExchange, poll: Callable[..., Any]) -> None:
    broker = broker_for(exchange)
    filled_buy(broker, exchange, poll, "cat-close-1", qty=3)

    closing = broker.close_position("AAPL")
    exchange.advance(timedelta(minutes=1))
    poll(lambda: broker.get_order(closing.broker_id).status == "filled", "closing order to fill")

    assert closing.side == "sell" and closing.qty == Decimal(3)
    assert broker.positions() == [] and broker.account().status == "ACTIVE"
    with pytest.raises(NotFound):
        broker.get_order("00000000-0000-4000-8000-000000000000")


def test_lost_reply_then_submit_with_lookup_leaves_exactly_one_broker_order(
    exchange: EmbeddedExchange,
) -> None:
    broker = broker_for(exchange, timeout_s=0.5)
    exchange.set_faults("reply_lost=1,hang_s=2")

    with pytest.raises(OutcomeUnknown):
        broker.submit_order(resting_buy("cat-lost-1"))
    settled = broker.submit_with_lookup(resting_buy("cat-lost-1"))
    fresh = broker.submit_with_lookup(resting_buy("cat-lost-2"))

    exchange.set_faults("")
    assert settled.client_order_id == "cat-lost-1" and len(orders_with_cid(exchange, "cat-lost-1")) == 1
    assert fresh.client_order_id == "cat-lost-2" and len(orders_with_cid(exchange, "cat-lost-2")) == 1


def test_submit_with_lookup_through_503s_before_acting_places_one_order(exchange: EmbeddedExchange) -> None:
    broker = broker_for(exchange, read_attempts=6)
    exchange.set_faults("http_5xx=0.5")

    reports = [broker.submit_with_lookup(resting_buy(f"cat-5xx-{i}"), attempts=8) for i in range(6)]

    exchange.set_faults("")
    for i, report in enumerate(reports):
        assert report.client_order_id == f"cat-5xx-{i}" and len(orders_with_cid(exchange, f"cat-5xx-{i}")) == 1


def test_a_read_refused_by_a_429_burst_waits_for_its_reset_and_is_then_served(exchange: EmbeddedExchange) -> None:
    headers = {"APCA-API-KEY-ID": KEY, "APCA-API-SECRET-KEY": SECRET}
    exchange.set_faults("burst_429=1,burst_s=1.5")  # the next call starts 1.5 s of refusals for this key
    started = requests.get(f"{exchange.base_url}/v2/clock", headers=headers, timeout=5)
    reset = int(started.headers["X-RateLimit-Reset"])
    exchange.set_faults("")  # no further bursts: the one started runs its course
    broker = broker_for(exchange, read_attempts=3, read_retry_budget_s=5.0)

    clock = broker.clock()

    assert started.status_code == 429
    assert clock.at is not None
    assert time.time() >= reset - 1  # served only once the burst the Reset named was over
