"""The end-of-day flatten of a position whose market exit the broker rejects: the shares go back under their stops
(actors.position) and the cycle asks for the flatten again after a wait while the market is open, never after the
close. Before, such a flatten was never tried again: a day trader's position stayed open overnight under its stop.
Real actors, alpaca-py, the emulator (an account restriction refuses every submit with a 403), SQLite on disk."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Iterator

import pytest
from loguru import logger

from actors.cycle import CycleActor
from actors.messages import TradePlan
from catalyst.domain.cycle import PhaseSchedule
from catalyst.domain.positions import PositionSide
from catalyst.sim.market import EXCHANGE_TZ
from catalyst.sim.server import EmbeddedExchange
from tests.actors.conftest import exchange_at
from tests.actors.test_cycle_resume import Hooks, working_stops
from tests.actors.test_protection_rejected import restrict
from tests.actors.test_trade_scenarios import position_of

BEFORE_FLATTEN = datetime(2024, 3, 4, 15, 50, tzinfo=EXCHANGE_TZ)


@pytest.fixture
def exchange() -> Iterator[EmbeddedExchange]:
    """Overrides the actor conftest's exchange: 15:50, five minutes before the day's flatten."""
    with exchange_at(BEFORE_FLATTEN, ("AAPL",)) as ex:
        yield ex


@pytest.fixture
def lines() -> Iterator[list[tuple[str, str, str]]]:
    """(logger name, level, message) of the cycle's and the positions' lines."""
    said: list[tuple[str, str, str]] = []
    sink = logger.add(lambda message: said.append((message.record["name"], message.record["level"].name,
                                                   message.record["message"])),
                      level="INFO", filter=lambda record: record["name"] in ("actors.cycle", "actors.position"))
    yield said
    logger.remove(sink)


def exits(trading) -> list[str]:
    return [o.status for o in trading.all_orders() if o.role == "flatten"]


def a_flatten_the_broker_refuses(trading, lines) -> Any:
    """A protected position; the cycle resumed in monitoring; the account restricted; 15:55: the flatten's exit
    is rejected, the stop put back is refused and so is the next exit; the restriction lifted, the position's retry
    puts the shares under a stop again."""
    trading.exchange.set_price("AAPL", "50.00")
    cycle_row = trading.writer.get_or_create_cycle(BEFORE_FLATTEN.date()).get()
    trading.writer.set_cycle_phase(cycle_row.cycle_id, "monitoring", trading.exchange.clock.now()).get()
    trading.open(TradePlan(symbol="AAPL", side=PositionSide.LONG, qty=Decimal("100"), stop_loss=Decimal("48.00"),
                           take_profit=Decimal("55.00"), cycle_id=cycle_row.cycle_id))
    trading.wait_for(lambda: working_stops(trading), "the position's stop at the broker")
    cycle = CycleActor.start(trading.writer, trading.system, trading.exchange.clock, PhaseSchedule(),
                             Hooks(trading).as_dict())
    trading.wait_for(lambda: cycle.proxy().state().get()["phase"] == "monitoring", "the cycle to resume")
    restrict(trading, trading_blocked=True)
    trading.exchange.advance(timedelta(minutes=5))  # 15:55: the flatten is due
    # Lifted only once both the stop put back and the second exit were refused (the CRITICAL line, its retry 2 s
    # later): lifted sooner, the second exit may fill and the position close, with no undone flatten to retry.
    trading.wait_for(lambda: [text for _, level, text in lines if level == "CRITICAL"],
                     "the stop and the exit both refused")
    restrict(trading, trading_blocked=False)
    trading.wait_for(lambda: working_stops(trading), "the shares under a stop again", timeout=15)
    return cycle


def test_an_end_of_day_flatten_whose_exit_was_rejected_is_asked_for_again_and_closes_the_position(trading, lines):
    cycle = a_flatten_the_broker_refuses(trading, lines)
    try:
        noted = trading.wait_for(lambda: [text for name, level, text in lines
                                          if name == "actors.cycle" and level == "WARNING"], "the cycle's retry line")
        assert noted[0] == ("cycle 2024-03-04 position AAPL#p-1 still open after its flatten (end of day): its market "
                            "exit failed; flattening it again at 15:55:30 (up to 5 tries while the market is open)")
        assert position_of(trading).status == "open" and "filled" not in exits(trading)

        trading.exchange.advance(timedelta(seconds=30))  # 15:55:30: the retry is due
        trading.wait_for(lambda: not trading.broker_view()["positions"], "the position flattened by the retry",
                         timeout=15)
        trading.wait_for(lambda: position_of(trading).status == "closed", "the position row closed")
    finally:
        cycle.stop()
    assert trading.exchange.clock.now() < datetime(2024, 3, 4, 16, 0, tzinfo=EXCHANGE_TZ)
    assert exits(trading)[-1] == "filled" and set(exits(trading)[:-1]) == {"rejected"}
    assert working_stops(trading) == []
    retried = [text for name, _, text in lines if name == "actors.position" and "again, try 1 of 5" in text]
    assert retried and retried[0].startswith("position AAPL#p-1 flattening 100: end of day; again, try 1 of 5")


def test_an_undone_flatten_is_not_asked_for_again_after_the_close(trading, lines):
    cycle = a_flatten_the_broker_refuses(trading, lines)
    try:
        trading.wait_for(lambda: [text for name, level, text in lines
                                  if name == "actors.cycle" and level == "WARNING"], "the cycle's retry line")
        trading.exchange.advance(timedelta(minutes=5))  # 16:00: closed before the retry's tick
        trading.wait_for(lambda: cycle.proxy().state().get()["phase"] in ("closed", "completed"), "the close")
        trading.exchange.advance(timedelta(minutes=1))
        trading.wait_for(lambda: cycle.proxy().state().get()["phase"] in ("closed", "completed"), "a tick after it")
    finally:
        cycle.stop()
    assert "filled" not in exits(trading)
    assert not [text for _, _, text in lines if "again, try" in text]
    assert position_of(trading).status == "open" and working_stops(trading)  # kept overnight under its stop
