"""A broker worker tells the router the broker's answer before it logs it (alpaca-py against the emulator)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any, Callable

from loguru import logger

from actors import messages as m
from actors.broker_worker import BrokerWorker, SubmitOco, SubmitOrder
from actors.system import alpaca_factories
from catalyst.broker.ratelimit import RateLimiter
from catalyst.sim.server import EmbeddedExchange
from catalyst.store.records import OrderRecord
from tests.actors.conftest import START, wait_for


def row(order_id: int, role: str, client_order_id: str, **fields: Any) -> OrderRecord:
    values: dict[str, Any] = dict(
        order_id=order_id, client_order_id=client_order_id, alpaca_order_id=None, cycle_id=1, security_id=1,
        symbol="AAPL", position_id=None, parent_order_id=None, role=role, side="buy", order_type="market",
        order_class="simple", time_in_force="day", quantity=Decimal(10), limit_price=None, stop_price=None,
        planned_stop_loss=None, planned_take_profit=None, planned_entry_price=None, status="created",
        broker_status=None, filled_qty=Decimal(0), filled_avg_price=None, submitted_at=None, filled_at=None,
        cancelled_at=None, cancel_reason=None, rejection_reason=None, replaced_by_order_id=None, submit_attempts=0,
        outcome_unknown=False, created_at=START, updated_at=START)
    values.update(fields)
    return OrderRecord(**values)


def watch_submit_lines(router: Any) -> tuple[int, list[str], list[int]]:
    """Each `broker … submit` line, and how many SubmitResults the router had been told when it was written (the
    sink runs on the worker's thread as the line is written; the ask is answered after every message told before)."""
    lines: list[str] = []
    results_told: list[int] = []

    def sink(message: Any) -> None:
        if " submit " in message.record["message"]:
            lines.append(message.record["message"])
            received = router.proxy().received().get(timeout=5)
            results_told.append(sum(isinstance(r, m.SubmitResult) for r in received))

    sink_id = logger.add(sink, level="INFO", filter=lambda record: record["name"] == "catalyst.broker.adapter")
    return sink_id, lines, results_told


def test_the_router_hears_of_each_submit_before_its_log_line(exchange: EmbeddedExchange,
                                                              recording_actor: Callable[[], Any]) -> None:
    router = recording_actor()
    broker, _ = alpaca_factories("PKWORKER0001", "secret", exchange.base_url, exchange.stream_url, timeout_s=2.0,
                                 limiter=RateLimiter(0))
    worker = BrokerWorker.start(broker("protect-0"), "protect-0")
    sink_id, lines, results_told = watch_submit_lines(router)
    try:
        worker.tell(SubmitOrder(row=row(1, "entry", "cat-test-1"), reply_to=router))
        wait_for(lambda: len(lines) == 1, "the entry's submit line")
        exchange.set_price("AAPL", "150.00")
        exchange.advance(timedelta(minutes=1))  # the entry fills: the OCO has shares to sell
        wait_for(lambda: exchange.account_snapshot("PKWORKER0001")["positions"], "the entry to fill")
        take_profit = row(2, "take_profit", "cat-test-2", side="sell", order_type="limit", order_class="oco",
                          limit_price=Decimal("200"))
        stop_loss = row(3, "stop_loss", "cat-test-3", side="sell", order_type="stop", order_class="oco",
                        stop_price=Decimal("100"))
        worker.tell(SubmitOco(take_profit=take_profit, stop_loss=stop_loss, reply_to=router))
        wait_for(lambda: len(lines) == 2, "the OCO's submit line")
    finally:
        worker.stop()
        logger.remove(sink_id)

    results = [r for r in router.proxy().received().get() if isinstance(r, m.SubmitResult)]
    assert [r.order_ids for r in results] == [(1,), (2, 3)]
    assert all(r.report is not None for r in results), [r.rejected or r.unknown for r in results]
    assert lines[0].startswith("broker protect-0 submit AAPL cid=cat-test-1 → ")
    assert lines[1].startswith("broker protect-0 submit AAPL cid=cat-test-2 → ")
    assert results_told == [1, 2]  # each line written once its result was told, not before
