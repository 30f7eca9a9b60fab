"""Replayed markets over the real files in ../shared/data (skipped with a reason when absent), and bad files."""

from __future__ import annotations

import csv
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from catalyst.sim.csv_replay import DailyCsvMarket, MarketDataError, MinuteCsvMarket

# Under xdist (`make test`), on one worker: its module-scoped market is built once, not once per worker.
pytestmark = pytest.mark.xdist_group("sim_market_replay")

ET = ZoneInfo("America/New_York")
SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


@pytest.fixture(scope="module")
def sp500_market() -> DailyCsvMarket:
    """Loaded once: the 6 MB file takes a second or two."""
    if not (SHARED_DATA / "daily_bars_sp500_2009_2010.csv").is_file():
        pytest.skip(f"real market data not found at {SHARED_DATA} (it lives beside the checkout, not in it)")
    return DailyCsvMarket(SHARED_DATA / "daily_bars_sp500_2009_2010.csv", seed=3)


def _csv_rows(path: Path, symbol: str, prefix: str) -> list[list[str]]:
    with path.open(newline="") as handle:
        return [row for row in csv.reader(handle) if row[1] == symbol and row[0].startswith(prefix)]


@pytest.mark.shared_data
def test_minute_replay_serves_spy_2013_10_07_exactly_as_the_csv_rows(shared_data: Path) -> None:
    path = shared_data / "minute_bars_lean.csv"
    market = MinuteCsvMarket(path)
    day_start = datetime(2013, 10, 7, tzinfo=ET)
    bars = market.minute_bars("SPY", day_start, day_start + timedelta(days=1))
    rows = _csv_rows(path, "SPY", "2013-10-07")
    assert len(bars) == len(rows) > 390
    for bar, row in zip(bars, rows):
        assert bar.start == datetime.fromisoformat(row[0])
        assert (bar.open, bar.high, bar.low, bar.close) == tuple(Decimal(x) for x in row[2:6])
        assert bar.volume == int(row[6])


@pytest.mark.shared_data
def test_minute_replay_daily_bar_aggregates_the_regular_session(shared_data: Path) -> None:
    path = shared_data / "minute_bars_lean.csv"
    market = MinuteCsvMarket(path)
    regular = [r for r in _csv_rows(path, "SPY", "2013-10-07")
               if time(9, 30) <= datetime.fromisoformat(r[0]).time() < time(16)]
    (daily,) = market.daily_bars("SPY", date(2013, 10, 7), date(2013, 10, 7))
    assert daily.open == Decimal(regular[0][2]) and daily.close == Decimal(regular[-1][5])
    assert daily.high == max(Decimal(r[3]) for r in regular) and daily.low == min(Decimal(r[4]) for r in regular)
    assert daily.volume == sum(int(r[6]) for r in regular)
    assert [s.day for s in market.sessions(date(2013, 10, 1), date(2013, 10, 31))] == [
        date(2013, 10, d) for d in (4, 7, 8, 9, 10, 11)]


@pytest.mark.shared_data
@pytest.mark.parametrize(("symbol", "day"), [("MFE", date(2010, 8, 19)), ("A", date(2009, 8, 21))])
def test_daily_replay_minute_paths_stay_inside_touch_and_sum_to_the_real_day(
    sp500_market: DailyCsvMarket, tmp_path: Path, symbol: str, day: date
) -> None:
    market = sp500_market
    (daily,) = market.daily_bars(symbol, day, day)
    bars = market.minute_bars(symbol, datetime.combine(day, time(0), tzinfo=ET),
                              datetime.combine(day, time(23, 59), tzinfo=ET))
    assert len(bars) == 390 and bars[0].start.time() == time(9, 30)
    assert bars[0].open == daily.open and bars[-1].close == daily.close
    assert max(b.high for b in bars) == daily.high and min(b.low for b in bars) == daily.low
    assert all(daily.low <= b.low <= b.high <= daily.high for b in bars)
    assert sum(b.volume for b in bars) == daily.volume
    one_row = tmp_path / "one.csv"  # same seed, symbol and day: the same minutes, whatever else the file holds
    one_row.write_text("date,symbol,open,high,low,close,volume\n" + ",".join(
        [day.isoformat(), symbol, str(daily.open), str(daily.high), str(daily.low), str(daily.close),
         str(daily.volume)]) + "\n")
    again = DailyCsvMarket(one_row, seed=3)
    assert again.minute_bars(symbol, bars[0].start, bars[-1].start + timedelta(minutes=1)) == bars


def test_a_bad_row_is_one_line_naming_file_line_and_problem(tmp_path: Path) -> None:
    path = tmp_path / "bars.csv"
    path.write_text("date,symbol,open,high,low,close,volume\n2020-01-02,AAA,1,2,0.5,1.5,100\n"
                    "2020-01-03,AAA,1,two,0.5,1.5,100\n")
    with pytest.raises(MarketDataError) as caught:
        DailyCsvMarket(path)
    assert str(caught.value) == f"{path}:3: not a number in 1,two,0.5,1.5,100"


@pytest.mark.parametrize(("content", "problem"), [
    ("time,symbol\n", ":1: expected header timestamp,symbol,open,high,low,close,volume"),
    ("timestamp,symbol,open,high,low,close,volume\n2020-01-02T09:30:00,AAA,1,1,1,1,5\n", ":2: timestamp "),
    ("timestamp,symbol,open,high,low,close,volume\n2020-01-02T09:30:00-05:00,AAA,1,1,1\n", ":2: expected 7 columns"),
    ("timestamp,symbol,open,high,low,close,volume\n", ":2: no bars"),
])
def test_minute_file_problems_are_named(tmp_path: Path, content: str, problem: str) -> None:
    path = tmp_path / "minutes.csv"
    path.write_text(content)
    with pytest.raises(MarketDataError, match=problem):
        MinuteCsvMarket(path)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(MarketDataError, match="absent.csv: cannot read"):
        MinuteCsvMarket(tmp_path / "absent.csv")
