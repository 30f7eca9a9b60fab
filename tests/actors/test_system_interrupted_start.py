"""A stop that lands in the middle of TradingSystem.start (a supervisor's SIGTERM during a long restore): every actor
already started is stopped, and the owner's own stop afterwards is harmless."""

from __future__ import annotations

from typing import Any

import pykka
import pytest
from loguru import logger

from actors.system import TradingSystem, alpaca_factories
from catalyst.broker.ratelimit import RateLimiter
from catalyst.errors import StopDuringStartup


def test_a_stop_during_start_stops_what_started_and_a_second_stop_is_a_no_op(exchange, tmp_path):
    broker, _stream = alpaca_factories("PKINTERRUPT", "secret", exchange.base_url, exchange.stream_url,
                                       timeout_s=2.0, limiter=RateLimiter(0))

    def signal_lands_here(_router: Any) -> Any:  # the last step of start: writer, workers, router, supervisor are up
        assert len(pykka.ActorRegistry.get_all()) >= 6
        raise StopDuringStartup("SIGTERM")

    before = set(pykka.ActorRegistry.get_all())
    system = TradingSystem(f"sqlite+aiosqlite:///{tmp_path / 'catalyst.db'}", broker, signal_lands_here, exchange.clock)
    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(message.record["message"]), level="INFO")
    try:
        with pytest.raises(StopDuringStartup):
            system.start()
        assert set(pykka.ActorRegistry.get_all()) == before  # nothing of it left running
        system.stop()  # as the daemon's own cleanup does next
    finally:
        logger.remove(sink)
    assert lines.count("system stopped") == 1
