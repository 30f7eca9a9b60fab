"""Actor-test fixtures: the real actor system, alpaca-py against the embedded exchange on 127.0.0.1, SQLite on disk."""

from __future__ import annotations

import itertools
import time
from contextlib import contextmanager
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, Callable, Iterator, TypeVar

import pykka
import pytest
from loguru import logger

from actors.messages import TradePlan
from actors.system import TradingSystem, alpaca_factories
from bench.reconcile_orders import CountingBroker, CountingLimiter  # the benchmark counts the doctor's calls too
from catalyst.broker.adapter import AlpacaBroker
from catalyst.broker.ratelimit import RateLimiter
from catalyst.domain.positions import PositionSide
from catalyst.sim.clock import SimClock
from catalyst.sim.market import EXCHANGE_TZ
from catalyst.sim.scripted import ScriptedMarket
from catalyst.sim.server import EmbeddedExchange, ExchangeConfig

T = TypeVar("T")
START = datetime(2024, 3, 4, 9, 45, tzinfo=EXCHANGE_TZ)  # a Monday, inside the regular session
SYMBOLS = ("AAPL", "MSFT", "TSLA")
_keys = itertools.count(1)


class RecordingActor(pykka.ThreadingActor):
    """Stands in for a router, a broker worker, a position actor or the system: keeps every message it is told, and
    answers those `answer` was given a maker for (its `reply_to` told what the maker returns, unless None)."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[Any] = []
        self.makers: dict[type, Callable[[Any], Any]] = {}

    def answer(self, kind: type, maker: Callable[[Any], Any]) -> None:
        self.makers[kind] = maker

    def on_receive(self, message: Any) -> None:
        self.messages.append(message)
        maker = self.makers.get(type(message))
        if maker is not None and (reply := maker(message)) is not None:
            message.reply_to.tell(reply)

    def received(self) -> list[Any]:
        return list(self.messages)


@pytest.fixture
def recording_actor() -> Iterator[Callable[[], Any]]:
    """Starts RecordingActors (call it once per stand-in); those still alive are stopped after the test."""
    started: list[Any] = []

    def start() -> Any:
        started.append(RecordingActor.start())
        return started[-1]

    yield start
    for ref in started:
        if ref.is_alive():
            ref.stop()


def wait_for(predicate: Callable[[], T], what: str, timeout: float = 20.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@contextmanager
def exchange_at(start: datetime, symbols: tuple[str, ...] = SYMBOLS,
                latency_ms: float = 0.0, **config: Any) -> Iterator[EmbeddedExchange]:
    """An embedded exchange with scripted prices on a manual clock standing at `start` (a test module's own
    `exchange` fixture uses it to start its day elsewhere, or to put the broker `latency_ms` away; `config`: other
    ExchangeConfig fields)."""
    market = ScriptedMarket(symbols, start)
    config = ExchangeConfig(speed=0, start=start, rate_limit_per_minute=0, latency_ms=latency_ms, **config)
    with EmbeddedExchange(config, market, SimClock(start, 0)) as ex:
        yield ex


@pytest.fixture
def exchange() -> Iterator[EmbeddedExchange]:
    with exchange_at(START) as ex:
        yield ex


class Trading:
    """The daemon's actor system wired to the exchange, plus the views a test asserts on."""

    wait_for = staticmethod(wait_for)

    def __init__(self, exchange: EmbeddedExchange, db_url: str, router_settings: Any = None,
                 **system_options: Any) -> None:
        self.exchange = exchange
        self.key = f"PKACTORS{next(_keys):04d}"
        self.db_url = db_url
        self.router_settings = router_settings
        self.system_options = system_options  # TradingSystem fields: protect_workers, general_workers
        self.system: TradingSystem | None = None

    def start(self) -> Trading:
        broker, stream = alpaca_factories(self.key, "secret", self.exchange.base_url, self.exchange.stream_url,
                                          timeout_s=2.0, limiter=RateLimiter(0))
        self.system = TradingSystem(self.db_url, broker, stream, self.exchange.clock,
                                    router_settings=self.router_settings, **self.system_options).start()
        wait_for(lambda: self.exchange.stream_connected(self.key), "the trade stream to connect")
        return self

    def stop(self) -> None:
        if self.system is not None:
            self.system.stop()
            self.system = None

    @property
    def writer(self) -> Any:
        assert self.system is not None
        return self.system.writer

    def cycle_id(self) -> int:
        return self.writer.get_or_create_cycle(date(2024, 3, 4)).get().cycle_id

    def plan(self, symbol: str = "AAPL", side: PositionSide = PositionSide.LONG, qty: str = "100",
             stop: str = "147.00", target: str = "155.00", **kw: Any) -> TradePlan:
        return TradePlan(symbol=symbol, side=side, qty=Decimal(qty), stop_loss=Decimal(stop),
                         take_profit=Decimal(target), cycle_id=self.cycle_id(), **kw)

    def trade(self, symbol: str, price: str, volume: int | None = None) -> None:
        """A print at `price`, then one minute passes so resting orders match against that minute's bar."""
        self.exchange.set_price(symbol, price, volume=volume) if volume else self.exchange.set_price(symbol, price)
        self.exchange.advance(timedelta(minutes=1))

    def open(self, plan: TradePlan) -> Any:
        assert self.system is not None
        return self.system.open_position(plan)

    def all_orders(self, symbol: str = "AAPL") -> list[Any]:
        rows, order_id = [], 1
        while (row := self.writer.get_order(order_id).get()) is not None:
            rows.append(row)
            order_id += 1
        return [r for r in rows if r.symbol == symbol]

    def broker_view(self) -> dict[str, Any]:
        return self.exchange.account_snapshot(self.key)


def with_market_hours(harness: Trading) -> Trading:
    """The actor system as the daemon wires it: its position actors ask the broker's calendar (through alpaca-py)
    whether the market is closed, on the exchange's clock."""
    from catalyst.hooks import MarketHours, TradingCalendar

    calendar = TradingCalendar(AlpacaBroker(harness.key, "secret", trading_url=harness.exchange.base_url,
                                            limiter=RateLimiter(0), name="calendar"))
    harness.system_options["market_closed"] = MarketHours(calendar, harness.exchange.clock).closed
    return harness


@pytest.fixture
def trading(exchange: EmbeddedExchange, tmp_path) -> Iterator[Trading]:
    harness = Trading(exchange, f"sqlite+aiosqlite:///{tmp_path / 'catalyst.db'}").start()
    yield harness
    harness.stop()


@contextmanager
def logged_lines(module: str, level: str) -> Iterator[list[str]]:
    """The messages `module` (a logger name, e.g. "actors.position") logs at `level` or above, in order."""
    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(message.record["message"]), level=level,
                      filter=lambda record: record["name"] == module)
    try:
        yield lines
    finally:
        logger.remove(sink)


@pytest.fixture
def router_lines() -> Iterator[list[str]]:
    """The messages the router logs at INFO, in order."""
    with logged_lines("actors.order_router", "INFO") as lines:
        yield lines


@pytest.fixture
def rig(tmp_path, recording_actor: Callable[[], Any]) -> Iterator[Any]:
    """A position actor driven message by message, the router and supervisor recorders, the real DbWriter on a
    SQLite file (tests.actors.test_position_flatten.Rig)."""
    from tests.actors.test_position_flatten import Rig

    made = Rig(tmp_path, recording_actor)
    yield made
    made.stop()


@pytest.fixture
def doctor_broker(trading) -> CountingBroker:
    return CountingBroker(AlpacaBroker(trading.key, "secret", trading_url=trading.exchange.base_url, timeout_s=5.0,
                                       limiter=CountingLimiter(), name="doctor"))
