"""TradeStream against the embedded exchange and a deliberately broken websocket server."""

from __future__ import annotations

import asyncio
import json
import threading
from datetime import timedelta
from decimal import Decimal
from typing import Any, Callable, Iterator

import pytest
import websockets

from catalyst.broker.adapter import AlpacaBroker
from catalyst.broker.orders import NewOrder
from catalyst.broker.ratelimit import RateLimiter
from catalyst.broker.reports import TradeUpdateReport
from catalyst.broker.stream import TradeStream
from catalyst.sim.server import EmbeddedExchange

KEY, SECRET = "PKTESTKEY", "test-secret"


class Recorder:
    def __init__(self) -> None:
        self.updates: list[TradeUpdateReport] = []
        self.connections: list[int] = []
        self.auth_failures: list[str] = []

    def stream(self, url: str, key: str = KEY, secret: str = SECRET) -> TradeStream:
        return TradeStream(key, secret, url, on_update=self.updates.append, on_connected=self.connections.append,
                           on_auth_failed=self.auth_failures.append, reconnect_min_s=0.05)

    def events(self, cid: str) -> list[str]:
        return [u.event for u in list(self.updates) if u.order.client_order_id == cid]


@pytest.fixture
def streams() -> Iterator[list[TradeStream]]:
    running: list[TradeStream] = []
    yield running
    for stream in running:
        stream.stop(timeout=10)


def test_updates_arrive_and_every_reconnection_is_announced(
    exchange: EmbeddedExchange, poll: Callable[..., Any], streams: list[TradeStream]
) -> None:
    recorder = Recorder()
    stream = recorder.stream(exchange.stream_url)
    streams.append(stream)
    stream.start()
    poll(lambda: recorder.connections == [1], "first connection")
    broker = AlpacaBroker(KEY, SECRET, exchange.base_url, limiter=RateLimiter(0))

    report = broker.submit_order(NewOrder(symbol="AAPL", side="buy", qty=Decimal(4), client_order_id="cat-s-1"))
    exchange.advance(timedelta(minutes=1))
    poll(lambda: "fill" in recorder.events("cat-s-1"), "fill event")
    fill = next(u for u in recorder.updates if u.event == "fill" and u.order.client_order_id == "cat-s-1")
    assert fill.order.broker_id == report.broker_id and fill.qty == Decimal(4) and fill.execution_id

    exchange.drop_stream_connections()
    poll(lambda: recorder.connections == [1, 2], "reconnection #2 to be announced")
    broker.submit_order(NewOrder(symbol="AAPL", side="sell", qty=Decimal(4), client_order_id="cat-s-2"))
    exchange.advance(timedelta(minutes=1))
    poll(lambda: "fill" in recorder.events("cat-s-2"), "fill event after the reconnection")

    assert stream.running  # a dropped connection is reconnected on the same thread (the daemon watches it)
    assert stream.stop(timeout=10) and not stream.running


def test_a_refused_login_reaches_the_caller(
    exchange_factory: Callable[..., EmbeddedExchange], poll: Callable[..., Any], streams: list[TradeStream]
) -> None:
    exchange = exchange_factory(keys={KEY: SECRET})
    recorder = Recorder()
    stream = recorder.stream(exchange.stream_url, secret="wrong-secret")
    streams.append(stream)

    stream.start()

    poll(lambda: recorder.auth_failures, "auth failure callback")
    assert recorder.connections == [] and "wrong-secret" not in recorder.auth_failures[0]
    assert stream.stop(timeout=10)


def order_payload(cid: str) -> dict[str, Any]:
    stamp = "2024-03-04T14:35:00Z"
    return {"id": "8f2c6d6e-8c1c-4a39-9a53-0f0f2d0f7a11", "client_order_id": cid, "created_at": stamp,
            "updated_at": stamp, "submitted_at": stamp, "symbol": "AAPL", "qty": "1", "filled_qty": "0",
            "side": "buy", "type": "market", "time_in_force": "day", "status": "new", "extended_hours": False}


class BrokenStreamServer:
    """Authorizes, then sends garbage, a malformed update and one good update; a tiny websockets server."""

    def __init__(self) -> None:
        self.port = 0
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _handler(self, ws: Any) -> None:
        await ws.recv()
        await ws.send(json.dumps({"stream": "authorization", "data": {"status": "authorized", "action": "authenticate"}}))
        await ws.recv()
        for frame in ("not json at all {", json.dumps([1, 2]),
                      json.dumps({"stream": "trade_updates", "data": {"event": "new", "order": {"id": "x"}}}),
                      json.dumps({"stream": "trade_updates", "data": {"event": "new", "order": order_payload("cat-ok"),
                                                                     "timestamp": "2024-03-04T14:35:00Z"}})):
            await ws.send(frame)
        await self._stop.wait()  # type: ignore[union-attr]

    async def _main(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        async with websockets.serve(self._handler, "127.0.0.1", 0) as server:
            self.port = next(iter(server.sockets)).getsockname()[1]
            self._ready.set()
            await self._stop.wait()

    def __enter__(self) -> BrokenStreamServer:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


def test_malformed_messages_are_skipped_and_the_stream_lives_on(
    poll: Callable[..., Any], streams: list[TradeStream]
) -> None:
    recorder = Recorder()
    with BrokenStreamServer() as server:
        stream = recorder.stream(f"ws://127.0.0.1:{server.port}")
        streams.append(stream)
        stream.start()

        poll(lambda: recorder.updates, "the one good update")

        assert [u.order.client_order_id for u in recorder.updates] == ["cat-ok"]
        assert recorder.connections == [1]
        assert stream.stop(timeout=10)
