"""The trade_updates websocket at /stream, speaking exactly what alpaca-py's TradingStream expects."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any, Callable

from aiohttp import WSMsgType, web
from loguru import logger

from catalyst.sim.faults import FaultPlan

_CLOSE = object()  # queued after an event to drop the connection (the `disconnect` fault)


def _authorization(status: str, message: str | None = None) -> str:
    data: dict[str, Any] = {"status": status, "action": "authenticate"}
    if message:
        data["message"] = message
    return json.dumps({"stream": "authorization", "data": data})


@dataclass
class _Connection:
    key_id: str
    ws: web.WebSocketResponse
    latency_s: float = 0.0  # the network's one-way delay: each item leaves the wire this long after it was put
    queue: asyncio.Queue[tuple[float, object]] = field(default_factory=asyncio.Queue)
    listening: bool = False
    held_back: str | None = None  # one event kept back by the `reorder` fault until the next one
    writer: asyncio.Task[None] | None = None

    def put(self, item: object) -> None:
        """Queue a frame (or _CLOSE). One FIFO with one fixed delay keeps the order the exchange sent."""
        self.queue.put_nowait((asyncio.get_running_loop().time() + self.latency_s, item))

    async def write_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due, item = await self.queue.get()
            if (wait := due - loop.time()) > 0:
                await asyncio.sleep(wait)
            if item is _CLOSE:
                await self.ws.close()
                return
            assert isinstance(item, str)
            await self.ws.send_str(item)


class StreamHub:
    """One stream connection per API key (a second is refused, as on Alpaca). Events published while a
    key has no listening connection are lost, as on Alpaca: clients must catch up over REST."""

    def __init__(self, authenticate: Callable[[str, str], bool], faults: Callable[[], FaultPlan],
                 latency_s: float = 0.0) -> None:
        self._authenticate = authenticate
        self._faults = faults
        self._latency_s = latency_s
        self._connections: dict[str, _Connection] = {}

    def connected_keys(self) -> list[str]:
        return [key for key, conn in self._connections.items() if conn.listening]

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=None)
        await ws.prepare(request)
        connection: _Connection | None = None
        try:
            async for message in ws:
                if message.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                    continue
                try:
                    payload = json.loads(message.data)
                    action, data = payload.get("action"), payload.get("data") or {}
                except (ValueError, AttributeError):
                    await self._send_error(ws, connection, "invalid syntax: expected a JSON object with action")
                    continue
                if action in ("authenticate", "auth") and connection is None:
                    connection = await self._login(ws, data)
                    if connection is None:
                        break
                elif action == "listen" and connection is not None:
                    streams = [s for s in (data.get("streams") or []) if s == "trade_updates"]
                    reply = json.dumps({"stream": "listening", "data": {"streams": streams}})
                    connection.put(reply)
                    connection.listening = bool(streams)
                elif connection is None:
                    await ws.send_str(_authorization("unauthorized", "authenticate first"))
                    break
                else:
                    await self._send_error(ws, connection, f"unknown action {action!r}")
        finally:
            if connection is not None:
                if self._connections.get(connection.key_id) is connection:
                    del self._connections[connection.key_id]
                if connection.writer is not None:
                    connection.writer.cancel()
            await ws.close()
        return ws

    async def _login(self, ws: web.WebSocketResponse, data: dict[str, Any]) -> _Connection | None:
        key_id, secret = str(data.get("key_id") or ""), str(data.get("secret_key") or "")
        if not key_id or not self._authenticate(key_id, secret):
            await ws.send_str(_authorization("unauthorized"))
            return None
        if key_id in self._connections:
            await ws.send_str(_authorization("unauthorized", "connection limit exceeded"))
            return None
        await ws.send_str(_authorization("authorized"))
        connection = _Connection(key_id, ws, self._latency_s)
        connection.writer = asyncio.get_running_loop().create_task(connection.write_forever())
        self._connections[key_id] = connection
        return connection

    async def _send_error(self, ws: web.WebSocketResponse, connection: _Connection | None, text: str) -> None:
        error = json.dumps({"stream": "error", "data": {"error_message": text}})
        if connection is not None:
            connection.put(error)
        else:
            await ws.send_str(error)

    def publish(self, key_id: str, data: dict[str, Any]) -> None:
        """Call on the server's loop. Applies the stream faults of the current plan."""
        connection = self._connections.get(key_id)
        if connection is None or not connection.listening:
            return
        text = json.dumps({"stream": "trade_updates", "data": data})
        plan = self._faults()
        if plan.hits("down"):
            logger.debug("fault: broker down, {} event for {} undelivered and its connection closed",
                         data.get("event"), key_id)
            connection.put(_CLOSE)
            return
        if plan.hits("drop"):
            logger.debug("fault: dropped {} event for {}", data.get("event"), key_id)
            return
        copies = 2 if plan.hits("duplicate") else 1
        if plan.hits("delay"):
            loop = asyncio.get_running_loop()
            for _ in range(copies):
                loop.call_later(plan.knob("delay_s"), connection.put, text)
        elif connection.held_back is None and plan.hits("reorder"):
            connection.held_back = text
            return
        else:
            for _ in range(copies):
                connection.put(text)
        if connection.held_back is not None:
            connection.put(connection.held_back)
            connection.held_back = None
        if plan.hits("disconnect"):
            connection.put(_CLOSE)

    async def drop_all(self) -> int:
        """Closes every stream connection (clients reconnect by themselves); returns how many."""
        connections = list(self._connections.values())
        for connection in connections:
            await connection.ws.close()
        return len(connections)
