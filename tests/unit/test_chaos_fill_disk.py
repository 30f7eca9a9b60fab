"""`python -m chaos --fill-disk N`: moments where the disk under the running daemon's database is filled instead of a
kill. The harness's tmpfs really fills (ENOSPC), the moments leave the last kill and the `--disk-full` restarts alone,
and the broker-side protection check names a position whose working stops do not cover it."""

from __future__ import annotations

import os

import pytest

from chaos.__main__ import (ChaosSettings, RunResult, disk_fill_moments, disk_full_restarts, last_said,
                            main)
from chaos.harness import SmallDisk
from chaos.invariants import unprotected_at_broker


def test_the_moments_are_never_the_last_nor_a_restart_on_a_filling_disk():
    for seed in range(40):
        settings = ChaosSettings(kills=12, disk_full=3, fill_disk=4)
        restarts = disk_full_restarts(settings, seed)
        moments = disk_fill_moments(settings, seed, restarts)
        assert len(moments) == 4 and not moments & restarts and max(moments) < 11
    assert disk_fill_moments(ChaosSettings(kills=1, fill_disk=2), 1, set()) == set()


def test_a_small_disk_fills_until_the_kernel_refuses_and_frees_again(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    disk = SmallDisk(tmp_path / "disk", size_mb=2).mount()
    try:
        written = disk.fill()
        assert 2 * 1024 * 1024 - 64 * 1024 < written <= 2 * 1024 * 1024
        with pytest.raises(OSError):  # full for everyone, to the last block
            (disk.path / "one-more").write_bytes(b"x" * 4096)
        disk.free()
        (disk.path / "one-more").write_bytes(b"x" * 4096)
    finally:
        disk.unmount()
    assert not os.path.ismount(disk.path)


def test_a_position_its_working_stops_do_not_cover_is_named():
    snapshot = {
        "positions": [{"symbol": "MSFT", "qty": "10"}, {"symbol": "AAPL", "qty": "100"}, {"symbol": "TSLA", "qty": "0"}],
        "orders": [
            {"symbol": "AAPL", "side": "sell", "type": "stop", "qty": "100", "filled_qty": "0", "status": "held"},
            {"symbol": "MSFT", "side": "sell", "type": "limit", "qty": "10", "filled_qty": "0", "status": "new"},
            {"symbol": "MSFT", "side": "sell", "type": "stop", "qty": "10", "filled_qty": "0", "status": "canceled"},
        ],
    }
    assert [v.detail for v in unprotected_at_broker(snapshot)] == [
        "MSFT: position 10, working stop quantity 0 at the broker"]


def test_a_negative_count_is_refused_in_one_line(capsys):
    assert main(["--fill-disk", "-1"]) == 2
    assert capsys.readouterr().err == "chaos: error: --fill-disk: Input should be greater than or equal to 0\n"


def test_a_run_line_says_how_many_filled_disks_met_no_write():
    # A fill after the day's last write (a loss limit ended the day early) stops nothing: said, not hidden in the count.
    result = RunResult(seed=131, kills=2, disk_fills=2, disk_fill_stops=1, disk_fill_idle=1)

    assert result.line().endswith("; 2 disks filled under the running daemon, 1 stopped on the reserve with every "
                                  "share under a stop, 1 met no write (left running on the freed disk)")
    assert RunResult(seed=1, disk_fills=1, disk_fill_stops=1).line().endswith("with every share under a stop")


def test_a_violation_names_what_a_crash_printed_after_the_exit_line():
    # CI: exit -6 reported with only the good exit line above it; the C++ terminate below it was in no report.
    lines = ["12:00 INFO system stopped", "catalyst: error: the disk is full", "",
             "terminate called without an active exception"]
    assert last_said(lines) == "catalyst: error: the disk is full [then: terminate called without an active exception]"
    assert last_said(lines[:2]) == "catalyst: error: the disk is full"
    assert last_said(["Fatal Python error: Aborted"]) == "(no exit line; its last line: Fatal Python error: Aborted)"
    assert last_said([]) == "(nothing)"
