"""`catalyst run` as a supervisor sees it: signals, graceful stop, restart and recovery, against `catalyst exchange`.

All tests read the artefacts of the shared `trading_day` scenario (tests/e2e/conftest.py): one real daemon day
is too slow to repeat per test.
"""

from __future__ import annotations

import re

import pytest

# Under xdist (`make test`), on one worker: the shared `trading_day` runs once, not once per worker.
pytestmark = pytest.mark.xdist_group("trading_day")

OPEN_AT_BROKER = {"new", "accepted", "pending_new", "held", "partially_filled"}


def stop_lines(text: str, e2e) -> list[str]:
    return [r["msg"] for r in e2e.json_lines(text) if r["msg"].startswith("system stop")]


def test_sigterm_stops_the_cycle_first_and_the_trading_system_last_then_exits_0(trading_day, e2e):
    run1 = trading_day.runs[0]

    assert trading_day.facts["run1_rc"] == 0, run1.stderr()[-3000:]
    assert stop_lines(run1.stderr(), e2e) == [
        "system stopping CycleActor", "system stopping DoctorActor", "system stopping ScannerActor",
        "system stopping TradingSystem", "system stopped", "system stopped cleanly",
    ]
    assert "SIGTERM: graceful stop" in run1.stderr()


def test_a_graceful_stop_leaves_every_open_position_protected_at_the_broker_and_the_database_agrees(trading_day, e2e):
    facts = trading_day.facts
    db_orders = facts["db_after_stop"]
    # OCO legs carry broker-made client ids (as at Alpaca): match on the broker's order id.
    broker_orders = {o["id"]: o for o in facts["broker_after_stop"]["orders"]}
    open_positions = [p for p in facts["positions_after_stop"] if p["status"] == "open"]

    working_stops = [o for o in db_orders if o["role"] == "stop_loss" and o["status"] in e2e.WORKING]
    assert open_positions, "the scenario should stop with live positions"
    assert {p["position_id"] for p in open_positions} == {o["position_id"] for o in working_stops}
    # Protection is judged here; an entry's row may still trail the broker's "filled" until the doctor's next pass.
    protection = [o for o in db_orders if o["role"] in ("stop_loss", "take_profit")]
    for order in (o for o in protection if o["status"] in e2e.WORKING):
        assert broker_orders[order["alpaca_order_id"]]["status"] in OPEN_AT_BROKER, order["client_order_id"]
    for broker_id, order in broker_orders.items():
        if order["status"] in OPEN_AT_BROKER:
            assert any(o["alpaca_order_id"] == broker_id and o["status"] in e2e.WORKING for o in protection), broker_id
    broker_qty = {p["symbol"]: p["qty"] for p in facts["broker_after_stop"]["positions"]}
    assert len(broker_qty) == len(open_positions)


def test_a_restart_on_the_same_database_restores_the_live_positions_and_finishes_the_day(trading_day):
    run2 = trading_day.runs[1]
    live = sum(1 for p in trading_day.facts["positions_after_stop"] if p["status"] == "open")

    assert f"{live} positions restored" in run2.stderr()
    report = re.search(r"completed: P&L [^;]+; report (\S+?)\"", run2.stderr()).group(1)
    assert (trading_day.folder / "reports" / "2024-03-04" / "index.md").as_posix() == report
    assert trading_day.facts["run2_rc"] == 0


def test_sigusr1_dumps_the_cycle_every_position_actor_and_every_thread_into_the_log(trading_day, e2e):
    run1 = trading_day.runs[0]
    dump = [r["msg"] for r in e2e.json_lines(run1.stderr()[trading_day.facts["usr1_from"]:])]
    live = sum(1 for p in trading_day.facts["positions_after_stop"] if p["status"] == "open")

    assert any(m.startswith("state cycle {") for m in dump)
    assert sum(m.startswith("state position {") for m in dump) >= live
    assert any(m.startswith("state thread MainThread") for m in dump)
    assert any(m.startswith("state thread state-dump") for m in dump)


def test_sighup_reopens_the_log_file_and_reloads_the_safe_part_of_the_config(trading_day):
    var = trading_day.folder / "var"
    before, after = (var / "catalyst.log.before-hup").read_text(), (var / "catalyst.log").read_text()

    assert "SIGHUP" not in before  # the renamed file stopped receiving lines at the reopen
    assert "SIGHUP: log files reopened" in after
    assert "state table every 0.5 s" in after
    assert "risk.max_open_positions changed; that takes a restart" in after
    assert "daemon.state_table_interval_s changed" not in after


def test_the_state_table_is_logged_periodically_and_snapshotted_for_status(trading_day, e2e):
    table = [r["msg"] for r in e2e.json_lines(trading_day.runs[0].stderr()) if re.match(r"state 2024-03-04 \d\d:\d\d ", r["msg"])]

    assert len(table) >= 3
    assert all("phase=" in line and "live=" in line and "halted=" in line for line in table)
    assert (trading_day.folder / "var" / "catalyst.db.state.json").exists()


def test_log_format_json_on_the_command_line_gives_one_object_per_line_on_stderr_and_in_the_file(trading_day, e2e):
    for text in (trading_day.runs[0].stderr(), (trading_day.folder / "var" / "catalyst.log").read_text()):
        lines = text.splitlines()
        records = e2e.json_lines(text)
        assert len(records) == len(lines) > 20
        assert all({"ts", "level", "actor", "msg"} <= set(r) and "_json" not in r for r in records)
    assert {"cycle", "router", "position", "doctor", "system"} <= {r["actor"] for r in records}


def test_catalyst_status_prints_a_readable_table_while_the_daemon_runs(trading_day, e2e):
    done = trading_day.facts["status_running"]

    assert done.returncode == 0, done.stderr
    assert re.search(r"cycle 2024-03-04 phase \w+ state", done.stdout)
    assert re.search(r"^\w+#p-\d+ +open ", done.stdout, re.MULTILINE)
    assert re.search(r"working orders: [1-9]", done.stdout)
    assert "daemon snapshot at 2024-03-04" in done.stdout and "(its last run's" not in done.stdout
    assert done.stdout.startswith("daemon: running (pid ")
    assert e2e.PLANTED_KEY_ID not in done.stdout


def test_the_first_line_says_which_config_broker_database_and_durability_the_daemon_runs_with(trading_day, e2e):
    first = next(r["msg"] for r in e2e.json_lines(trading_day.runs[0].stderr())
                 if r["msg"].startswith("system catalyst run:"))
    assert "broker emulator" in first and "database sqlite" in first
    assert first.endswith("sync FULL for order rows, broker reports deferred")  # the defaults: FULL, deferred reports
