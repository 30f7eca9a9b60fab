"""A review of the protection capped at a refusal a hand sale explains (actors/position.py `_cap_at_refusal`) and of a
hand order's end freeing shares for a stop (`_on_order_outside_ended`): end to end against the emulator with the
shipped NO_SHARES_WINDOW_S unless a set-up says otherwise; the broker's view asserted."""

from __future__ import annotations

import time
from decimal import Decimal

from alpaca.trading.enums import OrderSide

from catalyst.domain.positions import PositionSide
from tests.actors.conftest import logged_lines
from tests.actors.test_doctor_heals import (broker_working_stop_qty, by_hand, open_protected,  # noqa: F401
                                            position_of, protected, sell_part_by_hand, trading, working_stop_ids)
from tests.actors.test_heal_review import (broker_qty, hand_limit_sell, hand_market,  # noqa: F401
                                           protected_then_40_sold_by_hand)

def test_a_hand_sale_heard_on_the_stream_and_again_from_a_catch_up_is_counted_once(trading, by_hand):
    # The reconnect's catch-up lists the hand sale the stream already told (a FILL activity's id is not the stream's
    # execution id): it is the same 40, not 80 more. Then a hand limit holding 10 of the 60 refuses the OCO put back.
    with logged_lines("actors.position", "INFO") as said:
        protected_then_40_sold_by_hand(trading, by_hand)
        protected(trading, "60")
        trading.exchange.drop_stream_connections()
        time.sleep(3.0)  # reconnected, caught up
        hand_limit_sell(trading, by_hand, 10, 170)
        protected(trading, "50")
    capped = [line for line in said if "having been sold outside Catalyst" in line]
    assert len(capped) == 2 and all("40 AAPL having been sold outside Catalyst" in line for line in capped), capped
    time.sleep(1.0)
    assert broker_qty(trading) == 60 and broker_working_stop_qty(trading) == 50 and len(working_stop_ids(trading)) == 1
