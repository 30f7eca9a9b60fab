"""LeanSession puts on the wire exactly what requests' full Session would, for every shape alpaca-py sends."""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any

import pytest
import requests
from requests import PreparedRequest, Response

from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderSide, QueryOrderStatus, TimeInForce
from alpaca.trading.requests import GetOrdersRequest, MarketOrderRequest

from catalyst.broker.calls import _TimeoutAdapter, harden
from catalyst.broker.session import LeanSession

BASE = "http://127.0.0.1:9/v2"


class Capture:
    def __init__(self) -> None:
        self.requests: list[PreparedRequest] = []
        self.timeouts: list[Any] = []

    def __call__(self, request: PreparedRequest, timeout: Any) -> Response:
        self.requests.append(request)
        self.timeouts.append(timeout)
        response = Response()
        response.status_code, response._content, response.request = 200, b"{}", request
        return response


def sent_by(session_type: type[requests.Session], method: str, url: str, **opts: Any) -> tuple[PreparedRequest, Any]:
    capture = Capture()
    session = session_type()
    session.trust_env = False
    session.mount("http://", _TimeoutAdapter(7.5, capture))
    session.request(method, url, **opts)
    return capture.requests[0], capture.timeouts[0]


def wire(request: PreparedRequest) -> tuple[Any, ...]:
    return request.method, request.url, dict(request.headers), request.body


SHAPES = [
    ("POST", f"{BASE}/orders", {"json": {"symbol": "AAPL", "qty": "10", "limit_price": 150.5, "legs": [{"a": 1}]}}),
    ("GET", f"{BASE}/orders", {"params": {"status": QueryOrderStatus.ALL, "limit": 500, "nested": True,
                                          "symbols": "AAPL,MSFT", "after": None}}),
    ("GET", f"{BASE}/account/activities", {"params": {"activity_types": ["FILL", None, "DIV"], "page_size": 100}}),
    ("GET", f"{BASE}/orders:by_client_order_id?x=1", {"params": {"client_order_id": "c t/é"}}),
    ("GET", f"{BASE}/clock", {"params": None}),
    ("DELETE", f"{BASE}/orders/6f0c", {"params": None}),
    ("PATCH", f"{BASE}/orders/6f0c", {"json": {"qty": "5"}}),
]


@pytest.mark.parametrize("method, url, opts", SHAPES, ids=[f"{m} {u.rsplit('/', 1)[-1]}" for m, u, _ in SHAPES])
def test_the_request_on_the_wire_is_what_requests_would_send(method: str, url: str, opts: dict[str, Any]) -> None:
    headers = {"APCA-API-KEY-ID": "PKTEST", "User-Agent": "APCA-PY/0"}
    full, full_timeout = sent_by(requests.Session, method, url, headers=headers, allow_redirects=False, **opts)
    lean, lean_timeout = sent_by(LeanSession, method, url, headers=headers, allow_redirects=False, **opts)
    assert wire(lean) == wire(full)
    assert lean_timeout == full_timeout == 7.5  # the adapter's default timeout applies to both


def test_nan_is_refused_before_anything_is_sent() -> None:
    with pytest.raises(ValueError):
        sent_by(LeanSession, "POST", f"{BASE}/orders", json={"limit_price": math.nan})


def test_a_shape_alpaca_py_never_sends_takes_requests_full_path() -> None:
    lean, _ = sent_by(LeanSession, "POST", f"{BASE}/orders", data={"a": "1"}, allow_redirects=False)
    full, _ = sent_by(requests.Session, "POST", f"{BASE}/orders", data={"a": "1"}, allow_redirects=False)
    assert wire(lean) == wire(full) and lean.body == "a=1"


def test_harden_puts_alpaca_py_on_the_lean_session_and_its_calls_arrive_intact() -> None:
    capture = Capture()
    client = TradingClient("PKTEST", "secret", paper=True, url_override="http://127.0.0.1:9")
    harden(client, 4.0, capture)
    assert isinstance(client._session, LeanSession)
    try:
        client.submit_order(MarketOrderRequest(symbol="AAPL", qty=3, side=OrderSide.BUY,
                                               time_in_force=TimeInForce.DAY, client_order_id="cid-1"))
    except Exception:  # noqa: BLE001 - "{}" is no Order; only the request matters here
        pass
    try:
        client.get_orders(GetOrdersRequest(status=QueryOrderStatus.CLOSED,
                                           after=datetime(2025, 1, 2, 15, tzinfo=timezone.utc)))
    except Exception:  # noqa: BLE001 - "{}" is no list of orders either
        pass
    post, get = capture.requests
    assert (post.method, post.url) == ("POST", "http://127.0.0.1:9/v2/orders")
    assert post.headers["APCA-API-KEY-ID"] == "PKTEST" and post.headers["Content-Type"] == "application/json"
    assert b'"client_order_id": "cid-1"' in post.body and post.headers["Content-Length"] == str(len(post.body))
    assert get.method == "GET" and "status=closed" in get.url and "after=2025-01-02T15%3A00%3A00" in get.url
    assert capture.timeouts == [4.0, 4.0]


def test_a_url_without_a_scheme_gets_requests_own_clear_error() -> None:
    with pytest.raises(requests.exceptions.MissingSchema):
        LeanSession().request("GET", "/v2/clock", headers={})
