"""A position actor that is done tells the system and logs `done` once, however many messages are still queued.

Its stop() takes effect only after the messages already in its mailbox (an OCO sibling's cancel beside the exit
fill, a timer): each of them used to find the position done again, log `done (…); actor stops` again and tell the
system again (seen in `catalyst sim` logs).
"""

from __future__ import annotations

from decimal import Decimal

from loguru import logger

from actors import messages as m
from actors.position import PositionActor
from catalyst.domain.positions import PositionSide


class Recorder:
    def __init__(self) -> None:
        self.told: list[object] = []

    def tell(self, message: object) -> None:
        self.told.append(message)


def test_a_done_position_finishes_once_whatever_is_still_queued():
    system = Recorder()
    plan = m.TradePlan(symbol="AAPL", side=PositionSide.LONG, qty=Decimal(100), stop_loss=Decimal("147"),
                       take_profit=Decimal("155"), cycle_id=1)
    actor = PositionActor(plan, router=Recorder(), writer=None, system=system, clock=None)  # never started
    actor.position = actor.position.cancel()  # the entry ended unfilled: terminal, nothing working
    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(message.record["message"]), level="INFO")
    try:
        for _ in range(3):  # the message that ended it, then two more handled before the stop takes effect
            actor._finish_if_done()
    finally:
        logger.remove(sink)

    assert [type(t).__name__ for t in system.told] == ["PositionFinished"]
    assert [line for line in lines if "actor stops" in line] == ["position AAPL#o-? done (cancelled); actor stops"]
