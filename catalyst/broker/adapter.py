"""AlpacaBroker: the broker port over the real alpaca-py clients, returning neutral reports and classified errors."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any, Literal, Sequence
from uuid import UUID

from loguru import logger
from tenacity import Retrying, retry_if_exception, stop_after_attempt

from alpaca.common.enums import Sort
from alpaca.data.historical import StockHistoricalDataClient
from alpaca.data.historical.news import NewsClient
from alpaca.data.historical.screener import ScreenerClient
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import AssetClass, AssetExchange, AssetStatus, QueryOrderStatus, TimeInForce
from alpaca.trading.requests import (
    ClosePositionRequest,
    GetAssetsRequest,
    GetCalendarRequest,
    GetOrderByIdRequest,
    GetOrdersRequest,
    ReplaceOrderRequest,
)

from catalyst.broker.errors import (
    BrokerError,
    ConnectionFailed,
    DuplicateClientOrderId,
    InvalidRequest,
    LookupFailedToo,
    MalformedResponse,
    NotFound,
    OutcomeUnknown,
    RateLimited,
    SubmitRefused,
    refused_as_invalid,
)
from catalyst.broker.calls import Transport, harden, is_retryable_read_error
from catalyst.broker.marketdata import MarketDataCalls
from catalyst.broker.orders import NewOrder, alpaca_request
from catalyst.broker.ratelimit import Priority, RateLimiter, RateLimitTimeout
from catalyst.broker.reports import (
    AccountReport,
    CalendarDay,
    CancelOutcome,
    ClockReport,
    FillReport,
    OrderReport,
    PositionReport,
    account_report,
    calendar_day,
    clock_report,
    fill_activity_report,
    order_report,
    position_report,
)

ORDERS_PAGE_SIZE = 500  # Alpaca's maximum `limit` for GET /v2/orders
ACTIVITIES_PAGE_SIZE = 100  # Alpaca's maximum `page_size` for account activities
_ONE_MICROSECOND = timedelta(microseconds=1)


# A mutating request refused with one of these was never acted on: a 429 is answered before the order is looked
# at, a refused connection never carried it, and our own rate budget never sent it.
_REFUSED_BEFORE_ACTING = (RateLimited, ConnectionFailed, RateLimitTimeout)


class AlpacaBroker(MarketDataCalls):
    """The only object in Catalyst that talks to Alpaca (or the emulator: same clients, other URL)."""

    def __init__(
        self,
        key_id: str,
        secret: str,
        trading_url: str | None = None,
        data_url: str | None = None,
        stream_url: str | None = None,
        paper: bool = True,
        timeout_s: float = 10.0,
        limiter: RateLimiter | None = None,
        *,
        limiter_timeout_s: float = 30.0,
        read_attempts: int = 3,
        read_retry_budget_s: float = 15.0,
        retry_wait_initial_s: float = 0.2,
        retry_wait_max_s: float = 2.0,
        name: str = "alpaca",
        transport: Transport | None = None,
        data_feed: str = "auto",
    ) -> None:
        super().__init__(
            name=name,
            secrets=(key_id, secret),
            limiter=limiter,
            limiter_timeout_s=limiter_timeout_s,
            read_attempts=read_attempts,
            read_retry_budget_s=read_retry_budget_s,
            retry_wait_initial_s=retry_wait_initial_s,
            retry_wait_max_s=retry_wait_max_s,
        )
        self.stream_url = stream_url
        self.data_feed = data_feed
        data_base = data_url or trading_url  # one emulator port serves trading and data
        self._trading = TradingClient(key_id, secret, paper=paper, url_override=trading_url)
        # Order calls answer raw JSON, read straight into OrderReports (reports.order_report says why).
        self._orders = TradingClient(key_id, secret, paper=paper, url_override=trading_url, raw_data=True)
        self._data = StockHistoricalDataClient(key_id, secret, url_override=data_base)
        self._news = NewsClient(key_id, secret, url_override=data_base)
        self._screener = ScreenerClient(key_id, secret, url_override=data_base)
        for client in (self._trading, self._orders, self._data, self._news, self._screener):
            harden(client, timeout_s, transport)

    def __repr__(self) -> str:  # never the keys
        return f"AlpacaBroker(name={self.name!r})"

    # ---- account, clock, calendar --------------------------------------------------------------

    def account(self) -> AccountReport:
        return self._read("account", lambda: account_report(self._orders.get_account()))  # raw JSON: see account_report

    def clock(self) -> ClockReport:
        return self._read("clock", lambda: clock_report(self._trading.get_clock()))

    def tradable_symbols(self) -> list[str]:
        """Every US equity this account may trade, OTC excepted (one call: about 11,000 symbols at Alpaca). Read from
        the raw JSON, three fields: alpaca-py's Asset model has refused the whole list over one enum value it did not
        know yet (a new exchange or asset class: its issues #276, #340, #624), which would stop every scan."""
        request = GetAssetsRequest(status=AssetStatus.ACTIVE, asset_class=AssetClass.US_EQUITY)
        assets = self._read("assets", lambda: self._orders.get_all_assets(request))
        if not isinstance(assets, list):
            raise MalformedResponse(f"assets: a list expected, got {type(assets).__name__}", field="assets",
                                    operation="assets")
        return sorted({a["symbol"] for a in assets
                       if isinstance(a, dict) and isinstance(a.get("symbol"), str) and a["symbol"]
                       and a.get("tradable") is True and a.get("exchange") != AssetExchange.OTC.value})

    def calendar(self, start: date, end: date) -> list[CalendarDay]:
        request = GetCalendarRequest(start=start, end=end)
        return self._read(
            f"calendar {start}..{end}", lambda: [calendar_day(d) for d in self._trading.get_calendar(request)]
        )

    # ---- orders --------------------------------------------------------------------------------

    def submit_order(self, order: NewOrder, priority: Priority = Priority.ENTRY, announce: bool = True) -> OrderReport:
        """`announce=False`: the caller logs the submit line itself (announce_submit), after it has passed the
        report on: a broker worker tells the router first, so the acknowledgement is not behind a log line."""
        request = alpaca_request(order)
        operation = f"submit {order.describe()}"
        report = self._mutate(operation, lambda: order_report(self._orders.submit_order(request)), priority)
        if announce:
            self.announce_submit(order, report)
        return report

    def announce_submit(self, order: NewOrder, report: OrderReport) -> None:
        logger.info("broker {} submit {} cid={} → {} id={}", self.name, order.symbol, order.client_order_id,
                    report.status, report.broker_id)

    def submit_oco_exit(
        self,
        symbol: str,
        side: Literal["buy", "sell"],
        qty: Any,
        take_profit_limit: Any,
        stop_price: Any,
        client_order_id: str,
        stop_limit: Any = None,
        tif: Literal["day", "gtc"] = "day",
    ) -> OrderReport:
        order = NewOrder.oco_exit(symbol=symbol, side=side, qty=qty, take_profit_limit=take_profit_limit,
                                  stop_price=stop_price, client_order_id=client_order_id, stop_limit=stop_limit,
                                  tif=tif)
        return self.submit_order(order, priority=Priority.PROTECT)

    def submit_with_lookup(
        self, order: NewOrder, priority: Priority = Priority.ENTRY, attempts: int = 3, announce: bool = True
    ) -> OrderReport:
        """Submit so that one NewOrder can never become two broker orders.

        On OutcomeUnknown (or an unparseable answer) the order is looked up by client_order_id: found →
        that is the answer; not found → resubmitting the SAME client_order_id is safe, because Alpaca
        refuses a second order with it (DuplicateClientOrderId → look up again). Transient errors where
        nothing was sent are resubmitted too. At most `attempts` submissions; then the last error, or SubmitRefused
        when every attempt was refused before the broker acted (429s, a refused connection, our own rate budget):
        then no attempt placed an order, and the caller may send the same client_order_id again later without a
        look-up.
        """
        cid = order.client_order_id
        may_have_acted = [False]  # an attempt whose request the broker may have acted on
        # While every such attempt's look-up failed too, the broker has said nothing about the order.
        unanswered: list[LookupFailedToo | None] = [None]
        answered = [False]

        def attempt_once() -> OrderReport:
            try:
                return self.submit_order(order, priority, announce)
            except BrokerError as error:
                if not isinstance(error, _REFUSED_BEFORE_ACTING):  # a broker that read the request, or may have
                    may_have_acted[0] = True
                    if not isinstance(error, (OutcomeUnknown, MalformedResponse)):  # settled by the look-up below
                        answered[0] = True
                raise

        def attempt_settled() -> OrderReport:
            try:
                return attempt_once()
            except DuplicateClientOrderId as duplicate:
                found = self._lookup_after(cid, priority)
                if found is None and "client_order_id" not in duplicate.message.lower():
                    # Alpaca answers 40010001 to requests it refuses as invalid too ("qty must be > 0"), not only
                    # to a second order with one client_order_id; no order has it, so nothing was placed. Taken for a
                    # duplicate, a refused OCO was an outcome unknown, sent again and left to the doctor, its
                    # shares without a stop meanwhile, where a refusal exits at once (a review).
                    raise refused_as_invalid(duplicate) from duplicate
                if found is None:
                    raise
                logger.info("broker {} submit {} cid={} already placed → id={}", self.name, order.symbol, cid,
                            found.broker_id)
                return found
            except (OutcomeUnknown, MalformedResponse) as unknown:
                try:
                    found = self._lookup_after(cid, priority)
                except BrokerError as lookup_error:
                    unanswered[0] = LookupFailedToo(f"{unknown.message}; lookup failed too: {lookup_error}",
                                                    status=unknown.status, code=unknown.code,
                                                    operation=unknown.operation)
                    raise unanswered[0] from lookup_error
                answered[0] = True
                if found is not None:
                    logger.info("broker {} submit {} cid={} outcome settled by lookup → {} id={}", self.name,
                                order.symbol, cid, found.status, found.broker_id)
                    return found
                logger.info("broker {} submit {} cid={} not at broker → resubmitting same cid", self.name,
                            order.symbol, cid)
                raise OutcomeUnknown(unknown.message, status=unknown.status, code=unknown.code,
                                     operation=unknown.operation) from unknown

        try:
            for attempt in Retrying(
                stop=stop_after_attempt(attempts),
                retry=retry_if_exception(lambda e: is_retryable_read_error(e) or isinstance(e, OutcomeUnknown)),
                wait=self._wait,
                reraise=True,
            ):
                with attempt:
                    return attempt_settled()
        except _REFUSED_BEFORE_ACTING as refused:
            if may_have_acted[0] and unanswered[0] is not None and not answered[0]:
                # 503s whose look-ups failed, then a refused connection (an outage under way): still nothing heard of
                # the order. Raised as the refusal, it counted against the caller's few resends for an answered one.
                raise LookupFailedToo(f"{unanswered[0].message}; then {refused.message}", status=unanswered[0].status,
                                      code=unanswered[0].code, operation=unanswered[0].operation) from refused
            if may_have_acted[0]:
                raise
            raise SubmitRefused(refused.message, retry_after_s=getattr(refused, "retry_after_s", None),
                                status=refused.status, code=refused.code, operation=refused.operation) from refused
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    def _lookup_after(self, cid: str, priority: Priority) -> OrderReport | None:
        return self.get_order_by_client_id(cid, priority=priority)

    def get_order(self, broker_id: str, priority: Priority = Priority.READ) -> OrderReport:
        order_id = _uuid(broker_id)
        request = GetOrderByIdRequest(nested=True)
        return self._read(
            f"order id={order_id}", lambda: order_report(self._orders.get_order_by_id(order_id, request)), priority
        )

    def get_order_by_client_id(self, client_order_id: str, priority: Priority = Priority.READ) -> OrderReport | None:
        try:
            found = self._read(
                f"order cid={client_order_id}",
                lambda: order_report(self._orders.get_order_by_client_id(client_order_id)),
                priority,
            )
        except NotFound:
            return None
        if found.order_class == "oco" and found.type == "limit" and not found.legs:
            # Alpaca's look-up by client_order_id takes no `nested` (alpaca-py sends only the id), and an order read
            # un-nested carries `legs: null`. An OCO's stop leg has a client_order_id Alpaca made up, so it is found
            # only inside its take-profit: read again by id, nested, or the stop's row never learns its broker id
            # and the stop's fill is never recorded (an OCO settled by this look-up after its reply was lost). A re-read
            # that fails answers un-nested: the order is placed (a 404 here must not read as a refused submit), and
            # the router asks for a take-profit acknowledged without its leg again.
            try:
                return self.get_order(found.broker_id, priority=priority)
            except BrokerError as exc:
                logger.warning("broker {} order cid={} found, its OCO legs not read ({}): answered without them",
                               self.name, client_order_id, exc)
        return found

    def list_orders(
        self,
        status: Literal["open", "closed", "all"] = "all",
        after: datetime | None = None,
        until: datetime | None = None,
        symbols: Sequence[str] | None = None,
        nested: bool = True,
        direction: Literal["asc", "desc"] = "asc",
    ) -> list[OrderReport]:
        """Every matching order, paging 500 at a time.

        Alpaca's list has no page token: pages walk forward in submission time with `after`. `after` is
        exclusive, so each next page starts 1 µs before the last order seen (orders sharing that instant
        are fetched again and de-duplicated by id, never skipped).
        """
        seen: dict[str, OrderReport] = {}
        cursor = after
        while True:
            request = GetOrdersRequest(
                status=QueryOrderStatus(status), limit=ORDERS_PAGE_SIZE, after=cursor, until=until,
                direction=Sort.ASC, nested=nested, symbols=list(symbols) if symbols else None,
            )
            page = self._read(
                f"orders {status} after={cursor}", lambda: [order_report(o) for o in self._orders.get_orders(request)]
            )
            fresh = [o for o in page if o.broker_id not in seen]
            for o in fresh:
                seen[o.broker_id] = o
            if len(page) < ORDERS_PAGE_SIZE:
                break
            if not fresh:
                raise MalformedResponse(
                    f"cannot page past {len(page)} orders sharing submitted_at={page[-1].submitted_at}",
                    field="submitted_at", operation="list orders",
                )
            cursor = max(o.submitted_at for o in page) - _ONE_MICROSECOND
        ordered = sorted(seen.values(), key=lambda o: (o.submitted_at, o.broker_id), reverse=direction == "desc")
        logger.debug("broker {} list orders {} → {} orders", self.name, status, len(ordered))
        return ordered

    def cancel_order(self, broker_id: str, priority: Priority = Priority.CANCEL) -> None:
        order_id = _uuid(broker_id)
        self._mutate(f"cancel id={order_id}", lambda: self._trading.cancel_order_by_id(order_id), priority)
        logger.info("broker {} cancel id={} → requested", self.name, order_id)

    def cancel_all(self, priority: Priority = Priority.CANCEL) -> list[CancelOutcome]:
        responses = self._mutate("cancel all", self._trading.cancel_orders, priority)
        outcomes = [CancelOutcome(broker_id=str(r.id), http_status=r.status, body=r.body) for r in responses]
        logger.info("broker {} cancel all → {} orders", self.name, len(outcomes))
        return outcomes

    def replace_order(
        self,
        broker_id: str,
        *,
        qty: Any = None,
        limit_price: Any = None,
        stop_price: Any = None,
        tif: str | None = None,
        client_order_id: str | None = None,
        priority: Priority = Priority.PROTECT,  # mostly resizing a stop after a partial fill
    ) -> OrderReport:
        """PATCH an order: the broker answers a NEW order (new id, `replaces` = old id)."""
        order_id = _uuid(broker_id)
        if qty is not None and int(qty) != qty:
            raise InvalidRequest(f"replace id={order_id}: qty {qty} is not a whole number of shares")
        try:
            request = ReplaceOrderRequest(
                qty=int(qty) if qty is not None else None,
                time_in_force=TimeInForce(tif) if tif else None,
                limit_price=float(limit_price) if limit_price is not None else None,
                stop_price=float(stop_price) if stop_price is not None else None,
                client_order_id=client_order_id,
            )
        except ValueError as exc:
            raise InvalidRequest(f"replace id={order_id}: {exc}") from exc
        report = self._mutate(
            f"replace id={order_id}",
            lambda: order_report(self._orders.replace_order_by_id(order_id, request)),
            priority,
        )
        logger.info("broker {} replace id={} → {} id={}", self.name, order_id, report.status, report.broker_id)
        return report

    # ---- positions and fills -------------------------------------------------------------------

    def positions(self) -> list[PositionReport]:
        def read() -> list[PositionReport]:
            positions = self._orders.get_all_positions()  # raw JSON: see position_report
            if not isinstance(positions, list):
                raise MalformedResponse(f"positions: a list expected, got {type(positions).__name__}",
                                        field="positions", operation="positions")
            return [position_report(p) for p in positions]

        return self._read("positions", read)

    def position(self, symbol: str, priority: Priority = Priority.READ) -> PositionReport | None:
        try:
            return self._read(f"position {symbol}", lambda: position_report(self._orders.get_open_position(symbol)),
                              priority)
        except NotFound:
            return None

    def close_position(self, symbol: str, qty: Any = None, priority: Priority = Priority.PROTECT) -> OrderReport:
        options = ClosePositionRequest(qty=str(qty)) if qty is not None else None
        report = self._mutate(
            f"close {symbol} qty={qty or 'all'}",
            lambda: order_report(self._orders.close_position(symbol, options)),
            priority,
        )
        logger.info("broker {} close {} qty={} → {} id={}", self.name, symbol, qty or "all", report.status,
                    report.broker_id)
        return report

    def fill_activities(self, after: datetime | None = None) -> list[FillReport]:
        """Every FILL activity after `after`, oldest first (alpaca-py has no typed call: parsed here)."""
        fills: dict[str, FillReport] = {}
        page_token: str | None = None
        while True:
            params: dict[str, Any] = {"direction": "asc", "page_size": ACTIVITIES_PAGE_SIZE}
            if after is not None:
                params["after"] = after.isoformat()
            if page_token:
                params["page_token"] = page_token
            page = self._read(
                f"fill activities after={after} page={page_token}",
                lambda: _fill_page(self._trading.get("/account/activities/FILL", dict(params))),
            )
            fresh = [f for f in page if f.execution_id not in fills]
            for fill in fresh:
                fills[fill.execution_id] = fill
            # Stop on a short page, and on a page of nothing new (a server that ignores page_token).
            if len(page) < ACTIVITIES_PAGE_SIZE or not fresh:
                break
            page_token = page[-1].execution_id
        return sorted(fills.values(), key=lambda f: (f.at, f.execution_id))


def _fill_page(raw: Any) -> list[FillReport]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise MalformedResponse(f"fill activities answer is {type(raw).__name__}, not a list", field="<body>")
    return [fill_activity_report(item) for item in raw if item.get("activity_type", "FILL") == "FILL"]


def _uuid(broker_id: str) -> str:
    try:
        return str(UUID(str(broker_id)))
    except ValueError:
        raise InvalidRequest(f"broker order id {broker_id!r} is not a UUID") from None
