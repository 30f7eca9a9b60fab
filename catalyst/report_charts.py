"""The daily report's trade view, its intraday realized P&L curve, and the PNG charts (matplotlib's Agg canvas)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

import matplotlib.dates as mdates
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from catalyst.domain.cycle import EXCHANGE_TZ
from catalyst.domain.errors import DomainError
from catalyst.domain.money import MONEY_CONTEXT, ZERO
from catalyst.domain.positions import OrderSide, Position

WIN, LOSS, PRICE, NEUTRAL = "#1a9850", "#d73027", "#2c7fb8", "#555555"
SIZE_INCHES, DPI = (10.0, 4.5), 100
ENTRY_ROLES = ("entry", "adopted")


@dataclass(frozen=True)
class TradeFill:
    at: datetime
    role: str
    side: str
    qty: Decimal
    price: Decimal


@dataclass(frozen=True)
class Trade:
    """One position of the day with what the report needs from its orders and fills."""

    position_id: int
    symbol: str
    side: str
    status: str
    qty: Decimal
    entry_time: datetime | None
    entry_price: Decimal | None
    exit_time: datetime | None
    exit_price: Decimal | None
    realized_pnl: Decimal
    planned_stop: Decimal | None
    stop: Decimal | None
    target: Decimal | None
    exit_reason: str
    fills: tuple[TradeFill, ...]

    @property
    def closed(self) -> bool:
        return self.status == "closed"

    @property
    def r_multiple(self) -> Decimal | None:
        """Realized P&L over the planned risk: qty × |entry − planned stop| (None without a stop)."""
        if self.planned_stop is None or self.entry_price is None:
            return None
        risk = MONEY_CONTEXT.multiply(self.qty, abs(self.entry_price - self.planned_stop))
        return MONEY_CONTEXT.divide(self.realized_pnl, risk) if risk > 0 else None

    @property
    def duration(self) -> timedelta | None:
        if self.entry_time is None or self.exit_time is None:
            return None
        return self.exit_time - self.entry_time


# --- the P&L curve -------------------------------------------------------------------------------------------

def pnl_curve(trades: Sequence[Trade]) -> tuple[list[tuple[datetime, Decimal]], list[str]]:
    """Cumulative realized P&L at each exit fill, from 0 at the day's first fill; plus notes on gaps.

    Realized steps come from replaying each trade's fills through the domain Position, so a partial
    take-profit shows when it happened, not at the final exit.
    """
    steps: list[tuple[datetime, Decimal]] = []
    notes: list[str] = []
    for trade in trades:
        trade_steps, problem = _realized_steps(trade)
        if problem is not None:
            notes.append(f"{trade.symbol} (position {trade.position_id}): {problem}")
        steps.extend(trade_steps)
    starts = [f.at for t in trades for f in t.fills] + [t for t, _ in steps]
    if not starts:
        return [], notes
    curve, total = [(min(starts), ZERO)], ZERO
    for at, amount in sorted(steps, key=lambda step: step[0]):
        total = MONEY_CONTEXT.add(total, amount)
        curve.append((at, total))
    return curve, notes


def _realized_steps(trade: Trade) -> tuple[list[tuple[datetime, Decimal]], str | None]:
    fallback = [(trade.exit_time, trade.realized_pnl)] if trade.exit_time and trade.realized_pnl else []
    position, steps = Position(trade.symbol, trade.side), []  # type: ignore[arg-type]
    try:
        for fill in trade.fills:
            before = position.realized_pnl
            position = position.apply_fill(OrderSide(fill.side), fill.qty, fill.price)
            if position.realized_pnl != before:
                steps.append((fill.at, position.realized_pnl - before))
    except (DomainError, ValueError) as error:
        return fallback, f"fills do not replay ({error}); its P&L is placed at the exit time"
    if trade.closed and position.realized_pnl != trade.realized_pnl:
        return fallback, (f"fills give {position.realized_pnl} but the position records {trade.realized_pnl}; "
                          "the curve uses the position's figure at the exit time")  # fmt: skip
    return steps, None


def max_drawdown(curve: Sequence[tuple[datetime, Decimal]]) -> Decimal:
    """The largest fall of the curve from a running peak (the peak starts at 0)."""
    peak, worst = ZERO, ZERO
    for _, value in curve:
        peak = max(peak, value)
        worst = max(worst, peak - value)
    return worst



# --- charts -------------------------------------------------------------------------------------------------

def _figure() -> Figure:
    # The Agg canvas on a Figure of our own, not pyplot: no display, no global backend switch, no
    # global figure registry, so it is safe from any thread of a headless daemon.
    figure = Figure(figsize=SIZE_INCHES, dpi=DPI)
    FigureCanvasAgg(figure)
    return figure


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    return buffer.getvalue()


def _time_axis(axes: object) -> None:
    axes.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M", tz=EXCHANGE_TZ))  # type: ignore[attr-defined]
    axes.set_xlabel("time (America/New_York)")  # type: ignore[attr-defined]
    axes.grid(True, alpha=0.3)  # type: ignore[attr-defined]


def pnl_chart_png(day: str, curve: Sequence[tuple[datetime, Decimal]]) -> bytes:
    """The cumulative realized P&L as a step line over the fills' times, green above zero, red below."""
    figure = _figure()
    axes = figure.add_subplot()
    axes.set_title(f"Cumulative realized P&L, {day}")
    axes.set_ylabel("USD")
    if not curve:
        axes.text(0.5, 0.5, "no fills this day", ha="center", va="center", transform=axes.transAxes)
        axes.set_xticks([])
        return _png(figure)
    times = [t for t, _ in curve]
    values = [float(v) for _, v in curve]
    axes.step(times, values, where="post", color=NEUTRAL, linewidth=1.8)
    axes.fill_between(times, values, 0, step="post", where=[v >= 0 for v in values], color=WIN, alpha=0.25)
    axes.fill_between(times, values, 0, step="post", where=[v <= 0 for v in values], color=LOSS, alpha=0.25)
    axes.scatter(times, values, color=[WIN if v >= 0 else LOSS for v in values], s=18, zorder=3)
    axes.axhline(0, color=NEUTRAL, linewidth=0.8)
    axes.annotate(f"{values[-1]:+,.2f}", (times[-1], values[-1]), textcoords="offset points", xytext=(6, 6))
    _time_axis(axes)
    return _png(figure)


def trade_chart_png(trade: Trade, prices: Sequence[tuple[datetime, Decimal]], title: str) -> bytes:
    """Minute prices (or just the fills) with the entry, stop, target and exit marked."""
    if trade.entry_time is None or trade.entry_price is None:
        raise ValueError(f"position {trade.position_id} has no entry to chart")
    entry_time, entry_price = trade.entry_time, trade.entry_price
    figure = _figure()
    axes = figure.add_subplot()
    axes.set_title(title)
    axes.set_ylabel("price (USD)")
    if prices:
        axes.plot([t for t, _ in prices], [float(p) for _, p in prices], color=PRICE, linewidth=1.2, label="price")
    for level, name, colour in ((trade.stop, "stop", LOSS), (trade.target, "target", WIN)):
        if level is not None:
            axes.axhline(float(level), color=colour, linestyle="--", linewidth=1, label=f"{name} {level}")
    axes.scatter([entry_time], [float(entry_price)], marker="^" if trade.side == "long" else "v",
                 s=90, color=NEUTRAL, zorder=4, label=f"entry {entry_price}")  # fmt: skip
    if trade.exit_time is not None and trade.exit_price is not None:
        won = (trade.exit_price - entry_price) * (1 if trade.side == "long" else -1) > 0
        axes.scatter([trade.exit_time], [float(trade.exit_price)], marker="X", s=90,
                     color=WIN if won else LOSS, zorder=4, label=f"exit {trade.exit_price}")  # fmt: skip
        axes.plot([entry_time, trade.exit_time], [float(entry_price), float(trade.exit_price)],
                  color=NEUTRAL, linestyle=":", linewidth=1)  # fmt: skip
    axes.legend(loc="best", fontsize="small")
    _time_axis(axes)
    return _png(figure)
