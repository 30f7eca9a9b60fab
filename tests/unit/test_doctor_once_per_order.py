"""The doctor views each broker order once (actors.doctor.once_per_order): a leg listed under a take-profit replaced
at the broker and under its replacement is counted under the replacement; a leg under a replaced take-profit and
nowhere else (a triggered stop, alpaca-py #198) is kept there."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

from actors.doctor import once_per_order
from catalyst.broker.reports import OrderReport, order_views

AT = datetime(2024, 3, 4, 15, 0, tzinfo=timezone.utc)


def report(broker_id: str, status: str, type_: str = "limit", legs: tuple[OrderReport, ...] = ()) -> OrderReport:
    return OrderReport(broker_id=broker_id, client_order_id=f"cid-{broker_id}", symbol="AAPL", side="sell",
                       type=type_, order_class="oco", tif="gtc", qty=Decimal(100), filled_qty=Decimal(0),
                       filled_avg_price=None, limit_price=None, stop_price=None, status=status, created_at=AT,
                       updated_at=AT, submitted_at=AT, filled_at=None, canceled_at=None, legs=legs)


def parents(views) -> dict[str, str | None]:
    return {item.broker_id: view.parent_id for item, view in views}


def test_a_leg_under_a_replaced_take_profit_and_its_replacement_is_counted_once_under_the_replacement():
    stop = report("stop", "held", "stop")
    for listing in ([report("old-tp", "replaced", legs=(stop,)), report("new-tp", "new", legs=(stop,))],
                    [report("new-tp", "new", legs=(stop,)), report("old-tp", "replaced", legs=(stop,))]):
        views = once_per_order(order_views(listing))
        assert len(views) == 3
        assert parents(views) == {"old-tp": None, "new-tp": None, "stop": "new-tp"}


def test_a_leg_only_under_a_replaced_take_profit_is_kept_there():
    stop = report("stop", "partially_filled", "stop")
    views = once_per_order(order_views([report("tp", "replaced", legs=(stop,))]))
    assert parents(views) == {"tp": None, "stop": "tp"}


def test_a_leg_read_by_id_beside_its_oco_is_counted_once_under_its_parent():
    stop = report("stop", "held", "stop")
    views = once_per_order(order_views([report("stop", "held", "stop"), report("tp", "new", legs=(stop,))]))
    assert len(views) == 2 and parents(views)["stop"] is None  # the first view, both parents working
