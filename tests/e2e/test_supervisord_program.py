"""The shipped supervisord program section (deploy/supervisord.conf) under a real supervisord: start, running,
`kill -9` → supervisord restarts it → it recovers its positions, SIGTERM (`supervisorctl stop`) → exit 0 with a
consistent database. The daemon follows a `catalyst exchange` process whose clock the test moves.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path
import pytest

pytestmark = pytest.mark.slow  # minutes of real processes: CI runs it; the everyday run skips it

PROJECT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def supervisord_conf(folder: Path, config: Path, broker_url: str, key_id: str, secret: str) -> Path:
    """Our own supervisord.conf in tmp_path: a unix socket for supervisorctl, and deploy/'s program section."""
    program = (PROJECT / "deploy" / "supervisord.conf").read_text()
    program = (program.replace("/opt/catalyst/.venv/bin/catalyst", str(BIN / "catalyst"))
               .replace("/opt/catalyst/config.toml", f"{config} --broker-url {broker_url}")
               .replace("directory=/opt/catalyst", f"directory={folder}")
               .replace("/var/log/catalyst/catalyst.log", str(folder / "catalyst.log")))
    assert str(BIN / "catalyst") in program and str(folder / "catalyst.log") in program
    conf = folder / "supervisord.conf"
    conf.write_text(f"""[unix_http_server]
file={folder}/supervisor.sock
chmod=0700

[supervisord]
nodaemon=true
logfile={folder}/supervisord.log
pidfile={folder}/supervisord.pid
childlogdir={folder}
environment=APCA_API_KEY_ID="{key_id}",APCA_API_SECRET_KEY="{secret}",PYTHONUNBUFFERED="1"

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://{folder}/supervisor.sock

{program}""")
    return conf


def ctl(conf: Path, *args: str) -> str:
    done = subprocess.run([str(BIN / "supervisorctl"), "-c", str(conf), *args], capture_output=True, text=True,
                          timeout=90)
    return done.stdout + done.stderr


def running_pid(conf: Path) -> int | None:
    match = re.search(r"catalyst\s+RUNNING\s+pid (\d+)", ctl(conf, "status", "catalyst"))
    return int(match.group(1)) if match else None


def test_supervisord_runs_restarts_after_kill_9_and_stops_with_exit_0(tmp_path, spawner, e2e):
    exchange = e2e.start_exchange(spawner, speed=0, start="2024-03-04T09:12:00")
    config = e2e.write_config(tmp_path)
    conf = supervisord_conf(tmp_path, config, exchange.url, e2e.PLANTED_KEY_ID, e2e.PLANTED_SECRET)
    log, db = tmp_path / "catalyst.log", tmp_path / "var" / "catalyst.db"
    pump = e2e.ClockPump(exchange)
    supervisord = subprocess.Popen([str(BIN / "supervisord"), "-c", str(conf)], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, env=e2e.clean_env(tie=False), cwd=tmp_path)
    try:
        first = e2e.wait_until(lambda: running_pid(conf), 90, "supervisord to report catalyst RUNNING")  # after startsecs
        e2e.wait_until(lambda: log.exists() and "doctor pass #1 (start-up)" in log.read_text(), 60, "the start-up pass")
        pump.go()
        e2e.wait_until(lambda: e2e._all_filled_entries_protected(db), 120, "protected positions")
        pump.hold()
        live = len(e2e.db_rows(db, "SELECT 1 FROM positions WHERE status = 'open'"))

        os.kill(first, signal.SIGKILL)
        second = e2e.wait_until(lambda: (pid := running_pid(conf)) and pid != first and pid, 90,
                                "supervisord to restart catalyst")
        e2e.wait_until(lambda: log.read_text().count("doctor pass #1 (start-up)") == 2, 60, "the restart's start-up pass")
        restarted = log.read_text()

        stopped = ctl(conf, "stop", "catalyst")
        e2e.wait_until(lambda: "exit status 0" in (tmp_path / "supervisord.log").read_text()
                       and "STOPPED" in ctl(conf, "status", "catalyst"), 60, "a clean stop")
    finally:
        for name in ("supervisord.log", "catalyst.log"):  # shown by pytest only when the test fails
            path = tmp_path / name
            print(f"--- {name}\n" + (path.read_text()[-4000:] if path.exists() else "(none)"))
        ctl(conf, "shutdown")
        try:
            supervisord.wait(timeout=60)
        except subprocess.TimeoutExpired:
            supervisord.kill()
        pump.close()

    assert second != first
    assert f"{live} positions restored" in restarted
    assert "catalyst: stopped" in stopped
    assert re.search(r"stopped: catalyst \(exit status 0\)", (tmp_path / "supervisord.log").read_text())
    assert log.read_text().rstrip().endswith('"msg": "system stopped cleanly"}')
    assert [tuple(r) for r in e2e.db_rows(db, "PRAGMA integrity_check")] == [("ok",)]
    assert live > 0 and e2e._all_filled_entries_protected(db)  # the broker's clock stood still since the kill
    for path in (log, tmp_path / "supervisord.log", db):
        assert e2e.PLANTED_SECRET.encode() not in path.read_bytes() and e2e.PLANTED_KEY_ID.encode() not in path.read_bytes()
