"""A protection the broker rejects (usually a stop already through the market; here an account the broker stopped
letting trade) turns into a market exit; if the broker rejects the exit too, the shares are protected again after a
growing wait, said CRITICAL, never in a loop as fast as the broker answers. Real actors, alpaca-py, the emulator
(whose account restrictions refuse every order submit with a 403), SQLite on disk."""

from __future__ import annotations

import time
from decimal import Decimal

import requests
from loguru import logger

from tests.actors.test_submit_refused import legs
from tests.actors.test_trade_scenarios import position_of


def restrict(trading, **flags: bool) -> None:
    answer = requests.put(f"{trading.exchange.base_url}/sim/v1/accounts/{trading.key}/restrictions", json=flags,
                          timeout=5)
    assert answer.status_code == 200, answer.text


def fill_a_resting_entry_with_orders_refused(trading) -> None:
    """A limit entry resting at the broker; then the broker refuses every new order; then it fills."""
    trading.exchange.set_price("AAPL", "150.00")
    trading.open(trading.plan(order_type="limit", limit_price=Decimal("149.00")))
    trading.wait_for(lambda: (o := trading.all_orders()) and o[0].status in ("submitted", "accepted"), "the entry resting")
    restrict(trading, trading_blocked=True)
    trading.trade("AAPL", "148.50")
    trading.wait_for(lambda: (rows := legs(trading)) and all(o.status == "rejected" for o in rows),
                     "the OCO rejected", timeout=10)


def test_a_rejected_oco_is_followed_by_the_exit_and_if_both_are_rejected_protection_is_tried_again_after_a_wait(
        trading):
    """Found probing an account restricted mid-day: after its OCO was rejected the position said `flattening` and
    then sent nothing, its shares left without a stop for good (the second leg's rejection returned before the exit
    could go). Now the exit goes; rejected as well, the shares are protected again after a wait, not in a loop."""
    lines: list[tuple[str, str]] = []
    sink = logger.add(lambda message: lines.append((message.record["level"].name, message.record["message"])),
                      level="INFO", filter=lambda record: record["name"] == "actors.position")
    try:
        fill_a_resting_entry_with_orders_refused(trading)
        critical = trading.wait_for(lambda: [text for level, text in lines if level == "CRITICAL"],
                                    "the CRITICAL line", timeout=10)
        rows_then = len(trading.all_orders())
        time.sleep(1.0)
        assert len(trading.all_orders()) == rows_then, "protection and exit tried again at once: a loop"
        assert critical[0].startswith("position AAPL#p-1 the broker rejects both its stop and its market exit "
                                      "(rejected[other] HTTP 403 code 40310000: account is not allowed to trade")
        assert critical[0].endswith("100 shares without a stop; trying again in 2 s; protect them by hand at the "
                                    "broker if this lasts")
        restrict(trading, trading_blocked=False)
        protected = trading.wait_for(
            lambda: [o for o in trading.broker_view()["orders"] if o["type"] == "stop" and o["status"] == "held"],
            "the shares protected once the broker accepts orders again", timeout=10)
    finally:
        logger.remove(sink)
    assert [o["qty"] for o in protected] == ["100"]
    assert position_of(trading).status == "open" and position_of(trading).quantity == Decimal(100)
    # The entry, the rejected OCO's two legs, the market exit (rejected too): nothing more before the wait.
    assert rows_then == 4
    assert [(o.role, o.status) for o in trading.all_orders()][:4] == [
        ("entry", "filled"), ("take_profit", "rejected"), ("stop_loss", "rejected"), ("flatten", "rejected")]


def test_a_flatten_whose_exit_is_rejected_says_it_is_not_done_and_protects_the_shares_again(trading):
    from actors import messages as m
    from tests.actors.test_trade_scenarios import protected_qty

    lines: list[tuple[str, str]] = []
    sink = logger.add(lambda message: lines.append((message.record["level"].name, message.record["message"])),
                      level="INFO", filter=lambda record: record["name"] == "actors.position")
    try:
        trading.exchange.set_price("AAPL", "149.95")
        actor = trading.open(trading.plan())
        trading.wait_for(lambda: protected_qty(trading) == Decimal("100"), "protection")
        restrict(trading, trading_blocked=True)
        actor.tell(m.Flatten(reason="emergency: test"))
        said = trading.wait_for(lambda: [text for level, text in lines if level == "ERROR"], "the exit's rejection")
    finally:
        logger.remove(sink)
    assert said[0].startswith("position AAPL#p-1 market exit o-4 rejected unfilled (rejected[other] HTTP 403 code "
                              "40310000: account is not allowed to trade")
    assert said[0].endswith("protecting the 100 shares again; its flatten (emergency: test) is not done")
