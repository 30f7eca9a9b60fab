"""An entry that fills away from the price risk sized it at (a market order on a gapper at the open) is protected at
the plan's distances from its fill: the loss at the stop stays what risk allowed and the take-profit stays beyond the
fill, where the plan's own prices had put a long's take-profit below it (an instant exit called a take-profit) or its
stop twice the budget away. The prices hold for the position's later OCOs and across a rebuild from the database.
Real actors, alpaca-py against the emulator on loopback, SQLite on disk."""

from __future__ import annotations

from decimal import Decimal

import pykka
from alpaca.trading.client import TradingClient

from actors import messages as m
from actors.position import PositionActor
from catalyst.domain.orders import OrderStatus
from tests.actors.conftest import logged_lines
from tests.actors.test_trade_scenarios import position_of, protected_qty, wait_closed


def working_legs_at_broker(trading) -> list[tuple[str, Decimal | None, Decimal | None]]:
    def price(text: str | None) -> Decimal | None:
        return None if text is None else Decimal(text)

    return sorted((o["type"], price(o["limit_price"]), price(o["stop_price"])) for o in trading.broker_view()["orders"]
                  if o["symbol"] == "AAPL" and o["side"] == "sell" and o["status"] in ("new", "held", "accepted"))


def legs(limit: str, stop: str) -> list[tuple[str, Decimal | None, Decimal | None]]:
    return [("limit", Decimal(limit), None), ("stop", None, Decimal(stop))]


def test_a_fill_above_the_sized_price_moves_stop_and_target_with_it_and_a_rebuild_keeps_them(trading):
    trading.exchange.set_price("AAPL", "149.95")  # the plan was sized at 145.00: the open gapped on
    with logged_lines("actors.position", "INFO") as said:
        ref = trading.open(trading.plan(stop="142.00", target="151.00", entry_price=Decimal("145.00")))
        trading.wait_for(lambda: protected_qty(trading) == Decimal("100"), "protection")

    assert working_legs_at_broker(trading) == legs("155.95", "146.95")
    position = position_of(trading)
    assert (position.entry_price, position.stop_loss, position.take_profit) == (
        Decimal("149.95"), Decimal("146.95"), Decimal("155.95"))
    assert ("position AAPL#p-1 entry filled at 149.95, 4.95 above the 145.00 it was sized at: stop 146.95 and target "
            "155.95 (planned 142.00 and 151.00) keep their distances, so the loss at the stop stays the budget") in said

    # The actor dies; its rebuild reads the stop and target the first fill fixed, not the plan's, and so does the
    # OCO it places when someone cancels the one at the broker.
    entry = trading.all_orders()[0]
    bogus = m.Execution(key="bogus:1", qty=Decimal("999"), price=Decimal("1"), at=entry.updated_at)
    ref.tell(m.OrderUpdated(order_id=entry.order_id + 1, role="take_profit", status=OrderStatus.FILLED,
                            filled_qty=Decimal("999"), execution=bogus))
    trading.wait_for(lambda: not ref.is_alive(), "the poisoned actor to die")
    trading.wait_for(lambda: [r for r in pykka.ActorRegistry.get_by_class(PositionActor) if r.is_alive()],
                     "a rebuilt actor")
    take_profit = next(o for o in trading.all_orders() if o.role == "take_profit")
    by_hand = TradingClient("k", "s", url_override=trading.exchange.base_url)
    by_hand._api_key = trading.key
    by_hand.cancel_order_by_id(take_profit.alpaca_order_id)
    trading.wait_for(lambda: len([o for o in trading.all_orders() if o.role == "take_profit"]) == 2
                     and protected_qty(trading) == Decimal("100"), "the OCO placed again")
    assert working_legs_at_broker(trading) == legs("155.95", "146.95")

    trading.trade("AAPL", "146.90")  # through the moved stop: 100 × 3.00 lost, the risk the plan was sized for
    assert wait_closed(trading).realized_pnl == Decimal("-300.00")


def test_a_plan_that_does_not_say_its_sized_price_keeps_its_stop_and_target(trading):
    trading.exchange.set_price("AAPL", "149.95")
    trading.open(trading.plan(stop="147.00", target="155.00"))
    trading.wait_for(lambda: protected_qty(trading) == Decimal("100"), "protection")
    assert working_legs_at_broker(trading) == legs("155.00", "147.00")


def test_a_stop_already_through_the_market_when_the_oco_goes_out_is_refused_and_the_shares_leave_at_market(trading):
    # Alpaca refuses an OCO whose stop is not a cent below the market (its "base price"): the fill went through the
    # stop before protection could be placed. The position exits at market instead of holding unprotected shares.
    trading.exchange.set_price("AAPL", "149.95")
    with logged_lines("actors.position", "WARNING") as said:
        trading.open(trading.plan(stop="150.00", target="155.00"))
        position = wait_closed(trading)

    assert position.quantity == Decimal("0") and position.exit_price == Decimal("149.95")
    assert any("protection rejected" in line and "stop_loss.stop_price must be <= base_price - 0.01" in line
               for line in said)
    assert not [o for o in trading.broker_view()["orders"] if o["status"] in ("new", "held", "accepted")]


def test_each_partial_fill_is_protected_at_the_plans_distances_from_its_own_price(trading):
    """A gapper filling in pieces, each higher: with the first fill's prices for all, the second piece's take-profit
    would sit below the market it was bought at (it would sell at once)."""
    trading.exchange.set_price("AAPL", "50.00", volume=800)  # 25% participation: 200 shares a minute
    trading.open(trading.plan(qty="400", stop="48.00", target="54.00", entry_price=Decimal("49.00")))
    trading.wait_for(lambda: (p := position_of(trading)) and p.quantity == Decimal("200"), "the first piece")
    trading.wait_for(lambda: protected_qty(trading) == Decimal("200"), "its protection")
    for _ in range(2):  # the second piece, 2.00 higher (a minute passes before it trades there)
        trading.trade("AAPL", "52.00", volume=800)
    trading.wait_for(lambda: protected_qty(trading) == Decimal("400"), "protection of all 400 shares")

    assert sorted(working_legs_at_broker(trading)) == sorted(legs("55.00", "49.00") + legs("57.00", "51.00"))
    position = position_of(trading)  # the row keeps the first piece's prices
    assert (position.stop_loss, position.take_profit) == (Decimal("49.00"), Decimal("55.00"))

    # Both OCOs cancelled by hand: the 400 shares are protected again from their average price (51.00), not at the
    # first piece's 49.00 stop, which would put 400 × 2.00 at risk where the plan allowed 400 × 1.00.
    by_hand = TradingClient("k", "s", url_override=trading.exchange.base_url)
    by_hand._api_key = trading.key
    for take_profit in [o for o in trading.all_orders() if o.role == "take_profit"]:
        by_hand.cancel_order_by_id(take_profit.alpaca_order_id)
    trading.wait_for(lambda: len([o for o in trading.all_orders() if o.role == "take_profit"]) >= 4
                     and protected_qty(trading) == Decimal("400"), "the 400 shares protected again")
    assert sorted(working_legs_at_broker(trading)) == sorted(legs("56.00", "50.00") * 2)


def test_a_restart_before_the_first_fill_still_measures_that_fill_from_the_sized_price(trading):
    # The entry is working (no trade in AAPL yet: a market order rests) when the daemon restarts. The rebuilt plan
    # reads the sized price from the entry's row (orders.planned_entry_price); without it, the fill 4.95 above it
    # kept the planned 142.00 stop, 7.95 a share at risk where the budget was 3.00.
    trading.open(trading.plan(stop="142.00", target="151.00", entry_price=Decimal("145.00")))
    entry = trading.wait_for(lambda: (rows := trading.all_orders()) and rows[0].alpaca_order_id and rows[0],
                             "the entry acknowledged")
    assert entry.planned_entry_price == Decimal("145.00") and entry.filled_qty == 0
    trading.stop()
    trading.start()  # a new actor system on the same database: the pending entry is rebuilt from its row

    trading.trade("AAPL", "149.95")
    trading.wait_for(lambda: protected_qty(trading) == Decimal("100"), "protection")

    assert working_legs_at_broker(trading) == legs("155.95", "146.95")
    position = position_of(trading)
    assert (position.entry_price, position.stop_loss, position.take_profit) == (
        Decimal("149.95"), Decimal("146.95"), Decimal("155.95"))
