"""Trade updates for another catalyst daemon's orders (another database on the same account) are recorded, named
once in the log, and not held for an order of ours that will never come; a hand order's still are."""

from __future__ import annotations

from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderSide, TimeInForce
from alpaca.trading.requests import MarketOrderRequest
from loguru import logger


def test_another_daemons_updates_are_named_once_and_not_held(trading):
    by_hand = TradingClient(trading.key, "secret", paper=True, url_override=trading.exchange.base_url)
    trading.exchange.set_price("MSFT", "400.00")
    lines: list[tuple[str, str]] = []
    sink = logger.add(lambda message: lines.append((message.record["level"].name, message.record["message"])),
                      level="DEBUG")
    try:
        theirs = by_hand.submit_order(MarketOrderRequest(symbol="MSFT", qty=5, side=OrderSide.BUY,
                                                         time_in_force=TimeInForce.DAY, client_order_id="cat-0th3r000-1"))
        hand = by_hand.submit_order(MarketOrderRequest(symbol="MSFT", qty=3, side=OrderSide.BUY,
                                                       time_in_force=TimeInForce.DAY, client_order_id="my-hand-order"))
        router = trading.system.router.proxy()
        trading.wait_for(lambda: sum(1 for _, text in lines if "cid=" in text and "router update fill" in text) >= 2,
                         "both fills at the router")
        held = router.unmatched.get()
    finally:
        logger.remove(sink)
    about_theirs = [(level, text) for level, text in lines if text.startswith("router update") and "cid=cat-0th3r000-1" in text]
    assert [level for level, _ in about_theirs][:2] == ["WARNING", "DEBUG"] and len(about_theirs) >= 2
    assert all("an order of another catalyst daemon (database 0th3r000) on this account: recorded, not ours" in text
               for _, text in about_theirs)
    assert str(theirs.id) not in held
    assert str(hand.id) in held  # a hand order may still turn out to be ours (adopted): held as before
