"""A refused trade-stream login: the router says so once (the stream itself says each retry), and says when it is in."""

from __future__ import annotations

from loguru import logger

from actors import messages as m


def test_refused_logins_are_one_router_error_then_quiet_until_the_stream_logs_in(trading):
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
