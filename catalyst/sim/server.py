"""Catalyst's Alpaca-compatible exchange emulator: an aiohttp server on loopback, embedded or foreground.

What it models: Alpaca's trading REST API and trade_updates stream as alpaca-py speaks them
(../shared/ALPACA.md); one cash-like account per API key; market, limit, stop and stop-limit orders with
day/gtc/ioc/fok; OCO, bracket and OTO groups; replace and cancel; fills against the replayed market's minute
bars on a virtual clock, with partial fills capped at a share (`participation`) of each bar's volume; day
orders expiring at the 16:00 close; orders submitted while the market is closed queued as `accepted` until
the open (market orders then fill at the first bar's open); extended-hours DAY limit orders working 04:00-20:00;
short selling with no leverage (a short ties up 100% of its market value); Alpaca's error codes, per-key rate
limit headers and 429s; one stream connection per key and no replay of missed events; a seeded fault plan.

What it does NOT model: opening/closing auctions, trading halts and LULD bands, borrow availability and
hard-to-borrow fees, early closes, corporate actions, PDT rules, margin calls and leverage, fees, fractional
and notional orders, trailing stops, options and crypto, order book depth/queue position beyond the
participation cap (a limit fills only when a bar trades THROUGH it), and Alpaca's exact error texts.
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import signal
import threading
from datetime import datetime, time, timedelta
from decimal import Decimal
from typing import Any, Awaitable, Callable, Literal, TypeVar

from aiohttp import web
from loguru import logger
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from catalyst.errors import UsageError
from catalyst.sim.clock import MAX_SPEED
from catalyst.sim.control import ControlMethods, ExchangeState, add_control_routes
from catalyst.sim.engine import Engine
from catalyst.sim.faults import FaultPlan
from catalyst.sim.market import EXCHANGE_TZ, Market
from catalyst.sim.ratelimit import RateLimiter
from catalyst.sim.scripted import ScriptedMarket
from catalyst.sim.stream import StreamHub
from catalyst.sim.trading_routes import KEY_ID, add_trading_routes
from catalyst.sim.orders import ExchangeError
from catalyst.sim.wash_trade import WashTradeCheck

T = TypeVar("T")
DEFAULT_SYMBOLS = ("AAPL", "MSFT", "NVDA", "AMD", "TSLA")
TICK_SECONDS = 0.02
UNAUTHORIZED = {"code": 40110000, "message": "request is not authorized"}
MAX_LATENCY_MS = 10_000.0  # a delay past the daemon's own timeouts is the `timeout` fault's job, not latency's


def default_start() -> datetime:
    """Today (or the next weekday) at 09:25 ET: five minutes before a session opens."""
    day = datetime.now(EXCHANGE_TZ).date()
    while day.weekday() >= 5:
        day += timedelta(days=1)
    return datetime.combine(day, time(9, 25), tzinfo=EXCHANGE_TZ)


class ExchangeConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(0, ge=0, le=65535)
    seed: int = 0
    # virtual seconds per real second; 0 = manual (advance/jump only); no NaN or infinity
    speed: float = Field(1.0, ge=0, le=MAX_SPEED, allow_inf_nan=False)
    start: datetime = Field(default_factory=default_start)
    starting_cash: Decimal = Field(Decimal("100000"), gt=0)
    participation: Decimal = Field(Decimal("0.25"), gt=0, le=1)
    rate_limit_per_minute: int = Field(200, ge=0)  # 0 = off
    faults: str = ""
    # One-way network delay added to every REST request, every REST reply and every stream frame: a broker across
    # a network rather than on loopback (0: none). Real time, whatever the clock's speed.
    latency_ms: float = Field(0.0, ge=0, le=MAX_LATENCY_MS, allow_inf_nan=False)
    keys: dict[str, str] | None = None  # {key_id: secret}; None = any pair, one account per key id
    # The market-data plan: "basic" (Alpaca's free one) refuses recent SIP data, 403 "subscription does not permit
    # querying recent SIP data", and a request naming no feed is taken as SIP (the stricter of the readings of
    # Alpaca's docs); "unlimited" serves every feed.
    data_plan: Literal["unlimited", "basic"] = "unlimited"
    # Alpaca's wash-trade protection (catalyst/sim/wash_trade.py): "alpaca", its published table (complex orders
    # exempt); "strict", complex orders refused too, as some users report; "off".
    wash_trade_check: WashTradeCheck = "alpaca"
    # Alpaca's /v2/positions can lag /v2/orders for several seconds after a fill (ALPACA.md §7): the positions
    # endpoints (GET /v2/positions and /v2/positions/{symbol}) answer as of this many WALL seconds ago (0: live).
    positions_lag_s: float = Field(0.0, ge=0, le=600, allow_inf_nan=False)
    # Alpaca's order entry can lag a fill as well (Alpaca-API #276): an exit order (a sell of a long, an OCO) may sell
    # only shares held both now and this many WALL seconds ago, refused "insufficient qty available" otherwise (0: live).
    exit_shares_lag_s: float = Field(0.0, ge=0, le=600, allow_inf_nan=False)
    # A triggered OCO stop reported as Alpaca was seen to (alpaca-py #198): its take-profit ends `replaced` at the
    # trigger, the stop fills after (off: the take-profit is cancelled once the stop has filled).
    trigger_replaces_take_profit: bool = False
    allow_non_loopback: bool = False

    @field_validator("start")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError(f"start must be timezone-aware, got {value.isoformat()}")
        return value.astimezone(EXCHANGE_TZ)

    @field_validator("faults")
    @classmethod
    def _faults_parse(cls, value: str) -> str:
        FaultPlan.parse(value)  # a bad spec fails here, naming the bad item
        return value

    @model_validator(mode="after")
    def _loopback_only(self) -> ExchangeConfig:
        # The emulator accepts any key pair and its /sim/v1 routes move the clock and inject faults with no
        # auth at all: bound to a public interface, anyone on the network could trade and steer it.
        if not self.allow_non_loopback and not _is_loopback(self.host):
            raise ValueError(f"host {self.host!r} is not loopback: the emulator has no real auth, "
                             "so it only binds 127.0.0.1/::1 unless allow_non_loopback=True")
        return self


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def default_market(config: ExchangeConfig) -> Market:
    try:
        from catalyst.sim.synthetic import SyntheticMarket
    except ImportError:
        return ScriptedMarket(DEFAULT_SYMBOLS, config.start)
    market: Market = SyntheticMarket(config.seed, config.start.date())
    return market


def default_clock(config: ExchangeConfig) -> Any:
    from catalyst.sim.clock import SimClock

    return SimClock(config.start, config.speed)


def _error(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(body, status=status, headers=headers)


def build_app(config: ExchangeConfig, market: Market, clock: Any) -> tuple[web.Application, ExchangeState]:
    def authenticate(key_id: str, secret: str) -> bool:
        if not key_id or not secret:
            return False
        return config.keys is None or config.keys.get(key_id) == secret

    state_box: list[ExchangeState] = []
    one_way_s = config.latency_ms / 1000
    hub = StreamHub(authenticate, lambda: state_box[0].faults, one_way_s)
    engine = Engine(market, clock, starting_cash=config.starting_cash, participation=config.participation,
                    sink=hub.publish, wash_trade_check=config.wash_trade_check,
                    positions_lag_s=config.positions_lag_s, exit_shares_lag_s=config.exit_shares_lag_s,
                    trigger_replaces_take_profit=config.trigger_replaces_take_profit)
    state = ExchangeState(clock, market, engine, hub, RateLimiter(config.rate_limit_per_minute),
                          FaultPlan.parse(config.faults, config.seed), config.seed)
    state_box.append(state)

    @web.middleware
    async def alpaca_edge(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        if request.path.startswith("/sim/"):
            return await handler(request)
        if state.faults.hits("down"):
            return _error(503, {"code": 50310000, "message": "service unavailable (injected outage)"})
        if request.path == "/stream":
            return await handler(request)
        if not one_way_s:
            return await broker_answer(request, handler)
        await asyncio.sleep(one_way_s)  # the request's way to the broker
        response = await broker_answer(request, handler)
        await asyncio.sleep(one_way_s)  # the reply's way back
        return response

    async def broker_answer(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        key_id = request.headers.get("APCA-API-KEY-ID", "")
        if not authenticate(key_id, request.headers.get("APCA-API-SECRET-KEY", "")):
            return _error(401, UNAUTHORIZED)
        plan = state.faults
        if plan.hits("burst_429"):
            state.limiter.force_burst(key_id, plan.knob("burst_s"))
        bucket = "data" if request.path.startswith(("/v2/stocks", "/v1beta1")) else "trading"
        decision = state.limiter.check(key_id, bucket)
        if not decision.allowed:
            return _error(429, {"code": 42910000, "message": "rate limit exceeded"}, decision.headers)
        if request.method == "POST" and request.path == "/v2/orders" and plan.hits("submit_429"):
            refused_until = str(math.ceil(state.limiter.now()) + 1)  # a budget spent elsewhere, back next second
            return _error(429, {"code": 42910000, "message": "rate limit exceeded"},
                          {**decision.headers, "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": refused_until})
        request[KEY_ID] = key_id
        if plan.hits("http_5xx") or (request.method == "POST" and request.path == "/v2/orders"
                                     and plan.hits("submit_5xx")):
            return _error(503, {"code": 50310000, "message": "service unavailable (injected)"}, decision.headers)
        if plan.hits("timeout"):
            return await _hang(request, plan)
        try:
            response = await handler(request)
        except ExchangeError as error:
            response = _error(error.status, {"code": error.code, "message": error.message})
        except web.HTTPException as http_error:
            response = _error(http_error.status, {"code": http_error.status * 100000 + 10000,
                                                  "message": http_error.reason})
        except Exception as unexpected:  # a bug here must still answer like a broker, and be visible
            logger.exception("emulator error on {} {}", request.method, request.path)
            response = _error(500, {"code": 50010000, "message": f"internal error: {unexpected}"})
        if request.method in ("POST", "PATCH", "DELETE") and response.status < 300 and plan.hits("reply_lost"):
            # The action happened; only the answer is lost. The client must look it up by client_order_id.
            if plan.coin("reply_lost"):
                return await _hang(request, plan)
            return _error(500, {"code": 50010000, "message": "internal server error (injected, action applied)"})
        response.headers.update(decision.headers)
        return response

    app = web.Application(middlewares=[alpaca_edge])
    add_trading_routes(app, engine)
    add_control_routes(app, state)
    app.router.add_get("/stream", hub.handle)
    try:
        from catalyst.sim.market_routes import add_market_data_routes
    except ImportError:
        logger.debug("market-data routes not available: serving trading only")
    else:
        add_market_data_routes(app, market, clock, data_plan=config.data_plan)
    return app, state


async def _hang(request: web.Request, plan: FaultPlan) -> web.StreamResponse:
    """Say nothing for `hang_s` seconds, then drop the connection: the client sees a timeout or reset."""
    await asyncio.sleep(plan.knob("hang_s"))
    if request.transport is not None:
        request.transport.close()
    raise asyncio.CancelledError()


async def _tick_forever(state: ExchangeState) -> None:
    while True:
        try:
            state.engine.catch_up()
        except Exception:  # keep matching alive; the error is a bug to see in the log, not a reason to stop
            logger.exception("emulator matching step failed")
        await asyncio.sleep(TICK_SECONDS)


class EmbeddedExchange(ControlMethods):
    """The exchange in a background thread with its own event loop; use as a context manager."""

    def __init__(self, config: ExchangeConfig, market: Market | None = None, clock: Any = None) -> None:
        self.config = config
        self.clock = clock if clock is not None else default_clock(config)
        self.market = market if market is not None else default_market(config)
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._ticker: asyncio.Task[None] | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.config.host}:{self.port}"

    @property
    def stream_url(self) -> str:
        return f"ws://{self.config.host}:{self.port}/stream"

    def start(self) -> EmbeddedExchange:
        app, self.state = build_app(self.config, self.market, self.clock)
        loop = asyncio.new_event_loop()
        started = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._startup(app))
            except BaseException as error:  # reported to the caller of start()
                failure.append(error)
                started.set()
                return
            started.set()
            loop.run_forever()
            loop.run_until_complete(self._shutdown())
            leftovers = asyncio.all_tasks(loop)  # e.g. requests hanging in an injected timeout
            for task in leftovers:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*leftovers, return_exceptions=True))
            loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=run, name=f"exchange-{id(self):x}", daemon=True)
        self._thread.start()
        started.wait()
        if failure:
            raise RuntimeError(f"exchange failed to start on {self.config.host}:{self.config.port}: {failure[0]}")
        return self

    async def _startup(self, app: web.Application) -> None:
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        self._ticker = asyncio.get_running_loop().create_task(_tick_forever(self.state))

    async def _shutdown(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        await self.state.hub.drop_all()
        if self._runner is not None:
            await self._runner.cleanup()

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop = self._thread = None

    def __enter__(self) -> EmbeddedExchange:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- ControlMethods plumbing: run on the loop, wait for the answer --
    def _call(self, action: Callable[[], T]) -> T:
        async def wrapped() -> T:
            return action()

        return self._await(wrapped)

    def _await(self, coroutine: Callable[[], Awaitable[T]]) -> T:
        if self._loop is None:
            raise RuntimeError("the exchange is not running: use it as a context manager or call start()")
        return asyncio.run_coroutine_threadsafe(coroutine(), self._loop).result(timeout=30)  # type: ignore[arg-type]


def serve(config: ExchangeConfig, market: Market | None = None) -> None:
    """Runs the exchange in the foreground until SIGINT/SIGTERM; prints one ready line when listening."""

    async def main() -> None:
        clock = default_clock(config)
        market_ = market if market is not None else default_market(config)
        app, state = build_app(config, market_, clock)
        runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        try:
            await web.TCPSite(runner, config.host, config.port).start()
        except OSError as exc:  # the port taken (another exchange, a daemon's leftover), the host not ours
            await runner.cleanup()
            raise UsageError(f"exchange: cannot listen on {config.host}:{config.port}: {exc.strerror or exc}") from None
        port = runner.addresses[0][1]
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        ticker = loop.create_task(_tick_forever(state))
        print(f"catalyst exchange ready at http://{config.host}:{port}", flush=True)
        try:
            await stop.wait()
        finally:
            ticker.cancel()
            await state.hub.drop_all()
            await runner.cleanup()

    asyncio.run(main())
