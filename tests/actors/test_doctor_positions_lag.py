"""The doctor against a broker whose positions list lags its orders after a fill, as Alpaca's can for several seconds
(ALPACA.md §7; the emulator's `positions_lag_s`). A review fed the lag through the doctor's reconcile: a fresh entry
fill read "database 100, broker 0" and a fresh sale "broker holds 100 not explained by its fills", each halting new
entries. The whole actor system against the emulator (alpaca-py, SQLite on disk)."""

from __future__ import annotations

from typing import Any, Iterator

import pytest

from catalyst.domain.reconcile import FindingType as T
from catalyst.sim.server import EmbeddedExchange
from tests.actors.conftest import START, exchange_at
from tests.actors.test_doctor_heals import doctor_on, position_of, protected

LAG_S = 3.0


@pytest.fixture
def exchange() -> Iterator[EmbeddedExchange]:
    """The conftest's `trading` runs against this one."""
    with exchange_at(START, positions_lag_s=LAG_S) as ex:
        yield ex


@pytest.fixture
def doctor(trading, doctor_broker) -> Iterator[Any]:
    with doctor_on(trading, doctor_broker) as proxy:
        yield proxy


def test_a_pass_right_after_an_entry_fill_the_positions_list_does_not_show_yet_does_not_halt(trading, doctor):
    trading.exchange.set_price("AAPL", "149.95")
    trading.open(trading.plan())
    protected(trading)  # filled and protected, a moment ago
    assert trading.broker_view()["positions"]  # the exchange's own view (not lagged) holds them

    report = doctor.run_pass(reason="test").get()

    found = [f.type for f in report.findings]
    assert T.PHANTOM_POSITION not in found and T.POSITION_QTY_MISMATCH not in found, report.findings
    assert doctor.entries_allowed().get()


def test_a_pass_right_after_the_take_profit_sold_the_shares_does_not_halt(trading, doctor):
    trading.exchange.set_price("AAPL", "149.95")
    trading.open(trading.plan())
    protected(trading)
    trading.trade("AAPL", "156.00")  # through the take-profit (155.00)
    trading.wait_for(lambda: (p := position_of(trading)) and p.status == "closed", "the position closed")

    report = doctor.run_pass(reason="test").get()

    found = [f.type for f in report.findings]
    assert T.ORPHAN_POSITION not in found and T.POSITION_QTY_MISMATCH not in found, report.findings
    assert doctor.entries_allowed().get() and position_of(trading).quantity == 0
