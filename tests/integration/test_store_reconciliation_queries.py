"""The spec §7 reconciliation queries and the restart book return exactly the right rows."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from catalyst.store.db import make_engine
from catalyst.store.migrate import upgrade
from catalyst.store.records import OrderRecord
from catalyst.store.repository import Store

T0 = datetime(2025, 12, 29, 15, 0, tzinfo=timezone.utc)


class Book:
    """A migrated store on a file, driven synchronously, with shorthands for making orders."""

    def __init__(self, url: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.store = Store(make_engine(url))
        self.cycle_id = self.run(self.store.get_or_create_cycle(date(2025, 12, 29), at=T0)).cycle_id

    def run(self, coroutine):  # type: ignore[no-untyped-def]
        return self.loop.run_until_complete(coroutine)

    def order(self, symbol: str, *, at: datetime, role: str = "entry", **fields: object) -> OrderRecord:
        return self.run(self.store.create_order(
            cycle_id=self.cycle_id, symbol=symbol, role=role, side="buy", order_type="market",
            quantity=Decimal(10), at=at, **fields,
        ))  # fmt: skip

    def submitted(self, symbol: str, *, at: datetime) -> OrderRecord:
        order = self.order(symbol, at=at)
        return self.run(self.store.mark_submitted(order.order_id, f"alp-{symbol}", "new", at))

    def status(self, order: OrderRecord, status: str, at: datetime, filled: Decimal = Decimal(0)) -> None:
        price = Decimal("10.5") if filled else None
        self.run(self.store.update_order_status(order.order_id, status, status, filled, price, at))


@pytest.fixture
def book(tmp_path: Path) -> Iterator[Book]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'recon.db'}"
    upgrade(url)
    made = Book(url)
    yield made
    made.run(made.store.close())
    made.loop.close()


def test_orders_needing_reconciliation_are_stale_live_orders_at_the_broker(book: Book) -> None:
    old = T0 - timedelta(minutes=10)
    stale_accepted = book.submitted("AAA", at=old)
    book.status(stale_accepted, "accepted", old)
    stale_partial = book.submitted("BBB", at=old - timedelta(minutes=1))
    book.status(stale_partial, "partial_fill", old, Decimal(4))
    book.submitted("FRESH", at=T0)  # updated just now: not stale
    book.order("LOCAL", at=old)  # never reached the broker: nothing to ask about
    for symbol, final in (("FILLED", "filled"), ("CANCELD", "cancelled"), ("REPLCD", "replaced")):
        book.status(book.submitted(symbol, at=old), final, old, Decimal(10) if final == "filled" else Decimal(0))

    found = book.run(book.store.orders_needing_reconciliation(T0 - timedelta(minutes=1)))

    # Oldest submission first, as in spec §7.1.
    assert [(o.symbol, o.status) for o in found] == [("BBB", "partial_fill"), ("AAA", "accepted")]
    assert found[0].filled_qty == Decimal(4)


def test_open_positions_for_reconciliation_skip_closed_and_empty(book: Book) -> None:
    held = book.order("HELD", at=T0)
    book.run(book.store.open_position_for_entry(held.order_id, Decimal(10), Decimal("20.25"), T0))
    gone = book.order("GONE", at=T0)
    closed = book.run(book.store.open_position_for_entry(gone.order_id, Decimal(5), Decimal("30"), T0))
    book.run(book.store.close_position(closed.position_id, Decimal("31"), Decimal("5"), T0))
    flat = book.order("FLAT", at=T0)
    emptied = book.run(book.store.open_position_for_entry(flat.order_id, Decimal(5), Decimal("30"), T0))
    book.run(book.store.update_position(emptied.position_id, T0, quantity=Decimal(0)))

    found = book.run(book.store.open_positions_for_reconciliation())

    assert [(p.symbol, p.quantity, p.side) for p in found] == [("HELD", Decimal(10), "long")]


def test_unknown_outcome_orders_are_listed_until_settled(book: Book) -> None:
    timed_out = book.order("TIMEOUT", at=T0)
    book.run(book.store.record_submit_attempt(timed_out.order_id, T0))
    book.run(book.store.set_outcome_unknown(timed_out.order_id, True, T0))
    book.order("CALM", at=T0)

    before = book.run(book.store.orders_with_unknown_outcome())
    book.run(book.store.mark_submitted(timed_out.order_id, "alp-found-by-lookup", "accepted", T0))
    after = book.run(book.store.orders_with_unknown_outcome())

    assert [(o.symbol, o.submit_attempts) for o in before] == [("TIMEOUT", 1)]
    assert after == []


def test_live_book_has_pending_entries_with_their_plan_and_open_positions(book: Book) -> None:
    waiting = book.order("WAIT", at=T0, planned_stop_loss=Decimal("9.50"), planned_take_profit=Decimal("12"))
    book.run(book.store.mark_submitted(waiting.order_id, "alp-wait", "new", T0))
    filled = book.order("FILL", at=T0)
    book.run(book.store.open_position_for_entry(filled.order_id, Decimal(10), Decimal("11"), T0))
    book.status(book.order("DEAD", at=T0), "rejected", T0)

    live = book.run(book.store.live_positions())

    assert [(o.symbol, o.planned_stop_loss, o.planned_take_profit) for o in live.pending_entries] == [
        ("WAIT", Decimal("9.50"), Decimal("12")),
    ]
    assert [p.symbol for p in live.open_positions] == ["FILL"]


def test_working_orders_exclude_terminal_ones(book: Book) -> None:
    created = book.order("NEW", at=T0)
    book.status(book.submitted("DONE", at=T0), "filled", T0, Decimal(10))
    book.status(book.submitted("GONE", at=T0), "expired", T0)

    assert [o.order_id for o in book.run(book.store.working_orders())] == [created.order_id]


def test_restart_book_lists_live_entries_and_gathers_each_trade(book: Book) -> None:
    waiting = book.order("WAIT", at=T0)
    filled = book.order("FILL", at=T0)
    position = book.run(book.store.open_position_for_entry(filled.order_id, Decimal(10), Decimal("11"), T0))
    book.run(book.store.record_fill(
        execution_id="e-1", order_id=filled.order_id, symbol="FILL", side="buy", qty=Decimal(10),
        price=Decimal("11"), occurred_at=T0, source="stream",
    ))  # fmt: skip
    stop = book.order("FILL", at=T0, role="stop_loss", position_id=position.position_id, parent_order_id=filled.order_id)
    finished = book.order("DONE", at=T0)
    done = book.run(book.store.open_position_for_entry(finished.order_id, Decimal(1), Decimal("5"), T0))
    book.run(book.store.close_position(done.position_id, Decimal("6"), Decimal("1"), T0))

    live_ids = book.run(book.store.live_entry_ids())
    trade = book.run(book.store.position_book(filled.order_id))

    assert live_ids == [waiting.order_id, filled.order_id]
    assert trade is not None and trade.position is not None
    assert [o.order_id for o in trade.orders] == [filled.order_id, stop.order_id]
    assert [(f.execution_id, f.price) for f in trade.fills] == [("e-1", Decimal("11"))]
    assert book.run(book.store.position_book(99999)) is None


def test_restart_book_lists_a_closed_position_whose_exit_order_still_works(book: Book) -> None:
    """Late entry shares kept under stops overnight (their position's row closed): an actor must own them after a
    restart, to sell them at the open. A closed position whose orders have all ended needs none."""
    def closed(symbol: str, stop_status: str) -> int:
        entry = book.order(symbol, at=T0)
        position = book.run(book.store.open_position_for_entry(entry.order_id, Decimal(1), Decimal("5"), T0))
        stop = book.order(symbol, at=T0, role="stop_loss", position_id=position.position_id,
                          parent_order_id=entry.order_id)
        book.run(book.store.mark_submitted(stop.order_id, f"alp-{symbol}-stop", "new", T0))
        book.status(stop, stop_status, T0)
        book.run(book.store.close_position(position.position_id, Decimal("6"), Decimal("1"), T0))
        return entry.order_id

    kept = closed("KEPT", "accepted")
    closed("DONE", "cancelled")
    unsent = book.order("UNSENT", at=T0)
    position = book.run(book.store.open_position_for_entry(unsent.order_id, Decimal(1), Decimal("5"), T0))
    book.order("UNSENT", at=T0, role="stop_loss", position_id=position.position_id, parent_order_id=unsent.order_id)
    book.run(book.store.close_position(position.position_id, Decimal("6"), Decimal("1"), T0))  # its stop `created`

    assert book.run(book.store.live_entry_ids()) == [kept]



def test_closed_positions_whose_recorded_fills_still_hold_shares(book: Book) -> None:
    def closed_with_fills(symbol: str, bought: list[str], sold: list[str], closed_at: datetime = T0) -> int:
        entry = book.order(symbol, at=T0)
        position = book.run(book.store.open_position_for_entry(entry.order_id, Decimal(1), Decimal("5"), T0))
        stop = book.order(symbol, at=T0, role="stop_loss", position_id=position.position_id,
                          parent_order_id=entry.order_id)
        for index, (order, side, qty) in enumerate([*((entry, "buy", q) for q in bought),
                                                    *((stop, "sell", q) for q in sold)]):
            book.run(book.store.record_fill(
                execution_id=f"{symbol}-{position.position_id}-{index}", order_id=order.order_id, symbol=symbol,
                side=side, qty=Decimal(qty), price=Decimal("5"), occurred_at=T0, source="stream"))
        book.run(book.store.close_position(position.position_id, Decimal("5"), Decimal(0), closed_at))
        return position.position_id

    late = closed_with_fills("LATE", bought=["60", "0.5", "40"], sold=["60.5"])
    closed_with_fills("EVEN", bought=["60", "0.25"], sold=["60", "0.25"])
    closed_with_fills("LATE", bought=["10", "5"], sold=["10"], closed_at=T0 - timedelta(days=3))  # before `since`
    closed_with_fills("ELSE", bought=["10", "5"], sold=["10"])  # not asked for

    found = book.run(book.store.closed_positions_holding_shares(["LATE", "EVEN"], T0 - timedelta(days=1)))

    assert [(p.position_id, p.symbol, p.quantity) for p in found] == [(late, "LATE", Decimal("40.0"))]
    assert book.run(book.store.closed_positions_holding_shares([], T0)) == []


def test_closed_positions_holding_shares_under_their_own_stops_are_found_past_the_look_back(book: Book) -> None:
    """Late shares kept under their stops from a Friday close to Monday's open: past the doctor's 24 h look-back they
    were no closed position's, and halted entries as shares of ours with no position (a review)."""
    def closed_on_friday(symbol: str, stop_status: str) -> int:
        entry = book.order(symbol, at=T0)
        position = book.run(book.store.open_position_for_entry(entry.order_id, Decimal(100), Decimal("5"), T0))
        book.run(book.store.record_fill(execution_id=f"{symbol}-e", order_id=entry.order_id, symbol=symbol,
                                        side="buy", qty=Decimal(100), price=Decimal("5"), occurred_at=T0,
                                        source="stream"))
        book.run(book.store.close_position(position.position_id, Decimal("5"), Decimal(0), T0))
        stop = book.order(symbol, at=T0, role="stop_loss", position_id=position.position_id,
                          parent_order_id=entry.order_id)
        book.run(book.store.mark_submitted(stop.order_id, f"alp-{symbol}-stop", "new", T0))
        book.status(stop, stop_status, T0)
        return position.position_id

    kept = closed_on_friday("KEPT", "accepted")
    closed_on_friday("GONE", "cancelled")

    found = book.run(book.store.closed_positions_holding_shares(["KEPT", "GONE"], T0 + timedelta(days=2)))

    assert [(p.position_id, p.quantity) for p in found] == [(kept, Decimal(100))]


def test_an_entry_replaced_with_no_replacement_row_is_rebuilt_until_its_day_is_completed(book: Book) -> None:
    """A kill between a moved entry's `replaced` and its replacement's row: its position must be rebuilt to follow the
    new order (nothing else knows of it); on a completed day the new order, a day order, has ended."""
    moved = book.submitted("MOVE", at=T0)
    book.status(moved, "replaced", T0)
    cancelled = book.submitted("GONE", at=T0)
    book.status(cancelled, "cancelled", T0)
    assert book.run(book.store.live_entry_ids()) == [moved.order_id]

    book.run(book.store.set_cycle_phase(book.cycle_id, "completed", at=T0))
    assert book.run(book.store.live_entry_ids()) == []


def test_a_replacement_is_never_linked_to_another_positions_order(book: Book) -> None:
    """The broker's new order written already as another position's (the doctor adopted its fill): linking it would
    count its shares in both positions. Refused, and nothing is changed."""
    from catalyst.store.doctor_ops import ADOPTED_ENTRY_ROLE, AdoptedFill, BrokerOrderRow
    from catalyst.store.order_ops import Replacement

    moved = book.submitted("MOVE", at=T0)
    book.status(moved, "replaced", T0)
    adopted, position = book.run(book.store.adopt_position(BrokerOrderRow(
        cycle_id=book.cycle_id, symbol="MOVE", role=ADOPTED_ENTRY_ROLE, side="buy", order_type="market",
        quantity=Decimal(10), alpaca_order_id="alp-new", client_order_id="by-hand", status="filled",
        filled_qty=Decimal(10), filled_avg_price=Decimal("10.5")),
        [AdoptedFill("alp-new:10", "alp-new", Decimal(10), Decimal("10.5"), T0)], at=T0))
    new = Replacement(alpaca_order_id="alp-new", client_order_id="by-hand", order_type="limit", time_in_force="day",
                      quantity=Decimal(10), limit_price=Decimal("10.5"), stop_price=None)

    with pytest.raises(ValueError, match=rf"is order o-{adopted.order_id} already \(entry of position "
                                         rf"p-{position.position_id}\), not a replacement of o-{moved.order_id}"):
        book.run(book.store.record_replacement(moved.order_id, new, at=T0))
    assert book.run(book.store.position_book(moved.order_id)).orders[0].replaced_by_order_id is None
