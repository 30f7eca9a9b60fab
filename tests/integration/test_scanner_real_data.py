"""Scanner maths on real catalyst days of the S&P 500 daily bars (2009-08..2010-08), checked against the CSV rows."""

from __future__ import annotations

import csv
from datetime import date, datetime, time
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from catalyst.domain.scanning import average_daily_volume, gap_pct, relative_volume

ET = ZoneInfo("America/New_York")
PLACES = Decimal("1e-12")


def daily_rows(shared_data: Path, symbol: str) -> list[dict[str, str]]:
    with (shared_data / "daily_bars_sp500_2009_2010.csv").open(newline="") as f:
        return [row for row in csv.DictReader(f) if row["symbol"] == symbol]


def day_and_history(rows: list[dict[str, str]], day: str) -> tuple[dict[str, str], list[dict[str, str]]]:
    index = next(i for i, row in enumerate(rows) if row["date"] == day)
    return rows[index], rows[:index]


@pytest.mark.parametrize("symbol, day", [("MFE", "2010-08-19")])
def test_gap_and_full_day_rvol_equal_the_csv_arithmetic(shared_data: Path, symbol: str, day: str) -> None:
    today, history = day_and_history(daily_rows(shared_data, symbol), day)
    prev_close, open_ = Decimal(history[-1]["close"]), Decimal(today["open"])
    last_20 = [Decimal(row["volume"]) for row in history[-20:]]
    direct_avg = sum(last_20) / 20
    close = datetime.combine(date.fromisoformat(day), time(16, 0), tzinfo=ET)

    avg = average_daily_volume([int(row["volume"]) for row in history], days=20)
    rvol = relative_volume(int(today["volume"]), avg, close)

    assert gap_pct(prev_close, open_).quantize(PLACES) == ((open_ / prev_close - 1) * 100).quantize(PLACES)
    assert avg == direct_avg
    assert rvol.quantize(PLACES) == (Decimal(today["volume"]) / direct_avg).quantize(PLACES)


def test_mfe_on_2010_08_19_gapped_about_58_percent_on_about_77_times_its_volume(shared_data: Path) -> None:
    today, history = day_and_history(daily_rows(shared_data, "MFE"), "2010-08-19")
    avg = average_daily_volume([int(row["volume"]) for row in history], days=20)
    assert avg is not None

    gap = gap_pct(Decimal(history[-1]["close"]), Decimal(today["open"]))
    rvol = relative_volume(int(today["volume"]), avg, datetime(2010, 8, 19, 16, 0, tzinfo=ET))

    assert Decimal("57") < gap < Decimal("59")
    assert Decimal("70") < rvol < Decimal("85")


def test_at_noon_rvol_is_pro_rated_by_the_morning_share_of_a_day(shared_data: Path) -> None:
    today, history = day_and_history(daily_rows(shared_data, "MFE"), "2010-08-19")
    avg = average_daily_volume([int(row["volume"]) for row in history], days=20)
    assert avg is not None
    half_day_volume = int(today["volume"]) // 2

    rvol = relative_volume(half_day_volume, avg, datetime(2010, 8, 19, 12, 0, tzinfo=ET))

    # By 12:00 an average day has traded 42.3% of its volume (the calibrated curve).
    assert rvol.quantize(PLACES) == (Decimal(half_day_volume) / (avg * Decimal("0.423"))).quantize(PLACES)


def test_every_big_gap_in_the_file_computes_like_the_csv(shared_data: Path) -> None:
    with (shared_data / "daily_bars_sp500_2009_2010.csv").open(newline="") as f:
        by_symbol: dict[str, list[dict[str, str]]] = {}
        for row in csv.DictReader(f):
            by_symbol.setdefault(row["symbol"], []).append(row)
    checked = 0
    for rows in by_symbol.values():
        for previous, row in zip(rows, rows[1:]):
            prev_close, open_ = Decimal(previous["close"]), Decimal(row["open"])
            direct = (open_ / prev_close - 1) * 100
            if prev_close > 0 and direct >= 15:
                assert gap_pct(prev_close, open_).quantize(PLACES) == direct.quantize(PLACES), row
                checked += 1

    assert checked >= 5  # real catalyst days exist in the file
