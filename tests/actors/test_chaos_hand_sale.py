"""Chaos's trader selling a position by hand (`python -m chaos --sell-by-hand N`): the harness's sale against the
emulator, and where its moments fall. The daemon's side of a hand sale: tests/actors/test_flatten_after_hand_sale.py."""

from __future__ import annotations

import random

from chaos.__main__ import (ChaosSettings, _at, hand_hold_moments, hand_sale_moments, kill_moments, outage_moments,
                            stop_move_moments, until_the_flatten_s)
from chaos.harness import ExchangeProcess, HandHolds, HarnessError
from tests.actors.test_doctor_heals import open_protected, position_of, protected, working_stop_ids
from tests.actors.test_flatten_after_hand_sale import broker_qty


def unstarted(trading, folder) -> ExchangeProcess:
    """The harness's exchange handle on the test's own emulator (its trader's calls go to `trading`'s)."""
    return ExchangeProcess(folder, url=trading.exchange.base_url.rstrip("/"))


def test_the_harness_sells_the_largest_position_by_hand_its_orders_cancelled_first(trading, tmp_path):
    open_protected(trading)
    exchange = unstarted(trading, tmp_path)

    sold = ExchangeProcess.sell_by_hand(exchange, trading.key, "secret")

    assert sold == 100
    trading.wait_for(lambda: broker_qty(trading) == 0, "the hand sale filled")
    assert not working_stop_ids(trading)
    assert position_of(trading).status == "open"  # the daemon learns of it from the doctor's pass
    assert ExchangeProcess.sell_by_hand(exchange, trading.key, "secret") == 0  # nothing left to sell


def test_the_harness_sells_a_share_of_the_position_by_hand_with_hand_sale_share(trading, tmp_path):
    from decimal import Decimal

    open_protected(trading)
    exchange = unstarted(trading, tmp_path)

    sold = ExchangeProcess.sell_by_hand(exchange, trading.key, "secret", share=Decimal("0.4"))

    assert sold == 40
    trading.wait_for(lambda: broker_qty(trading) == 60, "the hand sale of 40 filled")
    assert ChaosSettings(hand_sale_share=Decimal("0.4")).hand_sale_share == Decimal("0.4")


def test_the_harness_sells_nothing_by_hand_once_the_market_has_closed(trading, tmp_path):
    # Chaos, seed 355: a sale at a kill moment after the close was queued for the next open (`accepted`), holding 4
    # shares overnight: a trader's working order, which the checker at rest counted as lost and its shares unprotected.
    import requests

    open_protected(trading)
    exchange = unstarted(trading, tmp_path)
    after_close = trading.exchange.clock.now().replace(hour=21, minute=5)  # 16:05 in New York, UTC
    requests.post(f"{exchange.url}/sim/v1/clock/jump", json={"timestamp": after_close.isoformat()},
                  timeout=5).raise_for_status()

    assert ExchangeProcess.sell_by_hand(exchange, trading.key, "secret") == 0
    assert broker_qty(trading) == 100 and len(working_stop_ids(trading)) == 1  # nothing sold, nothing cancelled


def test_the_harness_holds_shares_by_a_hand_limit_then_cancels_it_and_the_checker_does_not_see_it(trading, tmp_path):
    # `--hold-by-hand`: the trader's limit sell for 40, 0.2 % above the price, rests (no print reaches it here); the
    # daemon's OCO cancelled to place it. Cancelled a second later: the daemon protects all 100 again, and the snapshot
    # the checker reads leaves out the trader's order that ended unfilled (else counted `lost` at rest).
    from decimal import Decimal

    open_protected(trading)
    exchange = unstarted(trading, tmp_path)
    exchange._call = lambda method, path: trading.broker_view()  # the snapshot's source, here the test's own view

    held = ExchangeProcess.hold_by_hand(exchange, trading.key, "secret", Decimal("0.4"), hold_s=1.0)

    assert held == 40
    (hand,) = exchange.hand_limits
    everything = trading.broker_view()["orders"]
    assert next(o for o in everything if str(o["id"]) == hand)["status"] == "canceled"
    protected(trading, "100")
    assert broker_qty(trading) == 100 and len(working_stop_ids(trading)) == 1
    checked, everything = exchange.snapshot(trading.key)["orders"], trading.broker_view()["orders"]
    assert hand not in {str(o["id"]) for o in checked}
    assert [o["id"] for o in checked] == [o["id"] for o in everything if str(o["id"]) != hand]


def test_a_hand_limit_whose_submit_answer_is_lost_is_found_by_its_client_id_and_cancelled(trading, tmp_path):
    # Chaos runs with lost replies: the trader's order placed but its answer lost was left working (the checker at rest
    # would count it lost, its shares unprotected). Looked up by the trader's own client id, it is cancelled as any.
    from decimal import Decimal

    open_protected(trading)
    exchange = unstarted(trading, tmp_path)
    # Lost replies hang 0.2 s, not 30: a trader's cancel click whose reply hung left the daemon seconds to protect the
    # shares again before the limit order's submit, refused then (403), five clicks in a row on a loaded machine (a
    # fresh-clone CI beside a chaos run). The trader clicks again up to 20 times, as chaos's does after a 403.
    trading.exchange.set_faults("reply_lost=1.0,hang_s=0.2")
    try:
        held = ExchangeProcess.hold_by_hand(exchange, trading.key, "secret", Decimal("0.4"), hold_s=0.2, tries=20)
    finally:
        trading.exchange.set_faults("")

    assert held == 40
    (hand,) = exchange.hand_limits
    order = next(o for o in trading.broker_view()["orders"] if str(o["id"]) == hand)
    assert order["status"] == "canceled" and order["client_order_id"].startswith("hand-")
    assert not [o for o in trading.broker_view()["orders"] if o["client_order_id"].startswith("hand-")
                and o["status"] not in ("canceled", "filled")]
    protected(trading, "100")


def test_hand_holds_rest_while_the_run_goes_on_and_finish_leaves_none_working(trading, tmp_path):
    # `--hand-hold-s`: the run goes on (the daemon killed, restarted) while the trader's order rests; `finish`, before
    # the checker at rest, waits for every cancel.
    from decimal import Decimal

    open_protected(trading)
    holds = HandHolds(unstarted(trading, tmp_path), trading.key, "secret", beyond=Decimal("0.02"))

    assert holds.place(Decimal("0.4"), hold_s=1.5) == 40
    (hand,) = [o for o in trading.broker_view()["orders"] if o["client_order_id"].startswith("hand-")]
    assert hand["status"] not in ("canceled", "filled", "expired")  # placed, and left resting: place did not wait
    assert Decimal(str(hand["limit_price"])) == Decimal("152.95")  # `--hand-hold-beyond 0.02`: 149.95 + 2 %
    holds.finish()

    assert next(o for o in trading.broker_view()["orders"] if o["id"] == hand["id"])["status"] == "canceled"
    protected(trading, "100")


def test_a_cancel_that_never_takes_is_raised_by_finish(trading, tmp_path, monkeypatch):
    from decimal import Decimal

    open_protected(trading)
    exchange = unstarted(trading, tmp_path)
    holds = HandHolds(exchange, trading.key, "secret")
    real_cancel = exchange.cancel_hand_hold

    def refused(key_id, secret, order_id):
        raise HarnessError(f"a trader's limit order {order_id} could not be cancelled in 20 tries")

    monkeypatch.setattr(exchange, "cancel_hand_hold", refused)
    assert holds.place(Decimal("0.4"), hold_s=0.0) == 40
    try:
        holds.finish()
    except HarnessError as exc:
        assert "could not be cancelled" in str(exc)
    else:
        raise AssertionError("finish passed over a trader's order left working")
    finally:
        (hand,) = [o for o in trading.broker_view()["orders"] if o["client_order_id"].startswith("hand-")]
        real_cancel(trading.key, "secret", str(hand["id"]))


def test_a_hold_ends_by_15_50_however_long_it_was_drawn():
    settings = ChaosSettings(speed=240.0)

    assert until_the_flatten_s(settings, _at(settings, "10:00"), 30.0) == 30.0
    assert until_the_flatten_s(settings, _at(settings, "15:49"), 30.0) == 0.25  # the 60 exchange seconds left, at 240x
    assert until_the_flatten_s(settings, _at(settings, "15:52"), 30.0) == 0.0


def test_hand_sale_moments_are_never_the_last_kill_and_leave_the_others_alone():
    plain = ChaosSettings(kills=12, seed=5)
    selling = ChaosSettings(kills=12, seed=5, sell_by_hand=3, move_stops=2)
    chosen = hand_sale_moments(selling, 5)

    assert len(chosen) == 3 and max(chosen) < 11
    assert hand_sale_moments(plain, 5) == set()
    assert stop_move_moments(selling, 5) == stop_move_moments(ChaosSettings(kills=12, seed=5, move_stops=2), 5)
    assert kill_moments(plain, random.Random(5)) == kill_moments(selling, random.Random(5))
    holding = ChaosSettings(kills=12, seed=5, sell_by_hand=3, hold_by_hand=2)
    assert len(hand_hold_moments(holding, 5)) == 2 and max(hand_hold_moments(holding, 5)) < 11
    assert hand_sale_moments(holding, 5) == chosen and hand_hold_moments(plain, 5) == set()
    down = ChaosSettings(kills=12, seed=5, sell_by_hand=3, outage=2)
    assert len(outage_moments(down, 5)) == 2 and max(outage_moments(down, 5)) < 11
    assert hand_sale_moments(down, 5) == chosen and outage_moments(plain, 5) == set()
    assert kill_moments(plain, random.Random(5)) == kill_moments(down, random.Random(5))
