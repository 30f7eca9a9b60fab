"""Issue 3: raw alpaca-py submit → acknowledgement on the emulator, and how fast the emulator replays a day."""

from __future__ import annotations

import time
from datetime import date, datetime, time as clock_time, timedelta
from decimal import Decimal
from typing import Any

from alpaca.trading.enums import OrderSide, TimeInForce
from alpaca.trading.requests import LimitOrderRequest, StopOrderRequest

from bench.common import goal, latency_ms, machine_facts
from bench.rig import CASH, market_buy, new_key, raw_client, scripted_exchange, symbols
from catalyst.sim.clock import SimClock
from catalyst.sim.market import EXCHANGE_TZ
from catalyst.sim.server import EmbeddedExchange, ExchangeConfig
from catalyst.sim.synthetic import SyntheticMarket

NAME = "emulator_roundtrip"
ISSUE = "3"
REPLAY_DAY = date(2024, 3, 4)
REPLAY_SYMBOLS = 50
ORDERS_PER_SYMBOL = 4  # resting buy limits below and buy stops above: a book that must be checked every bar


def run(quick: bool) -> dict[str, Any]:
    samples, warmup = (300, 30) if quick else (3000, 100)
    replay_minutes = 60 if quick else 390
    submit = measure_submit(samples, warmup)
    replay = measure_replay(replay_minutes)
    return {
        "name": NAME, "issue": ISSUE, "quick": quick, "machine": machine_facts(),
        "figures": {"submit_ack": submit, "replay": replay},
        "goals": [
            goal("raw submit→ack p50 ms on loopback", "baseline for issue 4's ratios", submit["latency"]["p50_ms"], None),
            goal("replay, 50 symbols + working book", "baseline (simulated min per wall s)",
                 replay["simulated_minutes_per_s"], None),
        ],
        "notes": [
            "alpaca-py TradingClient.submit_order(market buy 1 share) against EmbeddedExchange on 127.0.0.1, "
            "rate limit off; one client, sequential calls, so orders/s is 1 / mean round trip.",
            "The exchange runs in a thread of the benchmark process: client and server share the GIL and 2 cores.",
        ],
    }


def measure_submit(samples: int, warmup: int) -> dict[str, Any]:
    name = symbols(1)[0]
    with scripted_exchange([name]) as exchange:
        client = raw_client(exchange)
        for _ in range(warmup):
            client.submit_order(market_buy(name, 1))
        round_trips: list[float] = []
        started = time.perf_counter()
        for _ in range(samples):
            sent = time.perf_counter()
            client.submit_order(market_buy(name, 1))
            round_trips.append(time.perf_counter() - sent)
        elapsed = time.perf_counter() - started
    return {"latency": latency_ms(round_trips), "orders_per_s": round(samples / elapsed, 1),
            "warmup": warmup, "order": "market buy 1 share, fills on submit"}


def measure_replay(minutes: int) -> dict[str, Any]:
    start = datetime.combine(REPLAY_DAY, clock_time(9, 30), tzinfo=EXCHANGE_TZ)
    market = SyntheticMarket(7, REPLAY_DAY, symbols=REPLAY_SYMBOLS)
    config = ExchangeConfig(speed=0, start=start, rate_limit_per_minute=0, starting_cash=CASH)
    with EmbeddedExchange(config, market, SimClock(start, 0)) as exchange:
        working = place_book(exchange, market, start)
        exchange.advance(timedelta(minutes=1))  # warm-up: first bars fetched and matched
        steps: list[float] = []
        started = time.perf_counter()
        for _ in range(minutes):
            step = time.perf_counter()
            exchange.advance(timedelta(minutes=1))
            steps.append(time.perf_counter() - step)
        elapsed = time.perf_counter() - started
        still_open = sum(1 for o in exchange.account_snapshot(working["key"])["orders"]
                         if o["status"] in ("new", "partially_filled", "accepted"))
    return {
        "symbols": REPLAY_SYMBOLS, "simulated_minutes": minutes, "wall_s": round(elapsed, 3),
        "simulated_minutes_per_s": round(minutes / elapsed, 1), "per_minute_step": latency_ms(steps),
        "working_orders_at_start": working["orders"], "working_orders_at_end": still_open,
        "driven_by": "EmbeddedExchange.advance(1 minute) per step, manual clock",
    }


def place_book(exchange: EmbeddedExchange, market: SyntheticMarket, at: datetime) -> dict[str, Any]:
    """Resting orders on every symbol, far enough from the price to stay working all day (most of them)."""
    key = new_key("book")
    client = raw_client(exchange, key)
    placed = 0
    for name in market.symbols:
        price = market.price_at(name, at) or Decimal("10")
        for step in range(1, ORDERS_PER_SYMBOL // 2 + 1):
            below = (price * Decimal(1 - 0.05 * step)).quantize(Decimal("0.01"))
            above = (price * Decimal(1 + 0.05 * step)).quantize(Decimal("0.01"))
            client.submit_order(LimitOrderRequest(symbol=name, qty=1, side=OrderSide.BUY,
                                                  time_in_force=TimeInForce.DAY, limit_price=float(below)))
            client.submit_order(StopOrderRequest(symbol=name, qty=1, side=OrderSide.BUY,
                                                 time_in_force=TimeInForce.DAY, stop_price=float(above)))
            placed += 2
    return {"key": key, "orders": placed}
