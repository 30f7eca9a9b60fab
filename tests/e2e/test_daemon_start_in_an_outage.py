"""A daemon started while its broker is down waits for it with backoff, at most 30 s between tries on the exchange's
clock. Against an emulator at 240x, 30 wall seconds were two exchange hours: a restart inside a broker outage came
back long after the broker, and missed the entry window (chaos, seeds 383, 390, 397, 399)."""

from __future__ import annotations

import re
import signal

import requests

WAITS = re.compile(r"broker unreachable at .*?; retrying in (\d+) s")


def test_a_start_inside_a_broker_outage_at_240x_asks_again_every_wall_second_and_starts_once_it_is_back(
        tmp_path, spawner, e2e):
    exchange = e2e.start_exchange(spawner, speed=240)
    requests.put(f"{exchange.url}/sim/v1/faults", json={"spec": "down=1"}, timeout=5).raise_for_status()
    config = tmp_path / "config.toml"
    config.write_text('[daemon]\ndatabase_url = "sqlite+aiosqlite:///var/catalyst.db"\nshutdown_timeout_s = 30\n'
                      "[broker]\nstartup_wait_s = 60\n")
    daemon = e2e.start_daemon(spawner, config, exchange.url)
    try:
        # Before, 1, 2, 4 and 8 s: the broker back after 3 s was found 4 s later, 16 exchange minutes.
        e2e.wait_until(lambda: len(WAITS.findall(daemon.stderr())) >= 4 or daemon.process.poll() is not None, 30,
                       "four tries refused by the outage")
        assert WAITS.findall(daemon.stderr())[:4] == ["1", "1", "1", "1"], daemon.stderr()[-3000:]
        # A wall second apart, they are said at WARNING about twice a minute: the first, then every 30th.
        levels = [line.split()[2] for line in daemon.stderr().splitlines() if WAITS.search(line)]
        assert levels[:4] == ["WARNING", "INFO", "INFO", "INFO"], levels
        requests.put(f"{exchange.url}/sim/v1/faults", json={"spec": ""}, timeout=5).raise_for_status()
        daemon.wait_for(r"system broker \S+ account \S+ status", timeout=10)
    finally:
        daemon.send(signal.SIGTERM)
        assert daemon.wait_exit(timeout=60) == 0, daemon.stderr()[-3000:]
