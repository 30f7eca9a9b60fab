"""Keys come from the environment (or a 0600 --env-file) and go nowhere else: a planted key is grepped for everywhere."""

from __future__ import annotations

import signal
from pathlib import Path

import psutil
import pytest

# Under xdist (`make test`), on one worker: the shared `trading_day` runs once, not once per worker.
pytestmark = pytest.mark.xdist_group("trading_day")


def daemon_outputs(folder: Path) -> list[Path]:
    """Everything the daemon wrote: its stderr/stdout, var/ (database, WAL, logs, snapshot) and the reports."""
    skip = {"keys.env", "facts.json", "config.toml"}  # the planted input, the test's own notes, the test's config
    return [p for p in folder.rglob("*") if p.is_file() and p.name not in skip and not p.name.startswith("exchange.")]


def test_the_planted_key_is_in_no_log_line_database_row_snapshot_or_report(trading_day, e2e):
    outputs = daemon_outputs(trading_day.folder)
    names = {p.name for p in outputs}

    assert {"run1.err", "run2.err", "catalyst.db", "catalyst.log", "catalyst.db.state.json", "index.md"} <= names
    assert any(name.endswith(".png") for name in names)
    for path in outputs:
        data = path.read_bytes()
        assert e2e.PLANTED_KEY_ID.encode() not in data, path
        assert e2e.PLANTED_SECRET.encode() not in data, path
    status = trading_day.facts["status_running"].stdout
    assert e2e.PLANTED_KEY_ID not in status and e2e.PLANTED_SECRET not in status


def test_the_daemon_traded_with_the_planted_key_from_the_env_file(trading_day):
    snapshot = trading_day.facts["broker_after_stop"]

    assert snapshot["orders"], "the exchange account of the planted key id should hold the daemon's orders"


def test_database_logs_snapshot_and_reports_are_readable_by_the_owner_only(trading_day):
    made = [p for p in trading_day.folder.rglob("*")
            if p.parts[len(trading_day.folder.parts)] in ("var", "reports")]

    assert len(made) > 5
    for path in made:
        assert path.stat().st_mode & 0o077 == 0, f"{path} is {path.stat().st_mode & 0o777:o}"


def test_an_env_file_others_can_read_is_refused_in_one_line_without_the_key(tmp_path, e2e):
    env_file = tmp_path / "keys.env"
    env_file.write_text(f"APCA_API_KEY_ID={e2e.PLANTED_KEY_ID}\nAPCA_API_SECRET_KEY={e2e.PLANTED_SECRET}\n")
    env_file.chmod(0o640)
    config = e2e.write_config(tmp_path)

    done = e2e.subprocess.run([*e2e.CATALYST, "run", "--config", str(config), "--env-file", str(env_file)],
                              capture_output=True, text=True, timeout=60, env=e2e.clean_env())

    assert done.returncode == 2
    assert done.stderr.strip() == (f"catalyst: error: {env_file}: environment file has mode 0640, others could read "
                                   f"the keys; run `chmod 600 {env_file}`")
    assert not (tmp_path / "var").exists()


def test_a_garbled_env_file_line_is_refused_by_line_number_without_echoing_it(tmp_path, e2e):
    env_file = tmp_path / "keys.env"
    env_file.write_text(f"APCA_API_KEY_ID={e2e.PLANTED_KEY_ID}\n{e2e.PLANTED_SECRET}\n")
    env_file.chmod(0o600)
    config = e2e.write_config(tmp_path)

    done = e2e.subprocess.run([*e2e.CATALYST, "run", "--config", str(config), "--env-file", str(env_file)],
                              capture_output=True, text=True, timeout=60, env=e2e.clean_env())

    assert done.returncode == 2
    assert done.stderr.strip() == f"catalyst: error: {env_file}:2: expected NAME=VALUE"


def test_the_embedded_exchange_listens_on_loopback_only(tmp_path, spawner, e2e):
    config = e2e.write_config(tmp_path, "[exchange]\nspeed = 60\n")
    daemon = e2e.start_daemon(spawner, config, None, name="embedded")

    daemon.wait_for(r"embedded exchange at http://127\.0\.0\.1:\d+", timeout=60)
    daemon.wait_for(r"doctor pass #1", timeout=60)
    listening = [c for c in psutil.Process(daemon.pid).net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
    daemon.send(signal.SIGTERM)

    assert listening
    assert {c.laddr.ip for c in listening} == {"127.0.0.1"}
    assert daemon.wait_exit(timeout=60) == 0
