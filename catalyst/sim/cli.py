"""`catalyst exchange`: the emulator as its own process, and the market choice shared with the embedded default."""

from __future__ import annotations

import argparse
from datetime import datetime, time
from decimal import Decimal, InvalidOperation
from pathlib import Path

from pydantic import ValidationError

from catalyst.errors import UsageError
from catalyst.sim.market import EXCHANGE_TZ, Market

MINUTE_HEADER = "timestamp,symbol,open,high,low,close,volume"
DAILY_HEADER = "date,symbol,open,high,low,close,volume"


def csv_kind(path: Path) -> str:
    """'minute_csv' or 'daily_csv', from the file's header line."""
    try:
        with path.open(encoding="utf-8") as handle:
            header = handle.readline().strip().lower().replace(" ", "")
    except OSError as exc:
        raise UsageError(f"{path}: cannot read market data: {exc.strerror or exc}") from None
    if header == MINUTE_HEADER:
        return "minute_csv"
    if header == DAILY_HEADER:
        return "daily_csv"
    raise UsageError(f"{path}: unknown market data header {header!r}; expected {MINUTE_HEADER!r} or {DAILY_HEADER!r}")


def build_market(kind: str, data_file: Path | None, seed: int, start: datetime, symbols: int = 50) -> Market:
    """The market the emulator replays: synthetic by default, or a minute/daily CSV."""
    from catalyst.sim.csv_replay import DailyCsvMarket, MarketDataError, MinuteCsvMarket
    from catalyst.sim.synthetic import SyntheticMarket

    if data_file is not None and kind == "synthetic":
        kind = csv_kind(data_file)
    if kind == "synthetic":
        return SyntheticMarket(seed, start.date(), symbols=symbols)
    if data_file is None:
        raise UsageError(f"exchange.data_kind = {kind} needs exchange.data_file")
    try:
        return MinuteCsvMarket(data_file) if kind == "minute_csv" else DailyCsvMarket(data_file, seed=seed)
    except MarketDataError as exc:
        raise UsageError(str(exc)) from None


def replay_start(market: Market, requested: datetime | None) -> datetime:
    """The requested start, or 08:00 ET of the replay's first session (CSV data lives in the past)."""
    if requested is not None:
        return requested if requested.tzinfo else requested.replace(tzinfo=EXCHANGE_TZ)
    first = getattr(market, "first_session", None)
    sessions = market.sessions(datetime(1990, 1, 1).date(), datetime(2100, 1, 1).date()) if first is None else [first]
    return datetime.combine(sessions[0].day, time(8, 0), EXCHANGE_TZ)


def parse_start(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"--start {text!r}: expected YYYY-MM-DDTHH:MM:SS (exchange time)") from None
    return value if value.tzinfo else value.replace(tzinfo=EXCHANGE_TZ)


# The emulator's config fields named by the `catalyst exchange` flag that sets them, where the two differ.
_FLAGS = {"starting_cash": "--cash", "rate_limit_per_minute": "--rate-limit"}


def run_exchange(args: argparse.Namespace) -> int:
    from catalyst.sim.server import ExchangeConfig, serve

    start = parse_start(args.start)
    try:
        cash = Decimal(args.cash)
    except InvalidOperation:
        raise UsageError(f"--cash {args.cash!r}: not a number") from None
    try:
        participation = Decimal(getattr(args, "participation", "0.25"))
    except InvalidOperation:
        raise UsageError(f"--participation {args.participation!r}: not a number") from None
    data = args.data.resolve() if args.data else None
    market = None
    if data is not None:
        market = build_market("synthetic", data, args.seed, start or datetime.now(EXCHANGE_TZ))
        start = replay_start(market, start)
    fields = dict(host=args.host, port=args.port, seed=args.seed, speed=args.speed, starting_cash=cash,
                  rate_limit_per_minute=args.rate_limit, faults=args.faults, latency_ms=args.latency_ms,
                  data_plan=getattr(args, "data_plan", "unlimited"),
                  wash_trade_check=getattr(args, "wash_trade_check", "alpaca"),
                  participation=participation, positions_lag_s=getattr(args, "positions_lag_s", 0.0),
                  exit_shares_lag_s=getattr(args, "exit_shares_lag_s", 0.0),
                  trigger_replaces_take_profit=getattr(args, "trigger_replaces_take_profit", False))
    if start is not None:
        fields["start"] = start
    try:
        config = ExchangeConfig(**fields)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        field = ".".join(map(str, first["loc"]))
        message = first["msg"].removeprefix("Value error, ")  # pydantic's prefix for a validator's ValueError
        if not field and message.startswith("host "):  # the loopback check sees the whole config
            field, message = "host", message.split(" unless ")[0]
        flag = _FLAGS.get(field, f"--{field.replace('_', '-')}") if field else "arguments"
        raise UsageError(f"exchange: {flag}: {message}") from None
    if market is None:
        market = build_market("synthetic", None, args.seed, config.start)
    serve(config, market)
    return 0
