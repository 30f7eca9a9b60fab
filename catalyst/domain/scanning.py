"""Catalyst scanning maths (spec §1.3 step 1): gap, time-pro-rated relative volume, news match, score, rank.

Pure: Decimal in, Decimal out, no I/O. The bull flag lives in scanning_patterns.

Relative volume is pro-rated by the time of day, because at 09:20 a stock cannot have traded a day's
volume yet. `volume_so_far` means: before 09:30 ET, today's pre-market volume; from 09:30, today's
regular-session volume. It is compared with the share of a normal day's volume expected by `now`:

- regular session: the cumulative intraday profile below, linear between its knots. The knots are the
  calibration figures measured on 37 real sessions (../shared/data/README.md): 1.5% of the regular
  volume trades in the first minute, 3.5% in 5 minutes, 13.3% in 30; 12:00-14:00 carries 19.9%, the last
  30 minutes 20.1%, the last minute 6.9%. The 46.7% left is split 29.0% for 10:00-12:00 and 17.7% for
  14:00-15:30 (the U shape; the same split the emulator's synthetic market uses).
- pre-market: `premarket_share` (default 1%) of the average day, times the cumulative pre-market curve
  (04:00 0%, 07:00 5%, 08:00 15%, 09:00 65%, 09:15 80%, 09:30 100%). Measured on the same real minute
  data: pre-market volume was a median 0.5% of the regular session (1.5-3% on AAPL, SPY, BAC) and most of
  it trades after 08:00 (median cumulative share 7% at 08:00, 66% at 09:00, 78% at 09:15).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, ROUND_UP, Decimal
from typing import Literal, Sequence

from pydantic import BaseModel, ConfigDict, Field

from catalyst.domain.cycle import EXCHANGE_TZ
from catalyst.domain.errors import InvalidQuantity, NaiveDatetime
from catalyst.domain.money import MONEY_CONTEXT, positive
from catalyst.domain.scanning_patterns import BullFlagSettings, Flag, detect_bull_flag

__all__ = [
    "BullFlagSettings", "CandidateInputs", "Flag", "NewsMatch", "Ranked", "Ranking", "Rejection", "Score",
    "ScannerSettings", "ScoreWeights", "average_daily_volume", "detect_bull_flag", "expected_volume_share",
    "gap_pct", "news_catalyst", "rank", "relative_volume", "score", "suggested_exits",
]

REGULAR_OPEN, PREMARKET_OPEN = time(9, 30), time(4, 0)
# (minutes since 09:30, cumulative share of the regular session's volume)
REGULAR_VOLUME_CURVE: tuple[tuple[int, Decimal], ...] = tuple((m, Decimal(s)) for m, s in (
    (0, "0"), (1, "0.015"), (5, "0.035"), (30, "0.133"), (150, "0.423"), (270, "0.622"), (360, "0.799"),
    (389, "0.931"), (390, "1"),
))
# (minutes since 04:00, cumulative share of the pre-market's volume)
PREMARKET_VOLUME_CURVE: tuple[tuple[int, Decimal], ...] = tuple((m, Decimal(s)) for m, s in (
    (0, "0"), (180, "0.05"), (240, "0.15"), (300, "0.65"), (315, "0.80"), (330, "1"),
))
DEFAULT_KEYWORDS = (
    "earnings beat", "beats estimates", "record revenue", "fda approval", "fda approves", "fda clearance",
    "contract", "guidance raise", "upgrade", "acquisition", "acquire", "merger",
    "buyout", "partnership",
)
_SCORE_PLACES, _RATIO_PLACES, _CENT = Decimal("0.0001"), Decimal("0.01"), Decimal("0.01")
_WORD_ENDINGS = ("", "s", "es", "d", "ed", "ing")  # "beat" matches "beats", "raise" matches "raised"


class ScoreWeights(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)  # see catalyst.config.Section

    gap: Decimal = Field(default=Decimal("0.30"), ge=0)
    relative_volume: Decimal = Field(default=Decimal("0.30"), ge=0)
    news: Decimal = Field(default=Decimal("0.20"), ge=0)
    pattern: Decimal = Field(default=Decimal("0.15"), ge=0)
    liquidity: Decimal = Field(default=Decimal("0.05"), ge=0)


class ScannerSettings(BaseModel):
    """What the scanner looks for (config `[scanner]`, `[scanner.flag]`, `[scanner.weights]`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)  # see catalyst.config.Section

    min_gap_pct: Decimal = Field(default=Decimal("5"), ge=0)
    min_relative_volume: Decimal = Field(default=Decimal("3"), ge=0)
    avg_volume_days: int = Field(default=20, ge=1, le=100)
    premarket_volume_share: Decimal = Field(default=Decimal("0.01"), gt=0, le=1)
    news_window_hours: int = Field(default=18, ge=1, le=24 * 7)  # and never later than the previous close
    catalyst_keywords: tuple[str, ...] = DEFAULT_KEYWORDS
    require_news: bool = True
    flag: BullFlagSettings = BullFlagSettings()
    min_price: Decimal = Field(default=Decimal("2"), ge=0)
    max_price: Decimal = Field(default=Decimal("500"), gt=0)
    min_avg_dollar_volume: Decimal = Field(default=Decimal("1000000"), ge=0)
    # Where the scan's symbols come from. "all": every US equity the account may trade, each read by snapshot (about
    # 110 calls at Alpaca, once a scan); "screener": Alpaca's movers and most-actives lists, two calls. Before the
    # open Alpaca's movers are still the previous day's (its docs: they reset at the open), so a 09:15 scan on the
    # screener ranks yesterday's gainers and finds today's gappers only among the most active. The watchlist is
    # scanned either way.
    universe: Literal["all", "screener"] = "all"
    movers_top: int = Field(default=20, ge=0, le=50)
    most_actives_top: int = Field(default=20, ge=0, le=100)
    watchlist: tuple[str, ...] = ()
    max_candidates: int = Field(default=10, ge=1)
    weights: ScoreWeights = ScoreWeights()
    # Where each part scores full marks; below, it scales linearly (liquidity: on a log scale).
    gap_full_score_pct: Decimal = Field(default=Decimal("20"), gt=0)
    relative_volume_full_score: Decimal = Field(default=Decimal("10"), gt=0)
    liquidity_full_score_multiple: Decimal = Field(default=Decimal("100"), gt=1)  # x min_avg_dollar_volume
    stop_pct_without_pattern: Decimal = Field(default=Decimal("3"), gt=0, lt=100)
    target_r_multiple: Decimal = Field(default=Decimal("2"), gt=0)
    symbols_per_request: int = Field(default=100, ge=1, le=1000)
    news_limit: int = Field(default=200, ge=1)


@dataclass(frozen=True, slots=True)
class NewsMatch:
    headline: str
    keyword: str


@dataclass(frozen=True, slots=True)
class CandidateInputs:
    """One symbol's market data at `now`; None where the broker had nothing."""

    symbol: str
    now: datetime
    price: Decimal | None
    prev_close: Decimal | None
    volume_so_far: Decimal  # pre-market volume before 09:30, regular-session volume after
    avg_daily_volume: Decimal | None
    news: NewsMatch | None = None
    flag: Flag | None = None


@dataclass(frozen=True, slots=True)
class Score:
    gap_pct: Decimal
    relative_volume: Decimal
    avg_dollar_volume: Decimal
    parts: dict[str, Decimal]  # gap, relative_volume, news, pattern, liquidity: each 0..1
    composite: Decimal  # the weighted mean of the parts, 0..1


@dataclass(frozen=True, slots=True)
class Ranked:
    rank: int
    inputs: CandidateInputs
    score: Score


@dataclass(frozen=True, slots=True)
class Rejection:
    symbol: str
    reason: str
    score: Score | None = None


@dataclass(frozen=True, slots=True)
class Ranking:
    candidates: tuple[Ranked, ...]
    rejected: tuple[Rejection, ...]


def gap_pct(prev_close: Decimal, price: Decimal) -> Decimal:
    """Percent change from the previous close: 105 after 100 is Decimal('5')."""
    prev = positive(prev_close, "previous close")
    return MONEY_CONTEXT.divide((positive(price, "price") - prev) * 100, prev)


def average_daily_volume(volumes: Sequence[Decimal | int], days: int = 20) -> Decimal | None:
    """Mean of the last `days` daily volumes (fewer if that is all there is); None without any."""
    recent = [Decimal(v) for v in list(volumes)[-days:]]
    return MONEY_CONTEXT.divide(sum(recent, Decimal(0)), len(recent)) if recent else None


def expected_volume_share(now: datetime, premarket_share: Decimal = Decimal("0.01")) -> Decimal:
    """Share of an average day's volume expected to have traded in the current segment by `now`."""
    if now.tzinfo is None:
        raise NaiveDatetime(f"now {now.isoformat()} has no time zone")
    local = now.astimezone(EXCHANGE_TZ)
    minutes = Decimal(local.hour * 60 + local.minute) + Decimal(local.second) / 60
    if local.time() < REGULAR_OPEN:
        # At least one minute in, so a scan at 04:00 sharp divides by a tiny share, never by zero.
        elapsed = max(minutes - PREMARKET_OPEN.hour * 60, Decimal(1))
        return premarket_share * _interpolate(PREMARKET_VOLUME_CURVE, elapsed)
    return _interpolate(REGULAR_VOLUME_CURVE, max(minutes - (9 * 60 + 30), Decimal(1)))


def relative_volume(volume_so_far: Decimal | int, avg_daily_volume: Decimal | int, now: datetime,
                    premarket_share: Decimal = Decimal("0.01")) -> Decimal:
    """Volume so far over the volume an average day has traded by `now` (see the module docstring)."""
    average = positive(avg_daily_volume, "average daily volume")
    so_far = Decimal(volume_so_far)
    if so_far < 0:
        raise InvalidQuantity(f"volume so far must not be negative, got {so_far}")
    expected = average * expected_volume_share(now, premarket_share)
    return MONEY_CONTEXT.divide(so_far, expected)


def news_catalyst(headlines: Sequence[str], keywords: Sequence[str]) -> NewsMatch | None:
    """The first headline containing every word of a keyword (any order, simple endings), or None."""
    for headline in headlines:
        words = set(re.findall(r"[a-z0-9]+", headline.lower()))
        for keyword in keywords:
            wanted = re.findall(r"[a-z0-9]+", keyword.lower())
            if wanted and all(any(w + end in words for end in _WORD_ENDINGS) for w in wanted):
                return NewsMatch(headline=headline, keyword=keyword)
    return None


def score(inputs: CandidateInputs, settings: ScannerSettings) -> Score:
    """Each part 0..1 and their weighted mean; needs price, previous close and average volume."""
    if inputs.price is None or inputs.prev_close is None or inputs.avg_daily_volume is None:
        raise InvalidQuantity(f"{inputs.symbol}: score needs a price, a previous close and an average volume")
    ctx = MONEY_CONTEXT
    gap = gap_pct(inputs.prev_close, inputs.price)
    rvol = relative_volume(inputs.volume_so_far, inputs.avg_daily_volume, inputs.now,
                           settings.premarket_volume_share)
    dollar_volume = inputs.avg_daily_volume * inputs.prev_close
    parts = {
        "gap": _unit(ctx.divide(gap, settings.gap_full_score_pct)),
        "relative_volume": _unit(ctx.divide(rvol, settings.relative_volume_full_score)),
        "news": Decimal(1 if inputs.news else 0),
        "pattern": Decimal(1 if inputs.flag else 0),
        "liquidity": _liquidity(dollar_volume, settings),
    }
    w = settings.weights
    weights = {"gap": w.gap, "relative_volume": w.relative_volume, "news": w.news, "pattern": w.pattern,
               "liquidity": w.liquidity}
    total = sum(weights.values(), Decimal(0))
    weighted = sum((weights[name] * part for name, part in parts.items()), Decimal(0))
    composite = ctx.divide(weighted, total) if total else Decimal(0)
    return Score(gap_pct=gap, relative_volume=rvol, avg_dollar_volume=dollar_volume, parts=parts,
                 composite=composite.quantize(_SCORE_PLACES, ROUND_HALF_EVEN))


def rank(universe: Sequence[CandidateInputs], settings: ScannerSettings) -> Ranking:
    """Candidates best first (ties by symbol), at most max_candidates; every other symbol with a reason."""
    passed: list[tuple[CandidateInputs, Score]] = []
    rejected: list[Rejection] = []
    for inputs in universe:
        reason, scored = _screen(inputs, settings)
        if reason is None and scored is not None:
            passed.append((inputs, scored))
        else:
            rejected.append(Rejection(inputs.symbol, reason or "not scored", scored))
    passed.sort(key=lambda pair: (-pair[1].composite, pair[0].symbol))
    candidates = tuple(Ranked(i + 1, inputs, s) for i, (inputs, s) in enumerate(passed[: settings.max_candidates]))
    for position, (inputs, s) in enumerate(passed[settings.max_candidates :], start=settings.max_candidates + 1):
        rejected.append(Rejection(inputs.symbol, f"beyond max_candidates {settings.max_candidates} "
                                                 f"(would rank {position})", s))
    return Ranking(candidates=candidates, rejected=tuple(rejected))


def suggested_exits(price: Decimal, flag: Flag | None, settings: ScannerSettings) -> tuple[Decimal, Decimal]:
    """(stop, target) for a long entry at `price`: the pattern low, else stop_pct below; target at R x risk."""
    percent_stop = price * (100 - settings.stop_pct_without_pattern) / 100
    stop = flag.pullback_low if flag is not None and flag.pullback_low < price else percent_stop
    stop = stop.quantize(_CENT, rounding=ROUND_DOWN)
    if stop >= price:  # a sub-cent distance rounded away: fall back to the percentage
        stop = percent_stop.quantize(_CENT, rounding=ROUND_DOWN)
    target = (price + (price - stop) * settings.target_r_multiple).quantize(_CENT, rounding=ROUND_UP)
    return stop, target


def _screen(inputs: CandidateInputs, settings: ScannerSettings) -> tuple[str | None, Score | None]:
    """The first reason `inputs` is not a candidate (None if it is), and its score where one exists."""
    if inputs.price is None or inputs.price <= 0:
        return "no price", None
    if inputs.prev_close is None or inputs.prev_close <= 0:
        return "no previous close", None
    if inputs.price < settings.min_price:
        return f"price {inputs.price} below floor {settings.min_price}", None
    if inputs.price > settings.max_price:
        return f"price {inputs.price} above ceiling {settings.max_price}", None
    gap = gap_pct(inputs.prev_close, inputs.price)
    if gap < settings.min_gap_pct:
        return f"below gap: {_pct(gap)} < {settings.min_gap_pct}%", None
    if inputs.avg_daily_volume is None or inputs.avg_daily_volume <= 0:
        return "no volume history", None
    scored = score(inputs, settings)
    if scored.avg_dollar_volume < settings.min_avg_dollar_volume:
        return (f"illiquid: average ${scored.avg_dollar_volume:,.0f}/day < "
                f"${settings.min_avg_dollar_volume:,.0f}"), scored
    if scored.relative_volume < settings.min_relative_volume:
        return (f"thin volume: rvol {scored.relative_volume.quantize(_RATIO_PLACES)} < "
                f"{settings.min_relative_volume}"), scored
    if settings.require_news and inputs.news is None:
        return "no news catalyst", scored
    return None, scored


def _interpolate(curve: tuple[tuple[int, Decimal], ...], minutes: Decimal) -> Decimal:
    for (m0, s0), (m1, s1) in zip(curve, curve[1:]):
        if minutes <= m1:
            return s0 + (s1 - s0) * MONEY_CONTEXT.divide(minutes - m0, Decimal(m1 - m0))
    return curve[-1][1]


def _unit(value: Decimal) -> Decimal:
    return min(max(value, Decimal(0)), Decimal(1))


def _liquidity(dollar_volume: Decimal, settings: ScannerSettings) -> Decimal:
    floor = settings.min_avg_dollar_volume
    if floor <= 0:
        return Decimal(1)
    if dollar_volume <= floor:
        return Decimal(0)
    ctx = MONEY_CONTEXT
    return _unit(ctx.divide((dollar_volume / floor).log10(ctx), settings.liquidity_full_score_multiple.log10(ctx)))


def _pct(value: Decimal) -> str:
    return f"{value.quantize(Decimal('0.1'))}%"
