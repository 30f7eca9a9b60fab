"""A cycle step that needs the broker (the calendar, a scan) failing after its retries does not stop the day: the
cycle says so once, tries again every tick, says ERROR once if it lasts, and carries on when the broker answers.
Found by chaos with 429 bursts: the calendar read at the start of a day failed, the cycle actor died (pykka only
logged it), and the daemon ran on with no cycle: no entries, no end-of-day flatten, no report."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Iterator

import pytest
from loguru import logger

from actors.cycle import CycleActor
from catalyst.domain.cycle import PhaseSchedule
from catalyst.sim.market import EXCHANGE_TZ
from catalyst.sim.server import EmbeddedExchange
from tests.actors.conftest import exchange_at
from tests.actors.test_cycle_early_close import hooks_with_the_broker_calendar

PRE_MARKET = datetime(2024, 3, 4, 9, 0, tzinfo=EXCHANGE_TZ)


@pytest.fixture
def exchange() -> Iterator[EmbeddedExchange]:
    with exchange_at(PRE_MARKET, ("AAPL", "MSFT")) as ex:
        yield ex


def test_a_calendar_the_broker_keeps_refusing_stalls_the_cycle_loudly_then_it_carries_on(trading) -> None:
    hooks = hooks_with_the_broker_calendar(trading)
    lines: list[tuple[str, str]] = []
    sink = logger.add(lambda message: lines.append((message.record["level"].name, message.record["message"])),
                      level="INFO", filter=lambda record: record["name"] == "actors.cycle")
    trading.exchange.set_faults("http_5xx=1.0")  # every call refused, its retries too
    cycle: Any = CycleActor.start(trading.writer, trading.system, trading.exchange.clock, PhaseSchedule(), hooks)
    try:
        trading.wait_for(lambda: [text for level, text in lines if level == "WARNING"], "the first failure")
        trading.exchange.advance(timedelta(minutes=6))  # 09:06: failing for longer than 5 exchange minutes
        trading.wait_for(lambda: [text for level, text in lines if level == "ERROR"], "the outage to be an ERROR")
        assert cycle.is_alive()

        trading.exchange.set_faults("")
        trading.exchange.advance(timedelta(minutes=10))  # 09:16: scanning is due
        trading.wait_for(lambda: cycle.proxy().state().get()["phase"] == "scanning", "the day to go on")
    finally:
        logger.remove(sink)
        cycle.stop()

    said = [(level, text) for level, text in lines if level != "INFO" or "again" in text]
    assert [level for level, _ in said] == ["WARNING", "ERROR", "INFO"]
    assert said[0][1].startswith("cycle step failed, tried again every 30 exchange s: server error HTTP 503")
    assert said[1][1].startswith("cycle stalled since 09:00:00: the broker keeps failing (server error HTTP 503")
    assert said[2][1] == "cycle steps go through again (failing since 09:00:00)"
