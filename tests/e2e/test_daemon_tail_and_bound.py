"""`catalyst tail [--actor NAME] [--follow]` on a JSON log, and the bound on a graceful stop."""

from __future__ import annotations

import json
import signal


def line(actor: str, msg: str) -> str:
    return json.dumps({"ts": "2024-03-04T14:35:00.123+00:00", "level": "INFO", "actor": actor, "msg": msg}) + "\n"


def test_tail_follow_filters_by_actor_and_keeps_reading_across_a_rotation(tmp_path, spawner, e2e):
    log = tmp_path / "catalyst.log"
    log.write_text(line("router", "order X#o-1 created") + line("cycle", "cycle idle → scanning"))
    tail = spawner.spawn("tail", ["tail", "--file", str(log), "--actor", "cycle", "--follow"])

    e2e.wait_until(lambda: "cycle idle → scanning" in tail.stdout(), 30, "the existing cycle line")
    with log.open("a") as handle:
        handle.write(line("cycle", "cycle scanning → evaluating") + line("doctor", "doctor pass #2"))
    e2e.wait_until(lambda: "scanning → evaluating" in tail.stdout(), 30, "an appended line")
    log.rename(tmp_path / "catalyst.log.1")
    log.write_text(line("cycle", "cycle evaluating → trading"))
    e2e.wait_until(lambda: "evaluating → trading" in tail.stdout(), 30, "a line in the rotated-in file")
    tail.send(signal.SIGINT)

    assert tail.wait_exit(timeout=30) == 0
    shown = tail.stdout().splitlines()
    assert shown == ["2024-03-04 14:35:00.123   cycle      cycle idle → scanning",
                     "2024-03-04 14:35:00.123   cycle      cycle scanning → evaluating",
                     "2024-03-04 14:35:00.123   cycle      cycle evaluating → trading"]


def test_a_stop_that_overruns_shutdown_timeout_exits_1_with_one_line(tmp_path, spawner, e2e):
    config = e2e.write_config(tmp_path, "[exchange]\nspeed = 60\n")
    config.write_text(config.read_text().replace("shutdown_timeout_s = 30", "shutdown_timeout_s = 0.001"))
    daemon = e2e.start_daemon(spawner, config, None, "--log-format", "json", name="bounded")
    daemon.wait_for(r"doctor pass #1", timeout=60)

    daemon.send(signal.SIGTERM)

    assert daemon.wait_exit(timeout=60) == 1
    assert "stop did not finish within daemon.shutdown_timeout_s = 0.001 s; exiting now" in daemon.stderr()
    assert "system stopped cleanly" not in daemon.stderr()
