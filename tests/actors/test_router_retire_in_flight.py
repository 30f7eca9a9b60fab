"""The doctor retires a row that stayed `created` (never sent, its position closed) by telling the router; a row whose
submit a worker is sending at that moment must not be retired: its order may reach the broker after the doctor
looked there, and would then work (or fill) under a row saying cancelled. Found reading a faults-only day's log, where
the doctor called an entry "stuck created" while its worker was resubmitting it after two injected 503s (alpaca-py
against the emulator, the database on disk)."""

from __future__ import annotations

import time

from actors import messages as m
from tests.actors.conftest import Trading
from tests.actors.test_trade_scenarios import position_of


def test_a_row_whose_submit_is_in_flight_is_not_retired_and_ends_as_the_broker_says(exchange, tmp_path,
                                                                                    router_lines):
    trading = Trading(exchange, f"sqlite+aiosqlite:///{tmp_path / 'catalyst.db'}", general_workers=1).start()
    try:
        exchange.set_price("AAPL", "149.95")
        # The start's catch-up takes the one general worker first: once it is done, the entry is sent at once.
        trading.wait_for(lambda: any(line.startswith("router catch-up applied") for line in router_lines),
                         "the start's catch-up")
        # The submit hangs (nothing placed) until the client gives up after 2 s; it is then looked up and resent.
        exchange.set_faults("timeout=1.0,hang_s=30")
        trading.open(trading.plan("AAPL"))
        entry = trading.wait_for(lambda: trading.all_orders("AAPL"), "the entry's row")[0]
        time.sleep(0.3)  # the one general worker has taken the submit and waits on the broker
        assert trading.writer.get_order(entry.order_id).get().status == "created"

        assert trading.system is not None
        trading.system.router.tell(m.RetireUnsent(order_ids=(entry.order_id,), reason="never sent: test"))
        trading.wait_for(lambda: any("not retired" in line for line in router_lines)
                         or trading.writer.get_order(entry.order_id).get().status != "created", "the router's answer")
        exchange.set_faults("")

        position = trading.wait_for(lambda: (p := position_of(trading, "AAPL")) and p.status == "open" and p,
                                    "the entry to fill and its position to open", timeout=30)
        at_broker = [o for o in trading.broker_view()["orders"] if o["client_order_id"] == entry.client_order_id]
        assert len(at_broker) == 1 and at_broker[0]["status"] == "filled"
        row = trading.writer.get_order(entry.order_id).get()
        assert (row.status, row.cancel_reason) == ("filled", None)
        assert position.quantity == row.quantity
        assert f"order AAPL#o-{entry.order_id} not retired: its submit is in flight; its answer tells" in router_lines
        assert not any("→ cancelled" in line for line in router_lines if f"AAPL#o-{entry.order_id} " in line)
    finally:
        trading.stop()
