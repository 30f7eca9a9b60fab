"""Protection against a broker whose order entry lags a fill, as Alpaca's can for several seconds (Alpaca-API #276: a
sell refused for "insufficient qty" while the positions already showed the shares; the emulator's
`exit_shares_lag_s`). A review: the OCO sent milliseconds after the entry's fill was refused that way and never tried
again, the shares left without a stop until the doctor's pass, minutes later. The whole actor system against the
emulator (alpaca-py, SQLite on disk)."""

from __future__ import annotations

from decimal import Decimal
from typing import Iterator

import pytest

from actors import messages as m
from actors import position as position_module
from actors.position import NO_SHARES_AVAILABLE as NO_SHARES
from catalyst.domain.orders import OrderStatus
from catalyst.sim.server import EmbeddedExchange
from tests.actors.conftest import START, exchange_at, logged_lines
from tests.actors.test_doctor_heals import position_of, protected
from tests.actors.test_late_entry_shares import asked_the_broker, rebuilt_with_late_shares
from tests.actors.test_position_flatten import T0, Rig, wait_for

LAG_S = 0.6


@pytest.fixture
def exchange() -> Iterator[EmbeddedExchange]:
    """The conftest's `trading` runs against this one."""
    with exchange_at(START, exit_shares_lag_s=LAG_S) as ex:
        yield ex


def lagging(trading, lag_s: float) -> None:
    """The exchange's order entry lags fills by `lag_s` from now on, for this test alone (its accounts too)."""
    engine = trading.exchange.state.engine
    engine.exit_shares_lag_s = lag_s
    for account in engine.accounts.values():
        account.exit_shares_lag_s = lag_s


def legs(trading) -> list:
    return [o for o in trading.all_orders() if o.role in ("stop_loss", "take_profit")]


def test_an_oco_refused_for_shares_the_broker_has_not_caught_up_with_is_tried_again(trading, monkeypatch):
    monkeypatch.setattr(position_module, "NO_SHARES_RETRY_S", (0.3, 0.6, 1.2, 2.4))
    lagging(trading, 1.5)  # longer than a loaded machine's pause between a fill and its OCO
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
    assert any("trying the OCO again in 0.3 s (try 1, for up to 15 s)" in line for line in warnings), warnings


def test_refusals_that_outlast_the_tries_are_said_and_no_market_exit_is_sent(trading, monkeypatch):
    """Shares the broker never frees (sold elsewhere, held by other orders): the tries end, an ERROR says so, and the
    shares wait for the router's catch-up and the doctor, never a market exit that could sell short."""
    monkeypatch.setattr(position_module, "NO_SHARES_RETRY_S", (0.05, 0.1))
    monkeypatch.setattr(position_module, "NO_SHARES_WINDOW_S", 0.3)
    trading.exchange.set_price("AAPL", "149.95")
    lagging(trading, 3600.0)  # the lag outlasts every try
    with logged_lines("actors.position", "ERROR") as errors:
        trading.open(trading.plan())
        trading.wait_for(lambda: errors, "the tries to end")
    rows = len(legs(trading))
    assert rows >= 6 and rows % 2 == 0 and all(o.status == "rejected" for o in legs(trading))  # the first and its tries
    assert position_of(trading).status == "open"
    assert not [o for o in trading.all_orders() if o.role == "flatten"]
    (error,) = errors
    assert error.startswith(f"position AAPL#p-{position_of(trading).position_id} protection refused: the broker has "
                            "too few of its 100 shares free (rejected[insufficient_qty] HTTP 403 code 40310000: "
                            "insufficient qty available for order (requested: 100.0, available: 0)"), error
    assert error.endswith("not selling at market, which could sell short; still refused 0 s after the first refusal, "
                          "so not a lag of the broker's: without a stop until the fills the broker has and we lack are "
                          "recorded (the router's catch-up, the doctor's pass); asking the broker what it holds, to "
                          "protect those; check AAPL at the broker"), error



def test_a_flatten_refused_for_shares_just_bought_goes_again_once_their_oco_is_taken(trading, monkeypatch):
    """A review: a flatten asked within the lag after the fill (an emergency stop, the doctor's, a full disk's) had
    its market exit refused; the shares went back under stops, and the flatten was left to the cycle's retry 30-60 s
    later, or never for one the cycle did not ask. Now it goes again once their OCO is taken: flat at the broker."""
    monkeypatch.setattr(position_module, "NO_SHARES_RETRY_S", (0.3, 0.6))
    lagging(trading, 2.5)  # the flatten certainly asked within it
    trading.exchange.set_price("AAPL", "149.95")
    with logged_lines("actors.position", "WARNING") as warnings:
        trading.open(trading.plan())
        trading.wait_for(lambda: (p := position_of(trading)) and p.quantity == Decimal(100), "the entry to fill")
        trading.system.supervisor.live_refs().get()[0].tell(m.Flatten(reason="emergency: probe"))
        trading.wait_for(lambda: (p := position_of(trading)) and p.status == "closed", "the position flat", timeout=20)

    assert trading.broker_view()["positions"] == []
    flattens = [o for o in trading.all_orders() if o.role == "flatten"]
    assert [o.status for o in flattens] == ["rejected", "filled"]  # refused once for the lag, then sold: never twice
    assert any("refused for shares bought" in line and "then flattened again (emergency: probe)" in line
               for line in warnings), warnings
    assert any("flattening 100: emergency: probe (again: the broker has caught up with the fill)" in line
               for line in warnings), warnings

def refuse(rig: Rig, protection: m.SubmitProtection) -> None:
    for leg in (protection.take_profit, protection.stop_loss):
        rig.position.tell(m.OrderUpdated(order_id=leg.order_id, role=leg.role, status=OrderStatus.REJECTED,
                                         filled_qty=Decimal(0), reason=f"{NO_SHARES} (requested: 10.0, available: 0)"))


def test_an_entry_filling_in_pieces_each_refused_keeps_trying_until_the_lag_has_passed(
        rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    """A review: six pieces, each piece's OCO refused within milliseconds, used up every try (counted per refusal):
    an ERROR saying "not a lag" 77 ms after the first refusal, and 60 shares bare until the doctor's pass. Now a
    refusal while a try is due adds none, and the window runs from the entry's last execution."""
    monkeypatch.setattr(position_module, "NO_SHARES_RETRY_S", (0.2, 0.2))
    monkeypatch.setattr(position_module, "NO_SHARES_WINDOW_S", 1.0)
    rig.position.tell(m.OrdersCreated(roles={"entry": rig.entry.order_id}))
    with logged_lines("actors.position", "ERROR") as errors:
        for piece in range(1, 7):
            rig.update(rig.entry.order_id, "entry", OrderStatus.PARTIAL_FILL, str(10 * piece),
                       m.Execution(key=f"b-entry:{10 * piece}", qty=Decimal(10), price=Decimal("50"), at=T0))
            sent = wait_for(lambda: rig.told(m.SubmitProtection)[piece - 1:], "the piece's OCO")[0]
            refuse(rig, sent)
            rig.settled()
        tries = len(rig.told(m.SubmitProtection))
        retried = wait_for(lambda: rig.told(m.SubmitProtection)[tries:], "a try once due")[0]
    assert not errors
    assert retried.take_profit.quantity == retried.stop_loss.quantity == Decimal(60)  # every piece's shares in one
    rig.update(retried.take_profit.order_id, "take_profit", OrderStatus.ACCEPTED)
    rig.update(retried.stop_loss.order_id, "stop_loss", OrderStatus.ACCEPTED)
    assert rig.settled()["protected"] == "60" and not rig.told(m.PlaceExit)


def test_a_refusal_while_the_broker_is_asked_about_late_shares_leaves_that_read_to_decide(
        rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    """A review: a no-shares refusal of a rebuilt actor's resent OCO, while it asked the broker what it holds of its
    late entry shares, took that read's retry timer: never asked again, its flattens dropped. Now the read decides."""
    monkeypatch.setattr(position_module, "LATE_SHARES_RETRY_S", 0.1)
    monkeypatch.setattr(position_module, "NO_SHARES_RETRY_S", (0.05,))
    book, rebuilt = rebuilt_with_late_shares(rig)
    asked_the_broker(rig, rebuilt)
    rebuilt.tell(m.BrokerPositionRead(symbol="AAPL", error="HTTP 503"))  # to be asked again in 0.1 s
    stop = rig.writer.create_order(cycle_id=rig.entry.cycle_id, symbol="AAPL", role="stop_loss", side="sell",
                                   order_type="stop", time_in_force="gtc", quantity=Decimal(40),
                                   position_id=book.position.position_id).get()
    rebuilt.tell(m.OrderUpdated(order_id=stop.order_id, role="stop_loss", status=OrderStatus.REJECTED,
                                filled_qty=Decimal(0), reason=f"{NO_SHARES} (requested: 40.0, available: 0)"))
    asked_the_broker(rig, rebuilt, 2)
    rebuilt.tell(m.BrokerPositionRead(symbol="AAPL", qty=Decimal(40)))
    exit_ = wait_for(lambda: [x for x in rig.told(m.PlaceExit) if x.owner == rebuilt], "the late shares' sale")[0]
    assert exit_.qty == Decimal(40)
