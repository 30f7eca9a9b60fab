"""The benchmark harness works end to end: `python -m bench --quick --only <cheap one>` prints figures and writes JSON.

It asserts nothing about speed (machines are shared and noisy); figures are judged in docs/BENCHMARKS.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
import pytest

pytestmark = pytest.mark.slow  # minutes of real processes: CI runs it; the everyday run skips it

PROJECT = Path(__file__).resolve().parents[2]


def run_bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=PROJECT, capture_output=True, text=True,
                          timeout=300)


def test_quick_durable_events_prints_its_figures_and_writes_json_with_goals_and_machine_facts(tmp_path):
    docs_before = (PROJECT / "docs" / "BENCHMARKS.md").read_text()

    done = run_bench("--quick", "--only", "durable_events", "--out", str(tmp_path))

    assert done.returncode == 0, done.stdout + done.stderr
    assert "durable_events" in done.stdout and "pipelined (group commit) events/s vs raw sqlite3 (FULL)" in done.stdout
    result = json.loads((tmp_path / "durable_events.json").read_text())
    assert result["quick"] is True and result["machine"]["cores_logical"] >= 1 and result["machine"]["python"]
    assert result["figures"]["full"]["writer_events_per_s"] > 0 and result["figures"]["full"]["raw_sqlite3_events_per_s"] > 0
    assert {g["met"] for g in result["goals"] if "pipelined" in g["what"]} <= {True, False}  # the throughput goals
    assert {g["met"] for g in result["goals"] if "one caller" in g["what"]} == {None}  # latency, reported beside
    assert list(tmp_path.glob("summary-*.md"))
    assert (PROJECT / "docs" / "BENCHMARKS.md").read_text() == docs_before  # quick runs never rewrite the docs


def test_an_unknown_benchmark_name_is_refused_in_one_line_naming_the_choices(tmp_path):
    done = run_bench("--only", "no_such_bench", "--out", str(tmp_path))

    assert done.returncode == 2
    assert "invalid choice: 'no_such_bench'" in done.stderr and "fill_to_oco" in done.stderr
    assert "Traceback" not in done.stderr
    assert not list(tmp_path.iterdir())
