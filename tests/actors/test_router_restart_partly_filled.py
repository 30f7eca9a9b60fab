"""A restart after two partial fills of a limit entry that is still working, end to end (alpaca-py against the
embedded exchange, the database on disk). The row's filled_qty lags the executions (200 of 400): taken for what
the executions cover, every catch-up listed the order at 400 and started another, every 2 s (a review)."""

from __future__ import annotations

import time
from tests.actors.conftest import logged_lines, wait_for
from tests.actors.test_router_fill_gap import restarted_with_400_of_500_bought
from tests.actors.test_trade_scenarios import position_of, protected_qty


def test_a_restart_with_an_entry_partly_filled_in_two_pieces_does_not_catch_up_every_grace_period(trading):
    again = restarted_with_400_of_500_bought(trading)
    with logged_lines("actors.order_router", "INFO") as lines:
        again.start()
        try:
            wait_for(lambda: position_of(again) is not None and protected_qty(again) == 400, "restored")
            time.sleep(10)  # the entry still works at 400 of 500; nothing new happens
        finally:
            again.stop()
    catch_ups = [line for line in lines if "missing executions" in line]
    assert not catch_ups, f"{len(catch_ups)} catch-ups in 10 s after the restart: {catch_ups[:2]}"
