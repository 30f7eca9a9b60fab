"""Candidates the cycle takes from an earlier scan (the 09:30 scan found none, or a restart) are priced afresh before
risk sizes them: a gapper scanned at 09:15 is several percent away by the open, and sized and bracketed at the old
price its entry filled far from it, its stop twice the risk budget away or its take-profit below the fill.

The approval's own parts through alpaca-py against the emulator (its latest-trade route), SQLite on disk."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

from loguru import logger

from catalyst.broker.adapter import AlpacaBroker
from catalyst.broker.ratelimit import RateLimiter
from catalyst.domain import risk
from catalyst.hooks import CycleHooks
from catalyst.store.records import NewScanResult

SCANNED = datetime(2024, 3, 4, 14, 15, tzinfo=timezone.utc)  # 09:15 in New York, before the open
SETTINGS = risk.RiskSettings()


def hooks_for(trading: Any) -> CycleHooks:
    hooks = object.__new__(CycleHooks)  # the approval's own parts: the broker, the writer, the risk settings
    url = trading.exchange.base_url
    hooks.broker = AlpacaBroker(trading.key, "secret", trading_url=url, data_url=url, limiter=RateLimiter(0),
                                name="cycle", read_attempts=1)
    hooks.writer = trading.writer
    hooks.config = SimpleNamespace(risk=SETTINGS)
    return hooks


def persist(trading: Any, symbol: str, price: str, stop: str) -> int:
    cycle_id = trading.cycle_id()
    trading.writer.insert_scan_results(cycle_id, [NewScanResult(
        symbol=symbol, rank_in_scan=1, composite_score=Decimal("1"), scanned_at=SCANNED,
        score_parts={"price": price, "stop": stop})]).get()
    return cycle_id


def logged(call: Any) -> tuple[Any, list[str]]:
    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(message.record["message"]), level="INFO",
                      filter=lambda record: record["name"] == "catalyst.hooks")
    try:
        return call(), lines
    finally:
        logger.remove(sink)


def test_a_candidate_from_an_earlier_scan_is_sized_and_bracketed_at_its_latest_price(trading):
    cycle_id = persist(trading, "AAPL", "165.50", "160.53")
    trading.exchange.set_price("AAPL", "180.77")  # the gap ran on between the 09:15 scan and now
    hooks = hooks_for(trading)
    stale = hooks.persisted_candidates(cycle_id)

    fresh, lines = logged(lambda: hooks.repriced(stale))
    (plan,) = hooks.approve(cycle_id, fresh, SCANNED)

    assert [c.price for c in fresh] == [Decimal("180.77")] and fresh[0].stop == Decimal("160.53")
    assert "cycle re-priced 1 candidates from an earlier scan: AAPL 165.50 → 180.77" in lines
    budget = risk.risk_budget(hooks.broker.account().equity, SETTINGS)
    assert plan.qty * (Decimal("180.77") - plan.stop_loss) <= budget  # the loss at the stop, from today's price
    assert plan.take_profit > Decimal("180.77")
    (stale_plan,) = hooks.approve(cycle_id, stale, SCANNED)  # what the old price gave: over budget, target below
    assert stale_plan.qty * (Decimal("180.77") - stale_plan.stop_loss) > budget
    assert stale_plan.take_profit < Decimal("180.77")


def test_a_candidate_whose_price_fell_through_its_stop_is_not_entered(trading):
    cycle_id = persist(trading, "AAPL", "165.50", "160.53")
    trading.exchange.set_price("AAPL", "159.00")
    hooks = hooks_for(trading)

    plans, lines = logged(lambda: hooks.approve(cycle_id, hooks.repriced(hooks.persisted_candidates(cycle_id)),
                                                SCANNED))

    assert plans == []
    assert f"cycle reject AAPL: {risk.RejectionReason.INVALID_STOP.value}" in lines


def test_without_the_latest_prices_nothing_from_an_earlier_scan_is_entered(trading):
    cycle_id = persist(trading, "AAPL", "165.50", "160.53")
    trading.exchange.set_faults("http_5xx=1.0")
    hooks = hooks_for(trading)
    try:
        fresh, lines = logged(lambda: hooks.repriced(hooks.persisted_candidates(cycle_id)))
    finally:
        trading.exchange.set_faults("")

    assert fresh == []
    assert any(line.startswith("cycle cannot read the latest prices of 1 candidates from an earlier scan (")
               and line.endswith("): none is entered on its old price") for line in lines)
