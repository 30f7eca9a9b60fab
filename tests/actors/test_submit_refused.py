"""A submit the broker refuses before acting on it (429s until the worker's retries are spent) placed nothing: the
router sends it again with the same client_order_id at the broker's reset, instead of leaving a stop's shares
unprotected until the doctor's stuck_after_s (alpaca-py against the emulator, the database on disk; no doctor runs)."""

from __future__ import annotations

import time
from decimal import Decimal

from loguru import logger

from actors import messages as m
from tests.actors.test_trade_scenarios import position_of


def refusal_lines(router_lines: list[str]) -> list[str]:
    return [line for line in router_lines if "refused before the broker acted" in line]


def fill_a_resting_entry_under(trading, faults: str):
    """A limit entry resting at the broker, then the faults on, then a print through its limit: the fill comes by
    the stream, and the OCO for it meets the faults. Returns the position's actor."""
    trading.exchange.set_price("AAPL", "150.00")
    actor = trading.open(trading.plan(order_type="limit", limit_price=Decimal("149.00")))
    trading.wait_for(lambda: (o := trading.all_orders()) and o[0].status in ("submitted", "accepted"), "the entry resting")
    trading.exchange.set_faults(faults)
    trading.trade("AAPL", "148.50")
    return actor


def legs(trading):
    return [o for o in trading.all_orders() if o.role in ("take_profit", "stop_loss")]


def test_an_oco_refused_with_429s_is_sent_again_at_the_reset_with_its_client_order_id(trading, router_lines):
    fill_a_resting_entry_under(trading, "submit_429=1")  # every order submit refused with a 429; reads answer

    (refused,) = trading.wait_for(lambda: refusal_lines(router_lines), "the OCO's submit to be refused", timeout=30)
    waiting = legs(trading)
    assert len(waiting) == 2 and all(o.status == "created" and not o.outcome_unknown for o in waiting)
    take_profit, stop_loss = sorted(waiting, key=lambda o: o.order_id)
    assert refused.startswith(f"order AAPL#o-{take_profit.order_id}+AAPL#o-{stop_loss.order_id} OCO refused before "
                              "the broker acted HTTP 429 code 42910000: rate limit exceeded")
    assert f"cid={take_profit.client_order_id}): nothing placed; sending it again with the same client_order_id in" \
        in refused
    assert refused.endswith("(refusal 1)")
    trading.exchange.set_faults("")

    acked = trading.wait_for(lambda: (rows := legs(trading)) and all(o.alpaca_order_id for o in rows) and rows,
                             "both legs acknowledged without the doctor", timeout=20)
    assert all(o.status in ("submitted", "accepted") and not o.outcome_unknown for o in acked)
    sells = [o for o in trading.broker_view()["orders"] if o["side"] == "sell"]
    assert len(sells) == 2 and {o["type"] for o in sells} == {"limit", "stop"}
    assert take_profit.client_order_id in {o["client_order_id"] for o in sells}
    assert len(legs(trading)) == 2  # the same rows, not new ones
    assert position_of(trading).status == "open"


def test_an_oco_cancelled_while_its_refused_submit_waits_is_withdrawn_and_the_flatten_exits_at_once(
        trading, router_lines):
    """A flatten (an emergency stop) while the OCO waits out a 429: both legs were never placed, so both end here,
    withdrawn, and the one market exit goes now, not after the OCO has been sent at the reset and then cancelled."""
    actor = fill_a_resting_entry_under(trading, "submit_429=1")
    trading.wait_for(lambda: refusal_lines(router_lines), "the OCO's submit to be refused", timeout=30)
    take_profit, stop_loss = sorted(legs(trading), key=lambda o: o.order_id)
    trading.exchange.set_faults("")  # the exit is not refused; the OCO waits out its refusal all the same

    actor.tell(m.Flatten(reason="emergency: daily loss limit"))
    closed = trading.wait_for(lambda: (p := position_of(trading)) and p.status == "closed" and p,
                              "the position closed by its exit", timeout=20)

    withdrawn = [trading.writer.get_order(o.order_id).get() for o in (take_profit, stop_loss)]
    assert [(o.status, o.alpaca_order_id, o.outcome_unknown) for o in withdrawn] == [("cancelled", None, False)] * 2
    assert {o.cancel_reason for o in withdrawn} == {"flatten: emergency: daily loss limit; withdrawn before it was sent"}
    assert closed.quantity == 0 and closed.realized_pnl == Decimal("-50")  # bought 149.00, sold 148.50
    time.sleep(2.5)  # past the wait the refusal had set: the OCO is never sent late
    sells = [o for o in trading.broker_view()["orders"] if o["side"] == "sell"]
    assert [(o["type"], o["status"]) for o in sells] == [("market", "filled")]
    assert take_profit.client_order_id not in {o["client_order_id"] for o in trading.broker_view()["orders"]}
    assert trading.broker_view()["positions"] == []


def test_an_oco_cancelled_while_the_submit_it_is_refused_on_is_in_flight_is_withdrawn_at_its_resend(
        trading, router_lines):
    """The flatten's cancel comes while the worker is still meeting the 429s (the OCO is in flight, so it cannot be
    taken back yet); once the submit ends refused, the resend it waits for withdraws both legs instead of sending."""
    attempts: list[str] = []
    sink = logger.add(lambda message: attempts.append(message.record["message"]), level="WARNING",
                      filter=lambda record: "oco/limit" in record["message"] and "rate limited" in record["message"])
    try:
        actor = fill_a_resting_entry_under(trading, "submit_429=1")
        trading.wait_for(lambda: attempts, "the OCO's first attempt refused, the worker still trying", timeout=30)
        assert not refusal_lines(router_lines), "the submit ended before the cancel could come while it was in flight"
        actor.tell(m.Flatten(reason="emergency: daily loss limit"))
        trading.wait_for(lambda: refusal_lines(router_lines), "the OCO's submit to end refused", timeout=30)
        trading.exchange.set_faults("")
        closed = trading.wait_for(lambda: (p := position_of(trading)) and p.status == "closed" and p,
                                  "the position closed by its exit", timeout=20)
    finally:
        logger.remove(sink)
    withdrawn = [o for o in legs(trading)]
    assert [(o.status, o.alpaca_order_id) for o in withdrawn] == [("cancelled", None)] * 2
    assert all(o.cancel_reason.endswith("withdrawn before it was sent") for o in withdrawn)
    assert closed.quantity == 0
    sells = [o for o in trading.broker_view()["orders"] if o["side"] == "sell"]
    assert [(o["type"], o["status"]) for o in sells] == [("market", "filled")]


def test_a_refused_submit_is_sent_again_with_growing_waits_until_placed(trading, router_lines):
    trading.exchange.set_price("AAPL", "150.00")
    trading.exchange.set_faults("submit_429=1")
    trading.open(trading.plan())  # a market entry, refused again and again

    trading.wait_for(lambda: len(refusal_lines(router_lines)) >= 2, "two refusals", timeout=30)
    first, second = refusal_lines(router_lines)[:2]
    assert first.endswith("(refusal 1)") and second.endswith("(refusal 2)")
    (entry,) = trading.all_orders()
    assert entry.status == "created" and not entry.outcome_unknown
    assert trading.broker_view()["orders"] == []
    trading.exchange.set_faults("")

    position = trading.wait_for(lambda: (p := position_of(trading)) and p.status == "open" and p,
                                "the entry placed at last, filled and protected", timeout=30)
    assert position.quantity == Decimal(100)
    assert [o["client_order_id"] for o in trading.broker_view()["orders"] if o["side"] == "buy"] == \
        [entry.client_order_id]


def test_an_entry_cancelled_while_its_refused_submit_waits_is_withdrawn_and_never_sent(trading, router_lines):
    trading.exchange.set_price("AAPL", "150.00")
    trading.exchange.set_faults("submit_429=1")
    actor = trading.open(trading.plan())

    trading.wait_for(lambda: refusal_lines(router_lines), "the entry's submit to be refused", timeout=30)
    (entry,) = trading.all_orders()
    actor.tell(m.Flatten(reason="emergency: daily loss limit"))
    withdrawn = trading.wait_for(lambda: (row := trading.writer.get_order(entry.order_id).get())
                                 and row.status == "cancelled" and row, "the entry to be withdrawn", timeout=20)
    trading.exchange.set_faults("")

    assert withdrawn.alpaca_order_id is None and not withdrawn.outcome_unknown
    assert withdrawn.cancel_reason == "emergency: daily loss limit; withdrawn before it was sent"
    trading.wait_for(lambda: not actor.is_alive() or actor.proxy().state().get()["status"] == "cancelled",
                     "the position to stand down")
    time.sleep(2.5)  # past the longest wait the refusals had set: nothing is sent late
    assert trading.broker_view()["orders"] == []
    assert trading.broker_view()["positions"] == []


def test_an_entry_the_doctor_retires_while_its_refused_submit_waits_is_never_sent(trading, router_lines):
    """Seen by hand at 10x: the doctor's retirement of an entry lost this long was skipped while it waited after a
    second refusal (the router took it for a resend in flight), and came only a pass later."""
    trading.exchange.set_price("AAPL", "150.00")
    trading.exchange.set_faults("submit_429=1")
    actor = trading.open(trading.plan())
    trading.wait_for(lambda: len(refusal_lines(router_lines)) >= 2, "a second refusal", timeout=30)
    (entry,) = trading.all_orders()

    trading.system.router.tell(m.RetireUnsent(order_ids=(entry.order_id,), reason="never sent: too late to send now"))
    retired = trading.wait_for(lambda: (row := trading.writer.get_order(entry.order_id).get())
                               and row.status == "cancelled" and row, "the entry to be retired", timeout=10)
    trading.exchange.set_faults("")

    assert retired.cancel_reason == "never sent: too late to send now" and retired.alpaca_order_id is None
    trading.wait_for(lambda: not actor.is_alive() or actor.proxy().state().get()["status"] == "cancelled",
                     "the position to stand down")
    time.sleep(4.5)  # past the wait the second refusal had set: nothing is sent late
    assert trading.broker_view()["orders"] == []


def test_an_entry_resent_at_a_restart_refused_then_cancelled_is_not_sent_but_left_to_the_doctors_look_up(trading):
    """A restart resends an entry left `created` by a crash: its first submit, before the crash, may have reached the
    broker. Refused now, then cancelled while it waits (an emergency stop), it cannot simply be withdrawn as never
    placed: it is not sent again (a market buy would fill at once) and is marked for the doctor, which asks the
    broker for it by its client_order_id."""
    from catalyst.store.records import NewOrder

    trading.exchange.set_price("AAPL", "149.95")
    (entry,) = trading.writer.create_orders([NewOrder(
        cycle_id=trading.cycle_id(), symbol="AAPL", role="entry", side="buy", order_type="market",
        quantity=Decimal(100), planned_stop_loss=Decimal("147.00"), planned_take_profit=Decimal("155.00"))],
        at=trading.exchange.clock.now()).get()
    trading.exchange.set_faults("submit_429=1")
    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(message.record["message"]), level="WARNING",
                      filter=lambda record: record["name"] == "actors.order_router")
    try:
        trading.system.supervisor.restore(entry.order_id).get()
        trading.wait_for(lambda: refusal_lines(lines), "the resent entry to be refused", timeout=30)
        (live,) = trading.system.supervisor.live_refs().get()
        live.tell(m.Flatten(reason="emergency: daily loss limit"))
        marked = trading.wait_for(lambda: (row := trading.writer.get_order(entry.order_id).get())
                                  and row.outcome_unknown and row, "the entry marked for the doctor", timeout=20)
        trading.exchange.set_faults("")
        assert marked.status == "created" and marked.alpaca_order_id is None
        # Said once the mark is committed: the row can be read a moment before the line is written.
        trading.wait_for(lambda: f"order AAPL#o-{entry.order_id} entry cancelled while it waited to be sent again: "
                         "not sent; the doctor asks the broker for it by its client_order_id" in lines,
                         "the router to say it left the entry to the doctor", timeout=5)
        time.sleep(2.5)  # past the wait the refusal had set: nothing is sent late
        assert trading.broker_view()["orders"] == []
    finally:
        logger.remove(sink)


def unknown_lines(router_lines: list[str]) -> list[str]:
    return [line for line in router_lines if "outcome unknown after submit" in line]


def test_an_oco_whose_outcome_is_unknown_is_sent_again_by_the_router_with_its_client_order_id(trading, router_lines):
    """503s on every order submit while the entry fills (look-ups answer: no such order). The OCO's outcome is
    unknown, so its rows are marked for the doctor; the router sends it again itself a second later with the same
    client_order_id, and once order entry answers it is placed: seconds without a stop, not the doctor's minutes."""
    fill_a_resting_entry_under(trading, "submit_5xx=1")

    (first,) = trading.wait_for(lambda: unknown_lines(router_lines), "the OCO's outcome to be unknown", timeout=30)
    take_profit, stop_loss = sorted(legs(trading), key=lambda o: o.order_id)
    assert first.startswith(f"order AAPL#o-{take_profit.order_id}+AAPL#o-{stop_loss.order_id} OCO outcome unknown "
                            "after submit: outcome unknown (look up by client_order_id) HTTP 503")
    assert first.endswith("sending it again with the same client_order_id in 1.0s (try 1 of 3; a duplicate is "
                          "refused, then looked up)")
    assert all(o.outcome_unknown for o in legs(trading))
    trading.exchange.set_faults("")

    acked = trading.wait_for(lambda: (rows := legs(trading)) and all(o.alpaca_order_id for o in rows) and rows,
                             "both legs acknowledged without the doctor", timeout=20)
    assert all(not o.outcome_unknown for o in acked) and len(acked) == 2
    sells = [o for o in trading.broker_view()["orders"] if o["side"] == "sell"]
    assert len(sells) == 2 and take_profit.client_order_id in {o["client_order_id"] for o in sells}


def test_after_its_unknown_resends_a_stop_is_left_to_the_doctor(trading, router_lines):
    fill_a_resting_entry_under(trading, "submit_5xx=1")

    trading.wait_for(lambda: any("the doctor settles it" in line for line in router_lines),
                     "the router to give the OCO up to the doctor", timeout=60)
    trading.exchange.set_faults("")
    tries = [line for line in unknown_lines(router_lines) if "(try " in line]
    assert [line.split("(try ")[1][:6] for line in tries] == ["1 of 3", "2 of 3", "3 of 3"]
    assert all(o.outcome_unknown and o.status == "created" for o in legs(trading))
    time.sleep(2.0)
    assert [o for o in trading.broker_view()["orders"] if o["side"] == "sell"] == []  # nothing more from the router


def test_an_oco_sent_while_the_broker_answers_nothing_goes_once_it_is_back_without_the_doctor(trading, router_lines):
    """Every REST call a 503 (the stream still up: the fill is heard), the look-ups too: nothing of the broker's says
    whether the OCO is there. Before, three sends 1, 2 and 4 s apart, then the doctor's pass minutes later; now it is
    sent again until the broker answers, and placed once it does: one OCO, its rows the same."""
    fill_a_resting_entry_under(trading, "http_5xx=1")

    (first,) = trading.wait_for(lambda: unknown_lines(router_lines), "the OCO's outcome to be unknown", timeout=30)
    assert "lookup failed too" in first
    assert first.endswith("(the broker answered nothing 1x: sent until it answers; a duplicate is refused, then "
                          "looked up)")
    time.sleep(15.0)  # past the three answered-unknown sends of before (1, 2 and 4 s apart, each its own attempts)
    assert not any("the doctor settles it" in line for line in router_lines)
    assert all(o.outcome_unknown and o.status == "created" for o in legs(trading))
    said = len(unknown_lines(router_lines))
    trading.exchange.set_faults("")

    acked = trading.wait_for(lambda: (rows := legs(trading)) and all(o.alpaca_order_id for o in rows) and rows,
                             "both legs acknowledged once the broker answers, without the doctor", timeout=30)
    assert len(acked) == 2 and all(not o.outcome_unknown for o in acked)
    sells = [o for o in trading.broker_view()["orders"] if o["side"] == "sell"]
    assert len(sells) == 2 and {o["type"] for o in sells} == {"limit", "stop"}
    assert {o["client_order_id"] for o in sells} >= {min(acked, key=lambda o: o.order_id).client_order_id}
    assert said <= 4  # through the outage its resends are said about once a minute at INFO and above, not each one


def test_an_entry_whose_broker_answers_nothing_is_still_left_to_the_doctor(trading, router_lines):
    # A market buy that may land late must never go twice: only stops and exits are sent until the broker answers.
    trading.exchange.set_price("AAPL", "149.95")
    trading.exchange.set_faults("http_5xx=1")
    trading.open(trading.plan())

    trading.wait_for(lambda: any("the doctor settles it" in line for line in router_lines),
                     "the entry left to the doctor", timeout=60)
    time.sleep(3.0)
    trading.exchange.set_faults("")
    (entry,) = trading.all_orders()
    assert entry.role == "entry" and entry.status == "created" and entry.outcome_unknown
    assert not any("sending it again" in line for line in unknown_lines(router_lines))
    assert trading.broker_view()["orders"] == []


def test_a_stop_sent_through_an_outage_of_hours_still_goes_once_the_broker_answers(trading, router_lines):
    """Its waits grow 1, 2, 4, 8, then 15 s: the 1,025th send comes some 4 h 15 min into an outage (a night's
    maintenance, say). Its wait, 2.0 ** 1024, overflowed a float: the result was dropped ("router failed handling
    SubmitResult: OverflowError"), and the OCO, out of the router's waits, was never sent again."""
    errors: list[str] = []
    said: list[str] = []  # each send through an outage is said at DEBUG
    sinks = [logger.add(lambda message: errors.append(message.record["message"]), level="ERROR"),
             logger.add(lambda message: said.append(message.record["message"]), level="DEBUG",
                        filter=lambda record: record["name"] == "actors.order_router")]
    try:
        fill_a_resting_entry_under(trading, "http_5xx=1")
        trading.wait_for(lambda: unknown_lines(router_lines), "the OCO's outcome to be unknown", timeout=30)
        take_profit = min(legs(trading), key=lambda o: o.order_id)
        # Hours of sends in a moment: the router's count of them as it would stand after 4 h 15 min.
        waiting = trading.system.router.proxy()._actor._refused[take_profit.order_id]
        waiting.tries = waiting.unanswered = 1024
        trading.wait_for(lambda: errors or any("answered nothing 1025x" in line for line in said),
                         "the next send's answer", timeout=30)
        trading.exchange.set_faults("")
        acked = trading.wait_for(lambda: (rows := legs(trading)) and all(o.alpaca_order_id for o in rows) and rows,
                                 "both legs acknowledged once the broker answers", timeout=40)
    finally:
        for sink in sinks:
            logger.remove(sink)
    assert errors == []
    assert len(acked) == 2
    assert len([o for o in trading.broker_view()["orders"] if o["side"] == "sell"]) == 2


def test_a_stop_sent_through_a_long_outage_is_said_about_once_a_minute_not_at_every_call(trading, router_lines):
    """Sent until the broker answers, 15 s apart: each send is three submits and nine look-ups, every one a 503, and
    each was a WARNING line of the broker's calls (some 40 a minute for one stop, for as long as the outage lasts)
    while the router's own lines said it about once a minute. The sends it does not say, their calls do not either."""
    fill_a_resting_entry_under(trading, "http_5xx=1")
    trading.wait_for(lambda: unknown_lines(router_lines), "the OCO's outcome to be unknown", timeout=30)
    time.sleep(16.0)  # the waits between sends have grown to 15 s
    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(message.record["message"]), level="WARNING",
                      filter=lambda record: record["name"].startswith(("actors.", "catalyst.broker")))
    try:
        time.sleep(45.0)  # two sends or three (each takes its worker some seconds), one said: every fourth is
    finally:
        logger.remove(sink)
    trading.exchange.set_faults("")
    assert len(lines) <= 16, "\n".join(lines)  # one send said: its twelve calls, and the router's two lines
    acked = trading.wait_for(lambda: (rows := legs(trading)) and all(o.alpaca_order_id for o in rows) and rows,
                             "both legs acknowledged once the broker answers", timeout=40)
    assert len(acked) == 2
