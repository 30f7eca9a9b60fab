"""Pure rules of the exchange emulator: bar matching, participation, accounts, fault plans, rate limit."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

import pytest

from catalyst.sim.accounts import Account
from catalyst.sim.faults import FaultPlan, FaultSpecError
from catalyst.sim.market import EXCHANGE_TZ, Bar
from catalyst.sim.matching import capacity, executable_qty, price_in_bar, price_on_submit
from catalyst.sim.orders import OrderClass, OrderType, Side, SimOrder, Status, TimeInForce
from catalyst.sim.ratelimit import RateLimiter

AT = datetime(2024, 3, 4, 10, 0, tzinfo=EXCHANGE_TZ)


def order(kind: OrderType, side: Side, qty: int = 10, limit: str | None = None, stop: str | None = None) -> SimOrder:
    return SimOrder(id=uuid.uuid4(), client_order_id="c", symbol="AAPL", side=side, type=kind,
                    time_in_force=TimeInForce.GTC, qty=Decimal(qty), order_class=OrderClass.SIMPLE, created_at=AT,
                    status=Status.NEW, limit_price=Decimal(limit) if limit else None,
                    stop_price=Decimal(stop) if stop else None)


def bar(open_: str, high: str, low: str, close: str, volume: int = 1000) -> Bar:
    return Bar("AAPL", AT, Decimal(open_), Decimal(high), Decimal(low), Decimal(close), volume)


def test_buy_limit_fills_only_when_the_bar_trades_through_it():
    resting = order(OrderType.LIMIT, Side.BUY, limit="99")

    assert price_in_bar(resting, bar("100", "101", "99", "100"), working_before_bar=True) is None
    assert price_in_bar(resting, bar("100", "101", "98.9", "100"), working_before_bar=True) == Decimal("99")
    assert price_in_bar(resting, bar("98", "98.5", "97", "98"), working_before_bar=True) == Decimal("98")


def test_sell_stop_triggers_on_touch_and_fills_at_the_gap_open():
    touched = order(OrderType.STOP, Side.SELL, stop="95")
    gapped = order(OrderType.STOP, Side.SELL, stop="95")

    assert price_in_bar(touched, bar("97", "97", "95", "96"), working_before_bar=True) == Decimal("95")
    assert touched.triggered
    assert price_in_bar(gapped, bar("93", "94", "92", "93"), working_before_bar=True) == Decimal("93")


def test_untouched_stop_stays_untriggered():
    stop = order(OrderType.STOP, Side.SELL, stop="95")

    assert price_in_bar(stop, bar("97", "98", "95.01", "96"), working_before_bar=True) is None
    assert not stop.triggered


def test_marketable_limit_executes_on_submit_at_the_last_trade():
    assert price_on_submit(order(OrderType.LIMIT, Side.BUY, limit="101"), Decimal("100")) == Decimal("100")
    assert price_on_submit(order(OrderType.LIMIT, Side.BUY, limit="99"), Decimal("100")) is None
    assert price_on_submit(order(OrderType.STOP, Side.SELL, stop="101"), Decimal("100")) is None


def test_participation_caps_each_order_per_minute():
    working = order(OrderType.MARKET, Side.BUY, qty=100)
    cap = capacity(Decimal("0.25"), 200)
    working.consumed[AT] = Decimal(30)

    assert cap == 50
    assert executable_qty(working, cap, AT) == 20
    assert capacity(Decimal("0.25"), 1) == 1  # at least one share
    assert executable_qty(working, None, AT) == 100  # no bar: unlimited


def test_account_averages_entries_and_keeps_the_basis_when_reducing():
    account = Account("k", Decimal("10000"))
    entry = order(OrderType.MARKET, Side.BUY, qty=20)
    exit_ = order(OrderType.MARKET, Side.SELL, qty=5)

    account.apply_fill(entry, Decimal(10), Decimal("100"), AT)
    account.apply_fill(entry, Decimal(10), Decimal("110"), AT)
    account.apply_fill(exit_, Decimal(5), Decimal("120"), AT)

    position = account.positions["AAPL"]
    assert (position.qty, position.avg_entry_price) == (Decimal(15), Decimal("105"))
    assert account.cash == Decimal("10000") - 2100 + 600
    assert entry.status is Status.FILLED and exit_.status is Status.FILLED


def test_short_ties_up_its_market_value_in_buying_power():
    account = Account("k", Decimal("10000"))
    account.apply_fill(order(OrderType.MARKET, Side.SELL, qty=10), Decimal(10), Decimal("100"), AT)

    assert account.buying_power(lambda symbol: Decimal("100")) == Decimal("9000")
    assert account.buying_power(lambda symbol: Decimal("120")) == Decimal("8600")


def test_fault_plan_is_deterministic_per_seed():
    first = FaultPlan.parse("drop=0.5", seed=7)
    second = FaultPlan.parse("drop=0.5", seed=7)

    assert [first.hits("drop") for _ in range(50)] == [second.hits("drop") for _ in range(50)]
    assert not FaultPlan.parse("").enabled and not FaultPlan.parse("").hits("drop")


@pytest.mark.parametrize("spec, named", [("drop", "'drop'"), ("drop=x", "'drop=x'"), ("jitter=0.1", "'jitter'"),
                                         ("delay=1.5", "'delay=1.5'")])
def test_bad_fault_spec_is_one_line_naming_the_item(spec, named):
    with pytest.raises(FaultSpecError) as error:
        FaultPlan.parse(spec)

    assert named in str(error.value) and "\n" not in str(error.value)


def test_rate_limiter_resets_after_a_minute():
    clock = [1000.0]
    limiter = RateLimiter(2, now=lambda: clock[0])

    answers = [limiter.check("k").allowed for _ in range(3)]
    clock[0] += 60
    after_reset = limiter.check("k")

    assert answers == [True, True, False]
    assert after_reset.allowed and after_reset.headers["X-RateLimit-Remaining"] == "1"


def test_rate_limit_zero_means_off_and_bursts_force_429s():
    limiter = RateLimiter(0)
    limiter.force_burst("k", 2)

    assert [limiter.check("k").allowed for _ in range(4)] == [False, False, False, False]
    assert limiter.check("other").allowed


def test_a_429_burst_lasts_its_seconds_and_its_reset_header_says_when_it_ends():
    clock = [1000.2]
    limiter = RateLimiter(200, now=lambda: clock[0])
    limiter.force_burst("k", 5)

    refused = [limiter.check("k") for _ in range(3)]
    clock[0] = 1005.1
    still = limiter.check("k")
    clock[0] = 1006.0  # the moment the Reset named: a client that waited for it is served
    served = limiter.check("k")

    assert [d.allowed for d in refused] == [False, False, False] and not still.allowed
    assert {d.headers["X-RateLimit-Reset"] for d in [*refused, still]} == {"1006"}
    assert served.allowed


def test_a_burst_starting_inside_another_extends_it_and_never_shortens_it():
    clock = [1000.0]
    limiter = RateLimiter(0, now=lambda: clock[0])
    limiter.force_burst("k", 10)
    clock[0] = 1002.0
    limiter.force_burst("k", 3)  # would end at 1005: the first still runs to 1010

    clock[0] = 1009.5
    assert not limiter.check("k").allowed
    limiter.force_burst("k", 5)
    clock[0] = 1012.0
    assert not limiter.check("k").allowed
    clock[0] = 1014.5
    assert limiter.check("k").allowed
