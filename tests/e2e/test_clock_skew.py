"""On the wall clock (paper, live) the schedule is the exchange's, so start-up compares this machine's clock with the
broker's (/v2/clock): far off, the daemon waits for time sync and then refuses in one line (exit 2); a few seconds
off, it follows the broker's clock and says so; close, it says how close. The broker here is `catalyst exchange` at
real speed, started on a time of the test's choosing."""

from __future__ import annotations

import signal
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

ET = ZoneInfo("America/New_York")


def exchange_starting(e2e, spawner, offset: timedelta):
    """An exchange whose clock is `offset` from this machine's. Its clock starts at `--start` once it has loaded,
    which on a busy machine (the tests on 4 workers, two CPUs kept busy) came seconds after the test asked: the
    daemon then met that lag on top of `offset` and said a WARNING where the test waited for the INFO. A lag over
    half a second is taken back by a jump forward (the emulator's clock only moves forward)."""
    start = (datetime.now(ET) + offset).strftime("%Y-%m-%dT%H:%M:%S")
    exchange = e2e.start_exchange(spawner, speed=1, start=start)
    intended = datetime.now(ET) + offset
    if datetime.fromisoformat(exchange.clock()["timestamp"]) < intended - timedelta(seconds=0.5):
        exchange.jump(intended.isoformat())
    return exchange


def paper_daemon(e2e, spawner, tmp_path, url: str, max_skew: str = ""):
    config = e2e.write_config(tmp_path, f'mode = "paper"\nurl = "{url}"\nstream_url = "{url.replace("http", "ws")}/stream"\n'
                                        f"{max_skew}")
    env = e2e.clean_env(APCA_API_KEY_ID="PKCLOCK", APCA_API_SECRET_KEY="not-a-real-secret")
    return spawner.spawn("daemon", ["run", "--config", str(config)], env=env, cwd=tmp_path)


def test_a_machine_clock_minutes_off_the_brokers_is_refused_in_one_line_after_waiting_for_time_sync(
        tmp_path, spawner, e2e):
    exchange = exchange_starting(e2e, spawner, timedelta(minutes=-5))  # the broker 5 min behind: we are ahead
    daemon = paper_daemon(e2e, spawner, tmp_path, exchange.url)
    rc = daemon.wait_exit(timeout=60)
    err = daemon.stderr()
    assert rc == 2, err[-3000:]
    waits = [line for line in err.splitlines() if "waiting for this machine's time sync" in line]
    assert waits and all(" ahead of the broker's (at most 60 s allowed)" in line for line in waits)
    last = err.rstrip().splitlines()[-1]
    assert last.startswith("catalyst: error: this machine's clock is 30") and " s ahead of the broker's " \
        "(broker.max_clock_skew_s = 60): too far off to trust either clock; fix this machine's time sync " \
        "(timedatectl, chronyc tracking), then start again" in last, last
    assert "Traceback" not in err and "not-a-real-secret" not in err


def test_a_machine_clock_close_to_the_brokers_starts_and_says_how_close(tmp_path, spawner, e2e):
    exchange = exchange_starting(e2e, spawner, timedelta(0))
    daemon = paper_daemon(e2e, spawner, tmp_path, exchange.url)
    said = daemon.wait_for(r"INFO +system +\| system this machine's clock is (\d+\.\d) s (behind|ahead of) the "
                           r"broker's\n", timeout=60)
    assert float(said.group(1)) <= 2.0  # the exchange's start is whole seconds: up to 1 s off, by construction
    daemon.send(signal.SIGTERM)
    assert daemon.wait_exit(timeout=60) == 0, daemon.stderr()[-3000:]


def test_a_machine_clock_seconds_off_the_brokers_starts_following_the_brokers_clock(tmp_path, spawner, e2e):
    exchange = exchange_starting(e2e, spawner, timedelta(seconds=20))  # the broker 20 s ahead: we are behind
    daemon = paper_daemon(e2e, spawner, tmp_path, exchange.url)
    said = daemon.wait_for(r"WARNING +system +\| system this machine's clock is (\d+\.\d) s behind the broker's: the "
                           r"entry window and the 15:55 flatten follow the broker's clock meanwhile; fix this "
                           r"machine's time sync \(timedatectl, chronyc tracking\)\n", timeout=60)
    assert 18.0 <= float(said.group(1)) <= 21.0  # the exchange's start is whole seconds
    daemon.send(signal.SIGTERM)
    assert daemon.wait_exit(timeout=60) == 0, daemon.stderr()[-3000:]
