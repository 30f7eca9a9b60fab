"""Fills that land together are protected together: as many OCO submits on the wire at once as there are protection
workers (`router.protection_workers`), so against a broker a network away the last position of a burst is not
protected one round trip per position later. alpaca-py against the emulator, put 150 ms away each way."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Iterator

import pytest
from loguru import logger

from catalyst.router_settings import RouterSettings
from tests.actors.conftest import START, SYMBOLS, Trading, exchange_at, wait_for

ONE_WAY_MS = 150  # each submit holds its worker at least 300 ms: the next fill's job must find another worker
SUBMIT_LINE = re.compile(r"^broker (?P<worker>\S+) submit (?P<symbol>\S+) cid=\S+ → ")


@pytest.fixture
def exchange():
    with exchange_at(START, latency_ms=ONE_WAY_MS) as ex:
        yield ex


@pytest.fixture
def broker_lines() -> Iterator[list[str]]:
    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(message.record["message"]), level="INFO",
                      filter=lambda record: record["message"].startswith(("broker ", "system started")))
    yield lines
    logger.remove(sink)


def protected(trading: Trading, symbol: str) -> bool:
    legs = [o for o in trading.all_orders(symbol) if o.role in ("take_profit", "stop_loss")]
    return len(legs) == 2 and all(o.alpaca_order_id for o in legs)


def test_fills_that_land_together_go_out_on_as_many_protection_workers(exchange, tmp_path, broker_lines):
    trading = Trading(exchange, f"sqlite+aiosqlite:///{tmp_path / 'catalyst.db'}",
                      router_settings=RouterSettings(protection_workers=3, general_workers=1)).start()
    try:
        for symbol in SYMBOLS:
            exchange.set_price(symbol, "100.05")
            trading.open(trading.plan(symbol, stop="95.00", target="110.00", order_type="limit",
                                      limit_price=Decimal("100.00")))
        wait_for(lambda: all(o.alpaca_order_id for s in SYMBOLS for o in trading.all_orders(s)), "entries resting")
        for symbol in SYMBOLS:
            exchange.set_price(symbol, "99.98")
        trading.trade(SYMBOLS[0], "99.98")  # one minute passes: all three entries fill in it
        wait_for(lambda: all(protected(trading, s) for s in SYMBOLS), "all three positions protected")
    finally:
        trading.stop()

    assert any(line.startswith("system started: writer, 3 protection + 1 general broker workers") for line in broker_lines)
    oco_submits = [m for line in broker_lines if (m := SUBMIT_LINE.match(line)) and m["worker"].startswith("protect-")]
    assert sorted(m["symbol"] for m in oco_submits) == sorted(SYMBOLS)
    assert {m["worker"] for m in oco_submits} == {"protect-0", "protect-1", "protect-2"}
