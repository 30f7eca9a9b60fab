"""Protection against a broker whose order entry lags a fill, as Alpaca's can for several seconds (Alpaca-API #276: a
sell refused for "insufficient qty" while the positions already showed the shares; the emulator's
`exit_shares_lag_s`). A review: the OCO sent milliseconds after the entry's fill was refused that way and never tried
again, the shares left without a stop until the doctor's pass, minutes later. The whole actor system against the
emulator (alpaca-py, SQLite on disk)."""

from __future__ import annotations

from decimal import Decimal
from typing import Iterator

import pytest

from actors import position as position_module
from catalyst.sim.server import EmbeddedExchange
from tests.actors.conftest import START, exchange_at, logged_lines
from tests.actors.test_doctor_heals import position_of, protected

LAG_S = 0.6


@pytest.fixture
def exchange() -> Iterator[EmbeddedExchange]:
    """The conftest's `trading` runs against this one."""
    with exchange_at(START, exit_shares_lag_s=LAG_S) as ex:
        yield ex


def legs(trading) -> list:
    return [o for o in trading.all_orders() if o.role in ("stop_loss", "take_profit")]


def test_an_oco_refused_for_shares_the_broker_has_not_caught_up_with_is_tried_again(trading, monkeypatch):
    monkeypatch.setattr(position_module, "NO_SHARES_RETRY_S", (0.3, 0.6, 1.2, 2.4))
    trading.exchange.set_price("AAPL", "149.95")
    with logged_lines("actors.position", "WARNING") as warnings:
        trading.open(trading.plan())
        protected(trading)  # a working stop for all 100 at the broker

    trading.wait_for(lambda: sum(1 for o in legs(trading) if o.status in ("submitted", "accepted")) == 2,
                     "both legs acknowledged in the database")
    position = position_of(trading)
    assert (position.status, position.quantity) == ("open", Decimal(100))
    refused = [o for o in legs(trading) if o.status == "rejected"]
    assert refused and len(refused) % 2 == 0 and all("insufficient qty" in (o.rejection_reason or "") for o in refused)
    assert not [o for o in trading.all_orders() if o.role == "flatten"]  # never a market exit for it
    broker = [o for o in trading.broker_view()["orders"] if o["symbol"] == "AAPL" and o["side"] == "sell"
              and o["status"] in ("new", "held", "accepted")]
    assert sorted((o["type"], o["qty"]) for o in broker) == [("limit", "100"), ("stop", "100")]
    assert any("trying the OCO again in 0.3 s (1 of 4)" in line for line in warnings), warnings


def test_refusals_that_outlast_the_tries_are_said_and_no_market_exit_is_sent(trading, monkeypatch):
    """Shares the broker never frees (sold elsewhere, held by other orders): the tries end, an ERROR says so, and the
    shares wait for the router's catch-up and the doctor, never a market exit that could sell short."""
    monkeypatch.setattr(position_module, "NO_SHARES_RETRY_S", (0.05, 0.05))
    trading.exchange.set_price("AAPL", "149.95")
    # An hour: the lag outlasts every try.
    monkeypatch.setattr(trading.exchange.state.engine, "exit_shares_lag_s", 3600.0, raising=True)
    for account in trading.exchange.state.engine.accounts.values():
        account.exit_shares_lag_s = 3600.0
    with logged_lines("actors.position", "ERROR") as errors:
        trading.open(trading.plan())
        trading.wait_for(lambda: errors, "the tries to end")
    trading.wait_for(lambda: len([o for o in legs(trading) if o.status == "rejected"]) == 6, "three OCOs refused")
    assert len(legs(trading)) == 6 and position_of(trading).status == "open"
    assert not [o for o in trading.all_orders() if o.role == "flatten"]
    (error,) = errors
    assert error.startswith(f"position AAPL#p-{position_of(trading).position_id} protection refused: the broker has "
                            "none of its 100 shares free (rejected[insufficient_qty] HTTP 403 code 40310000: "
                            "insufficient qty available for order (requested: 100.0, available: 0)"), error
    assert error.endswith("not selling at market, which could sell short; refused 3 times in 0.1 s, so not a lag of "
                          "the broker's: without a stop until the fills the broker has and we lack are recorded (the "
                          "router's catch-up, the doctor's pass); check AAPL at the broker"), error
