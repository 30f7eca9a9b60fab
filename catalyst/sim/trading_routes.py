"""Alpaca's /v2 trading REST routes over the engine (ALPACA.md §2): orders, positions, account, clock, assets."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone
from typing import Any

from aiohttp import web

from catalyst.sim.engine import EXTENDED_CLOSE, Engine
from catalyst.sim.order_entry import decimal_field, parse_order_body
from catalyst.sim.orders import ExchangeError, SimOrder, asset_id_for, not_found, unprocessable

ENGINE = web.AppKey("engine", Engine)
KEY_ID = web.RequestKey("key_id", str)  # set by the auth middleware
MAX_ORDERS, DEFAULT_ORDERS, MAX_PAGE = 500, 50, 100


def _engine(request: web.Request) -> Engine:
    return request.app[ENGINE]


def _key(request: web.Request) -> str:
    return request[KEY_ID]


async def _body(request: web.Request) -> Any:
    try:
        return await request.json()
    except (ValueError, UnicodeDecodeError):
        raise unprocessable("request body is not valid JSON") from None


def _flag(value: str | None) -> bool:
    return (value or "").lower() == "true"  # alpaca-py sends Python's True/False


def _moment(request: web.Request, name: str) -> datetime | None:
    raw = request.query.get(name)
    if not raw:
        return None
    try:
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise unprocessable(f"invalid {name}: {raw!r} is not an ISO-8601 timestamp") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)  # alpaca-py sends naive as UTC


def _day(request: web.Request, name: str, default: date) -> date:
    raw = request.query.get(name)
    if not raw:
        return default
    try:
        return date.fromisoformat(raw[:10])
    except ValueError:
        raise unprocessable(f"invalid {name}: {raw!r} is not a date") from None


def _int(request: web.Request, name: str, default: int, maximum: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise unprocessable(f"invalid {name}: {raw!r} is not an integer") from None
    if not 1 <= value <= maximum:
        raise unprocessable(f"invalid {name}: {value} must be between 1 and {maximum}")
    return value


# -- account, orders --
async def get_account(request: web.Request) -> web.Response:
    engine = _engine(request)
    return web.json_response(engine.account(_key(request)).to_json(engine.price_of, engine.starting_cash))


async def submit_order(request: web.Request) -> web.Response:
    engine = _engine(request)
    submitted = engine.submit(_key(request), parse_order_body(await _body(request), engine.market.symbols))
    return web.json_response(submitted.answer)


async def list_orders(request: web.Request) -> web.Response:
    engine, query = _engine(request), request.query
    account = engine.account(_key(request))
    status = query.get("status", "open").lower()
    if status not in ("open", "closed", "all"):
        raise unprocessable(f"invalid status: {status!r} (expected open, closed or all)")
    nested = _flag(query.get("nested"))
    after, until = _moment(request, "after"), _moment(request, "until")
    symbols = {s.strip().upper() for s in query.get("symbols", "").split(",") if s.strip()}
    side = query.get("side", "").lower()
    direction = query.get("direction", "desc").lower()
    limit = _int(request, "limit", DEFAULT_ORDERS, MAX_ORDERS)

    def wanted(order: SimOrder) -> bool:
        if nested and order.parent_id is not None:
            return False  # rolled up under its parent's `legs`
        if status == "open" and not order.is_open or status == "closed" and order.is_open:
            return False
        if after is not None and not order.created_at > after or until is not None and not order.created_at < until:
            return False
        return (not symbols or order.symbol in symbols) and (not side or order.side.value == side)

    found = sorted((o for o in account.orders.values() if wanted(o)), key=lambda o: o.created_at,
                   reverse=direction != "asc")
    return web.json_response([engine.order_json(account, o, nested) for o in found[:limit]])


async def get_order(request: web.Request) -> web.Response:
    engine = _engine(request)
    account = engine.account(_key(request))
    order = engine.order(account, request.match_info["order_id"])
    return web.json_response(engine.order_json(account, order, _flag(request.query.get("nested"))))


async def get_order_by_client_id(request: web.Request) -> web.Response:
    engine = _engine(request)
    account = engine.account(_key(request))
    order_id = account.by_client_id.get(request.query.get("client_order_id", ""))
    if order_id is None:
        raise not_found()
    # Alpaca's look-up by client_order_id has no `nested` parameter: an OCO's stop leg is not rolled up into it
    # (read it again by id with nested=true). Answered un-nested here too, so the daemon's path for it is exercised.
    return web.json_response(engine.order_json(account, account.orders[order_id], nested=False))


async def replace_order(request: web.Request) -> web.Response:
    engine = _engine(request)
    order = engine.replace(_key(request), request.match_info["order_id"], await _body(request))
    return web.json_response(engine.order_json(engine.account(_key(request)), order))


async def cancel_order(request: web.Request) -> web.Response:
    _engine(request).cancel(_key(request), request.match_info["order_id"])
    return web.Response(status=204)


async def cancel_all_orders(request: web.Request) -> web.Response:
    engine = _engine(request)
    account = engine.account(_key(request))
    canceled = engine.cancel_all(_key(request))
    body = [{"id": str(o.id), "status": 200, "body": engine.order_json(account, o)} for o in canceled]
    return web.json_response(body, status=207)


# -- positions --
async def list_positions(request: web.Request) -> web.Response:
    engine = _engine(request)
    account = engine.account(_key(request))
    return web.json_response([account.position_json(p, engine.price_of(p.symbol))
                              for p in account.lagged_positions().values()])


async def get_position(request: web.Request) -> web.Response:
    engine = _engine(request)
    account = engine.account(_key(request))
    position = account.lagged_positions().get(request.match_info["symbol"].upper())
    if position is None:
        raise not_found("position does not exist")
    return web.json_response(account.position_json(position, engine.price_of(position.symbol)))


async def close_position(request: web.Request) -> web.Response:
    engine, query = _engine(request), dict(request.query)
    qty, percentage = decimal_field(query, "qty"), decimal_field(query, "percentage")
    if qty is not None and percentage is not None:
        raise unprocessable("give qty or percentage, not both")
    submitted = engine.close_position(_key(request), request.match_info["symbol"], qty, percentage)
    return web.json_response(submitted.answer)


async def close_all_positions(request: web.Request) -> web.Response:
    engine = _engine(request)
    key = _key(request)
    if _flag(request.query.get("cancel_orders")):
        engine.cancel_all(key)
    results: list[dict[str, Any]] = []
    for symbol in list(engine.account(key).positions):
        try:
            submitted = engine.close_position(key, symbol, None, None)
            results.append({"symbol": symbol, "status": 200, "order_id": str(submitted.order.id),
                            "body": submitted.answer})
        except ExchangeError as error:
            results.append({"symbol": symbol, "status": error.status,
                            "body": {"code": error.code, "message": error.message, "symbol": symbol}})
    return web.json_response(results, status=207)


# -- clock, calendar, assets --
async def get_clock(request: web.Request) -> web.Response:
    engine = _engine(request)
    now = engine.clock.now()
    sessions = engine.market.sessions(now.date(), now.date() + timedelta(days=14))
    is_open = any(s.open <= now < s.close for s in sessions)
    next_open = next((s.open for s in sessions if s.open > now), None)
    next_close = next((s.close for s in sessions if s.close > now), None)
    if next_open is None or next_close is None:
        raise ExchangeError(500, 50010000, "no trading session in the next 14 days of the replayed market")
    return web.json_response({"timestamp": now.isoformat(), "is_open": is_open,
                              "next_open": next_open.isoformat(), "next_close": next_close.isoformat()})


async def get_calendar(request: web.Request) -> web.Response:
    engine = _engine(request)
    today = engine.clock.now().date()
    start, end = _day(request, "start", today - timedelta(days=30)), _day(request, "end", today + timedelta(days=30))
    return web.json_response([
        # "HH:MM" exactly: alpaca-py's Calendar parses with %H:%M and crashes on seconds.
        {"date": s.day.isoformat(), "open": s.open.strftime("%H:%M"), "close": s.close.strftime("%H:%M"),
         "session_open": "0400", "session_close": (s.close + EXTENDED_CLOSE).strftime("%H%M"),  # 1700 on a half day
         "settlement_date": s.day.isoformat()}
        for s in engine.market.sessions(start, end)
    ])


def _asset(symbol: str) -> dict[str, Any]:
    return {"id": str(asset_id_for(symbol)), "class": "us_equity", "exchange": "NASDAQ", "symbol": symbol,
            "name": f"{symbol} (emulated)", "status": "active", "tradable": True, "marginable": True,
            "shortable": True, "easy_to_borrow": True, "fractionable": False,
            "maintenance_margin_requirement": 100, "attributes": []}


async def list_assets(request: web.Request) -> web.Response:
    status = request.query.get("status", "active").lower()
    symbols = _engine(request).market.symbols if status == "active" else []
    return web.json_response([_asset(s) for s in symbols])


async def get_asset(request: web.Request) -> web.Response:
    wanted = request.match_info["symbol"]
    for symbol in _engine(request).market.symbols:
        if wanted.upper() == symbol or wanted == str(asset_id_for(symbol)):
            return web.json_response(_asset(symbol))
    raise ExchangeError(404, 40410000, f"asset not found for {wanted}")


async def fill_activities(request: web.Request) -> web.Response:
    engine = _engine(request)
    account = engine.account(_key(request))
    after, until = _moment(request, "after"), _moment(request, "until")
    descending = request.query.get("direction", "desc").lower() != "asc"
    page_size = _int(request, "page_size", MAX_PAGE, MAX_PAGE)
    fills = [f for f in account.fills
             if (after is None or f.at > after) and (until is None or f.at < until)]
    fills.sort(key=lambda f: f.activity_id, reverse=descending)
    token = request.query.get("page_token")
    if token:  # the id of the last activity of the previous page
        fills = [f for f in fills if (f.activity_id < token if descending else f.activity_id > token)]
    return web.json_response([f.to_activity(account.id) for f in fills[:page_size]])


def add_trading_routes(app: web.Application, engine: Engine) -> None:
    app[ENGINE] = engine
    app.router.add_get("/v2/account", get_account)
    app.router.add_post("/v2/orders", submit_order)
    app.router.add_get("/v2/orders", list_orders)
    app.router.add_delete("/v2/orders", cancel_all_orders)
    app.router.add_get("/v2/orders:by_client_order_id", get_order_by_client_id)
    app.router.add_get("/v2/orders/{order_id}", get_order)
    app.router.add_patch("/v2/orders/{order_id}", replace_order)
    app.router.add_delete("/v2/orders/{order_id}", cancel_order)
    app.router.add_get("/v2/positions", list_positions)
    app.router.add_delete("/v2/positions", close_all_positions)
    app.router.add_get("/v2/positions/{symbol}", get_position)
    app.router.add_delete("/v2/positions/{symbol}", close_position)
    app.router.add_get("/v2/clock", get_clock)
    app.router.add_get("/v2/calendar", get_calendar)
    app.router.add_get("/v2/assets", list_assets)
    app.router.add_get("/v2/assets/{symbol}", get_asset)
    app.router.add_get("/v2/account/activities/FILL", fill_activities)


def error_body(error: ExchangeError) -> str:
    return json.dumps({"code": error.code, "message": error.message})

