"""Alpaca market-data wire shapes: RFC 3339 times, bar/trade/quote/news JSON, opaque page tokens."""

from __future__ import annotations

import base64
import binascii
import zlib
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Any

from catalyst.sim.market import EXCHANGE_TZ, Bar, NewsItem


class BadParameter(ValueError):
    """A query parameter Alpaca would reject (answered 422 with code 42210000)."""


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def parse_time(raw: str | None, name: str) -> datetime | None:
    """RFC 3339 (naive taken as UTC, as alpaca-py sends) or YYYY-MM-DD (taken as 00:00 New York time)."""
    if raw is None or raw == "":
        return None
    try:
        if len(raw) == 10:
            return datetime.combine(date.fromisoformat(raw), datetime.min.time(), tzinfo=EXCHANGE_TZ)
        parsed = datetime.fromisoformat(raw.replace(" ", "+"))  # a raw '+' in a query string arrives as ' '
    except ValueError:
        raise BadParameter(f"invalid {name}: {raw!r} (expected RFC 3339 or YYYY-MM-DD)") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=timezone.utc)


def _number(value: Decimal) -> float:
    return float(value)


def bar_json(bar: Bar) -> dict[str, Any]:
    return {
        "t": rfc3339(bar.start), "o": _number(bar.open), "h": _number(bar.high), "l": _number(bar.low),
        "c": _number(bar.close), "v": bar.volume,
        "n": bar.trade_count if bar.trade_count is not None else 0,
        "vw": _number(bar.vwap if bar.vwap is not None else bar.close),
    }


def _trade_id(at: datetime) -> int:
    return int(at.timestamp() * 1000) % 10**12


def trade_json(at: datetime, price: Decimal) -> dict[str, Any]:
    return {"t": rfc3339(at), "x": "V", "p": _number(price), "s": 100, "c": ["@"], "i": _trade_id(at), "z": "C"}


def quote_json(at: datetime, price: Decimal) -> dict[str, Any]:
    """A one-tick-each-side quote around the last trade (the emulator keeps no order book)."""
    tick = Decimal("0.01") if price >= 1 else Decimal("0.0001")
    half_spread = max(tick, (price * Decimal("0.00025")).quantize(tick))
    return {
        "t": rfc3339(at), "ax": "V", "ap": _number(price + half_spread), "as": 3,
        "bx": "V", "bp": _number(max(price - half_spread, tick)), "bs": 2, "c": ["R"], "z": "C",
    }


def news_json(item: NewsItem) -> dict[str, Any]:
    return {
        "id": item.id, "headline": item.headline, "author": item.author,
        "created_at": rfc3339(item.created_at), "updated_at": rfc3339(item.created_at),
        "summary": item.summary, "content": "", "url": item.url, "images": [],
        "symbols": list(item.symbols), "source": item.source,
    }


def encode_token(key: str, moment: datetime) -> str:
    raw = f"{key}|{moment.astimezone(timezone.utc).isoformat()}|{zlib.crc32(key.encode()):08x}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_token(token: str) -> tuple[str, datetime]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        key, moment, check = raw.split("|")
        if check != f"{zlib.crc32(key.encode()):08x}":
            raise ValueError(token)
        return key, datetime.fromisoformat(moment)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise BadParameter(f"invalid page_token: {token!r}") from None
