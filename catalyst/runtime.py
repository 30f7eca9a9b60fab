"""Where the broker is: the embedded emulator (default), an emulator in its own process, or Alpaca paper/live."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import Any

from alpaca.common.enums import BaseURL
from loguru import logger

from catalyst import stop_request
from catalyst.clock import FollowedClock, WallClock
from catalyst.config import Config
from catalyst.errors import BrokerUnavailable, UsageError
from catalyst.sim.market import EXCHANGE_TZ

SIM_KEY_ID, SIM_SECRET = "CATALYST-SIM", "catalyst-sim-secret"
log = logger.bind(actor="system")


@dataclass
class Endpoint:
    mode: str
    trading_url: str | None
    stream_url: str | None
    key_id: str
    secret: str
    clock: Any
    exchange: Any = None  # the EmbeddedExchange when the daemon runs its own
    paper: bool = True
    data_url: str | None = None  # market data; None: the trading URL's (an emulator serves both on one port)

    @property
    def simulated(self) -> bool:
        return self.mode == "emulator"

    def close(self) -> None:
        if self.exchange is not None:
            self.exchange.stop()
            self.exchange = None
        close_clock = getattr(self.clock, "close", None)  # a followed emulator's clock has a thread to stop
        if close_clock is not None:
            close_clock()


def stream_url_for(base_url: str) -> str:
    return base_url.replace("https://", "wss://").replace("http://", "ws://").rstrip("/") + "/stream"


def next_session_start(market: Any, after: datetime, at: time = time(8, 0)) -> datetime:
    """`at` (exchange time) on the first session day on or after `after`'s date."""
    sessions = market.sessions(after.date(), after.date() + timedelta(days=10))
    if not sessions:
        raise UsageError(f"the market has no session in the 10 days after {after:%Y-%m-%d}")
    return datetime.combine(sessions[0].day, at, EXCHANGE_TZ)


def embedded_exchange(config: Config) -> bool:
    """The daemon starts its own exchange in-process (and trades in a simulation database of its own)."""
    return config.broker.mode == "emulator" and not config.broker.url


def open_endpoint(config: Config, secrets: Any, speed: float | None = None, seed: int | None = None) -> Endpoint:
    """Start (or locate) the broker the daemon will trade with."""
    broker = config.broker
    if embedded_exchange(config):
        return _embedded(config, speed, seed)
    if broker.mode == "emulator":
        key, secret = _keys_or_sim(secrets)
        clock = _follow(broker.url, broker.startup_wait_s)
        return Endpoint("emulator", broker.url, broker.stream_url or stream_url_for(broker.url), key, secret, clock,
                        data_url=broker.data_url)
    key, secret = secrets.key_id.get_secret_value(), secrets.secret_key.get_secret_value()
    # Alpaca's market data has a host of its own for paper and live alike: never the trading URL's.
    return Endpoint(broker.mode, broker.url, broker.stream_url, key, secret, WallClock(), paper=broker.mode == "paper",
                    data_url=broker.data_url or BaseURL.DATA.value)


def _follow(url: str, wait_s: float) -> FollowedClock:
    """An emulator's clock, waiting for it with backoff (it may be starting alongside us)."""
    from tenacity import Retrying, stop_after_delay, wait_exponential

    def before_sleep(state: Any) -> None:
        log.warning(f"system emulator at {url} not answering ({type(state.outcome.exception()).__name__}); "
                    f"retrying in {state.next_action.sleep:.0f} s")

    try:
        for attempt in Retrying(wait=wait_exponential(min=1, max=30), stop=stop_after_delay(wait_s),
                                before_sleep=before_sleep, reraise=True, sleep=stop_request.pause):
            with attempt:
                return FollowedClock(url)
    except Exception as exc:  # any failure to read its clock means we cannot follow it
        raise BrokerUnavailable(f"emulator at {url} does not answer /sim/v1/clock after {wait_s:.0f} s: "
                                f"{type(exc).__name__}") from None
    raise BrokerUnavailable(f"emulator at {url} does not answer")  # pragma: no cover


def _keys_or_sim(secrets: Any) -> tuple[str, str]:
    if secrets.present:
        return secrets.key_id.get_secret_value(), secrets.secret_key.get_secret_value()
    return SIM_KEY_ID, SIM_SECRET


def _embedded(config: Config, speed: float | None, seed: int | None) -> Endpoint:
    from catalyst.sim.cli import build_market, replay_start
    from catalyst.sim.clock import SimClock
    from catalyst.sim.server import EmbeddedExchange, ExchangeConfig

    ex = config.exchange
    seed = ex.seed if seed is None else seed
    speed = ex.speed if speed is None else speed
    requested = ex.start.replace(tzinfo=ex.start.tzinfo or EXCHANGE_TZ) if ex.start else None
    provisional = requested or datetime.now(EXCHANGE_TZ)
    market = build_market(ex.data_kind, ex.data_file, seed, provisional, ex.symbols)
    if ex.data_kind == "synthetic" and ex.data_file is None:
        start = requested or next_session_start(market, provisional)
    else:
        start = replay_start(market, requested)
    # In an accelerated day Alpaca's 200 requests per WALL minute means nothing: the embedded exchange and the
    # client limiter run unthrottled when the clock runs faster than real time.
    limit = ex.rate_limit_per_minute if speed <= 1 else 0
    exchange = EmbeddedExchange(
        ExchangeConfig(seed=seed, speed=speed, start=start, starting_cash=ex.starting_cash,
                       participation=ex.participation, rate_limit_per_minute=limit, faults=ex.faults,
                       data_plan=ex.data_plan, wash_trade_check=ex.wash_trade_check,
                       positions_lag_s=ex.positions_lag_s, exit_shares_lag_s=ex.exit_shares_lag_s,
                       trigger_replaces_take_profit=ex.trigger_replaces_take_profit),
        market, SimClock(start, speed),
    ).start()
    log.info(f"system embedded exchange at {exchange.base_url} ({type(market).__name__}, seed {seed}, "
             f"speed {speed:g}x, starts {start:%Y-%m-%d %H:%M} ET)")
    return Endpoint("emulator", exchange.base_url, exchange.stream_url, SIM_KEY_ID, SIM_SECRET, exchange.clock,
                    exchange=exchange)


def sim_database_url(config: Config) -> str:
    """The embedded exchange starts with fresh accounts every run, so its database must start fresh too."""
    folder = (config.database_path.parent if config.database_path else config.base_dir / "var")
    return f"sqlite+aiosqlite:///{Path(folder) / 'sim.db'}"
