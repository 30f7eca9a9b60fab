"""The benchmark rig: the embedded exchange on 127.0.0.1, raw alpaca-py clients, and the real TradingSystem."""

from __future__ import annotations

import itertools
import string
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderClass, OrderSide, TimeInForce
from alpaca.trading.requests import LimitOrderRequest, MarketOrderRequest, StopLossRequest, TakeProfitRequest

from actors import messages as m
from actors.system import TradingSystem, alpaca_factories
from catalyst import collector, cpu
from catalyst.broker.ratelimit import RateLimiter
from catalyst.broker.stream import TradeStream
from catalyst.config import DaemonSettings
from catalyst.domain.positions import PositionSide
from catalyst.sim.clock import SimClock
from catalyst.sim.market import EXCHANGE_TZ
from catalyst.sim.scripted import ScriptedMarket
from catalyst.sim.server import EmbeddedExchange, ExchangeConfig
from catalyst.sim.wash_trade import WashTradeCheck

from bench.common import wait_for

START = datetime(2024, 3, 4, 9, 45, tzinfo=EXCHANGE_TZ)  # a Monday, inside the regular session
CASH = Decimal("100000000")  # enough buying power that no benchmark is refused for money
_keys = itertools.count(1)


def symbols(count: int) -> list[str]:
    """Distinct four-letter tickers (AAAA, AAAB, ...): the emulator trades whatever the market lists."""
    letters = string.ascii_uppercase
    return ["".join(t) for t in itertools.islice(itertools.product(letters, repeat=4), count)]


def new_key(prefix: str) -> str:
    return f"PK{prefix.upper()[:8]}{next(_keys):04d}"


@contextmanager
def scripted_exchange(names: list[str], price: str = "10.00", latency_ms: float = 0.0,
                      wash_trade_check: WashTradeCheck = "alpaca") -> Iterator[EmbeddedExchange]:
    """A manual-clock exchange (speed 0) over a ScriptedMarket, every symbol printed at `price`, rate limit off;
    `latency_ms` one way on every request, reply and stream event (0: loopback as it is)."""
    market = ScriptedMarket(names, START)
    config = ExchangeConfig(speed=0, start=START, rate_limit_per_minute=0, starting_cash=CASH, latency_ms=latency_ms,
                            wash_trade_check=wash_trade_check)
    with EmbeddedExchange(config, market, SimClock(START, 0)) as exchange:
        for name in names:
            exchange.set_price(name, price)
        yield exchange


def raw_client(exchange: EmbeddedExchange, key: str | None = None) -> TradingClient:
    return TradingClient(key or new_key("raw"), "secret", paper=True, url_override=exchange.base_url)


def market_buy(symbol: str, qty: int = 100) -> MarketOrderRequest:
    return MarketOrderRequest(symbol=symbol, qty=qty, side=OrderSide.BUY, time_in_force=TimeInForce.DAY)


def oco_sell(symbol: str, qty: int, stop: str, target: str) -> LimitOrderRequest:
    """The OCO the position actor places for a long: take-profit limit + stop-loss, as alpaca-py sends it."""
    return LimitOrderRequest(
        symbol=symbol, qty=qty, side=OrderSide.SELL, time_in_force=TimeInForce.DAY, order_class=OrderClass.OCO,
        limit_price=float(target), take_profit=TakeProfitRequest(limit_price=float(target)),
        stop_loss=StopLossRequest(stop_price=float(stop)),
    )


class StreamStamps:
    """Stamps each trade update with perf_counter when the stream hands it over, before the router's mailbox."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.first: dict[tuple[str, str], float] = {}  # (event, client_order_id) -> first arrival

    def stamp(self, report: Any) -> None:
        now = time.perf_counter()
        key = (report.event, report.order.client_order_id)
        with self._lock:
            self.first.setdefault(key, now)

    def get(self, event: str, client_order_id: str) -> float | None:
        with self._lock:
            return self.first.get((event, client_order_id))


class SystemRig:
    """The daemon's actor system wired to the exchange over alpaca-py, with a SQLite file on disk."""

    def __init__(self, exchange: EmbeddedExchange, db_path: Path, *, synchronous: str = "FULL",
                 defer_report_sync: bool = True, key: str | None = None,
                 cpu_setting: cpu.CpuSetting = DaemonSettings().cpu, gc_settled: bool = True,
                 protect_workers: int | None = None) -> None:
        self.exchange = exchange
        self.db_path = db_path
        self.db_url = f"sqlite+aiosqlite:///{db_path}"
        self.synchronous = synchronous
        self.defer_report_sync = defer_report_sync
        self.cpu_setting = cpu_setting  # the daemon's default unless a benchmark compares
        self.cpu_placement = ""
        self.gc_settled = gc_settled  # as `catalyst run` does after start-up, unless a benchmark compares
        self.protect_workers = protect_workers  # None: the shipped router.protection_workers
        self.key = key or new_key("sys")
        self.stamps = StreamStamps()
        self.system: TradingSystem | None = None
        self._cycle_id: int | None = None

    def start(self) -> SystemRig:
        # As `catalyst run` does before its actors start: the whole process, this harness's raw client included,
        # which measured no different either way (docs/BENCHMARKS.md).
        self.cpu_placement = str(cpu.apply(self.cpu_setting))
        broker, _ = alpaca_factories(self.key, "secret", self.exchange.base_url, self.exchange.stream_url,
                                     timeout_s=10.0, limiter=RateLimiter(0))
        self.system = TradingSystem(self.db_url, broker, self._stream_factory, self.exchange.clock,
                                    synchronous=self.synchronous, defer_report_sync=self.defer_report_sync,
                                    protect_workers=self.protect_workers).start()
        wait_for(lambda: self.exchange.stream_connected(self.key), "the trade stream to connect", timeout=20)
        if self.gc_settled:
            collector.settle()
        return self

    def _stream_factory(self, router: Any) -> TradeStream:
        # Same wiring as alpaca_factories' stream, plus a stamp as each update leaves the stream thread.
        def on_update(report: Any) -> None:
            self.stamps.stamp(report)
            router.tell(m.TradeUpdateReceived(update=report))

        return TradeStream(
            self.key, "secret", self.exchange.stream_url, on_update=on_update,
            on_connected=lambda count: router.tell(m.StreamConnected(count=count)),
            on_auth_failed=lambda reason: router.tell(m.StreamLoginFailed(reason=reason)), paper=True,
        )

    def stop(self) -> None:
        if self.system is not None:
            self.system.stop(timeout=30.0)
            self.system = None
        cpu.apply("all")  # the next benchmark in this process starts where the process started
        collector.restore()

    @property
    def writer(self) -> Any:
        assert self.system is not None, "the system is not started"
        return self.system.writer

    def cycle_id(self) -> int:
        if self._cycle_id is None:
            self._cycle_id = self.writer.get_or_create_cycle(date(2024, 3, 4)).get().cycle_id
        return self._cycle_id

    def plan(self, symbol: str, qty: int = 100, stop: str = "9.00", target: str = "11.00",
             limit: str | None = None) -> m.TradePlan:
        extra: dict[str, Any] = {"order_type": "limit", "limit_price": Decimal(limit)} if limit else {}
        return m.TradePlan(symbol=symbol, side=PositionSide.LONG, qty=Decimal(qty), stop_loss=Decimal(stop),
                           take_profit=Decimal(target), cycle_id=self.cycle_id(), **extra)

    def open(self, plan: m.TradePlan) -> Any:
        assert self.system is not None, "the system is not started"
        return self.system.open_position(plan)
