"""Alpaca's pattern day trader protection, until 2026-07-06: on an account whose equity at the last close was under
$25,000 it refused any order that could make a 4th day trade in five business days, and it judged the order that
CLOSES a position. An entry past that limit would fill and then find its OCO and its market exit refused: shares with
no stop until the next day. So on an account that reports a day-trade count, approval opens no more positions than
its day trades left allow, and says why; Alpaca no longer reports one, and then nothing is limited. The account
through alpaca-py from the emulator (its cash 20,000; its day-trade count set through /sim/v1), SQLite on disk."""

from __future__ import annotations

from decimal import Decimal
from types import SimpleNamespace
from typing import Any, Iterator

import pytest
import requests
from loguru import logger

from catalyst.broker.adapter import AlpacaBroker
from catalyst.broker.ratelimit import RateLimiter
from catalyst.domain import risk
from catalyst.domain.scanning import ScannerSettings
from catalyst.hooks import CycleHooks
from catalyst.sim.clock import SimClock
from catalyst.sim.scripted import ScriptedMarket
from catalyst.sim.server import EmbeddedExchange, ExchangeConfig
from tests.actors.conftest import START

CANDIDATES = [SimpleNamespace(symbol=symbol, price=Decimal("50.00"), stop=Decimal("49.00"), scan_id=None)
              for symbol in ("AAPL", "MSFT", "TSLA")]


@pytest.fixture
def exchange() -> Iterator[EmbeddedExchange]:
    """Overrides the actor conftest's exchange: an account of 20,000, under the $25,000 the rule watches."""
    market = ScriptedMarket(("AAPL", "MSFT", "TSLA", "NVDA"), START)
    config = ExchangeConfig(speed=0, start=START, rate_limit_per_minute=0, starting_cash=Decimal("20000"))
    with EmbeddedExchange(config, market, SimClock(START, 0)) as ex:
        yield ex


def approval(trading, daytrade_count: int | None, candidates: list[Any] = CANDIDATES) -> tuple[list[Any], list[str]]:
    """The approval of `candidates` on the account with `daytrade_count` reported (None: not reported, as today)."""
    answer = requests.put(f"{trading.exchange.base_url}/sim/v1/accounts/{trading.key}/restrictions",
                          json={"daytrade_count": daytrade_count}, timeout=5)
    assert answer.status_code == 200, answer.text
    hooks = object.__new__(CycleHooks)  # the approval's own parts: the broker, the writer, the risk settings
    hooks.broker = AlpacaBroker(trading.key, "secret", trading_url=trading.exchange.base_url,
                                data_url=trading.exchange.base_url, limiter=RateLimiter(0), name="cycle")
    for candidate in candidates:  # approval sizes at the latest trade: the candidates' own price
        trading.exchange.set_price(candidate.symbol, str(candidate.price))
    hooks.writer = trading.writer
    hooks.config = SimpleNamespace(risk=risk.RiskSettings(), scanner=ScannerSettings())
    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(message.record["message"]), level="INFO",
                      filter=lambda record: record["name"] == "catalyst.hooks")
    try:
        plans = hooks.approve(trading.cycle_id(), candidates, START)
    finally:
        logger.remove(sink)
    return plans, lines


def test_an_account_with_three_day_trades_opens_nothing_and_says_why(trading):
    plans, lines = approval(trading, 3)

    assert plans == []
    assert "cycle day-trade protection: equity at the last close 20000 (under 25000), 3 day trades in five business " \
           "days, 0 positions open or entering today: 0 more may be opened" in lines
    assert f"cycle reject AAPL: {risk.RejectionReason.DAY_TRADES.value}" in lines


def test_an_account_with_one_day_trade_opens_two_and_counts_the_one_already_open(trading):
    plans, _ = approval(trading, 1)
    assert [p.symbol for p in plans] == ["AAPL", "MSFT"]

    trading.exchange.set_price("AAPL", "50.00")
    trading.open(plans[0])  # one of them entered: it closes today, a day trade on its way
    trading.wait_for(lambda: trading.writer.live_positions().get().open_positions, "the open position")
    again, lines = approval(trading, 1)
    assert [p.symbol for p in again] == ["MSFT"]
    assert any("1 positions open or entering today: 1 more may be opened" in line for line in lines)



def test_an_account_alpaca_reports_no_day_trades_for_is_not_limited_and_nothing_is_said_of_the_rule(trading):
    """Alpaca ended its pattern day trader protection on 2026-07-06 (FINRA's intraday margin standards replaced the
    rule) and no longer reports `daytrade_count`: the same account of 20,000 then opens every candidate risk approves,
    a fourth included, where a count of 0 would have stopped at three."""
    four = [*CANDIDATES, SimpleNamespace(symbol="NVDA", price=Decimal("50.00"), stop=Decimal("49.00"), scan_id=None)]
    trading.exchange.set_price("NVDA", "50.00")

    counted, _ = approval(trading, 0, four)
    plans, lines = approval(trading, None, four)

    assert [p.symbol for p in counted] == ["AAPL", "MSFT", "TSLA"]
    assert [p.symbol for p in plans] == ["AAPL", "MSFT", "TSLA", "NVDA"]
    assert not any("day-trade" in line for line in lines)
