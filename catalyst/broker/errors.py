"""Broker errors grouped by what the caller must do about them, and `classify` that maps alpaca-py's to ours.

The tree (catch at the level whose recovery action you implement)::

    BrokerError                      every broker failure; str() is one line, never a secret
    ├── PermanentError               repeating the same request will not help: decide or call a human
    │   ├── Rejected                 the broker refused the request (see `reason`: buying power, qty,
    │   │                            market closed, invalid order 400/422, wash trade, ...)
    │   ├── InvalidRequest           refused locally before sending (bad arguments); nothing was sent
    │   ├── NotFound                 404: no such order / position
    │   └── AuthError                401, or 403 that is not a trading rejection: needs a human
    ├── TransientError               resolves itself: safe to repeat after a pause
    │   ├── RateLimited              429 (`retry_after_s` when the broker said when)
    │   ├── ServerError              5xx on a read (nothing can have acted)
    │   ├── ConnectionFailed         the request never left: connect refused / connect timeout
    │   ├── ReadInterrupted          a READ timed out or lost its connection after sending
    │   └── SubmitRefused            every attempt of a submit refused before the broker acted (429,
    │                                connection refused, our own rate budget): nothing placed
    ├── OutcomeUnknown               a MUTATING request may have acted (read timeout, 5xx, reset after
    │   │                            sending): resolve ONLY by looking the order up by client_order_id
    │   └── LookupFailedToo          ... and that look-up failed as well: the broker answered nothing
    ├── DuplicateClientOrderId       422 40010001: an order with this client_order_id already exists
    │                                (Alpaca's code for other invalid requests too: submit_with_lookup
    │                                reads one no order has, not naming the id, as Rejected)
    └── MalformedResponse            the broker answered something alpaca-py's models reject (`field`)
"""

from __future__ import annotations

import json
import re
import time
from decimal import Decimal
from enum import StrEnum
from typing import Iterable

import requests
from pydantic import ValidationError

from alpaca.common.exceptions import APIError

DUPLICATE_CLIENT_ORDER_ID_CODE = 40010001
FORBIDDEN_TRADING_CODE = 40310000  # Alpaca's 403 "insufficient buying power / qty", wash trade, ...
_MAX_MESSAGE_CHARS = 200  # plain-text 502 pages are whole HTML documents: keep the log line a line


class RejectReason(StrEnum):
    INSUFFICIENT_BUYING_POWER = "insufficient_buying_power"
    INSUFFICIENT_QTY = "insufficient_qty"
    MARKET_CLOSED = "market_closed"
    WASH_TRADE = "wash_trade"
    INVALID_ORDER = "invalid_order"
    NOT_CANCELABLE = "not_cancelable"
    OTHER = "other"


# Matched against Alpaca's message text (exact wording is unverified: keep the patterns loose).
_REASON_PATTERNS: tuple[tuple[RejectReason, re.Pattern[str]], ...] = (
    (RejectReason.INSUFFICIENT_BUYING_POWER, re.compile(r"buying.?power", re.I)),
    (RejectReason.INSUFFICIENT_QTY, re.compile(r"insufficient.*(qty|quantity)|qty.*available", re.I)),
    (RejectReason.WASH_TRADE, re.compile(r"wash.?trade", re.I)),
    (RejectReason.MARKET_CLOSED, re.compile(r"market.*(closed|not open)|outside.*hours", re.I)),
    # A cancel of an order that already ended: "order is not cancelable", or Alpaca's wording since 2026, 'order is
    # already in "filled" state' (its code, 42210000, is shared with other refusals: the text decides).
    (RejectReason.NOT_CANCELABLE, re.compile(r"not.*cancel|already in \W*\w+\W* state", re.I)),
)


class BrokerError(Exception):
    """Base of every broker failure. Carries HTTP status, Alpaca code and message when known."""

    kind = "broker error"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: int | None = None,
        operation: str = "",
    ) -> None:
        self.message = _one_line(message)
        self.status = status
        self.code = code
        self.operation = operation
        super().__init__(str(self))

    def __str__(self) -> str:
        parts = [self.kind]
        if self.status is not None:
            parts.append(f"HTTP {self.status}")
        if self.code is not None:
            parts.append(f"code {self.code}")
        head = " ".join(parts)
        where = f" ({self.operation})" if self.operation else ""
        return f"{head}: {self.message}{where}"


class PermanentError(BrokerError):
    kind = "permanent error"


class Rejected(PermanentError):
    kind = "rejected"

    def __init__(self, message: str, *, reason: RejectReason = RejectReason.OTHER, **kw: object) -> None:
        self.reason = reason
        super().__init__(message, **kw)  # type: ignore[arg-type]

    def __str__(self) -> str:
        return super().__str__().replace("rejected", f"rejected[{self.reason}]", 1)


# Alpaca's refusal of a sell for want of shares names how many are free in its message, which is what reaches a row's
# reason: "insufficient qty available for order (requested: 100, available: 60)" (the wording is Alpaca's to change:
# a message without it names no count). Order entry's own count at that moment: shares held less those every open
# order promises.
_AVAILABLE_IN_MESSAGE = re.compile(r"\bavailable:\s*(-?\d+(?:\.\d+)?)")


def shares_available_in(reason: str | None) -> Decimal | None:
    """The free shares a refusal for want of shares names (see _AVAILABLE_IN_MESSAGE), or None if it names none."""
    found = _AVAILABLE_IN_MESSAGE.search(reason or "")
    return Decimal(found.group(1)) if found else None


def is_not_cancelable(exc: BaseException) -> bool:
    """A cancel refused because the order had already ended (filled, or cancelled with its OCO sibling)."""
    return isinstance(exc, Rejected) and exc.reason is RejectReason.NOT_CANCELABLE


class InvalidRequest(PermanentError):
    kind = "invalid request (not sent)"


class NotFound(PermanentError):
    kind = "not found"


class AuthError(PermanentError):
    kind = "not authorized (needs a human)"


class TransientError(BrokerError):
    kind = "transient error"


class RateLimited(TransientError):
    kind = "rate limited"

    def __init__(self, message: str, *, retry_after_s: float | None = None, **kw: object) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(message, **kw)  # type: ignore[arg-type]


class ServerError(TransientError):
    kind = "server error"


class ConnectionFailed(TransientError):
    kind = "connection failed (request never sent)"


class ReadInterrupted(TransientError):
    kind = "read interrupted"


class SubmitRefused(TransientError):
    """Every attempt of one submit was refused before the broker acted on it, so none of them placed an order: the
    same client_order_id may be sent again (when `retry_after_s` says, if the broker said), with nothing to look up."""

    kind = "refused before the broker acted"

    def __init__(self, message: str, *, retry_after_s: float | None = None, **kw: object) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(message, **kw)  # type: ignore[arg-type]


class OutcomeUnknown(BrokerError):
    kind = "outcome unknown (look up by client_order_id)"


class LookupFailedToo(OutcomeUnknown):
    """A submit's outcome unknown whose look-up by client_order_id failed as well: nothing of the broker's was heard
    (an outage), unlike a look-up that answered "no such order" (a request that may still land)."""


def answered_nothing(exc: BaseException) -> bool:
    """The broker gave no answer to the request (a 5xx, a connection refused, lost or timed out): an outage, which
    passes, unlike an answer refusing it (a 4xx), which a caller asking again meets again."""
    return isinstance(exc, ServerError | ConnectionFailed | ReadInterrupted | OutcomeUnknown)


class DuplicateClientOrderId(BrokerError):
    kind = "duplicate client_order_id"


class MalformedResponse(BrokerError):
    kind = "malformed broker response"

    def __init__(self, message: str, *, field: str = "", **kw: object) -> None:
        self.field = field
        super().__init__(message, **kw)  # type: ignore[arg-type]


def classify(
    exc: BaseException,
    *,
    mutating: bool,
    operation: str = "",
    secrets: Iterable[str] = (),
) -> BrokerError:
    """Map any exception raised by an alpaca-py call to the BrokerError that says how to recover.

    `mutating` is True for requests that can change broker state (submit, replace, cancel, close):
    for them, anything that may have reached the broker becomes OutcomeUnknown.
    `secrets` are scrubbed from the message in case a server echoes them back.
    """
    error = _classify(exc, mutating=mutating, operation=operation)
    for secret in secrets:
        if secret and secret in error.message:
            error.message = error.message.replace(secret, "***")
            error.args = (str(error),)
    return error


def _classify(exc: BaseException, *, mutating: bool, operation: str) -> BrokerError:
    if isinstance(exc, BrokerError):
        return exc
    if isinstance(exc, APIError):
        return _classify_api_error(exc, mutating=mutating, operation=operation)
    if isinstance(exc, ValidationError):
        return _malformed_from_validation(exc, operation)
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        # ConnectTimeout is also a ConnectionError and a Timeout: it must be tested first.
        return ConnectionFailed(f"connect timed out: {exc}", operation=operation)
    if isinstance(exc, requests.exceptions.ReadTimeout):
        if mutating:
            return OutcomeUnknown(f"no answer in time: {exc}", operation=operation)
        return ReadInterrupted(f"read timed out: {exc}", operation=operation)
    if isinstance(exc, requests.exceptions.JSONDecodeError):
        # A 2xx with a body that is not JSON: for a mutating call the broker DID act.
        return MalformedResponse(f"answer is not JSON: {exc}", field="<body>", operation=operation)
    if isinstance(exc, requests.exceptions.ConnectionError):
        if _never_sent(exc):
            return ConnectionFailed(_connection_reason(exc), operation=operation)
        if mutating:
            return OutcomeUnknown(f"connection lost after sending: {exc}", operation=operation)
        return ReadInterrupted(f"connection lost: {exc}", operation=operation)
    if isinstance(exc, (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError)):
        if mutating:
            return OutcomeUnknown(f"answer cut off: {exc}", operation=operation)
        return ReadInterrupted(f"answer cut off: {exc}", operation=operation)
    if isinstance(exc, requests.exceptions.RequestException):
        if mutating:
            return OutcomeUnknown(f"{type(exc).__name__}: {exc}", operation=operation)
        return ReadInterrupted(f"{type(exc).__name__}: {exc}", operation=operation)
    if isinstance(exc, (ValueError, KeyError, TypeError)):
        # alpaca-py's own parsing (e.g. calendar "09:30:00", unknown market-data keys) raises these.
        return MalformedResponse(f"{type(exc).__name__}: {exc}", operation=operation)
    return BrokerError(f"unexpected {type(exc).__name__}: {exc}", operation=operation)


def _classify_api_error(exc: APIError, *, mutating: bool, operation: str) -> BrokerError:
    status, code, message = api_error_fields(exc)
    kw: dict[str, object] = {"status": status, "code": code, "operation": operation}
    if code == DUPLICATE_CLIENT_ORDER_ID_CODE or "client_order_id must be unique" in message.lower():
        return DuplicateClientOrderId(message, **kw)  # type: ignore[arg-type]
    if status == 429:
        return RateLimited(message, retry_after_s=_retry_after(exc), **kw)  # type: ignore[arg-type]
    if status is not None and status >= 500:
        if mutating:
            return OutcomeUnknown(message, **kw)  # type: ignore[arg-type]
        return ServerError(message, **kw)  # type: ignore[arg-type]
    if status == 404:
        return NotFound(message, **kw)  # type: ignore[arg-type]
    if status == 401:
        return AuthError(message, **kw)  # type: ignore[arg-type]
    reason = _reject_reason(message)
    if status == 403:
        if code == FORBIDDEN_TRADING_CODE or reason is not RejectReason.OTHER:
            return Rejected(message, reason=reason, **kw)  # type: ignore[arg-type]
        return AuthError(message, **kw)  # type: ignore[arg-type]
    if status in (400, 422):
        if reason is RejectReason.OTHER:
            reason = RejectReason.INVALID_ORDER
        return Rejected(message, reason=reason, **kw)  # type: ignore[arg-type]
    return Rejected(message, reason=reason, **kw)  # type: ignore[arg-type]


def refused_as_invalid(error: BrokerError) -> Rejected:
    """`error`'s answer read as the broker refusing the request, as a 400/422 is: an invalid order unless it says
    why (buying power, qty, ...)."""
    reason = _reject_reason(error.message)
    return Rejected(error.message, reason=RejectReason.INVALID_ORDER if reason is RejectReason.OTHER else reason,
                    status=error.status, code=error.code, operation=error.operation)


def api_error_fields(exc: APIError) -> tuple[int | None, int | None, str]:
    """(status, Alpaca code, message) of an APIError without trusting its body.

    alpaca-py's `.code`/`.message` json-decode the body on every access and RAISE on a
    plain-text body (429 and 502 pages from proxies), so they are never touched here.
    """
    status: int | None
    try:
        status = exc.status_code
    except Exception:  # noqa: BLE001 - a malformed http_error must not hide the real error
        status = None
    body = exc.args[0] if exc.args else ""
    text = body if isinstance(body, str) else str(body)
    code: int | None = None
    message = text
    try:
        decoded = json.loads(text)
    except (ValueError, TypeError):
        decoded = None
    if isinstance(decoded, dict):
        raw_code = decoded.get("code")
        code = raw_code if isinstance(raw_code, int) else _int_or_none(raw_code)
        message = str(decoded.get("message", text))
    if not message.strip():
        message = f"empty body (HTTP {status})"
    return status, code, _one_line(message)


def _retry_after(exc: APIError) -> float | None:
    response = exc.response
    if response is None:
        return None
    headers = response.headers
    if "Retry-After" in headers:
        return _float_or_none(headers["Retry-After"])
    reset = _float_or_none(headers.get("X-RateLimit-Reset"))
    if reset is None:
        return None
    return max(0.0, reset - time.time())  # Alpaca's reset header is a unix timestamp in seconds


def _reject_reason(message: str) -> RejectReason:
    for reason, pattern in _REASON_PATTERNS:
        if pattern.search(message):
            return reason
    return RejectReason.OTHER


def _malformed_from_validation(exc: ValidationError, operation: str) -> MalformedResponse:
    errors = exc.errors()
    first = errors[0] if errors else {}
    field = ".".join(str(part) for part in first.get("loc", ())) or exc.title
    msg = first.get("msg", "invalid")
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return MalformedResponse(f"{exc.title}.{field}: {msg}{more}", field=field, operation=operation)


def _never_sent(exc: requests.exceptions.ConnectionError) -> bool:
    """True when the connection could not even be opened, so the request cannot have acted."""
    text = repr(exc)
    return any(
        marker in text
        for marker in ("NewConnectionError", "ConnectTimeoutError", "NameResolutionError", "Connection refused")
    )


def _connection_reason(exc: requests.exceptions.ConnectionError) -> str:
    """requests nests the cause three deep and its text runs past the line's limit before the OS's reason
    (`[Errno 111] Connection refused`), which is what an operator needs: that reason and the host, where there is one."""
    text = str(exc)
    reason = re.search(r"\[Errno -?\d+\] [^'\"()]+", text)
    host = re.search(r"host='([^']+)', port=(\d+)", text)
    if reason is None:
        return str(exc)
    return reason.group(0).strip() + (f" ({host.group(1)}:{host.group(2)})" if host else "")


def _one_line(text: str) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= _MAX_MESSAGE_CHARS else flat[: _MAX_MESSAGE_CHARS - 1] + "…"


def _int_or_none(value: object) -> int | None:
    try:
        return int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return None


def _float_or_none(value: object) -> float | None:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
