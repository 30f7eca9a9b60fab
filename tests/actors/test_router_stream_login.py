"""A refused trade-stream login: the router says so once (the stream itself says each retry), and says when it is in."""

from __future__ import annotations

from datetime import timedelta, timezone

from loguru import logger

from actors import messages as m
from catalyst.domain.cycle import EXCHANGE_TZ


def test_refused_logins_are_one_router_error_then_quiet_until_the_stream_logs_in(trading):
    # The real stream's own first login must be in before the refusals are told: arriving between them (CI), it
    # counted as the login after two, and the test's own came after one.
    proxy = trading.system.router.proxy()
    trading.wait_for(lambda: proxy.trade_stream().get().logged_in, "the stream's first login")
    lines: list[tuple[str, str]] = []
    sink = logger.add(lambda message: lines.append((message.record["level"].name, message.record["message"])),
                      level="INFO")
    try:
        router = trading.system.router
        for _ in range(3):
            router.tell(m.StreamLoginFailed(reason="login refused: connection limit exceeded"))
        router.tell(m.StreamConnected(count=2))
        trading.wait_for(lambda: any("logged in after" in text for _, text in lines), "the router's login line")
    finally:
        logger.remove(sink)
    said = [(level, text) for level, text in lines if text.startswith("router trade stream")]
    assert said == [
        ("ERROR", "router trade stream login failed: login refused: connection limit exceeded; fills arrive only by "
                  "REST catch-up (the doctor's passes) until it logs in"),
        ("INFO", "router trade stream logged in after 3 refused login(s)"),
    ]


def test_a_reconnects_catch_up_names_exchange_time_not_utc(trading):
    """The router's `since` comes from the last trade update's time, which Alpaca stamps in UTC: the log speaks New
    York time, as every other line does."""
    trading.exchange.set_price("AAPL", "149.95")
    trading.open(trading.plan())
    router = trading.system.router.proxy()
    last = trading.wait_for(lambda: router.last_update_at.get(), "a trade update")
    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(message.record["message"]), level="INFO")
    try:
        trading.system.router.tell(m.StreamConnected(count=2))
        trading.wait_for(lambda: any("catch-up applied" in text for text in lines), "the catch-up")
    finally:
        logger.remove(sink)
    since = last - timedelta(minutes=5)  # the router looks back a little before the last update it saw
    assert since.astimezone(EXCHANGE_TZ).hour != since.astimezone(timezone.utc).hour  # the test can tell them apart
    assert f"router catching up over REST since {since.astimezone(EXCHANGE_TZ):%H:%M:%S}: stream connected (#2)" in lines
    # The entry's fill came by the stream already: the catch-up says it brought nothing new, not "applied 1 fills".
    (caught_up,) = [text for text in lines if text.startswith("router catch-up applied")]
    assert caught_up.startswith("router catch-up applied 1 fills (0 new, 1 recorded already, 0 not ours), ")


def test_the_router_says_whether_its_trade_stream_is_logged_in_and_why_not(trading):
    router = trading.system.router
    proxy = router.proxy()
    first = trading.wait_for(lambda: proxy.trade_stream().get().logged_in and proxy.trade_stream().get(), "a login")

    router.tell(m.StreamLoginFailed(reason="login refused: connection limit exceeded"))
    refused = proxy.trade_stream().get()
    router.tell(m.StreamConnected(count=2))
    again = proxy.trade_stream().get()

    assert first.why.startswith("logged in")
    assert not refused.logged_in and refused.why == "its login was refused: login refused: connection limit exceeded"
    assert again.logged_in
