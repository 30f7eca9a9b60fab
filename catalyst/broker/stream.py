"""TradeStream: alpaca-py's TradingStream in a daemon thread, with reconnect, failed-login and bad-message signals."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any, Callable

from loguru import logger

from alpaca.trading.stream import TradingStream

from catalyst.broker.reports import TradeUpdateReport, trade_update_report

_AUTH_REPLY_TIMEOUT_S = 10.0


class _CatalystTradingStream(TradingStream):
    """TradingStream with three hooks alpaca-py does not offer (hence overriding its private methods):

    - `_start_ws`: counts every successful (re)connection. alpaca-py reconnects by itself and replays
      nothing, so the owner must be told to catch up over REST each time.
    - `_auth`: alpaca-py retries a refused login forever and only logs it; we surface it.
    - `_consume`/`_dispatch`: a malformed message is logged as one line and skipped instead of
      raising into alpaca-py's loop (which logs a traceback). The receive waits without a timeout:
      alpaca-py wraps every receive in `wait_for` (a task and a timer per message, on the thread that
      hands fills to the router, at the moments fills arrive) only to poll its stop queue; `stop_now`
      closes the socket instead, which ends a pending receive at once.
    """

    def __init__(self, owner: TradeStream, key_id: str, secret: str, url: str | None, paper: bool) -> None:
        super().__init__(key_id, secret, paper=paper, raw_data=True, url_override=url)
        self._owner = owner
        self._reconnect_min_backoff = owner.reconnect_min_s

    async def _auth(self) -> None:
        await self._ws.send(
            json.dumps({"action": "authenticate", "data": {"key_id": self._api_key, "secret_key": self._secret_key}})
        )
        reply = await asyncio.wait_for(self._ws.recv(), _AUTH_REPLY_TIMEOUT_S)
        try:
            msg = json.loads(reply)
            status = msg.get("data", {}).get("status")
        except (ValueError, AttributeError):
            status = None
            msg = reply
        if status != "authorized":
            reason = f"login refused: {_short(msg)}"
            self._owner._auth_failed(reason)
            raise ValueError(reason)  # alpaca-py then closes, backs off and tries again

    async def _start_ws(self) -> None:
        await super()._start_ws()
        self._owner._connected()

    async def _consume(self) -> None:
        while True:
            if not self._stop_stream_queue.empty():
                self._stop_stream_queue.get_nowait()
                await self.close()
                break
            raw = await self._ws.recv()
            try:
                msg = json.loads(raw)
            except ValueError:
                logger.warning("broker stream: skipped a message that is not JSON: {}", _short(raw))
                continue
            if not isinstance(msg, dict):
                logger.warning("broker stream: skipped a message that is not an object: {}", _short(msg))
                continue
            if msg.get("stream") == "trade_updates":
                self._data_received = True
            await self._dispatch(msg)

    async def _dispatch(self, msg: dict[str, Any]) -> None:
        if msg.get("stream") != "trade_updates":
            return
        try:
            report = trade_update_report(msg.get("data"))  # type: ignore[arg-type]
        except Exception as exc:  # noqa: BLE001 - one bad frame must not kill the stream
            logger.warning("broker stream: skipped a malformed trade update ({}): {}", _short(str(exc)), _short(msg))
            return
        self._owner._deliver(report)

    async def stop_now(self) -> None:
        """Ask the loop to end and close the socket so a pending recv ends at once."""
        await self.stop_ws()
        await self.close()


class TradeStream:
    """Runs the trade_updates stream in its own daemon thread; callbacks run on that thread and must
    not block (hand the report to an actor with `tell`)."""

    def __init__(
        self,
        key_id: str,
        secret: str,
        url: str | None,
        on_update: Callable[[TradeUpdateReport], None],
        on_connected: Callable[[int], None],
        on_auth_failed: Callable[[str], None],
        *,
        paper: bool = True,
        reconnect_min_s: float = 1.0,
        name: str = "alpaca",
    ) -> None:
        self.name = name
        self.reconnect_min_s = reconnect_min_s
        self._on_update = on_update
        self._on_connected = on_connected
        self._on_auth_failed = on_auth_failed
        self._stream = _CatalystTradingStream(self, key_id, secret, url, paper)
        self._stream.subscribe_trade_updates(_unused_handler)  # connects only once something is subscribed
        self._connections = 0
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._started = threading.Event()

    @property
    def connections(self) -> int:
        return self._connections

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError(f"trade stream {self.name} already started")
        self._thread = threading.Thread(target=self._run, name=f"trade-stream-{self.name}", daemon=True)
        self._thread.start()
        self._started.wait(5.0)

    @property
    def running(self) -> bool:
        """Its thread is alive: started and not ended (alpaca-py's loop reconnects for ever; only a stop ends it)."""
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop and wait for the thread; True if it ended within `timeout`."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return True
        if loop.is_running():
            try:
                asyncio.run_coroutine_threadsafe(self._stream.stop_now(), loop).result(timeout / 2)
            except Exception as exc:  # noqa: BLE001 - stopping must not raise; cancel below instead
                logger.debug("broker stream {}: graceful stop failed: {}", self.name, exc)
        thread.join(timeout / 2)
        if thread.is_alive() and self._task is not None and loop.is_running():
            loop.call_soon_threadsafe(self._task.cancel)  # e.g. stuck in a connect or a backoff
            thread.join(timeout / 2)
        stopped = not thread.is_alive()
        logger.info("broker stream {} stopped={}", self.name, stopped)
        return stopped

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except Exception as exc:  # noqa: BLE001 - log the end of the thread, never a bare traceback
            logger.error("broker stream {} ended: {}", self.name, exc)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        self._started.set()
        try:
            await self._stream._run_forever()
        except asyncio.CancelledError:
            pass
        finally:
            await self._stream.close()

    # ---- called on the stream thread by _CatalystTradingStream -----------------------------------

    def _connected(self) -> None:
        self._connections += 1
        logger.info("broker stream {} connected (connection #{})", self.name, self._connections)
        _safely(self.name, "on_connected", self._on_connected, self._connections)

    def _auth_failed(self, reason: str) -> None:
        hint = ""
        if "connection limit" in reason:  # Alpaca allows ONE trade_updates connection per account
            hint = (" (one trade stream per account: another program, or another catalyst daemon, is connected "
                    "with these keys)")
        logger.error("broker stream {} {}{}", self.name, reason, hint)
        _safely(self.name, "on_auth_failed", self._on_auth_failed, reason)

    def _deliver(self, report: TradeUpdateReport) -> None:
        logger.debug("broker stream {} {} {} cid={}", self.name, report.event, report.order.symbol,
                     report.order.client_order_id)
        _safely(self.name, "on_update", self._on_update, report)


async def _unused_handler(_: object) -> None:  # dispatch is overridden; alpaca-py just needs a coroutine
    return None


def _safely(name: str, what: str, callback: Callable[[Any], None], arg: Any) -> None:
    try:
        callback(arg)
    except Exception as exc:  # noqa: BLE001 - a failing callback must not break the stream
        logger.error("broker stream {}: {} callback failed: {}: {}", name, what, type(exc).__name__, exc)


def _short(value: object, limit: int = 160) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
