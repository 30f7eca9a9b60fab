"""`python -m bench` rewrites docs/BENCHMARKS.md's figures only from a full result of every benchmark: an `--only`
run into another directory once replaced the page's figures with its own alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import bench.__main__ as bench_main


@pytest.fixture
def regenerated(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    pages: list[str] = []
    monkeypatch.setattr(bench_main.report, "regenerate_docs", pages.append)

    def fake_run(name: str, quick: bool) -> dict[str, Any]:
        return {"name": name, "issue": 4, "quick": quick, "goals": [], "figures": {}, "wall_s": 0.0}

    monkeypatch.setattr(bench_main, "run_one", fake_run)
    monkeypatch.setattr(bench_main, "machine_facts",
                        lambda: {"cpu": "cpu", "cores_logical": 2, "python": "3.11", "load_avg_1m": 0.0})
    return pages


def test_an_only_run_into_a_directory_without_the_others_leaves_the_page_alone(tmp_path: Path,
                                                                              regenerated: list[str]) -> None:
    bench_main.main(["--only", "sim_day", "--out", str(tmp_path)])
    assert regenerated == []


def test_a_full_run_rewrites_the_page_with_every_benchmark(tmp_path: Path, regenerated: list[str]) -> None:
    bench_main.main(["--out", str(tmp_path)])
    assert len(regenerated) == 1 and all(f"### {name} " in regenerated[0] for name in bench_main.BENCHMARKS)


def test_an_only_run_beside_full_results_rewrites_its_part_among_them(tmp_path: Path, regenerated: list[str]) -> None:
    bench_main.main(["--out", str(tmp_path)])
    bench_main.main(["--only", "sim_day", "--out", str(tmp_path)])
    assert len(regenerated) == 2 and all(f"### {name} " in regenerated[1] for name in bench_main.BENCHMARKS)
