"""How every broker call is made: a timeout on alpaca-py's sessions, the rate budget, classification, read retries."""

from __future__ import annotations

import os
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Callable, Iterator, TypeVar

from loguru import logger
from requests import PreparedRequest, Response, Session
from requests.adapters import HTTPAdapter
from requests.utils import get_environ_proxies
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, stop_after_delay
from tenacity import wait_exponential_jitter

from alpaca.common.rest import RESTClient

from catalyst.broker.errors import NotFound, RateLimited, TransientError, classify, is_not_cancelable
from catalyst.broker.ratelimit import Priority, RateLimiter, RateLimitTimeout
from catalyst.broker.session import LeanSession

T = TypeVar("T")
Transport = Callable[[PreparedRequest, Any], Response]  # (request, timeout) -> response

# Set while a caller that says the outcome itself makes its calls (quietly): their failures are DEBUG lines.
_failures_quiet: ContextVar[bool] = ContextVar("broker_call_failures_quiet", default=False)


@contextmanager
def failures_quiet(quiet: bool = True) -> Iterator[None]:
    """The calls made inside log their failures and retries at DEBUG: a submit sent again every 15 s through a
    broker outage made a dozen WARNING lines each time, for as long as it lasted, where its router says it about
    once a minute (OrderRouter._send_again_later)."""
    token = _failures_quiet.set(quiet)
    try:
        yield
    finally:
        _failures_quiet.reset(token)


def said_through_an_outage(tries: int, every: int = 4) -> bool:
    """Whether the `tries`-th failed try of something asked again until the broker answers is said at WARNING: the
    first, then every `every`-th, not at every try for as long as an outage lasts. Every fourth is about once a minute
    for a resend or a catch-up, once their waits reach OrderRouter's REFUSED_BACKOFF_MAX_S (15 s); a caller asking at
    another pace says how many tries make a minute. The tries not said make their calls quietly (failures_quiet)."""
    return tries == 1 or tries % every == 0


class _TimeoutAdapter(HTTPAdapter):
    """alpaca-py calls `session.request` with NO timeout, so a hung broker would hang the daemon
    forever; this transport adapter supplies one to every request that does not set its own.
    max_retries=0: urllib3 must not silently resend a POST either.
    `send` replaces the network (tests: one small function from PreparedRequest to Response)."""

    def __init__(self, timeout_s: float, send: Transport | None = None) -> None:
        super().__init__(max_retries=0)
        self._timeout_s = timeout_s
        self._send = send

    def send(self, request: PreparedRequest, **kwargs: Any) -> Response:  # type: ignore[override]
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self._timeout_s
        if self._send is not None:
            return self._send(request, kwargs["timeout"])
        return super().send(request, **kwargs)


def harden(client: RESTClient, timeout_s: float, transport: Transport | None = None) -> None:
    client._session = LeanSession()
    adapter = _TimeoutAdapter(timeout_s, transport)
    client._session.mount("http://", adapter)
    client._session.mount("https://", adapter)
    settle_environment(client._session, str(getattr(client._base_url, "value", client._base_url)))
    # alpaca-py retries 429/504 itself (3 x 3 s, invisible to us): retry policy is ours, so turn it off.
    client._retry = 0
    client._retry_codes = []


def settle_environment(session: Session, base_url: str) -> None:
    """Read the proxy and CA-bundle variables once, at start, instead of on every request.

    requests re-reads them from os.environ for each call (`trust_env`): about 0.2 ms per request here, a tenth of
    a loopback round trip, spent on every stop-loss submit. A daemon's environment does not change while it runs,
    so the same settings are taken once for the client's one broker address (NO_PROXY still decides whether that
    address goes through the proxy). Turning `trust_env` off also keeps a ~/.netrc entry for the broker's host from
    adding an Authorization header to calls that carry Alpaca's key headers.
    """
    session.proxies.update(get_environ_proxies(base_url, no_proxy=None))
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if bundle:
        session.verify = bundle
    session.trust_env = False


def is_retryable_read_error(exc: BaseException) -> bool:
    return isinstance(exc, TransientError) and not isinstance(exc, RateLimitTimeout)


class BrokerCalls:
    """The call policy shared by the trading and market-data halves of AlpacaBroker."""

    def __init__(
        self,
        *,
        name: str,
        secrets: tuple[str, ...],
        limiter: RateLimiter | None,
        limiter_timeout_s: float,
        read_attempts: int,
        read_retry_budget_s: float,
        retry_wait_initial_s: float,
        retry_wait_max_s: float,
    ) -> None:
        self.name = name
        self.limiter = limiter if limiter is not None else RateLimiter()
        self._secrets = secrets
        self._limiter_timeout_s = limiter_timeout_s
        self._read_attempts = read_attempts
        self._read_budget_s = read_retry_budget_s
        # jitter scales with the first wait so a zero wait (tests) really is zero
        self._wait = wait_exponential_jitter(multiplier=retry_wait_initial_s, max=retry_wait_max_s, jitter=retry_wait_initial_s)

    def _once(self, operation: str, call: Callable[[], T], *, priority: Priority | None, mutating: bool) -> T:
        if priority is not None:
            self.limiter.acquire(priority, self._limiter_timeout_s)
        try:
            return call()
        except Exception as exc:  # noqa: BLE001 - every failure leaves here classified
            error = classify(exc, mutating=mutating, operation=operation, secrets=self._secrets)
            if not isinstance(error, NotFound):
                # "not cancelable" answers a cancel of an order that already ended (an OCO's sibling, cancelled with
                # the leg cancelled first): the caller reads its status; nothing went wrong.
                level = "DEBUG" if _failures_quiet.get() else "INFO" if is_not_cancelable(error) else "WARNING"
                logger.log(level, "broker {} {} → {}", self.name, operation, error)
            raise error from exc

    def _wait_for(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        backoff = self._wait(state)
        if isinstance(exc, RateLimited) and exc.retry_after_s is not None:
            return max(backoff, min(exc.retry_after_s, self._read_budget_s))
        return backoff

    def _read(self, operation: str, call: Callable[[], T], priority: Priority | None = Priority.READ) -> T:
        """A read: retried on transient errors within the attempt and time budget (tenacity).
        priority None = market data, which has its own budget at Alpaca and spends no trading token."""
        retrying = Retrying(
            stop=stop_after_attempt(self._read_attempts) | stop_after_delay(self._read_budget_s),
            retry=retry_if_exception(is_retryable_read_error),
            wait=self._wait_for,
            reraise=True,
            before_sleep=lambda s: logger.log(
                "DEBUG" if _failures_quiet.get() else "INFO", "broker {} {} retry {} after {}", self.name, operation,
                s.attempt_number, s.outcome.exception()
            ),
        )
        for attempt in retrying:
            with attempt:
                return self._once(operation, call, priority=priority, mutating=False)
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    def _mutate(self, operation: str, call: Callable[[], T], priority: Priority) -> T:
        """A mutating call: never retried here (the router decides; see submit_with_lookup)."""
        return self._once(operation, call, priority=priority, mutating=True)

