"""Broker error classification, from real requests/urllib3/alpaca-py/pydantic objects."""

from __future__ import annotations

import json
import time
from http.client import RemoteDisconnected

import pytest
import requests
from pydantic import ValidationError
from urllib3.connection import HTTPConnection
from urllib3.exceptions import MaxRetryError, NewConnectionError, ProtocolError

from alpaca.common.exceptions import APIError
from alpaca.trading.models import Order
from catalyst.broker.errors import (
    AuthError,
    BrokerError,
    ConnectionFailed,
    DuplicateClientOrderId,
    MalformedResponse,
    NotFound,
    OutcomeUnknown,
    PermanentError,
    RateLimited,
    ReadInterrupted,
    RejectReason,
    Rejected,
    ServerError,
    TransientError,
    classify,
    is_not_cancelable,
)

URL = "http://127.0.0.1:9/v2/orders"


def api_error(status: int, body: str, headers: dict[str, str] | None = None) -> APIError:
    """An APIError exactly as alpaca-py's RESTClient._one_request builds it."""
    response = requests.Response()
    response.status_code = status
    response._content = body.encode()
    response.headers.update(headers or {})
    response.url = URL
    response.request = requests.Request("POST", URL).prepare()
    try:
        response.raise_for_status()
    except requests.HTTPError as http_error:
        return APIError(response.text, http_error)
    raise AssertionError("not an error status")


def alpaca_body(code: int, message: str) -> str:
    return json.dumps({"code": code, "message": message})


def test_insufficient_buying_power_is_a_rejection_with_its_reason() -> None:
    error = classify(api_error(403, alpaca_body(40310000, "insufficient buying power")), mutating=True)
    assert isinstance(error, Rejected) and isinstance(error, PermanentError)
    assert (error.reason, error.status, error.code) == (RejectReason.INSUFFICIENT_BUYING_POWER, 403, 40310000)
    assert error.message == "insufficient buying power"


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ("insufficient qty available for order (requested: 10, available: 0)", RejectReason.INSUFFICIENT_QTY),
        ("potential wash trade detected. use complex orders", RejectReason.WASH_TRADE),
        ("market is closed", RejectReason.MARKET_CLOSED),
    ],
)
def test_forbidden_trading_messages_map_to_named_reasons(message: str, reason: RejectReason) -> None:
    error = classify(api_error(403, alpaca_body(40310000, message)), mutating=True)
    assert isinstance(error, Rejected) and error.reason == reason


def test_invalid_order_combination_is_rejected_as_invalid_order() -> None:
    error = classify(api_error(422, alpaca_body(42210000, "oco orders must be limit")), mutating=True)
    assert isinstance(error, Rejected) and error.reason == RejectReason.INVALID_ORDER


@pytest.mark.parametrize("message", [
    'order is already in "filled" state',  # Alpaca's answer in 2026 (422, code 42210000)
    'order is already in "canceled" state',
    "order is not cancelable",  # its answer before
])
def test_a_cancel_of_an_order_that_already_ended_is_told_apart_from_an_invalid_order(message: str) -> None:
    error = classify(api_error(422, alpaca_body(42210000, message)), mutating=True, operation="cancel o-7")
    assert isinstance(error, Rejected) and error.reason == RejectReason.NOT_CANCELABLE and is_not_cancelable(error)


def test_duplicate_client_order_id_is_its_own_kind() -> None:
    error = classify(api_error(422, alpaca_body(40010001, "client_order_id must be unique")), mutating=True)
    assert isinstance(error, DuplicateClientOrderId) and not isinstance(error, PermanentError)
    assert error.code == 40010001


def test_missing_order_is_not_found() -> None:
    error = classify(api_error(404, alpaca_body(40410000, "order not found")), mutating=False)
    assert isinstance(error, NotFound) and error.status == 404


def test_unauthorized_needs_a_human() -> None:
    error = classify(api_error(401, alpaca_body(40110000, "request is not authorized")), mutating=False)
    assert isinstance(error, AuthError) and isinstance(error, PermanentError)


def test_plain_text_forbidden_without_trading_code_is_an_auth_error() -> None:
    error = classify(api_error(403, "Forbidden"), mutating=False)
    assert isinstance(error, AuthError) and error.code is None and error.message == "Forbidden"


def test_plain_text_429_is_rate_limited_even_though_alpaca_pys_code_property_raises() -> None:
    reset = time.time() + 30
    raw = api_error(429, "Too Many Requests", {"X-RateLimit-Reset": str(int(reset))})
    with pytest.raises(ValueError):
        _ = raw.code  # the trap: alpaca-py json-decodes the body on access
    error = classify(raw, mutating=True)
    assert isinstance(error, RateLimited) and isinstance(error, TransientError)
    assert error.status == 429 and error.code is None
    assert error.retry_after_s is not None and 0 < error.retry_after_s <= 31


def test_plain_text_502_page_on_a_read_is_a_server_error_in_one_line() -> None:
    page = "<html>\n<head><title>502 Bad Gateway</title></head>\n<body>" + "x" * 5000 + "</body>\n</html>"
    error = classify(api_error(502, page), mutating=False)
    assert isinstance(error, ServerError) and error.status == 502
    assert "\n" not in str(error) and len(str(error)) < 300


def test_5xx_after_a_mutating_request_means_the_outcome_is_unknown() -> None:
    error = classify(api_error(500, alpaca_body(50010000, "internal error")), mutating=True)
    assert isinstance(error, OutcomeUnknown) and error.status == 500


def test_read_timeout_is_unknown_when_mutating_and_transient_for_reads() -> None:
    timeout = requests.exceptions.ReadTimeout("HTTPConnectionPool(host='127.0.0.1'): Read timed out.")
    assert isinstance(classify(timeout, mutating=True), OutcomeUnknown)
    assert isinstance(classify(timeout, mutating=False), ReadInterrupted)


def test_connect_timeout_never_left_so_even_a_submit_is_transient() -> None:
    error = classify(requests.exceptions.ConnectTimeout("connect timed out"), mutating=True)
    assert isinstance(error, ConnectionFailed)


def test_connection_refused_never_left_so_even_a_submit_is_transient() -> None:
    refused = NewConnectionError(HTTPConnection("127.0.0.1", 9), "[Errno 111] Connection refused")
    exc = requests.exceptions.ConnectionError(MaxRetryError(None, URL, refused))  # type: ignore[arg-type]
    assert isinstance(classify(exc, mutating=True), ConnectionFailed)


def test_a_refused_connection_says_the_os_reason_and_the_host_within_the_line() -> None:
    # requests' own text ran past the line's limit before the reason: "…Failed to establish a new connection:…"
    try:
        requests.get("http://127.0.0.1:9/v2/account", timeout=2)
    except requests.exceptions.ConnectionError as exc:
        error = classify(exc, mutating=False, operation="account")
    assert isinstance(error, ConnectionFailed)
    assert "[Errno 111] Connection refused (127.0.0.1:9)" in str(error) and "…" not in str(error)


def test_connection_dropped_after_sending_a_submit_means_unknown() -> None:
    reset = ProtocolError("Connection aborted.", RemoteDisconnected("Remote end closed connection"))
    exc = requests.exceptions.ConnectionError(reset)
    assert isinstance(classify(exc, mutating=True), OutcomeUnknown)
    assert isinstance(classify(exc, mutating=False), ReadInterrupted)


def test_a_payload_alpaca_pys_model_rejects_is_malformed_and_names_the_field() -> None:
    with pytest.raises(ValidationError) as caught:
        Order(id="8f2c6d6e-8c1c-4a39-9a53-0f0f2d0f7a11", client_order_id="c", created_at="2025-01-02T15:00:00Z",
              updated_at=None, submitted_at="2025-01-02T15:00:00Z", time_in_force="day", status="new",
              extended_hours=False)
    error = classify(caught.value, mutating=False)
    assert isinstance(error, MalformedResponse) and error.field == "updated_at"
    assert "updated_at" in str(error)


def test_secrets_echoed_by_a_server_never_reach_the_message() -> None:
    raw = api_error(401, alpaca_body(40110000, "key PKSECRETKEY123 with secret s3cr3t-value is not authorized"))
    error = classify(raw, mutating=False, secrets=("PKSECRETKEY123", "s3cr3t-value"))
    assert "PKSECRETKEY123" not in str(error) and "s3cr3t-value" not in str(error)
    assert "***" in str(error)


def test_every_error_reads_as_one_line_naming_status_code_and_operation() -> None:
    error = classify(api_error(403, alpaca_body(40310000, "insufficient buying power")), mutating=True,
                     operation="submit buy 10 AAPL cid=cat-1")
    assert str(error) == (
        "rejected[insufficient_buying_power] HTTP 403 code 40310000: insufficient buying power "
        "(submit buy 10 AAPL cid=cat-1)"
    )
    assert isinstance(error, BrokerError)
