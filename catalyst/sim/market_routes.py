"""Alpaca's market-data REST (bars, latest, snapshots, news, screener) served from a `Market` at clock time.

Never the future: a minute bar is served only once its minute has ended (the forming minute is omitted,
as Alpaca publishes a bar after its minute closes); today's daily bar is the partial regular session
built from those complete minutes; news and trades are those at or before `clock.now()`.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, Callable

from aiohttp import web

from catalyst.sim.clock import SimClock
from catalyst.sim.market import EXCHANGE_TZ, Bar, Market, Session
from catalyst.sim.market_wire import (
    BadParameter, bar_json, decode_token, encode_token, news_json, parse_time, quote_json, rfc3339,
    trade_json,
)

_MINUTE = timedelta(minutes=1)
_EPSILON = timedelta(microseconds=1)
_FEEDS = {"iex", "sip", "delayed_sip", "otc", "boats", "overnight"}
_ADJUSTMENTS = {"raw", "split", "dividend", "all"}


_RECENT = timedelta(minutes=15)  # what Alpaca's basic plan calls recent SIP data
_SUBSCRIPTION_FEEDS = {"sip", "otc"}  # `sip` and `otc` "are only available to those with a subscription" (OpenAPI)


class NotPermitted(Exception):
    """A request the account's market-data plan does not cover: 403, as Alpaca answers it."""


def add_market_data_routes(app: web.Application, market: Market, clock: SimClock, data_plan: str = "unlimited") -> None:
    routes = _MarketDataRoutes(market, clock, data_plan)
    for path, handler in (
        ("/v2/stocks/bars", routes.bars),
        ("/v2/stocks/bars/latest", routes.latest_bars),
        ("/v2/stocks/trades/latest", routes.latest_trades),
        ("/v2/stocks/quotes/latest", routes.latest_quotes),
        ("/v2/stocks/snapshots", routes.snapshots),
        ("/v1beta1/news", routes.news),
        ("/v1beta1/screener/stocks/movers", routes.movers),
        ("/v1beta1/screener/stocks/most-actives", routes.most_actives),
    ):
        app.router.add_get(path, _answering_bad_parameters(handler))


def _answering_bad_parameters(
    handler: Callable[[web.Request], Any]
) -> Callable[[web.Request], Any]:
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return web.json_response(handler(request))
        except BadParameter as error:
            return web.json_response({"code": 42210000, "message": str(error)}, status=422)
        except NotPermitted as error:
            return web.json_response({"message": str(error)}, status=403)

    return wrapped


class _MarketDataRoutes:
    def __init__(self, market: Market, clock: SimClock, data_plan: str = "unlimited") -> None:
        self.market, self.clock, self.data_plan = market, clock, data_plan

    def _feed(self, request: web.Request, until: datetime | None = None) -> None:
        """The `feed` parameter checked, and against the plan: `until` is the end of the data asked for (None: the
        latest, always recent)."""
        feed = self._choice(request, "feed", _FEEDS) or "sip"
        recent = until is None or until > self.clock.now() - _RECENT
        if self.data_plan == "basic" and feed in _SUBSCRIPTION_FEEDS and recent:
            raise NotPermitted(f"subscription does not permit querying recent {feed.upper()} data")

    # -- parameters --
    def _symbols(self, request: web.Request, required: bool = True) -> list[str]:
        raw = request.query.get("symbols", "")
        symbols = [s.strip().upper() for s in raw.split(",") if s.strip()]
        if required and not symbols:
            raise BadParameter("missing symbols")
        for symbol in symbols:
            if not all(ch.isalnum() or ch in ".-/" for ch in symbol) or len(symbols) > 1000:
                raise BadParameter(f"invalid symbol: {symbol}")
        return symbols

    @staticmethod
    def _int(request: web.Request, name: str, default: int, lowest: int, highest: int) -> int:
        raw = request.query.get(name)
        if raw is None or raw == "":
            return default
        try:
            value = int(raw)
        except ValueError:
            raise BadParameter(f"invalid {name}: {raw}") from None
        if not lowest <= value <= highest:
            raise BadParameter(f"invalid {name}: {raw} (must be between {lowest} and {highest})")
        return value

    @staticmethod
    def _choice(request: web.Request, name: str, allowed: set[str], default: str | None = None) -> str | None:
        value = request.query.get(name, default)
        if value is not None and value.lower() not in allowed:
            raise BadParameter(f"invalid {name}: {value}")
        return value.lower() if value is not None else None

    def _window(self, request: web.Request, now: datetime) -> tuple[datetime, datetime]:
        """[start, end] as sent (end inclusive), defaulting to today 00:00 ET .. now, end capped at now."""
        today = datetime.combine(now.date(), datetime.min.time(), tzinfo=EXCHANGE_TZ)
        start = parse_time(request.query.get("start"), "start") or today
        asked_end = parse_time(request.query.get("end"), "end")
        if asked_end is not None and start > asked_end:
            raise BadParameter("end should not be before start")
        return start, min(asked_end or now, now)

    # -- bars --
    def bars(self, request: web.Request) -> dict[str, Any]:
        now = self.clock.now()
        symbols = sorted(set(self._symbols(request)))
        timeframe = request.query.get("timeframe", "")
        if timeframe not in ("1Min", "1T", "1Day", "1D"):
            raise BadParameter(f"invalid timeframe: {timeframe!r} (the emulator serves 1Min and 1Day)")
        limit = self._int(request, "limit", 1000, 1, 10000)
        descending = self._choice(request, "sort", {"asc", "desc"}, "asc") == "desc"
        self._choice(request, "adjustment", _ADJUSTMENTS)
        start, end = self._window(request, now)
        self._feed(request, until=end)
        every: list[tuple[str, Bar]] = []
        for symbol in symbols:
            if timeframe in ("1Min", "1T"):
                found = self.market.minute_bars(symbol, start, min(end, now - _MINUTE) + _EPSILON)
            else:
                found = self._daily_bars(symbol, start.astimezone(EXCHANGE_TZ).date(),
                                         end.astimezone(EXCHANGE_TZ).date(), now)
            every.extend((symbol, bar) for bar in (reversed(found) if descending else found))
        first = 0
        token = request.query.get("page_token")
        if token:
            after_symbol, after_start = decode_token(token)
            first = next((i for i, (s, b) in enumerate(every) if s > after_symbol or (
                s == after_symbol and (b.start <= after_start if descending else b.start >= after_start))), len(every))
        page = every[first : first + limit]
        grouped: dict[str, list[dict[str, Any]]] = {}
        for symbol, bar in page:
            grouped.setdefault(symbol, []).append(bar_json(bar))
        rest = every[first + limit :]
        next_token = encode_token(rest[0][0], rest[0][1].start) if rest else None
        return {"bars": grouped, "next_page_token": next_token}

    def _daily_bars(self, symbol: str, first: date, last: date, now: datetime) -> list[Bar]:
        today = now.date()
        bars = self.market.daily_bars(symbol, first, min(last, today - timedelta(days=1)))
        if first <= today <= last:
            partial = self._partial_daily_bar(symbol, today, now)
            if partial is not None:
                bars.append(partial)
        return bars

    def _partial_daily_bar(self, symbol: str, day: date, now: datetime) -> Bar | None:
        """Today's regular session so far, from complete minutes only (None before the first one)."""
        sessions = self.market.sessions(day, day)
        if not sessions:
            return None
        cutoff = min(sessions[0].close, now - _MINUTE + _EPSILON)
        minutes = self.market.minute_bars(symbol, sessions[0].open, cutoff)
        if not minutes:
            return None
        volume = sum(b.volume for b in minutes)
        weighted = sum((b.vwap or b.close) * b.volume for b in minutes)
        return Bar(
            symbol=symbol, start=datetime.combine(day, datetime.min.time(), tzinfo=EXCHANGE_TZ),
            open=minutes[0].open, high=max(b.high for b in minutes), low=min(b.low for b in minutes),
            close=minutes[-1].close, volume=volume, trade_count=sum(b.trade_count or 0 for b in minutes),
            vwap=(weighted / volume).quantize(Decimal("0.0001")) if volume else minutes[-1].close,
        )

    def _latest_minute_bar(self, symbol: str, now: datetime) -> Bar | None:
        cutoff = now - _MINUTE + _EPSILON
        for days_back in range(0, 12):
            day = now.date() - timedelta(days=days_back)
            day_start = datetime.combine(day, datetime.min.time(), tzinfo=EXCHANGE_TZ)
            found = self.market.minute_bars(symbol, day_start, min(day_start + timedelta(days=1), cutoff))
            if found:
                return found[-1]
        return None

    def latest_bars(self, request: web.Request) -> dict[str, Any]:
        now, symbols = self.clock.now(), self._symbols(request)
        self._feed(request)
        latest = {s: self._latest_minute_bar(s, now) for s in symbols}
        return {"bars": {s: bar_json(bar) for s, bar in latest.items() if bar is not None}}

    # -- trades, quotes, snapshots --
    def _last_trade(self, symbol: str, now: datetime) -> tuple[datetime, Decimal] | None:
        price = self.market.price_at(symbol, now)
        if price is None:
            return None
        minute = now.replace(second=0, microsecond=0)
        if self.market.minute_bars(symbol, minute, minute + _MINUTE):  # trading in the forming minute
            return now, price
        last = self._latest_minute_bar(symbol, now)
        return ((last.start + timedelta(seconds=59)) if last else now), price

    def latest_trades(self, request: web.Request) -> dict[str, Any]:
        now, symbols = self.clock.now(), self._symbols(request)
        self._feed(request)
        trades = {s: self._last_trade(s, now) for s in symbols}
        return {"trades": {s: trade_json(*t) for s, t in trades.items() if t is not None}}

    def latest_quotes(self, request: web.Request) -> dict[str, Any]:
        now, symbols = self.clock.now(), self._symbols(request)
        self._feed(request)
        trades = {s: self._last_trade(s, now) for s in symbols}
        return {"quotes": {s: quote_json(*t) for s, t in trades.items() if t is not None}}

    def snapshots(self, request: web.Request) -> dict[str, Any]:
        now, symbols = self.clock.now(), self._symbols(request)
        self._feed(request)
        answer: dict[str, Any] = {}
        for symbol in symbols:
            trade = self._last_trade(symbol, now)
            if trade is None:
                continue  # no data yet: absent, as Alpaca leaves out unknown symbols
            daily = self._daily_bars(symbol, now.date() - timedelta(days=14), now.date(), now)
            snapshot: dict[str, Any] = {"latestTrade": trade_json(*trade), "latestQuote": quote_json(*trade)}
            minute = self._latest_minute_bar(symbol, now)
            for key, bar in (("minuteBar", minute), ("dailyBar", daily[-1] if daily else None),
                             ("prevDailyBar", daily[-2] if len(daily) > 1 else None)):
                if bar is not None:
                    snapshot[key] = bar_json(bar)
            answer[symbol] = snapshot
        return answer

    # -- news --
    def news(self, request: web.Request) -> dict[str, Any]:
        now = self.clock.now()
        symbols = self._symbols(request, required=False)
        limit = self._int(request, "limit", 10, 1, 50)
        ascending = self._choice(request, "sort", {"asc", "desc"}, "desc") == "asc"
        start, end = self._window(request, now)
        items = self.market.news(symbols or None, start, end + _EPSILON)
        if ascending:
            items.reverse()
        first = 0
        token = request.query.get("page_token")
        if token:
            after_id, after_created = decode_token(token)
            key = (after_created, int(after_id))
            first = next((i for i, n in enumerate(items) if ((n.created_at, n.id) >= key if ascending else
                                                             (n.created_at, n.id) <= key)), len(items))
        page, rest = items[first : first + limit], items[first + limit :]
        next_token = encode_token(str(rest[0].id), rest[0].created_at) if rest else None
        return {"news": [news_json(n) for n in page], "next_page_token": next_token}

    # -- screener --
    def _reference_sessions(self, now: datetime) -> tuple[Session, Session] | None:
        """(the session being traded or last traded, the one before it) as of `now`."""
        sessions = self.market.sessions(now.date() - timedelta(days=20), now.date())
        if sessions and sessions[-1].day == now.date() and now.hour < 4:
            sessions = sessions[:-1]  # before 04:00 today has not started
        return (sessions[-1], sessions[-2]) if len(sessions) >= 2 else None

    def _movers_sessions(self, now: datetime) -> tuple[Session, Session, datetime] | None:
        """(the session whose movers are shown, the one before it, the moment priced). Alpaca's movers "reset at market
        open. Until then, it shows the previous market day's movers" (its API reference): before today's open, the
        last session's, priced at its close."""
        sessions = [s for s in self.market.sessions(now.date() - timedelta(days=20), now.date()) if s.open <= now]
        if len(sessions) < 2:
            return None
        shown, before = sessions[-1], sessions[-2]
        return shown, before, now if shown.day == now.date() else shown.close

    def movers(self, request: web.Request) -> dict[str, Any]:
        now = self.clock.now()
        top = self._int(request, "top", 10, 1, 50)
        reference = self._movers_sessions(now)
        changes: list[tuple[str, Decimal, Decimal, Decimal]] = []
        for symbol in self.market.symbols if reference else ():
            previous = self.market.daily_bars(symbol, reference[1].day, reference[1].day)
            price = self.market.price_at(symbol, reference[2])
            if previous and price is not None:
                change = price - previous[0].close
                changes.append((symbol, change / previous[0].close * 100, change, price))
        changes.sort(key=lambda row: (row[1], row[0]))

        def mover(row: tuple[str, Decimal, Decimal, Decimal]) -> dict[str, Any]:
            return {"symbol": row[0], "percent_change": round(float(row[1]), 2), "change": float(row[2]),
                    "price": float(row[3])}

        gainers = [mover(r) for r in reversed(changes) if r[1] > 0][:top]
        losers = [mover(r) for r in changes if r[1] < 0][:top]
        return {"gainers": gainers, "losers": losers, "market_type": "stocks", "last_updated": rfc3339(now)}

    def most_actives(self, request: web.Request) -> dict[str, Any]:
        now = self.clock.now()
        top = self._int(request, "top", 10, 1, 100)
        by = self._choice(request, "by", {"volume", "trades"}, "volume")
        reference = self._reference_sessions(now)
        rows: list[dict[str, Any]] = []
        if reference:
            day_start = datetime.combine(reference[0].day, datetime.min.time(), tzinfo=EXCHANGE_TZ)
            cutoff = min(day_start + timedelta(days=1), now - _MINUTE + _EPSILON)
            for symbol in self.market.symbols:
                minutes = self.market.minute_bars(symbol, day_start, cutoff)
                if minutes:
                    rows.append({"symbol": symbol, "volume": sum(b.volume for b in minutes),
                                 "trade_count": sum(b.trade_count or 0 for b in minutes)})
        key = "trade_count" if by == "trades" else "volume"
        rows.sort(key=lambda row: (-row[key], row["symbol"]))
        return {"most_actives": rows[:top], "last_updated": rfc3339(now)}
