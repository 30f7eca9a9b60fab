"""AlpacaBroker over a scripted transport: the real alpaca-py clients, a fake network of one small function."""

from __future__ import annotations

import json
import time
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from loguru import logger
from requests import PreparedRequest, Response

from catalyst.broker.adapter import AlpacaBroker
from catalyst.broker.errors import (
    ConnectionFailed, DuplicateClientOrderId, LookupFailedToo, MalformedResponse, OutcomeUnknown, RateLimited, Rejected,
    RejectReason, SubmitRefused,
)
from catalyst.broker.orders import NewOrder
from catalyst.broker.ratelimit import RateLimiter

KEY, SECRET = "PKTESTKEY0001", "test-secret-do-not-log"
T0 = datetime(2025, 1, 2, 15, 0, tzinfo=timezone.utc)


def order_json(cid: str, submitted_at: datetime = T0, status: str = "accepted", **extra: Any) -> dict[str, Any]:
    stamp = submitted_at.isoformat().replace("+00:00", "Z")
    body = {
        "id": str(uuid.uuid4()), "client_order_id": cid, "created_at": stamp, "updated_at": stamp,
        "submitted_at": stamp, "symbol": "AAPL", "qty": "10", "filled_qty": "0", "side": "buy",
        "type": "market", "order_class": "", "time_in_force": "day", "status": status, "extended_hours": False,
    }
    body.update(extra)
    return body


def respond(request: PreparedRequest, status: int, body: Any = None) -> Response:
    response = Response()
    response.status_code = status
    response._content = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    response.headers["Content-Type"] = "application/json"
    response.request, response.url, response.encoding = request, request.url or "", "utf-8"
    return response


class FakeNetwork:
    """Records every request; `route` decides each answer."""

    def __init__(self, route: Callable[[PreparedRequest, str, dict[str, list[str]]], Response]) -> None:
        self.route = route
        self.seen: list[tuple[str, str]] = []
        self.timeouts: list[Any] = []

    def __call__(self, request: PreparedRequest, timeout: Any) -> Response:
        parts = urlsplit(request.url or "")
        self.seen.append((request.method or "", parts.path))
        self.timeouts.append(timeout)
        return self.route(request, parts.path, parse_qs(parts.query))

    def count(self, method: str, path_prefix: str) -> int:
        return sum(1 for m, p in self.seen if m == method and p.startswith(path_prefix))


def make_broker(network: FakeNetwork, **kw: Any) -> AlpacaBroker:
    return AlpacaBroker(KEY, SECRET, "http://127.0.0.1:9", timeout_s=7, limiter=RateLimiter(0), transport=network,
                        retry_wait_initial_s=0, retry_wait_max_s=0, **kw)


def buy(cid: str = "cat-1") -> NewOrder:
    return NewOrder(symbol="AAPL", side="buy", qty=Decimal(10), client_order_id=cid)


def test_submit_sends_the_client_order_id_with_a_timeout_and_returns_a_neutral_report() -> None:
    bodies: list[dict[str, Any]] = []

    def route(request: PreparedRequest, path: str, query: dict[str, list[str]]) -> Response:
        bodies.append(json.loads(request.body or b"{}"))
        return respond(request, 200, order_json("cat-1", filled_avg_price=105.89))

    network = FakeNetwork(route)
    report = make_broker(network).submit_order(buy("cat-1"))

    assert bodies[0]["client_order_id"] == "cat-1" and bodies[0]["symbol"] == "AAPL"
    assert network.timeouts == [7]  # alpaca-py sets none: ours is installed on the session
    assert report.client_order_id == "cat-1" and report.status == "accepted" and report.order_class == "simple"
    assert report.filled_avg_price == Decimal("105.89") and report.qty == Decimal(10)


def test_a_429_on_submit_is_raised_at_once_without_alpaca_pys_hidden_retries() -> None:
    network = FakeNetwork(lambda request, path, q: respond(request, 429, b"Too Many Requests"))

    with pytest.raises(RateLimited):
        make_broker(network).submit_order(buy())

    assert network.count("POST", "/v2/orders") == 1


def test_a_submit_refused_with_429s_every_time_is_reported_as_never_placed_with_the_brokers_reset() -> None:
    def route(request: PreparedRequest, path: str, query: dict[str, list[str]]) -> Response:
        refused = respond(request, 429, {"code": 42910000, "message": "rate limit exceeded"})
        refused.headers["X-RateLimit-Reset"] = str(int(time.time()) + 30)
        return refused

    network = FakeNetwork(route)
    with pytest.raises(SubmitRefused) as refused:
        make_broker(network).submit_with_lookup(buy("cat-429"))

    assert network.count("POST", "/v2/orders") == 3 and network.count("GET", "/v2/orders") == 0  # nothing to look up
    assert refused.value.retry_after_s is not None and 25 < refused.value.retry_after_s <= 30
    assert str(refused.value).startswith("refused before the broker acted HTTP 429 code 42910000: rate limit exceeded")


def test_a_submit_whose_first_attempt_may_have_acted_is_not_reported_as_never_placed() -> None:
    """A 503 after the request left (the broker may have placed it), then 429s: the order may exist, so the caller
    must settle it by its client_order_id, not take it for never placed."""
    answers = iter([503, 429, 429])

    def route(request: PreparedRequest, path: str, query: dict[str, list[str]]) -> Response:
        if request.method == "GET":
            return respond(request, 404, {"code": 40410000, "message": "order not found"})
        return respond(request, next(answers), {"code": 50010000, "message": "nope"})

    network = FakeNetwork(route)
    with pytest.raises(RateLimited) as raised:
        make_broker(network).submit_with_lookup(buy("cat-503"))

    assert not isinstance(raised.value, SubmitRefused) and network.count("POST", "/v2/orders") == 3


def outage_network(submits: list[str], lookup_status: int) -> FakeNetwork:
    """Submits answered in turn by `submits` ("503", or "refused": the connection refused before the request left);
    every look-up by `lookup_status` (503: failed too; 404: "no such order", an answer)."""
    answers = iter(submits)

    def route(request: PreparedRequest, path: str, query: dict[str, list[str]]) -> Response:
        if request.method == "GET":
            return respond(request, lookup_status, {"code": lookup_status * 100000 + 10000, "message": "lookup"})
        if next(answers) == "refused":
            raise requests.exceptions.ConnectionError("NewConnectionError: [Errno 111] Connection refused")
        return respond(request, 503, {"code": 50010000, "message": "down"})

    return FakeNetwork(route)


def test_a_submit_met_by_503s_it_could_not_look_up_then_a_refused_connection_is_unanswered() -> None:
    """An outage under way: 503s whose look-ups fail too, then the connection refused. The broker said nothing about
    the order, so the caller sends it again until it answers; raised as the refusal, it counted against the few
    resends an answered submit gets (a review)."""
    network = outage_network(["503", "503", "refused"], lookup_status=503)
    with pytest.raises(LookupFailedToo) as raised:
        make_broker(network).submit_with_lookup(buy("cat-down"))

    assert network.count("POST", "/v2/orders") == 3
    assert "lookup failed too" in str(raised.value) and "Connection refused" in str(raised.value)


def test_a_submit_whose_look_up_was_answered_then_refused_a_connection_is_not_unanswered() -> None:
    """The broker answered the look-up ("no such order"): the refused connection after it is raised as it was."""
    network = outage_network(["503", "refused", "refused"], lookup_status=404)
    with pytest.raises(ConnectionFailed) as raised:
        make_broker(network).submit_with_lookup(buy("cat-seen"))

    assert not isinstance(raised.value, (SubmitRefused, LookupFailedToo))


def test_a_read_that_meets_a_503_is_retried_and_succeeds() -> None:
    answers = iter([503, 200])
    oid = str(uuid.uuid4())

    def route(request: PreparedRequest, path: str, query: dict[str, list[str]]) -> Response:
        status = next(answers)
        return respond(request, status, order_json("cat-1", id=oid) if status == 200 else b"Service Unavailable")

    network = FakeNetwork(route)
    report = make_broker(network).get_order(oid)

    assert report.broker_id == oid and network.count("GET", f"/v2/orders/{oid}") == 2


def test_lookup_by_client_order_id_answers_none_when_the_broker_has_no_such_order() -> None:
    network = FakeNetwork(lambda request, p, q: respond(request, 404, {"code": 40410000, "message": "order not found"}))

    assert make_broker(network).get_order_by_client_id("cat-missing") is None


class LossyBroker:
    """Stores each accepted order; can lose the reply of the first submit after acting, or before."""

    def __init__(self, *, act_before_timeout: bool) -> None:
        self.act_before_timeout = act_before_timeout
        self.orders: dict[str, dict[str, Any]] = {}
        self.submits = 0

    def __call__(self, request: PreparedRequest, path: str, query: dict[str, list[str]]) -> Response:
        if request.method == "POST":
            self.submits += 1
            cid = json.loads(request.body or b"{}")["client_order_id"]
            if cid in self.orders:
                return respond(request, 422, {"code": 40010001, "message": "client_order_id must be unique"})
            if self.submits == 1:
                if self.act_before_timeout:
                    self.orders[cid] = order_json(cid)
                raise requests.exceptions.ReadTimeout("Read timed out. (read timeout=7)")
            self.orders[cid] = order_json(cid)
            return respond(request, 200, self.orders[cid])
        cid = query["client_order_id"][0]
        if cid in self.orders:
            return respond(request, 200, self.orders[cid])
        return respond(request, 404, {"code": 40410000, "message": "order not found"})


def test_submit_with_lookup_finds_the_order_a_lost_reply_had_placed_and_does_not_resubmit() -> None:
    fake = LossyBroker(act_before_timeout=True)
    broker = make_broker(FakeNetwork(fake))

    with pytest.raises(OutcomeUnknown):
        broker.submit_order(buy("cat-7"))
    report = broker.submit_with_lookup(buy("cat-7"))

    assert report.client_order_id == "cat-7" and len(fake.orders) == 1 and fake.submits == 2


def test_submit_with_lookup_resubmits_the_same_client_order_id_when_the_broker_never_got_it() -> None:
    fake = LossyBroker(act_before_timeout=False)

    report = make_broker(FakeNetwork(fake)).submit_with_lookup(buy("cat-8"))

    assert report.client_order_id == "cat-8" and list(fake.orders) == ["cat-8"] and fake.submits == 2


def test_submit_with_lookup_after_a_timeout_that_acted_places_exactly_one_order() -> None:
    fake = LossyBroker(act_before_timeout=True)

    report = make_broker(FakeNetwork(fake)).submit_with_lookup(buy("cat-9"))

    assert report.client_order_id == "cat-9" and list(fake.orders) == ["cat-9"] and fake.submits == 1


def test_list_orders_pages_past_500_without_losing_orders_that_share_a_boundary_instant() -> None:
    # 1203 orders; every 7 share one submission instant, so page edges fall inside groups of equal times.
    stored = [order_json(f"cat-{i}", submitted_at=T0 + timedelta(seconds=i // 7)) for i in range(1203)]

    def route(request: PreparedRequest, path: str, query: dict[str, list[str]]) -> Response:
        after = datetime.fromisoformat(query["after"][0]) if "after" in query else None
        limit = int(query["limit"][0])
        matching = [o for o in stored
                    if after is None or datetime.fromisoformat(o["submitted_at"].replace("Z", "+00:00")) > after]
        return respond(request, 200, matching[:limit])

    network = FakeNetwork(route)
    orders = make_broker(network).list_orders(status="all")

    assert len(orders) == 1203 and len({o.broker_id for o in orders}) == 1203
    assert network.count("GET", "/v2/orders") >= 3


def test_fill_activities_page_by_token_and_keep_exact_decimals() -> None:
    fills = [
        {"id": f"20250102150000000::{uuid.uuid4()}", "activity_type": "FILL", "transaction_time": "2025-01-02T15:00:00Z",
         "type": "fill", "price": "105.89", "qty": "1", "side": "buy", "symbol": "AAPL", "leaves_qty": "0",
         "cum_qty": "1", "order_id": str(uuid.uuid4()), "order_status": "filled"}
        for _ in range(230)
    ]

    def route(request: PreparedRequest, path: str, query: dict[str, list[str]]) -> Response:
        size = int(query["page_size"][0])
        start = 0
        if "page_token" in query:
            start = [f["id"] for f in fills].index(query["page_token"][0]) + 1
        return respond(request, 200, fills[start:start + size])

    network = FakeNetwork(route)
    reports = make_broker(network).fill_activities()

    assert len(reports) == 230 and network.count("GET", "/v2/account/activities/FILL") == 3
    assert reports[0].price == Decimal("105.89") and reports[0].client_order_id is None


@pytest.mark.parametrize(("activity_side", "side"), [
    ("buy", "buy"), ("buy_minus", "buy"), ("sell", "sell"), ("sell_plus", "sell"), ("sell_short", "sell"),
    ("sell_short_exempt", "sell"), ("cross", "cross"),
])
def test_a_fill_activitys_execution_side_is_read_as_its_orders_side(activity_side: str, side: str) -> None:
    # Alpaca's FILL activities say `sell_short` for a short sale (its TradeActivitySide), where the order says `sell`.
    fill = {"id": f"20250102150000000::{uuid.uuid4()}", "activity_type": "FILL", "transaction_time": "2025-01-02T15:00:00Z",
            "type": "fill", "price": "50", "qty": "100", "side": activity_side, "symbol": "TSLA", "leaves_qty": "0",
            "cum_qty": "100", "order_id": str(uuid.uuid4()), "order_status": "filled"}
    network = FakeNetwork(lambda request, p, q: respond(request, 200, [fill] if "page_token" not in q else []))

    assert [report.side for report in make_broker(network).fill_activities()] == [side]


def test_an_order_alpaca_pys_model_rejects_is_malformed_naming_the_field() -> None:
    oid = str(uuid.uuid4())
    network = FakeNetwork(lambda request, p, q: respond(request, 200, order_json("cat-1", id=oid, updated_at=None)))

    with pytest.raises(MalformedResponse, match="updated_at"):
        make_broker(network).get_order(oid)


@pytest.mark.parametrize(("field", "value", "named"), [
    ("status", "pending_fill", "status"), ("side", "hold", "side"), ("time_in_force", None, "time_in_force"),
    ("id", None, "id"), ("filled_qty", "ten", "filled_qty"), ("legs", {"id": "x"}, "legs"),
])
def test_an_order_answer_alpaca_does_not_send_is_malformed_naming_the_field(field: str, value: Any, named: str) -> None:
    oid = str(uuid.uuid4())
    network = FakeNetwork(lambda request, p, q: respond(request, 200, order_json("cat-1", id=oid, **{field: value})))

    with pytest.raises(MalformedResponse, match=named):
        make_broker(network).get_order(oid)


def test_an_oco_answer_reads_both_legs_with_exact_prices() -> None:
    oid, leg_id = str(uuid.uuid4()), str(uuid.uuid4())
    leg = order_json("cat-2", id=leg_id, type="stop", side="sell", order_class="oco", stop_price="9.07",
                     status="held", legs=None)
    body = order_json("cat-1", id=oid, type="limit", side="sell", order_class="oco", limit_price=11.1, legs=[leg])
    network = FakeNetwork(lambda request, p, q: respond(request, 200, body))

    report = make_broker(network).get_order(oid)

    assert (report.broker_id, report.order_class, report.type, report.limit_price) == (oid, "oco", "limit",
                                                                                       Decimal("11.1"))
    assert [(r.broker_id, r.status, r.type, r.stop_price) for r in report.legs] == [
        (leg_id, "held", "stop", Decimal("9.07"))]


def test_a_calendar_with_seconds_in_its_times_is_malformed_not_a_crash() -> None:
    network = FakeNetwork(
        lambda request, p, q: respond(request, 200, [{"date": "2025-01-02", "open": "09:30:00", "close": "16:00"}])
    )

    with pytest.raises(MalformedResponse):
        make_broker(network).calendar(T0.date(), T0.date())


def test_keys_never_reach_the_log_even_when_calls_fail() -> None:
    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(str(message)), level="DEBUG")
    try:
        network = FakeNetwork(lambda request, p, q: respond(request, 500, {"code": 1, "message": "boom"}))
        broker = make_broker(network, read_attempts=2)
        with pytest.raises(OutcomeUnknown):
            broker.submit_order(buy())
        with pytest.raises(Exception):
            broker.account()
    finally:
        logger.remove(sink)

    assert lines and not any(KEY in line or SECRET in line for line in lines)
    assert KEY not in repr(broker) and SECRET not in repr(broker)


# --- the environment's proxy and CA settings, read once ------------------------------------------------------------

def test_proxy_and_ca_variables_are_read_once_at_start_and_honour_no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    from alpaca.trading.client import TradingClient

    from catalyst.broker.calls import harden

    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/corporate.pem")
    remote = TradingClient(KEY, SECRET, paper=True)
    harden(remote, timeout_s=1.0)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    local = TradingClient(KEY, SECRET, paper=True, url_override="http://127.0.0.1:9")
    harden(local, timeout_s=1.0)
    monkeypatch.setenv("HTTPS_PROXY", "http://changed.example:1")  # later changes are not read per request

    assert remote._session.trust_env is False and local._session.trust_env is False
    assert remote._session.proxies.get("https") == "http://proxy.example:3128"
    assert "https" not in local._session.proxies and "http" not in local._session.proxies
    assert remote._session.verify == "/etc/ssl/corporate.pem"
    prepared = remote._session.prepare_request(requests.Request("GET", "https://paper-api.alpaca.markets/v2/account"))
    settings = remote._session.merge_environment_settings(prepared.url, {}, None, None, None)
    assert settings["proxies"].get("https") == "http://proxy.example:3128" and settings["verify"] == "/etc/ssl/corporate.pem"


def test_the_tradable_symbols_are_the_active_us_equities_the_account_may_trade_otc_excepted() -> None:
    def asset(symbol: str, exchange: str = "NASDAQ", tradable: bool = True) -> dict[str, Any]:
        return {"id": f"00000000-0000-0000-0000-{len(symbol):012d}", "class": "us_equity", "exchange": exchange,
                "symbol": symbol, "name": symbol, "status": "active", "tradable": tradable, "marginable": True,
                "shortable": True, "easy_to_borrow": True, "fractionable": True, "attributes": []}

    queries: list[dict[str, list[str]]] = []

    def route(request: PreparedRequest, path: str, query: dict[str, list[str]]) -> Response:
        queries.append(query)
        return respond(request, 200, [asset("MSFT"), asset("AAPL"), asset("BRK.B", "NYSE"), asset("GRAYU", "OTC"),
                                      asset("HALT", tradable=False),
                                      # an exchange alpaca-py's enum does not know yet: its model refused the list
                                      asset("NEWX", "SOMENEWVENUE"), {"symbol": None}, "garbage"])

    network = FakeNetwork(route)

    assert make_broker(network).tradable_symbols() == ["AAPL", "BRK.B", "MSFT", "NEWX"]
    assert network.seen == [("GET", "/v2/assets")]
    assert queries == [{"status": ["active"], "asset_class": ["us_equity"]}]


def test_an_asset_list_that_is_not_a_list_is_malformed_not_a_crash() -> None:
    network = FakeNetwork(lambda request, p, q: respond(request, 200, {"message": "surprise"}))

    with pytest.raises(MalformedResponse, match="assets: a list expected, got dict"):
        make_broker(network).tradable_symbols()


def test_a_40010001_that_is_not_about_the_client_order_id_is_a_refusal_when_no_order_has_it() -> None:
    # From a review: Alpaca answers 40010001 to invalid requests too, not only to a reused client_order_id. Taken
    # for a duplicate, a refused OCO became an outcome unknown (sent again, left to the doctor, its shares bare).
    network = FakeNetwork(lambda request, path, query: respond(
        request, 422, {"code": 40010001, "message": "qty must be > 0"}) if request.method == "POST"
        else respond(request, 404, {"code": 40410000, "message": "order not found"}))

    with pytest.raises(Rejected) as refused:
        make_broker(network).submit_with_lookup(buy("cat-10"))

    assert refused.value.reason is RejectReason.INVALID_ORDER and "qty must be > 0" in str(refused.value)
    assert network.count("POST", "/v2/orders") == 1 and network.count("GET", "/v2/orders") == 1  # looked up once


def test_a_duplicate_client_order_id_nobody_has_stays_an_outcome_to_settle() -> None:
    # The answer names the client_order_id yet the look-up finds no order (a broker slow to show it): not a refusal.
    network = FakeNetwork(lambda request, path, query: respond(
        request, 422, {"code": 40010001, "message": "client_order_id must be unique"}) if request.method == "POST"
        else respond(request, 404, {"code": 40410000, "message": "order not found"}))

    with pytest.raises(DuplicateClientOrderId):
        make_broker(network).submit_with_lookup(buy("cat-11"))


def position_json(symbol: str = "AAPL", **extra: Any) -> dict[str, Any]:
    """A position as Alpaca sends it (GET /v2/positions), every field alpaca-py's Position model has."""
    return {"asset_id": str(uuid.uuid4()), "symbol": symbol, "exchange": "NASDAQ", "asset_class": "us_equity",
            "asset_marginable": True, "avg_entry_price": "149.95", "qty": "100", "qty_available": "0", "side": "long",
            "market_value": "15120", "cost_basis": "14995", "unrealized_pl": "125", "unrealized_plpc": "0.0083",
            "unrealized_intraday_pl": "125", "unrealized_intraday_plpc": "0.0083", "current_price": "151.2",
            "lastday_price": "149", "change_today": "0.0148", **extra}


def test_a_position_on_an_exchange_alpaca_py_does_not_know_yet_is_still_read() -> None:
    # From a review: positions went through alpaca-py's Position model, whose exchange and asset class enums refused
    # a value they did not know yet (as its Asset model did: issues #276, #340, #624); one such position failed every
    # read of the account's positions, the doctor's passes and the emergency stop's check among them.
    network = FakeNetwork(lambda request, p, q: respond(request, 200, [position_json("AAPL"),
                                                                      position_json("NEWX", exchange="NEWEXCH")]))

    positions = make_broker(network).positions()

    assert [(p.symbol, p.side, p.qty, p.avg_entry_price, p.current_price) for p in positions] == [
        ("AAPL", "long", Decimal(100), Decimal("149.95"), Decimal("151.2")),
        ("NEWX", "long", Decimal(100), Decimal("149.95"), Decimal("151.2"))]


def test_a_short_position_reads_its_quantity_unsigned_and_one_position_by_symbol_too() -> None:
    network = FakeNetwork(lambda request, p, q: respond(request, 200, position_json("TSLA", side="short", qty="-40")))

    position = make_broker(network).position("TSLA")

    assert position is not None and (position.side, position.qty) == ("short", Decimal(40))


@pytest.mark.parametrize("field, value, named", [("qty", "lots", "qty 'lots' is not a number"),
                                                 ("side", "flat", "side 'flat' is not long or short"),
                                                 ("qty", None, "has no qty"),
                                                 ("qty", "-100", "side long contradicts its qty '-100'")])
def test_a_position_answer_the_daemon_cannot_read_is_malformed_naming_the_field(field: str, value: Any,
                                                                                 named: str) -> None:
    network = FakeNetwork(lambda request, p, q: respond(request, 200, [position_json(**{field: value})]))

    with pytest.raises(MalformedResponse, match=named):
        make_broker(network).positions()


def test_a_positions_answer_that_is_not_a_list_is_malformed_not_a_crash() -> None:
    network = FakeNetwork(lambda request, p, q: respond(request, 200, {"message": "surprise"}))

    with pytest.raises(MalformedResponse, match="positions: a list expected, got dict"):
        make_broker(network).positions()


def account_json(**extra: Any) -> dict[str, Any]:
    """An account as Alpaca sends it (GET /v2/account), every field alpaca-py's TradeAccount model requires."""
    return {"id": "904837e3-3b76-47ec-b432-046db621571b", "account_number": "PA3X0000001", "status": "ACTIVE",
            "crypto_status": "ACTIVE", "currency": "USD", "buying_power": "200000", "regt_buying_power": "200000",
            "non_marginable_buying_power": "100000", "cash": "100000", "accrued_fees": "0",
            "pending_transfer_in": "0", "pending_transfer_out": "0", "portfolio_value": "100000",
            "pattern_day_trader": False, "trading_blocked": False, "transfers_blocked": False,
            "account_blocked": False, "created_at": "2026-01-05T15:00:00Z", "trade_suspended_by_user": False,
            "multiplier": "2", "shorting_enabled": True, "equity": "100000", "last_equity": "99000.5",
            "long_market_value": "0", "short_market_value": "0", "initial_margin": "0", "maintenance_margin": "0",
            "last_maintenance_margin": "0", "sma": "0", "daytrade_count": 0, **extra}


def test_an_account_alpaca_py_refuses_is_still_read_and_says_why_it_cannot_trade() -> None:
    # alpaca-py's issue #216: the answer for an account still onboarding (through OAuth) has a null account_number and
    # no balances, and its TradeAccount model refused it; the daemon's start took that for an unreachable broker and
    # waited broker.startup_wait_s (300 s) to say so, where the account's own status says why it cannot trade.
    onboarding = {"account_number": None, "buying_power": "0", "crypto_status": "INACTIVE", "currency": "USD",
                  "daytrading_buying_power": "0", "effective_buying_power": "0", "id": "8e2c-onboarding",
                  "non_marginable_buying_power": "0", "regt_buying_power": "0", "status": "ONBOARDING"}
    network = FakeNetwork(lambda request, p, q: respond(request, 200, onboarding))

    account = make_broker(network).account()

    assert (account.account_number, account.status, account.equity, account.trading_blocked) == (
        "8e2c-onboarding", "ONBOARDING", None, False)
    assert account.why_no_orders() == "status ONBOARDING: only an ACTIVE account trades"
    assert network.count("GET", "/v2/account") == 1  # read at once, not retried as a transient failure


def test_an_account_status_alpaca_py_does_not_know_yet_is_read_as_text() -> None:
    network = FakeNetwork(lambda request, p, q: respond(request, 200, account_json(status="ACTIVE_LIMITED",
                                                                                   crypto_status="PENDING_KYC")))

    account = make_broker(network).account()

    assert (account.status, account.equity, account.last_equity, account.buying_power, account.daytrade_count) == (
        "ACTIVE_LIMITED", Decimal("100000"), Decimal("99000.5"), Decimal("200000"), 0)
    assert account.why_no_orders() == "status ACTIVE_LIMITED: only an ACTIVE account trades"


def test_an_active_account_reads_its_money_exactly_and_may_trade() -> None:
    # Flags and counts read as alpaca-py's model read them, text included: nothing it accepted is refused now.
    network = FakeNetwork(lambda request, p, q: respond(request, 200, account_json(
        equity="100000.17", cash=1234.5, trading_blocked="false", daytrade_count="2")))

    account = make_broker(network).account()

    assert (account.account_number, account.equity, account.cash, account.shorting_enabled,
            account.trading_blocked, account.daytrade_count) == (
        "PA3X0000001", Decimal("100000.17"), Decimal("1234.5"), True, False, 2)
    assert account.why_no_orders() is None


@pytest.mark.parametrize("field, value, named", [
    ("equity", "lots", "account equity 'lots' is not a number"),
    ("buying_power", "NaN", "account buying_power 'NaN' is not a number"),
    ("cash", True, "account cash True is not a number"),
    ("trading_blocked", "maybe", "account trading_blocked 'maybe' is not true or false"),
    ("daytrade_count", "two", "account daytrade_count 'two' is not a whole number"),
    ("status", None, "account status None is not a status"),
    ("id", "", "account has no id"),
])
def test_an_account_answer_the_daemon_cannot_read_is_malformed_naming_the_field(field: str, value: Any,
                                                                                named: str) -> None:
    network = FakeNetwork(lambda request, p, q: respond(request, 200, account_json(**{field: value})))

    with pytest.raises(MalformedResponse, match=named):
        make_broker(network).account()


def test_an_account_answer_that_is_not_an_object_is_malformed_not_a_crash() -> None:
    network = FakeNetwork(lambda request, p, q: respond(request, 200, ["surprise"]))

    with pytest.raises(MalformedResponse, match="account is list, not an object"):
        make_broker(network).account()
