"""`python -m bench --quick` runs the reconciliation, stream-loss and simulated-day benchmarks end to end.

It asserts that figures are printed and JSON written, nothing about speed (machines are shared and noisy).
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow  # minutes of real processes: CI runs it; the everyday run skips it

MINE = ("reconcile_orders", "stream_loss", "sim_day")


def test_quick_reconcile_stream_loss_and_sim_day_print_their_figures_and_write_json(tmp_path, e2e):
    done, results = e2e.run_quick_bench(MINE, tmp_path)

    for line in ("doctor pass broker HTTP calls over 1000 open orders", "stream drop → missed take-profit applied",
                 "simulated s / wall s, one day"):
        assert line in done.stdout
    for result in results.values():
        assert result["quick"] is True and "error" not in result and result["machine"]["python"]
        assert result["goals"] and {g["met"] for g in result["goals"]} <= {True, False, None}
    reconcile = results["reconcile_orders"]["figures"]
    assert reconcile["open_orders"] == 1000 and reconcile["doctor_pass"]["findings"] == 0
    assert reconcile["doctor_pass"]["http_calls"] > 0 and reconcile["spec_7_3_loop"]["http_calls"] == 1001
    loss = results["stream_loss"]["figures"]
    assert loss["samples"] >= 1 and loss["drop_to_position_closed"]["n"] == loss["samples"]
    (day,) = [v for k, v in results["sim_day"]["figures"].items() if k.startswith("speed_")]
    assert day["simulated_s"] > 0 and day["wall_s"] > 0 and day["report"]["exists"] is True
    assert list(tmp_path.glob("summary-*.md"))
