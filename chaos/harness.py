"""Processes for crash and chaos runs: `catalyst exchange` and `catalyst run`, started, watched, killed, always stopped.

Why separate processes: the broker must outlive the daemon, and `kill -9` must hit the real daemon, not a thread.
Every wait has a deadline; every process started here is stopped here (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import errno
import os
import re
import resource
import shlex
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_FLOOR, Decimal
from pathlib import Path
from typing import Any

import requests

from catalyst.errors import DatabaseError
from catalyst.parent_tie import tied

COMMAND_ENV = "CATALYST_CHAOS_COMMAND"  # e.g. "/opt/catalyst/bin/catalyst" to test an installed build
READY_LINE = re.compile(r"catalyst exchange ready at (http://\S+)")
DAEMON_READY = re.compile(r"cycle \d{4}-\d\d-\d\d #\d+ (starts|resumed in)")
STORAGE_FAULT_EXIT = DatabaseError.exit_code  # catalyst run's exit code when its database refused a write


class HarnessError(RuntimeError):
    """A process did not start, answer or stop in time; the message says which and what it printed last."""


def catalyst_command() -> list[str]:
    """The `catalyst` console command: this interpreter's module unless overridden by the environment."""
    override = os.environ.get(COMMAND_ENV, "").strip()
    return shlex.split(override) if override else [sys.executable, "-m", "catalyst.cli"]


class LineLog:
    """Collects a process's output lines (a reader thread), mirrors them to a file, and lets callers wait for one."""

    def __init__(self, stream: Any, mirror: Path) -> None:
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._closed = False
        self._mirror = mirror.open("a", encoding="utf-8")
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True, name=f"lines-{mirror.name}")
        self._thread.start()

    def _read(self, stream: Any) -> None:
        for raw in stream:
            line = raw.rstrip("\n")
            self._mirror.write(raw)
            self._mirror.flush()
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._mirror.close()

    def wait_for(self, pattern: re.Pattern[str] | str, timeout_s: float, start: int = 0) -> tuple[int, re.Match[str]]:
        """The first line at or after index `start` matching `pattern`: (index, match). HarnessError after timeout."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout_s
        index = start
        with self._cond:
            while True:
                while index < len(self.lines):
                    found = regex.search(self.lines[index])
                    if found:
                        return index, found
                    index += 1
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    raise HarnessError(f"no line matching {regex.pattern!r} within {timeout_s:.0f} s "
                                       f"({'process ended' if self._closed else 'timed out'}); last: "
                                       f"{self.lines[-1] if self.lines else '(nothing)'}")
                self._cond.wait(timeout=min(left, 0.5))

    def wait_closed(self, timeout_s: float) -> bool:
        """True once the process's output has ended and every line of it is read (within `timeout_s`)."""
        with self._cond:
            return self._cond.wait_for(lambda: self._closed, timeout=timeout_s)

    def count(self) -> int:
        with self._cond:
            return len(self.lines)


def _terminate(process: subprocess.Popen[str] | None, timeout_s: float) -> int | None:
    if process is None or process.poll() is not None:
        return None if process is None else process.returncode
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait(timeout=10)


@dataclass
class ExchangeProcess:
    """`catalyst exchange` in its own process on a free port, with its /sim/v1 control routes."""

    folder: Path
    seed: int = 7
    speed: float = 0.0
    start_at: datetime | None = None
    faults: str = ""
    cash: str = "100000"
    latency_ms: float = 0.0
    wash_trade_check: str = "alpaca"  # off | alpaca | strict (catalyst/sim/wash_trade.py)
    participation: str = "0.25"
    exit_shares_lag_s: float = 0.0  # the emulator's order entry lagging a fill (wall seconds)
    trigger_replaces_take_profit: bool = False  # a triggered OCO stop ends its take-profit `replaced`
    ready_timeout_s: float = 60.0
    process: subprocess.Popen[str] | None = None
    url: str = ""
    output: LineLog | None = None
    # A trader's limit orders that ended unfilled (hold_by_hand): nothing of the daemon's, nothing it must record, so
    # left out of the snapshots the checker reads (it would count them `lost`).
    hand_limits: set[str] = field(default_factory=set)

    def start(self) -> ExchangeProcess:
        self.folder.mkdir(parents=True, exist_ok=True)
        command = [*catalyst_command(), "exchange", "--port", "0", "--seed", str(self.seed), "--speed",
                   f"{self.speed:g}", "--cash", self.cash, "--rate-limit", "0"]
        if self.start_at is not None:
            command += ["--start", self.start_at.strftime("%Y-%m-%dT%H:%M:%S")]
        if self.faults:
            command += ["--faults", self.faults]
        if self.latency_ms:
            command += ["--latency-ms", f"{self.latency_ms:g}"]
        if self.wash_trade_check != "alpaca":
            command += ["--wash-trade-check", self.wash_trade_check]
        if self.participation != "0.25":
            command += ["--participation", self.participation]
        if self.exit_shares_lag_s:
            command += ["--exit-shares-lag-s", f"{self.exit_shares_lag_s:g}"]
        if self.trigger_replaces_take_profit:
            command += ["--trigger-replaces-take-profit"]
        # In a session of its own (a kill reaches it alone), tied to this harness (a killed harness leaves no exchange).
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                        env=tied(dict(os.environ)), start_new_session=True)
        self.output = LineLog(self.process.stdout, self.folder / "exchange.log")
        try:
            _, found = self.output.wait_for(READY_LINE, self.ready_timeout_s)
        except HarnessError as exc:
            self.stop()
            raise HarnessError(f"catalyst exchange did not start: {exc}") from None
        self.url = found.group(1)
        return self

    def stop(self) -> None:
        _terminate(self.process, 20)

    def __enter__(self) -> ExchangeProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- /sim/v1 control -------------------------------------------------------------------------------------

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        response = requests.request(method, f"{self.url}/sim/v1/{path}", json=body, timeout=30)
        if response.status_code >= 400:
            raise HarnessError(f"{method} /sim/v1/{path}: HTTP {response.status_code}: {response.text[:200]}")
        return response.json()

    def clock(self) -> datetime:
        return datetime.fromisoformat(self._call("GET", "clock")["timestamp"].replace("Z", "+00:00"))

    def advance(self, seconds: float) -> datetime:
        body = self._call("POST", "clock/advance", {"seconds": seconds})
        return datetime.fromisoformat(body["timestamp"].replace("Z", "+00:00"))

    def jump(self, at: datetime) -> datetime:
        body = self._call("POST", "clock/jump", {"timestamp": at.isoformat()})
        return datetime.fromisoformat(body["timestamp"].replace("Z", "+00:00"))

    def set_price(self, symbol: str, price: str, volume: int | None = None) -> None:
        self._call("POST", "price", {"symbol": symbol, "price": price, "volume": volume})

    def set_faults(self, spec: str) -> None:
        self._call("PUT", "faults", {"spec": spec})

    def drop_streams(self) -> int:
        return int(self._call("POST", "streams/drop")["dropped"])

    def snapshot(self, key_id: str) -> dict[str, Any]:
        snapshot = dict(self._call("GET", f"accounts/{key_id}/snapshot"))
        snapshot["orders"] = [o for o in snapshot.get("orders") or () if not self._ended_unfilled_by_hand(o)]
        return snapshot

    def _ended_unfilled_by_hand(self, order: dict[str, Any]) -> bool:
        return (str(order.get("id")) in self.hand_limits and Decimal(str(order.get("filled_qty") or 0)) == 0
                and order.get("status") in ("canceled", "expired"))

    # --- a trader at the dashboard: Alpaca's own trading API, on the daemon's account ------------------------------

    def move_stops(self, key_id: str, secret: str, share: Decimal) -> int:
        """Move every working stop at the broker `share` further from the market, as a trader does by hand in Alpaca's
        dashboard (PATCH /v2/orders/{id}: the stop ends `replaced`, a new order takes its place). The number moved; a
        replace the faults refuse (a 5xx, a lost reply) is a trader's click that did not take, and is not retried."""
        headers = {"APCA-API-KEY-ID": key_id, "APCA-API-SECRET-KEY": secret}
        try:
            listed = requests.get(f"{self.url}/v2/orders", params={"status": "open", "nested": "true", "limit": 500},
                                  headers=headers, timeout=5)
        except requests.RequestException:
            return 0
        if listed.status_code != 200:
            return 0
        stops = [leg for order in listed.json() for leg in (order, *(order.get("legs") or ()))
                 if leg.get("type") == "stop" and leg.get("status") in ("new", "held", "accepted")]
        moved = 0
        for stop in stops:
            price = Decimal(str(stop["stop_price"]))
            further = price * (1 - share) if stop["side"] == "sell" else price * (1 + share)
            try:
                answer = requests.patch(f"{self.url}/v2/orders/{stop['id']}", headers=headers, timeout=5,
                                        json={"stop_price": str(further.quantize(Decimal("0.01")))})
            except requests.RequestException:
                continue
            moved += answer.status_code == 200
        return moved

    def hold_by_hand(self, key_id: str, secret: str, share: Decimal, hold_s: float, tries: int = 5,
                     beyond: Decimal = Decimal("0.002")) -> int:
        """A trader's limit order on the account's largest position (`place_hand_hold`), cancelled `hold_s` wall
        seconds later (`cancel_hand_hold`). The shares it held (0: none placed)."""
        placed = self.place_hand_hold(key_id, secret, share, tries, beyond)
        if placed is None:
            return 0
        time.sleep(hold_s)
        self.cancel_hand_hold(key_id, secret, placed[0])
        return placed[1]

    def place_hand_hold(self, key_id: str, secret: str, share: Decimal, tries: int = 5,
                        beyond: Decimal = Decimal("0.002")) -> tuple[str, int] | None:
        """A trader's limit order on the account's largest position, as placed in the dashboard: its symbol's working
        orders cancelled (the daemon's OCO among them), then a limit sell (a buy for a short) for `share` of it `beyond`
        the price (0.002: 0.2 %), where it rests and may fill in part. Its broker id and the shares it holds; None if the
        market is closed, nothing is held, or the order was not placed. Only while the market is open; the caller
        must cancel it (`cancel_hand_hold`): a trader's order left working is one the checker at rest cannot judge."""
        headers = {"APCA-API-KEY-ID": key_id, "APCA-API-SECRET-KEY": secret}
        placed: str | None = None  # the order's broker id
        try:
            if (position := self._largest_position_while_open(headers)) is None:
                return None
            symbol, held_qty = position["symbol"], Decimal(str(position["qty"]))
            qty = max(Decimal(1), (abs(held_qty) * share).to_integral_value(ROUND_FLOOR))
            side = "sell" if held_qty > 0 else "buy"
            price = Decimal(str(position["current_price"])) * (1 + beyond if side == "sell" else 1 - beyond)
        except (requests.RequestException, ValueError, KeyError):
            return None
        for _ in range(tries):
            # A client id of the trader's own: a submit whose answer the faults lost may have placed the order, and
            # it is looked up by that id and cancelled like any other (left working, the checker would count it).
            cid = f"hand-{uuid.uuid4().hex[:16]}"
            try:
                self._cancel_every_order_in(symbol, headers)
                answer = requests.post(f"{self.url}/v2/orders", headers=headers, timeout=5, json={
                    "symbol": symbol, "qty": str(qty), "side": side, "type": "limit", "time_in_force": "day",
                    "limit_price": str(price.quantize(Decimal("0.01"))), "client_order_id": cid})
                if answer.status_code == 403:
                    continue  # the daemon's new OCO took the shares first: clicked again
                placed = str(answer.json()["id"]) if answer.status_code == 200 else None
            except (requests.RequestException, ValueError, KeyError):
                pass
            placed = placed or self._placed_by_hand(headers, cid)
            break
        return None if placed is None else (placed, int(qty))

    def cancel_hand_hold(self, key_id: str, secret: str, order_id: str) -> None:
        """The trader cancels the limit order `place_hand_hold` placed, until the broker shows it ended."""
        self._cancel_by_hand({"APCA-API-KEY-ID": key_id, "APCA-API-SECRET-KEY": secret}, order_id)

    def _placed_by_hand(self, headers: dict[str, str], cid: str, tries: int = 20) -> str | None:
        """The broker id of the trader's order with client id `cid`, or None once the broker says it has none."""
        for _ in range(tries):
            try:
                found = requests.get(f"{self.url}/v2/orders:by_client_order_id", headers=headers, timeout=5,
                                     params={"client_order_id": cid})
                if found.status_code == 200:
                    return str(found.json()["id"])
                if found.status_code == 404:
                    return None
            except (requests.RequestException, ValueError, KeyError):
                pass
            time.sleep(0.1)
        raise HarnessError(f"a trader's limit order cid={cid}: the broker never said whether it has it")

    def _largest_position_while_open(self, headers: dict[str, str]) -> dict[str, Any] | None:
        """The account's largest position as /v2/positions lists it; None if none, or if the market is closed: an
        order a trader places after the close is queued for the next open, holding its shares overnight unfilled, a
        trader's working order the checker at rest cannot judge (it counted the order `lost` and the shares it holds
        `unprotected`: chaos, seed 355, a hand sale at a kill moment at 16:05)."""
        clock = requests.get(f"{self.url}/v2/clock", headers=headers, timeout=5)
        if clock.status_code != 200 or clock.json().get("is_open") is not True:
            return None
        held = requests.get(f"{self.url}/v2/positions", headers=headers, timeout=5)
        if held.status_code != 200 or not held.json():
            return None
        return max(held.json(), key=lambda p: abs(Decimal(str(p["qty"]))))

    def _cancel_every_order_in(self, symbol: str, headers: dict[str, str]) -> None:
        """A trader's clicks on every working order of `symbol` (the daemon's OCO among them); not checked: one the
        faults answer with an error (a lost reply closes the connection) is a click that may not have taken."""
        listed = requests.get(f"{self.url}/v2/orders", headers=headers, timeout=5,
                              params={"status": "open", "symbols": symbol, "limit": 500})
        for order in listed.json() if listed.status_code == 200 else ():
            try:
                requests.delete(f"{self.url}/v2/orders/{order['id']}", headers=headers, timeout=5)
            except requests.RequestException:
                continue

    def _cancel_by_hand(self, headers: dict[str, str], order_id: str, tries: int = 20) -> None:
        """Cancel a trader's order until the broker shows it ended (the faults fail some requests, or lose replies)."""
        for _ in range(tries):
            try:
                requests.delete(f"{self.url}/v2/orders/{order_id}", headers=headers, timeout=5)
                state = requests.get(f"{self.url}/v2/orders/{order_id}", headers=headers, timeout=5)
                if state.status_code == 200 and state.json().get("status") in ("canceled", "filled", "expired"):
                    self.hand_limits.add(order_id)
                    return
            except (requests.RequestException, ValueError):
                pass
            time.sleep(0.1)
        raise HarnessError(f"a trader's limit order {order_id} could not be cancelled in {tries} tries")

    def sell_by_hand(self, key_id: str, secret: str, tries: int = 5, share: Decimal = Decimal(1)) -> int:
        """Sell the account's largest position by hand, as a trader does in the dashboard: its symbol's working orders
        cancelled (the daemon's OCO among them), then a market order for all of it, or for `share` of it (at least one
        share; a buy for a short). A sale refused because the daemon's new OCO took the shares first is clicked again,
        up to `tries` times. The shares sold (0: the market closed, nothing held, or every click refused, or one the
        faults answered with an error, not retried)."""
        headers = {"APCA-API-KEY-ID": key_id, "APCA-API-SECRET-KEY": secret}
        try:
            if (position := self._largest_position_while_open(headers)) is None:
                return 0
            symbol, held_qty = position["symbol"], Decimal(str(position["qty"]))
            part = max(Decimal(1), (abs(held_qty) * share).to_integral_value(ROUND_FLOOR))
            qty = held_qty if share >= 1 else part.copy_sign(held_qty)
            for _ in range(tries):
                self._cancel_every_order_in(symbol, headers)
                sold = requests.post(f"{self.url}/v2/orders", headers=headers, timeout=5, json={
                    "symbol": symbol, "qty": str(abs(qty)), "side": "sell" if qty > 0 else "buy", "type": "market",
                    "time_in_force": "day"})
                if sold.status_code != 403:
                    break
        except (requests.RequestException, ValueError, KeyError):
            return 0
        return int(abs(qty)) if sold.status_code == 200 else 0


class HandHolds:
    """A trader's limit orders resting while the run goes on (the daemon killed and restarted under them), each
    cancelled by a thread of its own at its time. `finish` waits for every cancel and raises the first failure."""

    def __init__(self, exchange: ExchangeProcess, key_id: str, secret: str, beyond: Decimal = Decimal("0.002")) -> None:
        self._exchange, self._key_id, self._secret, self._beyond = exchange, key_id, secret, beyond
        self._threads: list[threading.Thread] = []
        self._failures: list[HarnessError] = []

    def place(self, share: Decimal, hold_s: float) -> int:
        """Place one (`ExchangeProcess.place_hand_hold`) and have it cancelled `hold_s` wall seconds later; the shares
        it holds (0: none placed)."""
        placed = self._exchange.place_hand_hold(self._key_id, self._secret, share, beyond=self._beyond)
        if placed is None:
            return 0
        thread = threading.Thread(target=self._cancel_later, args=(placed[0], hold_s), daemon=True,
                                  name=f"hand-hold-{placed[0][:8]}")
        self._threads.append(thread)
        thread.start()
        return placed[1]

    def _cancel_later(self, order_id: str, hold_s: float) -> None:
        time.sleep(hold_s)
        try:
            self._exchange.cancel_hand_hold(self._key_id, self._secret, order_id)
        except HarnessError as exc:
            self._failures.append(exc)

    def finish(self) -> None:
        for thread in self._threads:
            thread.join()
        self._threads.clear()
        if self._failures:
            raise self._failures[0]


class BrokerOutage:
    """The broker's API down for a while (the emulator's `down` fault on top of the run's own faults, every stream
    connection dropped at its start; or `http_5xx=1`, REST alone), ended by a thread of its own while the run goes on.
    One at a time: a new one first waits for the last to end."""

    def __init__(self, exchange: ExchangeProcess, faults: str, fault: str = "down=1") -> None:
        self._exchange, self._faults, self._fault = exchange, faults, fault
        self._thread: threading.Thread | None = None
        self._failure: HarnessError | None = None

    def begin(self, wall_s: float) -> None:
        self.finish()
        self._exchange.set_faults(",".join(item for item in (self._faults, self._fault) if item))
        if self._fault.startswith("down"):
            self._exchange.drop_streams()
        self._thread = threading.Thread(target=self._end_later, args=(wall_s,), daemon=True, name="broker-outage")
        self._thread.start()

    def _end_later(self, wall_s: float) -> None:
        time.sleep(wall_s)
        try:
            self._exchange.set_faults(self._faults)
        except (HarnessError, requests.RequestException) as exc:
            self._failure = HarnessError(f"the broker's outage could not be ended: {exc}")

    def finish(self) -> None:
        """Wait for the outage under way to end; raise if the broker could not be brought back."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._failure is not None:
            failure, self._failure = self._failure, None
            self._exchange.set_faults(self._faults)  # once more: a checker must not read a broker left down
            raise failure


CONFIG_TEMPLATE = """# written by the chaos harness
[daemon]
database_url = "sqlite+aiosqlite:///{database}"
reports_dir = "reports"
state_table_interval_s = 5
shutdown_timeout_s = 10

[broker]
mode = "emulator"
startup_wait_s = 60
timeout_s = 5
"""


@dataclass
class DaemonProcess:
    """`catalyst run --broker-url URL --config <folder>/config.toml`: start, wait until ready, kill -9, restart."""

    folder: Path
    broker_url: str
    ready_timeout_s: float = 90.0
    extra_config: str = ""
    process: subprocess.Popen[str] | None = None
    output: LineLog | None = None
    starts: int = 0
    kills: int = 0
    exit_codes: list[int] = field(default_factory=list)
    file_size_cap: int | None = None  # the running start's (start)
    database_dir: str = ""  # a folder under `folder` for the database (a disk of its own: SmallDisk), or `folder`

    @property
    def config_path(self) -> Path:
        return self.folder / "config.toml"

    @property
    def database_path(self) -> Path:
        return self.folder / self.database_dir / "catalyst.db"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, wait_ready: bool = True, file_size_cap: int | None = None) -> DaemonProcess:
        """`file_size_cap`: no file the daemon writes may grow past this many bytes (RLIMIT_FSIZE): a disk that
        fills up at a moment nobody chose. A write past it fails with EFBIG (CPython ignores SIGXFSZ), which SQLite
        reports as a disk I/O error: the daemon's refused-write path, as with a full disk."""
        if self.running:
            raise HarnessError("the daemon is already running")
        self.folder.mkdir(parents=True, exist_ok=True)
        if not self.config_path.exists():
            database = f"{self.database_dir}/catalyst.db" if self.database_dir else "catalyst.db"
            self.config_path.write_text(CONFIG_TEMPLATE.format(database=database) + self.extra_config,
                                        encoding="utf-8")
        env = tied({k: v for k, v in os.environ.items() if not k.startswith("CATALYST_")})
        command = [*catalyst_command(), "run", "--broker-url", self.broker_url, "--config", str(self.config_path)]
        self.file_size_cap = file_size_cap
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                        cwd=self.folder, env=env, start_new_session=True)
        if file_size_cap is not None:  # set from outside (Linux's prlimit): a preexec_fn is unsafe beside threads
            resource.prlimit(self.process.pid, resource.RLIMIT_FSIZE, (file_size_cap, file_size_cap))
        self.starts += 1
        self.output = LineLog(self.process.stderr, self.folder / f"daemon-{self.starts}.log")
        if wait_ready:
            self.wait_ready()
        return self

    def wait_ready(self) -> None:
        try:
            self.wait_for(DAEMON_READY, self.ready_timeout_s)
        except HarnessError as exc:
            code = self.process.poll() if self.process else None
            raise HarnessError(f"catalyst run (start #{self.starts}) not ready"
                               + (f", exited {code}" if code is not None else "") + f": {exc}") from None

    def wait_for(self, pattern: re.Pattern[str] | str, timeout_s: float, start: int = 0) -> tuple[int, re.Match[str]]:
        if self.output is None:
            raise HarnessError("the daemon was never started")
        return self.output.wait_for(pattern, timeout_s, start)

    def database_size(self) -> int:
        """Bytes of the daemon's database file (its write-ahead log starts over small after a restart's checkpoint)."""
        return self.database_path.stat().st_size if self.database_path.exists() else 0

    def exited_by_itself(self) -> int | None:
        """The exit code if the daemon has stopped without being stopped here (recorded once), else None."""
        if self.process is None or self.process.poll() is None:
            return None
        code = self.process.returncode
        self.exit_codes.append(code)
        self.process = None
        return code

    def kill9(self) -> None:
        """SIGKILL: no handler runs, no buffer is flushed, the lock is left to the OS."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.kill()
        self.exit_codes.append(self.process.wait(timeout=30))
        self.kills += 1

    def restart(self, wait_ready: bool = True) -> DaemonProcess:
        self.kill9()
        return self.start(wait_ready)

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """Graceful stop (SIGTERM), SIGKILL after `timeout_s`."""
        code = _terminate(self.process, timeout_s)
        if code is not None and self.process is not None:
            self.exit_codes.append(code)
        self.process = None
        return code

    def __enter__(self) -> DaemonProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class SmallDisk:
    """A tmpfs of its own (root only), which the harness can fill up as another program would: the kernel then
    refuses every write to it with ENOSPC, which SQLite reports as "database or disk is full"."""

    path: Path
    size_mb: int = 64
    mounted: bool = False

    def mount(self) -> SmallDisk:
        self.path.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={self.size_mb}m", "tmpfs", str(self.path)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            why = done.stderr.strip() or f"mount exited {done.returncode}"
            raise HarnessError(f"cannot mount a tmpfs at {self.path} (needs root): {why}")
        self.mounted = True
        return self

    @property
    def filler(self) -> Path:
        return self.path / "another-program.log"

    def fill(self) -> int:
        """Write until the kernel says the disk is full; the bytes written."""
        chunk, written = b"\0" * 65536, 0
        with open(self.filler, "ab", buffering=0) as file:
            while True:
                try:
                    written += file.write(chunk)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise HarnessError(f"filling {self.path}: {exc}") from None
                    if len(chunk) <= 512:
                        return written
                    chunk = chunk[: len(chunk) // 8]  # the last scraps too

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)

    def unmount(self) -> None:
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.path)], capture_output=True)
            self.mounted = False
