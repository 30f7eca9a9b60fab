"""The emulator's control surface for tests and the chaos harness: Python methods and /sim/v1 HTTP routes."""

from __future__ import annotations

from abc import ABC, abstractmethod

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Awaitable, Callable, TypeVar

from aiohttp import web

from catalyst.sim.engine import Engine
from catalyst.sim.faults import FaultPlan, FaultSpecError
from catalyst.sim.market import Market
from catalyst.sim.ratelimit import RateLimiter
from catalyst.sim.stream import StreamHub

T = TypeVar("T")


@dataclass
class ExchangeState:
    """Everything one running exchange owns. Mutated only on the server's event loop."""

    clock: Any  # catalyst.sim.clock.SimClock (now, advance, jump_to, speed, ...)
    market: Market
    engine: Engine
    hub: StreamHub
    limiter: RateLimiter
    faults: FaultPlan
    seed: int

    def set_faults(self, spec: str) -> FaultPlan:
        self.faults = FaultPlan.parse(spec, self.seed)  # raises FaultSpecError naming the bad item
        return self.faults

    def set_price(self, symbol: str, price: Decimal | str | float, volume: int | None = None) -> None:
        setter = getattr(self.market, "set_price", None)
        if setter is None:
            raise TypeError(f"{type(self.market).__name__} has no set_price: use a ScriptedMarket")
        kwargs = {"volume": volume} if volume is not None else {}
        setter(symbol, price, at=self.clock.now(), **kwargs)

    def advance(self, delta: timedelta) -> datetime:
        moment: datetime = self.clock.advance(delta)
        self.engine.catch_up()
        return moment

    def jump_to(self, target: datetime) -> datetime:
        moment: datetime = self.clock.jump_to(target)
        self.engine.catch_up()
        return moment

    def clock_json(self) -> dict[str, Any]:
        return {"timestamp": self.clock.now().isoformat(), "speed": getattr(self.clock, "speed", None),
                "paused": getattr(self.clock, "paused", False)}


class ControlMethods(ABC):
    """Mixed into EmbeddedExchange: each call runs on the server loop and waits for it."""

    state: ExchangeState

    @abstractmethod
    def _call(self, action: Callable[[], T]) -> T:
        """Run `action` on the server's event loop and return its result."""

    @abstractmethod
    def _await(self, coroutine: Callable[[], Awaitable[T]]) -> T:
        """Await `coroutine()` on the server's event loop and return its result."""

    def set_price(self, symbol: str, price: Decimal | str | float, volume: int | None = None) -> None:
        self._call(lambda: self.state.set_price(symbol, price, volume))

    def advance(self, delta: timedelta) -> datetime:
        return self._call(lambda: self.state.advance(delta))

    def jump_to(self, target: datetime) -> datetime:
        return self._call(lambda: self.state.jump_to(target))

    def set_faults(self, spec: str) -> None:
        self._call(lambda: self.state.set_faults(spec))

    def drop_stream_connections(self) -> int:
        return self._await(self.state.hub.drop_all)

    def stream_connected(self, key_id: str) -> bool:
        return self._call(lambda: key_id in self.state.hub.connected_keys())

    def account_snapshot(self, key_id: str) -> dict[str, Any]:
        """The emulator's own truth: orders (flat), positions, fills and cash, as JSON-ready dicts."""
        return self._call(lambda: self.state.engine.snapshot(key_id))


STATE = web.AppKey("exchange_state", ExchangeState)


async def _json(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(text='{"message": "body is not valid JSON"}', content_type="application/json")
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text='{"message": "body must be a JSON object"}', content_type="application/json")
    return body


def _bad(message: str) -> web.Response:
    return web.json_response({"message": message}, status=400)


async def clock_get(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE].clock_json())


async def clock_advance(request: web.Request) -> web.Response:
    state, body = request.app[STATE], await _json(request)
    try:
        state.advance(timedelta(seconds=float(body.get("seconds", 0))))
    except (TypeError, ValueError) as error:
        return _bad(f"cannot advance: {error}")
    return web.json_response(state.clock_json())


async def clock_jump(request: web.Request) -> web.Response:
    state, body = request.app[STATE], await _json(request)
    try:
        state.jump_to(datetime.fromisoformat(str(body.get("timestamp"))))
    except (TypeError, ValueError) as error:
        return _bad(f"cannot jump: {error}")
    return web.json_response(state.clock_json())


async def faults_get(request: web.Request) -> web.Response:
    plan = request.app[STATE].faults
    return web.json_response({"spec": plan.spec, "rates": plan.rates, "knobs": plan.knobs})


async def faults_put(request: web.Request) -> web.Response:
    state, body = request.app[STATE], await _json(request)
    try:
        plan = state.set_faults(str(body.get("spec") or ""))
    except FaultSpecError as error:
        return _bad(str(error))
    return web.json_response({"spec": plan.spec, "rates": plan.rates, "knobs": plan.knobs})


async def price_post(request: web.Request) -> web.Response:
    state, body = request.app[STATE], await _json(request)
    try:
        state.set_price(str(body["symbol"]), str(body["price"]), body.get("volume"))
    except (KeyError, TypeError, ValueError) as error:
        return _bad(f"cannot set price: {error}")
    return web.json_response({"ok": True})


async def snapshot_get(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE].engine.snapshot(request.match_info["key_id"]))


RESTRICTIONS: dict[str, tuple[type, ...]] = {
    "status": (str,), "trading_blocked": (bool,), "account_blocked": (bool,), "trade_suspended_by_user": (bool,),
    "daytrade_count": (int, type(None)),
}


async def restrictions_put(request: web.Request) -> web.Response:
    """An account Alpaca would not let trade (blocked, suspended, not yet ACTIVE): its /v2/account says so, and its
    order submits are refused with a 403. `daytrade_count`: a number makes /v2/account report it and
    `pattern_day_trader`, as Alpaca did until it dropped the fields on 2026-07-06 (flagging ended in June; reported
    only, no rule enforced); null stops reporting them, as Alpaca does now and the emulator does by default."""
    state, body = request.app[STATE], await _json(request)
    unknown = sorted(set(body) - set(RESTRICTIONS))
    wrong = sorted(name for name, kinds in RESTRICTIONS.items() if name in body and type(body[name]) not in kinds)
    if unknown or wrong:
        return _bad(f"cannot set restrictions: unknown {unknown}, wrong type {wrong} (expected {list(RESTRICTIONS)})")
    account = state.engine.account(request.match_info["key_id"])
    for name, value in body.items():
        setattr(account, name, value)
    return web.json_response({name: getattr(account, name) for name in RESTRICTIONS})


async def streams_get(request: web.Request) -> web.Response:
    return web.json_response({"connected_keys": sorted(request.app[STATE].hub.connected_keys())})


async def streams_drop(request: web.Request) -> web.Response:
    return web.json_response({"dropped": await request.app[STATE].hub.drop_all()})


def add_control_routes(app: web.Application, state: ExchangeState) -> None:
    """Unauthenticated, like the whole emulator it is loopback-only."""
    app[STATE] = state
    app.router.add_get("/sim/v1/clock", clock_get)
    app.router.add_post("/sim/v1/clock/advance", clock_advance)
    app.router.add_post("/sim/v1/clock/jump", clock_jump)
    app.router.add_get("/sim/v1/faults", faults_get)
    app.router.add_put("/sim/v1/faults", faults_put)
    app.router.add_post("/sim/v1/price", price_post)
    app.router.add_get("/sim/v1/accounts/{key_id}/snapshot", snapshot_get)
    app.router.add_put("/sim/v1/accounts/{key_id}/restrictions", restrictions_put)
    app.router.add_get("/sim/v1/streams", streams_get)
    app.router.add_post("/sim/v1/streams/drop", streams_drop)

