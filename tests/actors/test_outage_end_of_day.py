"""The broker's API down around the end of the day (the emulator's `down` fault): the 15:55 flatten and the 16:00
close meet an outage. Shares are flattened if the broker comes back before the close, and otherwise kept under
working stops overnight, never left bare, never sold twice."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Iterator

import pytest
from loguru import logger

from actors.cycle import CycleActor
from catalyst.domain.cycle import PhaseSchedule
from catalyst.sim.market import EXCHANGE_TZ
from catalyst.sim.server import EmbeddedExchange
from tests.actors.conftest import Trading, exchange_at, with_market_hours
from tests.actors.test_cycle_early_close import hooks_with_the_broker_calendar
from tests.actors.test_cycle_resume import working_stops

DAY = datetime(2024, 3, 4, 15, 30, tzinfo=EXCHANGE_TZ)  # a Monday afternoon


@pytest.fixture
def exchange() -> Iterator[EmbeddedExchange]:
    with exchange_at(DAY, ("AAPL", "MSFT")) as ex:
        yield ex


@pytest.fixture
def trading(exchange, tmp_path) -> Iterator[Trading]:
    harness = with_market_hours(Trading(exchange, f"sqlite+aiosqlite:///{tmp_path / 'catalyst.db'}"))
    yield harness.start()
    harness.stop()


@pytest.fixture
def lines() -> Iterator[list[tuple[str, str]]]:
    said: list[tuple[str, str]] = []
    sink = logger.add(lambda message: said.append((message.record["level"].name, message.record["message"])),
                      level="INFO", filter=lambda record: record["name"].startswith("actors."))
    yield said
    logger.remove(sink)


def open_under_oco(trading: Trading, hooks: dict[str, Any] | None = None,
                   cycle_at: timedelta = timedelta(minutes=20)) -> Any:
    """A position opened at 15:30 under its OCO; the cycle (the broker's calendar, `hooks` over the resume tests')
    started `cycle_at` later (15:50 by default: five minutes before the flatten)."""
    trading.exchange.set_price("AAPL", "50.00")
    cycle_row = trading.writer.get_or_create_cycle(DAY.date()).get()
    trading.writer.set_cycle_phase(cycle_row.cycle_id, "monitoring", trading.exchange.clock.now()).get()
    trading.open(trading.plan(stop="48.00", target="55.00"))
    trading.wait_for(lambda: working_stops(trading), "the position's stop at the broker")
    trading.wait_for(lambda: sum(1 for o in trading.all_orders() if o.role in ("stop_loss", "take_profit")
                                 and o.status in ("submitted", "accepted") and o.alpaca_order_id) == 2,
                     "both legs acknowledged")
    trading.exchange.advance(cycle_at)
    cycle = CycleActor.start(trading.writer, trading.system, trading.exchange.clock, PhaseSchedule(),
                             {**hooks_with_the_broker_calendar(trading), **(hooks or {})})
    trading.wait_for(lambda: cycle.proxy().state().get()["phase"] == "monitoring", "the cycle to resume")
    return cycle


def down(trading: Trading) -> None:
    trading.exchange.set_faults("down=1")
    trading.exchange.drop_stream_connections()


def held(trading: Trading) -> Decimal:
    return sum((Decimal(p["qty"]) for p in trading.broker_view()["positions"] if p["symbol"] == "AAPL"), Decimal(0))


def stop_qty(trading: Trading) -> Decimal:
    return sum((Decimal(o["qty"]) for o in working_stops(trading)), Decimal(0))


def down_at_the_exit(trading: Trading) -> list[str]:
    """The broker goes down as the flatten's market exit reaches it: that submit is answered 503 without acting, and
    everything after it too (the OCO's cancels were taken and confirmed before)."""
    from catalyst.sim.orders import ExchangeError

    engine = trading.exchange.state.engine
    submit, hit = engine.submit, []

    def submit_then_down(key_id: str, spec: Any) -> Any:
        if not hit and str(spec.type).endswith("market") and str(spec.side).endswith("sell"):
            hit.append(spec.client_order_id)
            trading.exchange.state.set_faults("down=1")
            raise ExchangeError(503, 50310000, "service unavailable (outage begins)")
        return submit(key_id, spec)

    engine.submit = submit_then_down
    return hit


def said(lines: list[tuple[str, str]], text: str) -> list[tuple[str, str]]:
    return [(level, line) for level, line in lines if text in line]


def back_after_the_close(trading: Trading, lines: list[tuple[str, str]], kept: bool = True) -> None:
    """16:00:30 with the broker still down; then it is back, and the daemon has caught up with it. `kept`: wait
    for the position to say the close keeps it (else a few seconds)."""
    trading.exchange.jump_to(datetime(2024, 3, 4, 16, 0, 30, tzinfo=EXCHANGE_TZ))
    if kept:
        trading.wait_for(lambda: said(lines, "the market closed before its flatten ended"), "the close to keep it",
                         timeout=30)
    time.sleep(3)  # the broker still down a while after the close
    caught_up = len(said(lines, "router catch-up applied"))
    trading.exchange.set_faults("")
    trading.wait_for(lambda: len(said(lines, "router catch-up applied")) > caught_up,
                     "the stream back and its catch-up", timeout=60)
    time.sleep(6)  # a flatten timer's recheck or two (FLATTEN_RECHECK_S) once the broker answers


def down_over_the_flatten(trading: Trading, lines: list[tuple[str, str]]) -> None:
    """From 15:30: the broker down at 15:54:30, and the 15:55 flatten's cancels of the OCO asked again unanswered."""
    trading.exchange.advance(timedelta(minutes=4, seconds=30))  # 15:54:30
    down(trading)
    trading.exchange.advance(timedelta(minutes=1))  # 15:55:30: the flatten is due, its cancels go nowhere
    trading.wait_for(lambda: said(lines, "flatten still waiting for (2, 3) to end"), "the cancels retried")


def flatten_rows(trading: Trading) -> list[Any]:
    return [o for o in trading.all_orders() if o.role == "flatten"]


def test_an_outage_over_the_flatten_that_ends_before_the_close_flattens_once(trading, lines) -> None:
    cycle = open_under_oco(trading)
    try:
        down_over_the_flatten(trading, lines)
        trading.exchange.advance(timedelta(minutes=1))  # 15:56:30
        trading.exchange.set_faults("")
        trading.wait_for(lambda: held(trading) == 0, "flattened once the broker is back", timeout=60)
        trading.wait_for(lambda: [o.status for o in flatten_rows(trading)] == ["filled"], "the exit's row filled")
        time.sleep(2)  # a flatten recheck (FLATTEN_RECHECK_S): nothing more is sent
    finally:
        cycle.stop()
    assert [o.status for o in flatten_rows(trading)] == ["filled"]
    assert [o["status"] for o in trading.broker_view()["orders"] if o["side"] == "sell" and o["type"] == "market"] \
        == ["filled"]
    assert stop_qty(trading) == 0


def test_an_outage_over_the_flatten_and_the_close_keeps_the_shares_under_their_stops(trading, lines) -> None:
    cycle = open_under_oco(trading)
    try:
        down_over_the_flatten(trading, lines)
        back_after_the_close(trading, lines)
    finally:
        cycle.stop()
    assert held(trading) == 100 and stop_qty(trading) == 100  # the OCO placed at 15:50, never cancelled
    assert flatten_rows(trading) == []
    assert said(lines, "the market closed before its flatten ended (end of day): kept under stops overnight")


def test_an_exit_the_outage_holds_up_past_the_close_is_cancelled_and_the_shares_protected(trading, lines) -> None:
    cycle = open_under_oco(trading)
    hit = down_at_the_exit(trading)
    try:
        trading.exchange.advance(timedelta(minutes=5, seconds=30))  # 15:55:30: the flatten is due
        trading.wait_for(lambda: hit, "the exit to meet the outage")
        trading.exchange.drop_stream_connections()
        back_after_the_close(trading, lines)
        trading.wait_for(lambda: stop_qty(trading) == 100, "the shares protected again", timeout=30)
    finally:
        cycle.stop()
    assert held(trading) == 100
    assert [o.status for o in flatten_rows(trading)] == ["cancelled"]
    market_sells = [o for o in trading.broker_view()["orders"] if o["side"] == "sell" and o["type"] == "market"]
    assert [o["status"] for o in market_sells] == ["canceled"]  # sent again once back (queued), then cancelled
    assert said(lines, "cancelling its market exit o-4")


@pytest.mark.parametrize("breached_at, settled", [
    (timedelta(minutes=22), False),  # 15:52: the day closed by the emergency stop
    (timedelta(minutes=5), True),  # 15:35: the day's settle over at 15:45, before the market's close
], ids=["closed", "settled"])
def test_an_emergency_flatten_the_outage_holds_up_past_the_close_keeps_the_shares_under_their_stops(
        trading, lines, breached_at: timedelta, settled: bool) -> None:
    """The loss limit's emergency stop closes the day at once, so the close's KeepOvernight never came: once the
    broker was back after 16:00, the flatten cancelled the OCO and sent its market exit, queued for the next open,
    the 100 shares with no stop all night. Its settle over before the close, the day completed at once, saying ERROR
    "still live after the close" with the market open and the flatten working (a review): it waits for the close."""
    breached: list[bool] = []
    cycle = open_under_oco(trading, {"loss_limit_breached": lambda realized, unrealized: bool(breached)},
                           cycle_at=breached_at)
    try:
        down(trading)
        breached.append(True)
        trading.wait_for(lambda: said(lines, "flatten still waiting for (2, 3) to end"), "the cancels retried",
                         timeout=30)
        if settled:
            trading.exchange.jump_to(datetime(2024, 3, 4, 15, 50, tzinfo=EXCHANGE_TZ))
            trading.wait_for(lambda: said(lines, "1 positions still flattening after the day closed early (daily loss limit"),
                             "the day to say it waits for the flatten")
            assert cycle.proxy().state().get()["phase"] == "closed"
        back_after_the_close(trading, lines, kept=False)
        if settled:
            trading.wait_for(lambda: cycle.proxy().state().get()["phase"] == "completed", "the day completed")
            assert said(lines, "1 positions kept overnight under their stops; completing the day")
    finally:
        cycle.stop()
    assert not [line for level, line in lines if level in ("ERROR", "CRITICAL") and "EMERGENCY" not in line]
    assert said(lines, "EMERGENCY STOP: daily loss limit")
    assert held(trading) == 100 and stop_qty(trading) == 100
    assert flatten_rows(trading) == []
    assert said(lines, "the market closed before its flatten ended (emergency: daily loss limit")


def about_the_legs(trading: Trading) -> Any:
    """Whether a line is about the flatten's wait on its OCO's legs: the position's, the router's and the broker
    worker's (each names the leg's row) and the broker calls' (each names the leg's broker id)."""
    legs = [o for o in trading.all_orders() if o.role in ("take_profit", "stop_loss")]
    names = ["flatten still waiting"] + [f"o-{o.order_id} " for o in legs] + [str(o.alpaca_order_id) for o in legs]
    return lambda line: any(name in line for name in names)


def test_an_outage_over_the_flatten_is_said_about_once_a_minute_not_at_every_recheck(trading, lines) -> None:
    """Each recheck (FLATTEN_RECHECK_S) cancelled both legs and read them again, every call a 503: some 25 lines at
    WARNING every 2 s for as long as the outage lasted (the position's, the router's `cancel not accepted` for each
    leg, and each failed call's, three a read). The first recheck is said, then about once a minute; those between
    are DEBUG lines, and their cancels and reads still go."""
    cycle = open_under_oco(trading)
    heard: list[tuple[str, str]] = []
    sink = logger.add(lambda message: heard.append((message.record["level"].name, message.record["message"])),
                      level="DEBUG", filter=lambda record: record["name"].startswith(("actors.", "catalyst.broker")))
    try:
        down_over_the_flatten(trading, lines)
        rechecks = lambda: [i for i, (_, line) in enumerate(heard) if "flatten still waiting for (2, 3)" in line]
        # From the third recheck to the twelfth: 20 s of rechecks, none of them said, the first one's calls long over.
        trading.wait_for(lambda: len(rechecks()) >= 12, "twelve rechecks", timeout=60)
        window = heard[rechecks()[2]:rechecks()[11]]
        first = heard[rechecks()[0]:rechecks()[1]]  # a said recheck
        trading.exchange.set_faults("")
        trading.wait_for(lambda: held(trading) == 0, "flattened once the broker is back", timeout=60)
        trading.wait_for(lambda: [o.status for o in flatten_rows(trading)] == ["filled"], "the exit's row filled")
    finally:
        logger.remove(sink)
        cycle.stop()
    legs = about_the_legs(trading)
    assert [(level, line) for level, line in window if legs(line) and level != "DEBUG"] == []
    # Said: the position's line, and each leg's cancel refused (the router's line and its call's); not their reads'.
    loud = [line for level, line in first if legs(line) and level not in ("DEBUG", "INFO")]
    assert len(loud) == 5 and sum("cancel not accepted" in line for line in loud) == 2, loud
    quiet = [line for level, line in window if level == "DEBUG"]
    assert len([line for line in quiet if "flatten still waiting for (2, 3)" in line]) == 9
    assert len([line for line in quiet if "cancel not accepted: outcome unknown" in line and "503" in line]) >= 16
    assert len([line for line in quiet if legs(line) and " cancel id=" in line and "503" in line]) >= 16
    # Two reads a recheck, its own of the two legs: not the router's again after each leg's cancel failed (36 then)
    assert 16 <= len([line for line in quiet if "broker verify o-" in line and "503" in line]) <= 20
    assert [o["status"] for o in trading.broker_view()["orders"] if o["side"] == "sell" and o["type"] == "market"] \
        == ["filled"]
    assert stop_qty(trading) == 0


def test_a_cancel_the_broker_answers_with_a_refusal_is_said_at_every_recheck(trading, lines) -> None:
    """Not an outage: the broker answers each cancel of the legs, and refuses it (not as an order already ended).
    No broker down to wait out quietly: said at WARNING each time, at the rechecks not said as well."""
    from catalyst.sim.orders import ExchangeError

    cycle = open_under_oco(trading)
    engine = trading.exchange.state.engine
    cancel = engine.cancel

    def refuse(key_id: str, order_id: str) -> None:
        raise ExchangeError(403, 40310000, "trading is suspended for this account")

    engine.cancel = refuse
    try:
        trading.exchange.advance(timedelta(minutes=5, seconds=30))  # 15:55:30: the flatten is due
        # the flatten's cancels and three rechecks', both legs each time: the second and the third are not said
        refused = trading.wait_for(lambda: (found := said(lines, "cancel not accepted")) and len(found) >= 8 and found,
                                   "the cancels refused at three rechecks", timeout=30)
        engine.cancel = cancel
        trading.wait_for(lambda: held(trading) == 0, "flattened once the cancels are taken", timeout=30)
    finally:
        engine.cancel = cancel
        cycle.stop()
    assert {level for level, _ in refused} == {"WARNING"}
    assert all("trading is suspended for this account" in line for _, line in refused)
    assert [o.status for o in flatten_rows(trading)] == ["filled"]
