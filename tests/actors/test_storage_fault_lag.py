"""A disk-fault stop against a broker whose positions list lags its orders after a fill, as Alpaca's can for several
seconds (ALPACA.md §7; the emulator's `positions_lag_s`, no read patched). The stop cannot send an order, so it names
the shares no working stop covers for the operator to protect by hand; a disk fault is most often met by a fill's own
commit, when the list may not show that fill yet. Reviews found it saying "no position is held at the broker" over
shares just bought with no stop, and "protect it by hand" over shares a stop had just sold (selling them would have
gone short). The stop now reads the list once the latest fill is POSITIONS_SETTLE_S old."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Iterator

import pytest
from loguru import logger

import actors.system
import catalyst.daemon
from catalyst.errors import DatabaseError
from catalyst.sim.server import EmbeddedExchange
from tests.actors.conftest import START, Trading, exchange_at
from tests.actors.test_storage_fault import DiskThatFails, a_fill_the_disk_refused, daemon_over

LAG_S = 1.0


@pytest.fixture
def exchange() -> Iterator[EmbeddedExchange]:
    with exchange_at(START, positions_lag_s=LAG_S) as ex:
        yield ex


@pytest.fixture
def trading(exchange, tmp_path, monkeypatch) -> Iterator[Trading]:
    monkeypatch.setattr(actors.system, "DbWriter", DiskThatFails)
    monkeypatch.setattr(catalyst.daemon, "POSITIONS_SETTLE_S", LAG_S + 0.5, raising=False)  # as 10 s to Alpaca's
    harness = Trading(exchange, f"sqlite+aiosqlite:///{tmp_path / 'catalyst.db'}").start()
    yield harness
    harness.stop()


def stopped_right_after_the_fill(trading: Trading, tmp_path) -> tuple[str, list[tuple[str, str]], list]:
    """The daemon's stop on the refused write, its clock at the latest fill (the stop meets the fill's own commit):
    (its exit message, its log lines, what the broker's positions list said just before the stop)."""
    daemon = daemon_over(trading, tmp_path)
    latest = max(fill.at for fill in daemon.broker.fill_activities())
    daemon.endpoint = SimpleNamespace(clock=SimpleNamespace(now=lambda: latest))
    listed_before = daemon.broker.positions()
    lines: list[tuple[str, str]] = []
    sink = logger.add(lambda message: lines.append((message.record["level"].name, message.record["message"])),
                      level="INFO")
    try:
        with pytest.raises(DatabaseError) as stopped:
            daemon.check_actors()
    finally:
        logger.remove(sink)
    return str(stopped.value), lines, listed_before


def test_shares_just_bought_the_list_does_not_show_yet_are_named_once_it_does(trading, tmp_path):
    a_fill_the_disk_refused(trading)  # 10 MSFT bought, their commit refused: no stop

    message, lines, listed_before = stopped_right_after_the_fill(trading, tmp_path)

    assert listed_before == []  # the lag is real here: read at once, "no position is held at the broker"
    assert "(protection stays at the broker; NOT under a working stop at the broker: MSFT 10 long, 0 under a working " \
           "stop)" in message
    assert ("CRITICAL", "system position MSFT at the broker: MSFT 10 long, 0 under a working stop; no order can be "
            "sent while the database refuses writes: protect it by hand at the broker, or fix the disk and restart") \
        in lines
    assert any(level == "INFO" and m.startswith("system waiting 1.5 s before asking which shares have no stop")
               for level, m in lines)


def test_shares_a_stop_just_sold_are_not_said_to_need_protecting(trading, tmp_path):
    trading.exchange.set_price("AAPL", "149.95")
    trading.open(trading.plan())
    trading.wait_for(lambda: len(trading.broker_view()["orders"]) == 3, "the trade protected")
    time.sleep(LAG_S + 0.3)  # the list has caught up with the entry
    trading.system.writer_ref.proxy().refuse_writes().get()
    trading.trade("AAPL", "146.00")  # through its stop (147.00): sold
    trading.wait_for(lambda: trading.system.storage.fault is not None, "the sale's commit to be refused")

    message, lines, listed_before = stopped_right_after_the_fill(trading, tmp_path)

    assert [p.symbol for p in listed_before] == ["AAPL"]  # read at once: "AAPL 100 long, 0 under a working stop"
    assert "(protection stays at the broker; no position is held at the broker)" in message
    assert not [m for level, m in lines if level == "CRITICAL" and m.startswith("system position")]
