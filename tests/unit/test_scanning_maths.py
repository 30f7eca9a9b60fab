"""Scanner maths: gap, time-pro-rated relative volume, news matching, score parts, ranking and rejections."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from catalyst.domain.errors import InvalidQuantity, NaiveDatetime
from catalyst.domain.scanning import (
    CandidateInputs, Flag, NewsMatch, ScannerSettings, average_daily_volume, expected_volume_share, gap_pct,
    news_catalyst, rank, relative_volume, score, suggested_exits,
)

ET = ZoneInfo("America/New_York")
DAY = (2024, 3, 4)
PRE_MARKET = datetime(*DAY, 9, 0, tzinfo=ET)
AFTER_OPEN = datetime(*DAY, 9, 35, tzinfo=ET)
NOON = datetime(*DAY, 12, 0, tzinfo=ET)
SETTINGS = ScannerSettings()
EARNINGS = NewsMatch("AAPL beats quarterly earnings estimates", "earnings beat")
FLAG = Flag(Decimal("100"), Decimal("106"), Decimal("104"), Decimal("105.5"), Decimal("0.4"), AFTER_OPEN)


def test_gap_is_percent_change_from_previous_close() -> None:
    assert gap_pct(Decimal("100"), Decimal("105")) == Decimal("5")
    assert gap_pct(Decimal("29.92"), Decimal("47.33")).quantize(Decimal("0.0001")) == Decimal("58.1885")
    assert gap_pct(Decimal("50"), Decimal("45")) == Decimal("-10")


def test_gap_refuses_a_zero_previous_close() -> None:
    with pytest.raises(InvalidQuantity, match="previous close"):
        gap_pct(Decimal("0"), Decimal("10"))


def test_pre_market_rvol_at_0900_compares_with_the_pre_market_share_so_far() -> None:
    # 1% of the day trades pre-market, 65% of that by 09:00: 6,500 shares expected of a 1M-share average.
    assert expected_volume_share(PRE_MARKET) == Decimal("0.0065")
    assert relative_volume(19_500, 1_000_000, PRE_MARKET) == Decimal("3")


def test_rvol_at_0935_compares_with_the_first_five_minutes_share() -> None:
    assert expected_volume_share(AFTER_OPEN) == Decimal("0.035")
    assert relative_volume(140_000, 1_000_000, AFTER_OPEN) == Decimal("4")


def test_rvol_at_noon_compares_with_the_morning_share() -> None:
    assert expected_volume_share(NOON) == Decimal("0.423")
    assert relative_volume(846_000, 1_000_000, NOON) == Decimal("2")


def test_rvol_between_knots_is_interpolated_and_a_full_day_is_the_plain_ratio() -> None:
    assert expected_volume_share(datetime(*DAY, 9, 45, tzinfo=ET)) == Decimal("0.0742")  # 3.5% + 10/25 of 9.8%
    assert relative_volume(3_000_000, 1_000_000, datetime(*DAY, 16, 0, tzinfo=ET)) == Decimal("3")


def test_rvol_reads_the_clock_in_exchange_time() -> None:
    utc_0935 = datetime(*DAY, 14, 35, tzinfo=ZoneInfo("UTC"))

    assert relative_volume(140_000, 1_000_000, utc_0935) == Decimal("4")


def test_rvol_refuses_a_naive_clock_and_a_missing_average() -> None:
    with pytest.raises(NaiveDatetime):
        relative_volume(1, 1, datetime(*DAY, 9, 35))
    with pytest.raises(InvalidQuantity, match="average daily volume"):
        relative_volume(1, 0, AFTER_OPEN)


def test_average_daily_volume_takes_the_last_days() -> None:
    assert average_daily_volume([100, 1, 2, 3], days=3) == Decimal("2")
    assert average_daily_volume([], days=20) is None


@pytest.mark.parametrize("headline, keyword", [
    ("Aurora Therapeutics (AUTX) beats quarterly earnings estimates, revenue up 12%", "earnings beat"),
    ("Lumen Biosciences (LUBS) receives FDA approval for its lead candidate", "fda approval"),
    ("Kestrel Aerospace (KEAE) wins $300 million multi-year contract", "contract"),
    ("Granite Mining (GRMN) raises full-year guidance by 20%", "guidance raise"),
    ("Morgan Stanley upgrades Ember Energy to Overweight", "upgrade"),
    ("Vantor Software confirms receipt of a non-binding acquisition proposal", "acquisition"),
])
def test_catalyst_headlines_match_their_keyword(headline: str, keyword: str) -> None:
    assert news_catalyst([headline], SETTINGS.catalyst_keywords) == NewsMatch(headline, keyword)


def test_routine_news_is_no_catalyst() -> None:
    routine = ["Analyst reiterates Hold rating on Xenith Foods", "Xenith Foods declares regular quarterly dividend",
               "Xenith Foods files annual report", "Xenith Foods to present at investor conference next week",
               "Xenith Foods lowers guidance"]

    assert news_catalyst(routine, SETTINGS.catalyst_keywords) is None


def test_first_matching_headline_wins() -> None:
    headlines = ["Quiet day", "AAPL beats earnings", "AAPL wins contract"]

    assert news_catalyst(headlines, ["contract", "earnings beat"]) == NewsMatch("AAPL beats earnings", "earnings beat")
    assert news_catalyst(headlines, ["contract"]) == NewsMatch("AAPL wins contract", "contract")


def inputs(symbol: str = "AAPL", price: str = "105", prev_close: str = "100", volume: int = 140_000,
           avg: int | None = 1_000_000, news: NewsMatch | None = EARNINGS, flag: Flag | None = None,
           now: datetime = AFTER_OPEN) -> CandidateInputs:
    return CandidateInputs(symbol=symbol, now=now, price=Decimal(price), prev_close=Decimal(prev_close),
                           volume_so_far=Decimal(volume), avg_daily_volume=None if avg is None else Decimal(avg),
                           news=news, flag=flag)


def test_score_keeps_every_part_and_a_weighted_composite() -> None:
    scored = score(inputs(flag=FLAG), SETTINGS)

    assert scored.gap_pct == Decimal("5") and scored.relative_volume == Decimal("4")
    assert scored.parts == {"gap": Decimal("0.25"), "relative_volume": Decimal("0.4"), "news": Decimal(1),
                            "pattern": Decimal(1), "liquidity": Decimal("1")}  # $100M/day = 100x the floor
    # 0.3*0.25 + 0.3*0.4 + 0.2 + 0.15 + 0.05
    assert scored.composite == Decimal("0.5950")


def test_without_news_and_flag_those_parts_score_zero() -> None:
    scored = score(inputs(news=None), SETTINGS)

    assert scored.parts["news"] == 0 and scored.parts["pattern"] == 0
    assert scored.composite == Decimal("0.2450")


def test_rank_orders_by_score_and_gives_every_rejection_a_reason() -> None:
    universe = [
        inputs("SECOND", price="106", volume=140_000),
        inputs("FIRST", price="110", volume=350_000, flag=FLAG),
        inputs("FLAT", price="102"),
        inputs("PENNY", price="1.50", prev_close="1.20"),
        inputs("PRICEY", price="640", prev_close="600"),
        inputs("THIN", price="108", volume=35_000),
        inputs("QUIET", price="108", news=None),
        inputs("NEW", price="108", avg=None),
        inputs("TINY", price="108", avg=5_000),
    ]

    ranking = rank(universe, SETTINGS)

    assert [(c.rank, c.inputs.symbol) for c in ranking.candidates] == [(1, "FIRST"), (2, "SECOND")]
    reasons = {r.symbol: r.reason for r in ranking.rejected}
    assert reasons == {
        "FLAT": "below gap: 2.0% < 5%",
        "PENNY": "price 1.50 below floor 2",
        "PRICEY": "price 640 above ceiling 500",
        "THIN": "thin volume: rvol 1.00 < 3",
        "QUIET": "no news catalyst",
        "NEW": "no volume history",
        "TINY": "illiquid: average $500,000/day < $1,000,000",
    }


def test_rank_keeps_at_most_max_candidates_and_says_why_the_rest_were_cut() -> None:
    ranking = rank([inputs("LOW", price="106"), inputs("HIGH", price="112")], ScannerSettings(max_candidates=1))

    assert [c.inputs.symbol for c in ranking.candidates] == ["HIGH"]
    assert [(r.symbol, r.reason) for r in ranking.rejected] == [("LOW", "beyond max_candidates 1 (would rank 2)")]


def test_news_is_optional_when_the_settings_say_so() -> None:
    ranking = rank([inputs("QUIET", news=None)], ScannerSettings(require_news=False))

    assert [c.inputs.symbol for c in ranking.candidates] == ["QUIET"]


def test_exits_use_the_pattern_low_else_a_percent_stop_and_a_two_r_target() -> None:
    assert suggested_exits(Decimal("106"), FLAG, SETTINGS) == (Decimal("104"), Decimal("110"))
    assert suggested_exits(Decimal("100"), None, SETTINGS) == (Decimal("97.00"), Decimal("106.00"))
    below = Flag(Decimal("100"), Decimal("106"), Decimal("104"), Decimal("105.5"), Decimal("0.4"), AFTER_OPEN)
    assert suggested_exits(Decimal("103"), below, SETTINGS)[0] == Decimal("99.91")  # pattern low above price


prices = st.decimals(min_value=Decimal("80"), max_value=Decimal("300"), places=2)
volumes = st.integers(min_value=0, max_value=50_000_000)


@given(prices, prices, volumes)
def test_score_never_falls_as_the_gap_grows(a: Decimal, b: Decimal, volume: int) -> None:
    low, high = sorted((a, b))

    assert score(inputs(price=str(low), volume=volume), SETTINGS).composite <= \
        score(inputs(price=str(high), volume=volume), SETTINGS).composite


@given(volumes, volumes, prices)
def test_score_never_falls_as_relative_volume_grows(a: int, b: int, price: Decimal) -> None:
    low, high = sorted((a, b))

    assert score(inputs(price=str(price), volume=low), SETTINGS).composite <= \
        score(inputs(price=str(price), volume=high), SETTINGS).composite
