"""A disk-fault stop against a broker whose positions list lags its orders after a fill, as Alpaca's can for several
seconds (ALPACA.md §7; the emulator's `positions_lag_s`, no read patched). The stop cannot send an order, so it names
the shares no working stop covers for the operator to protect by hand; a disk fault is most often met by a fill's own
commit, when the list may not show that fill yet. Reviews found it saying "no position is held at the broker" over
shares just bought, an entry's latest piece and a short just opened, "under no stop" over shares under their OCO, and
"protect it by hand" over shares its stop had just sold (selling them would have gone short)."""

from __future__ import annotations

import time
from datetime import timedelta
from decimal import Decimal
from types import SimpleNamespace
from typing import Iterator

import pytest
from loguru import logger

import actors.system
from catalyst.domain.positions import PositionSide
from catalyst.errors import DatabaseError
from catalyst.sim.server import EmbeddedExchange
from tests.actors.conftest import START, Trading, exchange_at
from tests.actors.test_storage_fault import DiskThatFails, a_fill_the_disk_refused, daemon_over

LAG_S = 3.0


@pytest.fixture
def exchange() -> Iterator[EmbeddedExchange]:
    with exchange_at(START, positions_lag_s=LAG_S) as ex:
        yield ex


@pytest.fixture
def trading(exchange, tmp_path, monkeypatch) -> Iterator[Trading]:
    monkeypatch.setattr(actors.system, "DbWriter", DiskThatFails)
    harness = Trading(exchange, f"sqlite+aiosqlite:///{tmp_path / 'catalyst.db'}").start()
    yield harness
    harness.stop()


def stopped_on_the_fault(trading: Trading, tmp_path) -> tuple[str, list[str]]:
    """The daemon's stop on the refused write: (its exit message, its CRITICAL lines about positions)."""
    daemon = daemon_over(trading, tmp_path)
    daemon.endpoint = SimpleNamespace(clock=trading.exchange.clock)
    lines: list[tuple[str, str]] = []
    sink = logger.add(lambda message: lines.append((message.record["level"].name, message.record["message"])),
                      level="INFO")
    try:
        with pytest.raises(DatabaseError) as stopped:
            daemon.check_actors()
    finally:
        logger.remove(sink)
    return str(stopped.value), [m for level, m in lines if level == "CRITICAL" and m.startswith("system position")]


def protected_and_listed(trading: Trading) -> None:
    """100 AAPL bought at 149.95 under their OCO (stop 147.00), the positions list caught up with them."""
    trading.exchange.set_price("AAPL", "149.95")
    trading.open(trading.plan())
    trading.wait_for(lambda: len(trading.broker_view()["orders"]) == 3, "the trade protected")
    time.sleep(LAG_S + 0.3)


def test_shares_just_bought_the_list_does_not_show_yet_are_named(trading, tmp_path):
    a_fill_the_disk_refused(trading)  # 10 MSFT bought, their commit refused: no stop

    message, critical = stopped_on_the_fault(trading, tmp_path)

    assert "no position is held" not in message
    described = ("MSFT up to 10 long, 0 under a working stop (its positions list shows none; fills bought 10 in the "
                 "last minutes, which it may not show yet)")
    assert f"NOT under a working stop at the broker: {described}" in message
    assert critical == [f"system position MSFT at the broker: {described}; no order can be sent while the database "
                        "refuses writes: check it, then protect it by hand at the broker, or fix the disk and restart"]


def test_an_entrys_latest_piece_the_list_does_not_show_yet_is_named(trading, tmp_path):
    trading.exchange.set_price("AAPL", "150.00", volume=160)
    trading.open(trading.plan(order_type="limit", limit_price=Decimal("149.50")))
    trading.wait_for(lambda: (o := trading.all_orders("AAPL")) and o[0].status in ("submitted", "accepted"),
                     "the entry resting at the broker")
    trading.trade("AAPL", "149.00", volume=160)  # 40 of 100 fill, and are protected
    trading.wait_for(lambda: any(o["type"] == "stop" and o["qty"] == "40" for o in trading.broker_view()["orders"]),
                     "the first 40 protected")
    time.sleep(LAG_S + 0.3)
    trading.exchange.advance(timedelta(minutes=3))  # the first piece's fill out of the window the stop looks at
    trading.system.writer_ref.proxy().refuse_writes().get()
    trading.trade("AAPL", "149.00", volume=1000)  # the other 60 fill; their commit refused
    trading.wait_for(lambda: trading.system.storage.fault is not None, "the piece's commit to be refused")

    message, critical = stopped_on_the_fault(trading, tmp_path)

    assert ("AAPL up to 100 long, 40 under a working stop (its positions list shows 40 long; fills bought 60 in the "
            "last minutes, which it may not show yet)") in message
    assert len(critical) == 1 and critical[0].startswith("system position AAPL at the broker: AAPL up to 100 long")


def test_a_short_just_opened_the_list_does_not_show_yet_is_named(trading, tmp_path):
    trading.exchange.set_price("MSFT", "410.00")
    trading.open(trading.plan(symbol="MSFT", side=PositionSide.SHORT, qty="10", stop="420.00", target="400.00",
                              order_type="limit", limit_price=Decimal("411.00")))
    trading.wait_for(lambda: (o := trading.all_orders("MSFT")) and o[0].status in ("submitted", "accepted"),
                     "the short entry resting at the broker")
    trading.system.writer_ref.proxy().refuse_writes().get()
    trading.trade("MSFT", "411.50")
    trading.wait_for(lambda: trading.system.storage.fault is not None, "the fill's commit to be refused")

    message, _ = stopped_on_the_fault(trading, tmp_path)

    assert "no position is held" not in message
    assert "MSFT up to 10 short, 0 under a working stop (its positions list shows none; fills sold 10" in message


def test_shares_under_their_stop_the_list_does_not_show_yet_are_not_said_to_be_bare(trading, tmp_path):
    trading.exchange.set_price("AAPL", "149.95")
    trading.open(trading.plan())
    trading.wait_for(lambda: len(trading.broker_view()["orders"]) == 3, "the trade protected (its OCO working)")
    trading.system.writer_ref.proxy().refuse_writes().get()  # a moment later the disk fills
    trading.exchange.set_price("MSFT", "410.00")
    trading.open(trading.plan(symbol="MSFT", qty="10", stop="400.00", target="420.00"))
    trading.wait_for(lambda: trading.system.storage.fault is not None, "the next write refused")

    message, critical = stopped_on_the_fault(trading, tmp_path)

    assert critical == []
    assert ("every share at the broker is under a working stop, as its positions list shows them and with the fills "
            "of the last minutes it may not show yet") in message


@pytest.mark.parametrize("kept_overnight", [False, True], ids=["same-day", "stop-placed-a-day-before"])
def test_shares_just_sold_that_the_list_still_shows_are_said_to_be_checked_first(trading, tmp_path, kept_overnight):
    protected_and_listed(trading)
    if kept_overnight:  # its GTC OCO placed the day before: found by the fill's own time, not the order's
        trading.exchange.advance(timedelta(days=1, minutes=5))
    trading.system.writer_ref.proxy().refuse_writes().get()
    trading.trade("AAPL", "146.00")  # through its stop (147.00): sold
    trading.wait_for(lambda: trading.system.storage.fault is not None, "the sale's commit to be refused")

    message, critical = stopped_on_the_fault(trading, tmp_path)

    moved = "sold 100" if kept_overnight else "bought 100 and sold 100"  # the same day: its entry a minute before
    assert critical == ["system position AAPL at the broker: AAPL up to 100 long, 0 under a working stop (its "
                        f"positions list shows 100 long; fills {moved} in the last minutes, which it may not show "
                        "yet); no order can be sent while the database refuses writes: check it, then protect it by "
                        "hand at the broker, or fix the disk and restart"]
