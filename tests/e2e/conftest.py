"""Real processes for the daemon's e2e tests: `catalyst exchange` on port 0 and `catalyst run --broker-url` in temp folders.

Every process writes its stdout/stderr to files (no pipe can fill up and stall it), every wait polls with a deadline,
and every process a test starts is killed at teardown, whatever the test did.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import requests

from catalyst.parent_tie import tied

CATALYST = [sys.executable, "-m", "catalyst.cli"]
PROJECT = Path(__file__).resolve().parents[2]


def clean_env(tie: bool = True, **extra: str) -> dict[str, str]:
    """The test's environment without keys or CATALYST_ overrides that could leak in from the shell; `tie`: for a
    `catalyst` this process starts itself (catalyst/parent_tie.py), not one a program in between starts."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("APCA_", "CATALYST_"))}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return tied(env) if tie else env  # a suite killed from outside does not leave its daemons and exchanges running


def wait_until(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll `condition` until it returns something truthy; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


@dataclass
class Proc:
    """One child process with its output in files."""

    process: subprocess.Popen
    stdout_path: Path
    stderr_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace") if self.stdout_path.exists() else ""

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    def wait_for(self, pattern: str, timeout: float = 30.0, after: int = 0) -> re.Match:
        """The first match of `pattern` in stderr (from character `after` on); fails early if the process died."""
        regex = re.compile(pattern)

        def found() -> re.Match | None:
            match = regex.search(self.stderr(), after)
            if match is None and self.process.poll() is not None:
                match = regex.search(self.stderr(), after)
                if match is None:
                    raise AssertionError(f"process exited {self.process.returncode} before /{pattern}/:\n"
                                         f"{self.stderr()[-3000:]}")
            return match

        return wait_until(found, timeout, f"/{pattern}/ in stderr")

    def send(self, sig: signal.Signals) -> None:
        self.process.send_signal(sig)

    def wait_exit(self, timeout: float = 60.0) -> int:
        return self.process.wait(timeout=timeout)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)


class Spawner:
    """Starts processes and remembers them so the fixture can kill what is still alive."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.started: list[Proc] = []

    def spawn(self, name: str, args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> Proc:
        out, err = self.folder / f"{name}.out", self.folder / f"{name}.err"
        with out.open("wb") as stdout, err.open("wb") as stderr:
            process = subprocess.Popen([*CATALYST, *args], stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL,
                                       env=env or clean_env(), cwd=cwd or self.folder, preexec_fn=_as_from_a_terminal)
        proc = Proc(process, out, err)
        self.started.append(proc)
        return proc

    def kill_all(self) -> None:
        for proc in reversed(self.started):
            proc.kill()


def _as_from_a_terminal() -> None:
    """In the child before exec: SIGINT back to its default. A suite started in the background by a shell without
    job control inherits SIGINT ignored, and Python then never turns it into KeyboardInterrupt, so a test sending
    SIGINT (Ctrl-C) would wait for nothing."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@dataclass
class ExchangeProcess:
    proc: Proc
    url: str

    def clock(self) -> dict[str, Any]:
        return requests.get(f"{self.url}/sim/v1/clock", timeout=5).json()

    def jump(self, timestamp: str) -> None:
        requests.post(f"{self.url}/sim/v1/clock/jump", json={"timestamp": timestamp}, timeout=5).raise_for_status()

    def snapshot(self, key_id: str) -> dict[str, Any]:
        return requests.get(f"{self.url}/sim/v1/accounts/{key_id}/snapshot", timeout=5).json()


def start_exchange(spawner: Spawner, speed: float = 120, start: str = "2024-03-04T09:10:00", seed: int = 7,
                   name: str = "exchange") -> ExchangeProcess:
    proc = spawner.spawn(name, ["exchange", "--port", "0", "--speed", f"{speed:g}", "--start", start,
                                "--seed", str(seed)])
    line = wait_until(lambda: re.search(r"ready at (http://\S+)", proc.stdout()) or proc.process.poll() is not None,
                      60, "the exchange's ready line")
    assert line is not True, f"exchange exited {proc.process.returncode}: {proc.stderr()[-2000:]}"
    return ExchangeProcess(proc, line.group(1))


def write_config(folder: Path, text: str = "", name: str = "config.toml") -> Path:
    """A config for a test daemon: database and logs under `folder`/var, quick state tables, short broker wait."""
    folder.mkdir(parents=True, exist_ok=True)
    base = ('[daemon]\ndatabase_url = "sqlite+aiosqlite:///var/catalyst.db"\nreports_dir = "reports"\n'
            "state_table_interval_s = 1\nshutdown_timeout_s = 30\n")
    path = folder / name
    # Later sections in `text` may add keys to [daemon] only by repeating none: tests pass whole extra sections.
    path.write_text(base + "[broker]\nstartup_wait_s = 5\n" + text)
    return path


def start_daemon(spawner: Spawner, config: Path, broker_url: str | None, *extra: str, name: str = "daemon",
                 env: dict[str, str] | None = None) -> Proc:
    args = ["run", "--config", str(config), *extra]
    if broker_url:
        args += ["--broker-url", broker_url]
    return spawner.spawn(name, args, env=env, cwd=config.parent)


def run_quick_bench(names: tuple[str, ...], out: Path) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """`python -m bench --quick --only NAME ... --out OUT`, which must succeed and leave docs/BENCHMARKS.md alone
    (quick runs never rewrite it); the finished process and each benchmark's JSON result by name."""
    docs = PROJECT / "docs" / "BENCHMARKS.md"
    docs_before = docs.read_text()
    only = [arg for name in names for arg in ("--only", name)]
    done = subprocess.run([sys.executable, "-m", "bench", "--quick", *only, "--out", str(out)], cwd=PROJECT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert docs.read_text() == docs_before
    return done, {name: json.loads((out / f"{name}.json").read_text()) for name in names}


def db_rows(path: Path, sql: str, params: tuple = ()) -> list[sqlite3.Row]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


@pytest.fixture
def spawner(tmp_path: Path) -> Iterator[Spawner]:
    processes = Spawner(tmp_path)
    try:
        yield processes
    finally:
        processes.kill_all()


@pytest.fixture
def exchange(spawner: Spawner) -> ExchangeProcess:
    """`catalyst exchange` at 120x from 09:10 on a Monday: scanning starts within seconds, trading within ~15 s."""
    return start_exchange(spawner)


@dataclass
class TradingDay:
    """Artefacts of one scenario shared by several tests (one real day is too slow to repeat per test)."""

    folder: Path
    config: Path
    db: Path
    exchange: ExchangeProcess
    runs: list[Proc] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)


class ClockPump:
    """Moves a manual (`--speed 0`) exchange clock from the test, so the broker stands still whenever the test says.

    Why: checking "protection stays at the broker" needs a broker that cannot fill or cancel anything between the
    daemon's exit and the look at its orders; an exchange running at 120x would race the check.
    """

    def __init__(self, exchange: ExchangeProcess, step_s: float = 10.0, every_s: float = 0.05) -> None:
        import threading

        self.exchange, self.step_s, self.every_s = exchange, step_s, every_s
        self._running = threading.Event()
        self._quit = threading.Event()
        self._idle = threading.Event()
        self._thread = threading.Thread(target=self._run, name="clock-pump", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        session = requests.Session()
        while not self._quit.is_set():
            if not self._running.wait(timeout=0.1):
                self._idle.set()
                continue
            self._idle.clear()
            try:
                session.post(f"{self.exchange.url}/sim/v1/clock/advance", json={"seconds": self.step_s}, timeout=5)
            except requests.RequestException:
                pass  # the exchange is being stopped
            time.sleep(self.every_s)

    def go(self) -> None:
        self._running.set()

    def hold(self) -> None:
        """Stop the clock and return once no advance is in flight."""
        self._running.clear()
        self._idle.clear()
        wait_until(self._idle.is_set, 10, "the clock pump to stand still")

    def close(self) -> None:
        self._running.clear()
        self._quit.set()
        self._thread.join(timeout=10)


PLANTED_KEY_ID = "PKPLANTED7Q2XW9KEYID"
PLANTED_SECRET = "planted-Secret-4f1c9e2b7a6d3c8e5b0a"
WORKING = ("created", "submitted", "accepted", "partial_fill")


@pytest.fixture(scope="session")
def trading_day(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TradingDay]:
    """One daemon day against `catalyst exchange`, keys from a 0600 --env-file, JSON logs to stderr and a file.

    Run 1: trade until every filled entry is protected, SIGUSR1, edit the config and SIGHUP, a second daemon on
    the same database (refused), `catalyst status`, SIGTERM with the broker's clock held. Run 2: restart on the same
    database, let the clock reach the close and the day's report, SIGTERM.
    """
    folder = tmp_path_factory.mktemp("trading_day")
    spawner = Spawner(folder)
    pump: ClockPump | None = None
    try:
        exchange = start_exchange(spawner, speed=0, start="2024-03-04T09:12:00")
        env_file = folder / "keys.env"
        env_file.write_text(f"# planted keys\nAPCA_API_KEY_ID={PLANTED_KEY_ID}\nexport APCA_API_SECRET_KEY='{PLANTED_SECRET}'\n")
        env_file.chmod(0o600)
        config = write_config(folder, '[logging]\nfile = "var/catalyst.log"\nformat = "text"\n')
        day = TradingDay(folder, config, folder / "var" / "catalyst.db", exchange)
        facts = day.facts
        pump = ClockPump(exchange)
        daemon_args = ("--log-format", "json", "--env-file", str(env_file))

        run1 = start_daemon(spawner, config, exchange.url, *daemon_args, name="run1")
        day.runs.append(run1)
        run1.wait_for(r"doctor pass #1 \(start-up\)", timeout=60)
        pump.go()
        run1.wait_for(r"broker protect-\d+ submit \S+ cid=\S+ (\\u2192|→) (new|accepted)",
                      timeout=90)
        pump.hold()  # nothing fills while we poke at the daemon: the state we stop in is the state we check
        wait_until(lambda: _all_filled_entries_protected(day.db), 30, "protection for every filled entry")

        mark = len(run1.stderr())
        run1.send(signal.SIGUSR1)
        run1.wait_for(r"state thread MainThread", timeout=30, after=mark)
        facts["usr1_from"] = mark

        log_file = folder / "var" / "catalyst.log"
        log_file.rename(folder / "var" / "catalyst.log.before-hup")
        config.write_text(config.read_text().replace("state_table_interval_s = 1", "state_table_interval_s = 0.5")
                          + "[risk]\nmax_open_positions = 4\n")
        mark = len(run1.stderr())
        run1.send(signal.SIGHUP)
        run1.wait_for(r"SIGHUP: log files reopened", timeout=30, after=mark)
        run1.wait_for(r"risk.max_open_positions changed; that takes a restart", timeout=30, after=mark)
        facts["hup_from"] = mark

        second = start_daemon(spawner, config, exchange.url, *daemon_args, name="second")
        facts["second_rc"] = second.wait_exit(timeout=60)
        facts["second_stderr"] = second.stderr()
        facts["run1_pid"] = run1.pid

        facts["status_running"] = subprocess.run([*CATALYST, "status", "--config", str(config)], capture_output=True,
                                                 text=True, timeout=60, env=clean_env())
        facts["held_at"] = exchange.clock()["timestamp"]
        run1.send(signal.SIGTERM)
        facts["run1_rc"] = run1.wait_exit(timeout=60)
        facts["broker_after_stop"] = exchange.snapshot(PLANTED_KEY_ID)
        facts["db_after_stop"] = [dict(r) for r in db_rows(day.db, "SELECT * FROM orders ORDER BY order_id")]
        facts["positions_after_stop"] = [dict(r) for r in db_rows(day.db, "SELECT * FROM positions")]

        run2 = start_daemon(spawner, config, exchange.url, *daemon_args, name="run2")
        day.runs.append(run2)
        run2.wait_for(r"doctor pass #1 \(start-up\)", timeout=60)
        exchange.jump("2024-03-04T15:50:00-05:00")
        pump.go()
        run2.wait_for(r"completed: P&L [^;]+; report", timeout=120)
        pump.hold()
        run2.send(signal.SIGTERM)
        facts["run2_rc"] = run2.wait_exit(timeout=60)
        # For a reader of a failed run: what the tests judged.
        (folder / "facts.json").write_text(json.dumps({k: v for k, v in facts.items() if k != "status_running"},
                                                      default=str, indent=1))
        yield day
    finally:
        if pump is not None:
            pump.close()
        spawner.kill_all()


def _all_filled_entries_protected(db: Path) -> bool:
    """Every open position has a working stop-loss (the daemon protects each fill batch)."""
    if not db.exists():
        return False
    positions = db_rows(db, "SELECT position_id FROM positions WHERE status = 'open'")
    stops = {r["position_id"] for r in db_rows(
        db, f"SELECT position_id FROM orders WHERE role = 'stop_loss' AND status IN ({','.join('?' * len(WORKING))})",
        WORKING)}
    return bool(positions) and all(p["position_id"] in stops for p in positions)


@pytest.fixture(scope="session")
def e2e() -> Any:
    """This module's helpers for the test files (--import-mode=importlib: a conftest cannot be imported by name)."""
    return sys.modules[__name__]
