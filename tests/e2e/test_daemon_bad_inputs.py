"""Bad inputs to `catalyst run`: each one clear line on stderr, a distinct exit code, and nothing lost or overwritten."""

from __future__ import annotations

import sqlite3
import subprocess
import sys

import pytest


def run(e2e, config, *extra: str, timeout: float = 90) -> subprocess.CompletedProcess:
    return subprocess.run([*e2e.CATALYST, "run", "--config", str(config), *extra], capture_output=True, text=True,
                          timeout=timeout, env=e2e.clean_env(), cwd=config.parent)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("catalyst:")]


def test_an_unknown_config_key_is_one_line_naming_it_and_exit_2(tmp_path, e2e):
    config = e2e.write_config(tmp_path, "[risk]\nmax_open_positionz = 3\n")

    done = run(e2e, config)

    assert done.returncode == 2
    assert done.stderr.strip() == f"catalyst: error: {config}: risk.max_open_positionz: unknown key"


def test_a_bad_config_value_is_one_line_naming_the_key_and_exit_2(tmp_path, e2e):
    config = e2e.write_config(tmp_path, '[logging]\nformat = "xml"\n')

    done = run(e2e, config)

    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "logging.format" in done.stderr and "'xml'" in done.stderr


def test_an_unwritable_database_path_is_one_line_and_exit_3(tmp_path, e2e):
    (tmp_path / "var").write_text("a file where the database folder should be")
    config = e2e.write_config(tmp_path)

    done = run(e2e, config, "--broker-url", "http://127.0.0.1:9")

    assert done.returncode == 3
    errors = error_lines(done.stderr)
    assert len(errors) == 1 and errors[0].startswith(f"catalyst: error: {tmp_path / 'var'}: cannot create the database folder: ")
    assert (tmp_path / "var").read_text() == "a file where the database folder should be"


def test_a_corrupt_database_file_is_one_line_exit_3_and_left_as_it_was(tmp_path, spawner, e2e):
    exchange = e2e.start_exchange(spawner, speed=0)
    config = e2e.write_config(tmp_path)
    (tmp_path / "var").mkdir()
    garbage = bytes(range(256)) * 64
    (tmp_path / "var" / "catalyst.db").write_bytes(garbage)

    done = run(e2e, config, "--broker-url", exchange.url)

    assert done.returncode == 3, done.stderr[-2000:]
    assert error_lines(done.stderr) == [f"catalyst: error: {tmp_path / 'var' / 'catalyst.db'}: not an SQLite database "
                                        "(wrong file header)"]
    assert (tmp_path / "var" / "catalyst.db").read_bytes() == garbage


def test_a_database_locked_by_another_process_is_one_line_exit_3_and_its_rows_survive(tmp_path, spawner, e2e):
    exchange = e2e.start_exchange(spawner, speed=0)
    config = e2e.write_config(tmp_path)
    db = tmp_path / "var" / "catalyst.db"
    db.parent.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sqlite3, sys, time\n"
         f"c = sqlite3.connect({str(db)!r}, isolation_level=None)\n"
         "c.execute('CREATE TABLE keep (x)'); c.execute(\"INSERT INTO keep VALUES ('precious')\")\n"
         "c.execute('BEGIN EXCLUSIVE'); print('locked', flush=True); time.sleep(120)\n"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"

        done = run(e2e, config, "--broker-url", exchange.url)
    finally:
        holder.kill()
        holder.wait(timeout=30)

    assert done.returncode == 3, done.stderr[-2000:]
    assert error_lines(done.stderr) == [f"catalyst: error: {db}: database is locked: another program held a lock on it "
                                        "for longer than Catalyst waits (30 s): close the program holding it (a sqlite3 "
                                        "shell left inside a transaction: end it with ROLLBACK or quit it), then start "
                                        "again"]
    assert "another program holds a lock on it" in done.stderr  # the wait was said before it ended
    assert [tuple(r) for r in e2e.db_rows(db, "SELECT x FROM keep")] == [("precious",)]


def test_an_unreachable_broker_is_retried_with_backoff_then_one_line_and_exit_4(tmp_path, e2e):
    config = e2e.write_config(tmp_path, '[logging]\nfile = "var/catalyst.log"\n')  # broker.startup_wait_s = 5
    url = "http://127.0.0.1:9"  # discard port: nothing listens

    done = run(e2e, config, "--broker-url", url)

    assert done.returncode == 4
    retries = [line for line in done.stderr.splitlines() if f"emulator at {url} not answering" in line]
    assert len(retries) >= 2 and "retrying in" in retries[0]
    said = f"catalyst: error: emulator at {url} does not answer /sim/v1/clock after 5 s: ConnectionError"
    assert error_lines(done.stderr) == [said]
    assert "Traceback" not in done.stderr
    # The operator tailing the log file learns why the daemon is gone: its last line, said there only once.
    last = (tmp_path / "var" / "catalyst.log").read_text().splitlines()[-1]
    assert last.endswith(f"| system exiting with code 4: {said}") and "CRITICAL" in last
    assert done.stderr.count("system exiting with code") == 0


@pytest.mark.parametrize("restriction, why", [
    ({"trading_blocked": True}, "trading_blocked: the account may not place orders"),
    # A status alpaca-py's TradeAccount model does not know: its refusal of the answer was taken for an unreachable
    # broker, waited out for broker.startup_wait_s and said as "broker unreachable" (the account is read raw now).
    ({"status": "ACTIVE_RESTRICTED"}, "status ACTIVE_RESTRICTED: only an ACTIVE account trades"),
])
def test_an_account_that_may_not_trade_is_refused_in_one_line_exit_2_before_any_order(tmp_path, spawner, e2e,
                                                                                       restriction, why):
    """Alpaca answers every order of a blocked, suspended or inactive account with a 403: rather than a day of
    rejected entries, the daemon refuses to start, naming why (exit 2: a human must settle it with Alpaca)."""
    import requests

    from catalyst.runtime import SIM_KEY_ID

    exchange = e2e.start_exchange(spawner, speed=0)
    said = requests.put(f"{exchange.url}/sim/v1/accounts/{SIM_KEY_ID}/restrictions", json=restriction,
                        timeout=5).json()
    assert all(said[name] == value for name, value in restriction.items())
    config = e2e.write_config(tmp_path)

    done = run(e2e, config, "--broker-url", exchange.url)

    assert done.returncode == 2, done.stderr[-2000:]
    (line,) = error_lines(done.stderr)
    assert line.startswith("catalyst: error: the broker account SIM") and line.endswith(
        f" cannot place orders ({why}); no entry, stop or exit would be "
        "accepted, and stops already at the broker stay: settle it with Alpaca, then start again")
    assert "unreachable" not in done.stderr
    snapshot = requests.get(f"{exchange.url}/sim/v1/accounts/{SIM_KEY_ID}/snapshot", timeout=5).json()
    assert snapshot["orders"] == []
    assert "Traceback" not in done.stderr


def test_a_database_whose_schema_is_not_its_revisions_is_one_line_exit_3_before_any_order(tmp_path, spawner, e2e):
    """Labelled 0002 with its fills table dropped, a daemon started on it placed entries, was filled, and only then
    failed to record the fills, telling its supervisor to restart it."""
    from catalyst.runtime import SIM_KEY_ID
    from catalyst.store.migrate import upgrade

    exchange = e2e.start_exchange(spawner, speed=0)
    config = e2e.write_config(tmp_path)
    db = tmp_path / "var" / "catalyst.db"
    db.parent.mkdir()
    upgrade(f"sqlite+aiosqlite:///{db}")
    with sqlite3.connect(db) as connection:
        connection.execute("DROP TABLE fills")
    connection.close()

    done = run(e2e, config, "--broker-url", exchange.url, timeout=60)

    assert done.returncode == 3, done.stderr[-2000:]
    assert error_lines(done.stderr) == [
        f"catalyst: error: {db}: its schema does not match its revision 0002: missing table fills; it was changed "
        "outside Catalyst's migrations: keep a copy of it, then put back what differs before starting on it again "
        "(a backup restored instead would lose the orders written since)"]
    assert "Traceback" not in done.stderr
    assert exchange.snapshot(SIM_KEY_ID)["orders"] == []


def newer_catalysts(db):
    with sqlite3.connect(db) as connection:
        connection.execute("UPDATE alembic_version SET version_num = '0099'")
    connection.close()
    return f"{db}: schema revision '0099' is unknown to this Catalyst (newest known: 0002); it was made by a newer version"


def truncated(db):
    with sqlite3.connect(db) as connection:
        connection.executemany("INSERT INTO trade_updates (received_at, event, payload) VALUES (?, 'new', ?)",
                               [("2024-03-04 14:45:00.000000", f'{{"n": {i}, "pad": "{"x" * 300}"}}') for i in range(500)])
    connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    connection.close()
    with db.open("r+b") as file:  # a copy cut short: its header still says SQLite
        file.truncate(db.stat().st_size // 2)
    return (f"{db}: not a usable SQLite database (database disk image is malformed): keep a copy of it and of its -wal "
            "file, then recover it (sqlite3 FILE .recover | sqlite3 NEW) or restore a backup before starting on it again")


def without_its_fills_table(db):
    with sqlite3.connect(db) as connection:
        connection.execute("DROP TABLE fills")
    connection.close()
    return (f"{db}: its schema does not match its revision 0002: missing table fills; it was changed outside "
            "Catalyst's migrations: keep a copy of it, then put back what differs before starting on it again (a "
            "backup restored instead would lose the orders written since)")


@pytest.mark.parametrize("spoil", [newer_catalysts, truncated, without_its_fills_table])
def test_a_database_the_daemon_refuses_is_named_at_once_not_after_waiting_for_an_unreachable_broker(tmp_path, e2e,
                                                                                                     spoil):
    """It was said after broker.startup_wait_s (300 s by default) as "broker unreachable", exit 4: a supervisor and
    its operator looked at the network while the database was the problem."""
    from catalyst.store.migrate import upgrade

    config = e2e.write_config(tmp_path)  # broker.startup_wait_s = 5
    db = tmp_path / "var" / "catalyst.db"
    db.parent.mkdir()
    upgrade(f"sqlite+aiosqlite:///{db}")
    said = spoil(db)
    before = db.read_bytes()

    done = run(e2e, config, "--broker-url", "http://127.0.0.1:9")  # discard port: nothing listens

    assert done.returncode == 3, done.stderr[-2000:]
    assert error_lines(done.stderr) == [f"catalyst: error: {said}"]
    assert "retrying" not in done.stderr
    assert db.read_bytes() == before
