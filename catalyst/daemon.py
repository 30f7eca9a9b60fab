"""`catalyst run` and `catalyst sim`: the foreground daemon a supervisor manages.

Start order: lock → database → broker endpoint → actor system (writer, workers, router, supervisor, positions
rebuilt from the database) → scanner → doctor (a pass at start-up) → cycle. Stop order is the reverse; protection
orders stay at the broker on a graceful stop. Signals: TERM/INT stop gracefully (during start-up too: see Signals),
HUP reopens logs, USR1 dumps every actor's state and thread stacks into the log, USR2 is the emergency stop
(`catalyst stop --emergency`).
SIGHUP also reloads the safe part of the config (logging.*, daemon.state_table_interval_s); any other change is
named in the log and waits for a restart. A stop that overruns daemon.shutdown_timeout_s exits 1 (one line).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable

import pykka
from loguru import logger
from pydantic import ValidationError

from actors.messages import Flatten, WithdrawEntry
from actors.refs import BUSY, GONE, Answers, tell_if_alive
from catalyst import collector, cpu, stop_request
from catalyst.config import (KEY_ID_ENV, SECRET_KEY_ENV, BrokerSettings, Config, describe_validation_error, load_config,
                             load_secrets, sqlite_path)
from catalyst.domain.orders import ORDER_MACHINE, OrderStatus
from catalyst.domain.cycle import ACTIVE_PHASES, CyclePhase, exchange_time
from catalyst.errors import (
    AccountCannotTrade, ActorDied, BrokerUnavailable, CatalystError, ConfigError, DatabaseError, KeysRefused,
    StopDuringStartup, UsageError,
)
from catalyst.instance import InstanceLock, emergency_path, owner_only_files, real_path
from catalyst.logs import LogFileError, keep_secrets_out, setup_logging
from catalyst.runtime import Endpoint, embedded_exchange, open_endpoint, sim_database_url
from catalyst.status import write_state_snapshot
from catalyst.store.errors import DAMAGED_ADVICE, is_damage, is_held_lock, storage_fault
from catalyst.store.reserve import MB, free_bytes

log = logger.bind(actor="system")
STATE_ANSWER_S = 5.0  # how long the state table waits for the actors' answers, all together
# After an emergency stop is flat: the cycle writes the day's report at its next tick (30 exchange seconds); a report
# that does not come in this long (wall seconds) is not waited for.
EMERGENCY_REPORT_WAIT_S = 120.0
EMERGENCY_BROKER_EVERY_S = 10.0  # while no position actor is left but the broker may still hold something
OPERATOR_EMERGENCY = "operator: catalyst stop --emergency"  # the reason the cycle records and every line says
EMERGENCY_ANSWER_S = 0.5  # the main loop runs every 0.2 s: a busy actor is asked again on the next round
# On a full disk, once the reserve's space recorded what was in flight: how long the daemon waits (wall seconds) for
# every filled share to be under a working stop before it stops anyway, naming what is not.
RESERVE_DRAIN_S = 30.0
# A graceful stop waits this long at most (and a quarter of daemon.shutdown_timeout_s at most) for the entries still
# working to be cancelled and the shares they bought to be under stops: a cancel at Alpaca takes well under a second.
WITHDRAW_WAIT_S = 5.0
WITHDRAW_POLL_S = 0.2
WITHDRAW_LOOK_MIN_S = 0.2
PART_STOP_WAIT_S = 10.0  # the cycle, the doctor, the scanner: each answers its stop in well under a second when idle
STOP_STEP_MIN_S = 0.5  # no step of the stop gets less, however little of the bound is left
# Below this much free space under the database the operator is warned (once, and told when it is back above): a
# trading day writes a few MB, so this is hours of warning before the disk reserve has to be given back.
LOW_DISK_MB = 100
POSITIONS_SETTLE_S = 10.0  # a disk-fault stop reads positions this long after the latest fill (the list can lag it)
POSITIONS_LAG_GRACE_S, POSITIONS_LAG_RECHECK_S = 10.0, 2.0  # a holding a lagging list may show is said once it lasts


def _busy(who: str) -> str:
    return f"unknown (the {who} is busy: no answer in {STATE_ANSWER_S:g} s)"


# What SIGHUP may change in a running daemon; everything else is wired into running actors and needs a restart.
RELOADABLE = ("logging.", "daemon.state_table_interval_s")


def _load(args: argparse.Namespace) -> Config:
    config = load_config(args.config)
    if getattr(args, "broker_url", None):
        # Validated as if the config said it: model_copy skips validators, and this one keeps a paper or emulator
        # config off Alpaca's live API (BrokerSettings._urls_match_the_mode).
        try:
            broker = BrokerSettings.model_validate({**config.broker.model_dump(), "url": args.broker_url})
        except ValidationError as exc:
            problem = describe_validation_error(exc).removeprefix("(top level): ").removeprefix("url: ")
            raise ConfigError(f"--broker-url {args.broker_url!r}: {problem}") from None
        config = config.model_copy(update={"broker": broker})
    if getattr(args, "simulation", False):
        config = simulation_config(config)
    return config


def simulation_config(config: Config) -> Config:
    """`catalyst sim` with a daemon's config: its own log file and reports folder beside the daemon's, as it has its
    own database. Sharing them, a simulated day's lines (`position AUEN#p-2 open → closed`, of the simulation's
    AUEN#p-2) went into the log a trader tails for the live daemon, and its report overwrote the live day's."""
    log_file = config.logging.file
    if log_file is not None:
        log_file = log_file.with_name(f"{log_file.stem}-sim{log_file.suffix}")
    return config.model_copy(update={
        "logging": config.logging.model_copy(update={"file": log_file}),
        "daemon": config.daemon.model_copy(update={"reports_dir": config.daemon.reports_dir / "sim"}),
    })


def _setup_logging(args: argparse.Namespace, config: Config, secrets: Any) -> None:
    """The command line (--log-format, --log-level) wins over the config, also after a SIGHUP reload.
    A log file that cannot be set up as configured is a ConfigError naming the file and the key."""
    try:
        setup_logging(
            level=getattr(args, "log_level", None) or config.logging.level,
            fmt=getattr(args, "log_format", None) or config.logging.format,
            file=config.logging.file, rotation=config.logging.rotation, retention=config.logging.retention,
            secrets=secrets.values(),
        )
    except LogFileError as exc:
        raise ConfigError(f"{args.config}: {exc}") from None


def _check_reports_dir(args: argparse.Namespace, reports_dir: Path) -> None:
    """Now, while the operator watches the start, not at 16:00 when the day's report would be lost."""
    try:
        reports_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{args.config}: daemon.reports_dir: cannot create {reports_dir}: {exc.strerror or exc}") from None
    if not os.access(reports_dir, os.W_OK | os.X_OK):
        raise ConfigError(f"{args.config}: daemon.reports_dir: {reports_dir} is not writable by this user")


def read_env_file(path: Path) -> dict[str, str]:
    """The API keys from a `KEY=VALUE` file (systemd EnvironmentFile style), refused unless only its owner can read it."""
    try:
        mode = path.stat().st_mode & 0o777
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the environment file: {exc.strerror}") from None
    except UnicodeDecodeError as exc:  # never the bytes themselves: they may be a key
        raise ConfigError(f"{path}: environment file is not UTF-8 text (byte {exc.start + 1} is not); save it as "
                          "UTF-8") from None
    if mode & 0o077:
        raise UsageError(f"{path}: environment file has mode {mode:04o}, others could read the keys; "
                         f"run `chmod 600 {path}`")
    values: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.removeprefix("export ").partition("=")
        if not sep or not name.strip().isidentifier():
            # Never echo the line: it may hold a key.
            raise UsageError(f"{path}:{number}: expected NAME=VALUE")
        values[name.strip()] = value.strip().strip("\"'")
    return {k: v for k, v in values.items() if k in (KEY_ID_ENV, SECRET_KEY_ENV)}


def prepare(args: argparse.Namespace) -> tuple[Config, Any]:
    """Load and check everything a run needs before any actor starts."""
    owner_only_files()
    env_file = getattr(args, "env_file", None)
    secrets = load_secrets({**os.environ, **read_env_file(env_file)} if env_file else None)
    # Before the config: an error naming a URL with the keys in it (--broker-url) is printed without them.
    keep_secrets_out(secrets.values())
    config = _load(args)
    _setup_logging(args, config, secrets)
    _check_reports_dir(args, config.daemon.reports_dir)
    if config.risk.allow_short:
        # A review: the option reads as "trade shorts", yet the scanner ranks long setups only (bull flags, gappers).
        log.warning(f"system risk.allow_short = true in {config.source}: the scanner finds long setups only, so no "
                    "short is entered; a short position on the account (placed by hand, adopted by the doctor) is "
                    "protected and managed like a long either way")
    if getattr(args, "simulation", False):
        return config, secrets  # `catalyst sim` trades at its own embedded exchange, whatever the config's broker
    if config.broker.mode in ("paper", "live") and not secrets.present:
        raise UsageError(f"broker.mode = {config.broker.mode} needs APCA_API_KEY_ID and APCA_API_SECRET_KEY in the environment")
    if config.broker.mode == "live" and not (config.broker.live_confirmed and getattr(args, "i_mean_live", False)):
        raise UsageError("broker.mode = live needs broker.live_confirmed = true in the config AND --i-mean-live")
    if embedded_exchange(config) and secrets.present:
        # An operator moving to paper who forgot the mode would believe the day's trades were at Alpaca (a review).
        log.warning(f"system broker.mode = emulator in {config.source}: the keys in the environment "
                    f"({KEY_ID_ENV}, {SECRET_KEY_ENV}) are not used, the day trades at the built-in exchange; set "
                    "broker.mode = \"paper\" to trade on Alpaca's paper account")
    return config, secrets


@dataclass
class Daemon:
    config: Config
    endpoint: Endpoint
    database_url: str
    days: int | None = None  # stop after this many completed days (simulation)
    stop_event: threading.Event = field(default_factory=threading.Event)
    completed: list[tuple[date, Path]] = field(default_factory=list)
    parts: list[Any] = field(default_factory=list)
    reload_requested: bool = False
    full_disk_since: float | None = None  # monotonic time the writer first wrote on the disk reserve's space
    emergency_flatten: Any = None  # the cycle's answer to the operator's emergency stop, once asked
    calendar: Any = None  # the broker's TradingCalendar, once started: the cycle's and the position actors'
    emergency_requested: bool = False  # set by USR2's handler; the main loop asks the cycle (no pykka in a handler)
    emergency_flat_since: float | None = None  # monotonic: no live position and none at the broker since then
    emergency_said: str = ""  # what the wait for flat last said, so it is said once, not every 0.2 s
    emergency_broker_asked: float = 0.0  # monotonic: the broker is asked what it holds at most every 10 s
    emergency_held_since: float | None = None  # monotonic: no actor left, yet the broker said it holds something
    emergency_resumed: str | None = None  # the reason in `<db>.emergency` found at start: a stop to go on with
    emergency_done: bool = False  # flat and stopping: `_serve` removes the marker once the stop went through
    emergency_reason: str = ""  # the operator's emergency stop under way, for a day that begins before it is done
    emergency_day_closing: bool = False  # a day begun after the stop was asked: told to close, once
    fault_at_stop: str | None = None  # a write the database refused while the daemon stopped (stop)
    _said_withdrawing: bool = False  # a graceful stop waits for entries being cancelled: said once
    disk_low: bool = False  # the last check_disk_room found less than LOW_DISK_MB free

    def start(self) -> Daemon:
        from actors.cycle import CycleActor
        from actors.system import TradingSystem, alpaca_factories
        from catalyst.broker.ratelimit import RateLimiter
        from catalyst.hooks import CycleHooks, MarketHours, TradingCalendar
        from catalyst.store.errors import DatabaseFileError

        ep = self.endpoint
        accelerated = ep.simulated and ep.clock.speed > 1
        limiter = RateLimiter(0 if accelerated else self.config.broker.rate_limit_per_minute)
        self.reconnect_listeners: list[Any] = []  # the doctor, once started (CycleHooks): also asked by positions
        broker_factory, stream_factory = alpaca_factories(
            ep.key_id, ep.secret, ep.trading_url, ep.stream_url, paper=ep.paper, data_url=ep.data_url,
            data_feed=self.config.broker.data_feed,
            timeout_s=self.config.broker.timeout_s, limiter=limiter, reconnect_listeners=self.reconnect_listeners,
        )
        self.broker = broker_factory("daemon")
        self._check_broker()
        stop_request.checkpoint()
        self.calendar = TradingCalendar(self.broker)  # the cycle's, and the position actors' (MarketHours)
        hours = MarketHours(self.calendar, ep.clock)
        hours.closed()  # the week's calendar read here, not by the first position actor that asks
        self.system = TradingSystem(self.database_url, broker_factory, stream_factory, ep.clock,
                                    synchronous=self.config.daemon.sqlite_synchronous,
                                    defer_report_sync=self.config.daemon.sqlite_defer_report_sync,
                                    router_settings=self.config.router,
                                    disk_reserve_mb=self.config.daemon.disk_reserve_mb, market_closed=hours.closed,
                                    broker_drain_s=_withdrawal_bound_s(self.config.daemon.shutdown_timeout_s),
                                    doctor_listeners=self.reconnect_listeners)
        self.parts.append(self.system)  # before it starts: a stop during start-up then stops what it started
        try:
            self.system.start()
        except DatabaseFileError as exc:  # corrupt, locked by another process, too new: exit 3, not "internal"
            raise DatabaseError(str(exc)) from None
        stop_request.checkpoint()  # not a cycle (its first entries) for a daemon asked to stop
        self.hooks = CycleHooks(self, broker_factory)
        self.cycle = CycleActor.start(self.system.writer, self.system, ep.clock, self.config.cycle.schedule(),
                                      self.hooks.as_dict())
        self.parts.append(self.cycle)
        return self

    def _check_broker(self) -> None:
        """Wait for the broker with backoff (a supervisor restart loop helps nobody); refused keys fail at once."""
        from tenacity import RetryError, Retrying, retry_if_exception, stop_after_delay, wait_exponential

        from catalyst.broker.calls import said_through_an_outage
        from catalyst.broker.errors import AuthError, BrokerError, MalformedResponse
        from catalyst.clock import wall_seconds

        where = self.endpoint.trading_url or "Alpaca"

        def what_failed(exc: BaseException | None) -> str:
            # An answer that cannot be read came from a broker that answers: not "unreachable" (a proxy's page, an
            # account field in a form the daemon does not read), though it is waited out the same way.
            if isinstance(exc, MalformedResponse):
                return f"broker at {where} answers the account read with what the daemon cannot read"
            return f"broker unreachable at {where}"

        def before_sleep(state: Any) -> None:
            # About twice a minute at WARNING, the tries between at INFO: at 240x the tries are a wall second apart.
            said = said_through_an_outage(state.attempt_number, every=max(1, round(30 / longest_s)))
            log.log("WARNING" if said else "INFO", f"system {what_failed(state.outcome.exception())} "
                    f"({state.outcome.exception()}); retrying in {state.next_action.sleep:.0f} s")

        # At most 30 s between tries, on the exchange's clock, and at least 1 s on the wall: against an emulator at
        # 240x, 30 wall seconds were two exchange hours, and a restart inside a broker outage missed the entry window.
        longest_s = max(1.0, wall_seconds(self.endpoint.clock, 30))
        try:
            for attempt in Retrying(
                # tenacity has no negation of a retry condition: refused keys must not be retried.
                retry=retry_if_exception(lambda exc: isinstance(exc, BrokerError) and not isinstance(exc, AuthError)),
                wait=wait_exponential(multiplier=1, min=1, max=longest_s),
                stop=stop_after_delay(self.config.broker.startup_wait_s), before_sleep=before_sleep, reraise=True,
                sleep=stop_request.pause,
            ):
                with attempt:
                    account = self.broker.account()
        except AuthError as exc:
            raise KeysRefused(f"the broker refused our keys: {exc}; set APCA_API_KEY_ID and APCA_API_SECRET_KEY to "
                              f"this account's keys ({self.endpoint.mode}), then start again") from None
        except (BrokerError, RetryError) as exc:
            raise BrokerUnavailable(f"{what_failed(exc)} for {self.config.broker.startup_wait_s:.0f} s: "
                                    f"{exc}") from None
        log.info(f"system broker {self.endpoint.mode} account {account.account_number} status {account.status} "
                 f"equity {account.equity} buying power {account.buying_power}")
        refused = account.why_no_orders()
        if refused is not None:  # every entry, stop and exit would be refused: trading on it helps nobody
            raise AccountCannotTrade(f"the broker account {account.account_number} cannot place orders ({refused}); "
                                     "no entry, stop or exit would be accepted, and stops already at the broker stay: "
                                     "settle it with Alpaca, then start again")
        self._check_clock()

    def _check_clock(self) -> None:
        """On the wall clock (paper, live), this machine's time against the broker's: the entry window and the 15:55
        flatten are the exchange's times, so a clock minutes off would flatten after the close. Past
        CLOCK_SKEW_WARN_S the daemon's clock follows the broker's (WallClock.follow; the doctor keeps it so all day).
        Beyond broker.max_clock_skew_s, wait for time sync (a machine just booted may not have it yet) with backoff
        within broker.startup_wait_s, then refuse: exit 2, something is badly wrong with this machine's time."""
        from tenacity import Retrying, retry_if_result, stop_after_delay, wait_exponential

        from catalyst.broker.errors import BrokerError
        from catalyst.clock import (
            CLOCK_READING_MAX_S, CLOCK_SKEW_WARN_S, FOLLOWING_BROKER, clock_skew_s, describe_skew,
        )

        clock, limit = self.endpoint.clock, self.config.broker.max_clock_skew_s
        if clock.speed != 1:  # an emulator's accelerated or manual time, which the daemon follows: nothing to compare
            return

        took_s = [0.0]  # the last reading's round trip

        def skew() -> float:
            before = clock.now()
            broker_at = self.broker.clock().at
            after = clock.now()
            took_s[0] = (after - before).total_seconds()
            return clock_skew_s(before, broker_at, after)

        def before_sleep(state: Any) -> None:
            log.warning(f"system {describe_skew(state.outcome.result())} (at most {limit:g} s allowed): waiting for "
                        f"this machine's time sync; checking again in {state.next_action.sleep:.0f} s")

        try:
            measured: float = Retrying(retry=retry_if_result(lambda s: abs(s) > limit),
                                       wait=wait_exponential(multiplier=1, min=1, max=30),
                                       stop=stop_after_delay(self.config.broker.startup_wait_s),
                                       before_sleep=before_sleep, sleep=stop_request.pause,
                                       retry_error_callback=lambda state: state.outcome.result())(skew)
        except BrokerError as exc:  # it answered the account a moment ago: say so and go on, the schedule still runs
            log.warning(f"system could not read the broker's clock to compare with this machine's: {exc}")
            return
        if abs(measured) > limit:
            raise UsageError(f"{describe_skew(measured)} (broker.max_clock_skew_s = {limit:g}): too far off to "
                             "trust either clock; fix this machine's time sync (timedatectl, chronyc tracking), then "
                             "start again")
        if abs(measured) <= CLOCK_SKEW_WARN_S:
            log.info(f"system {describe_skew(measured)}")
        elif took_s[0] <= CLOCK_READING_MAX_S and hasattr(clock, "follow"):
            clock.follow(measured)
            log.warning(f"system {describe_skew(measured)}: {FOLLOWING_BROKER}")
        else:  # a reading too slow to correct by: the doctor's next passes look again
            log.warning(f"system {describe_skew(measured)} (fix its time sync: the schedule runs on it)")

    def day_completed(self, day: date, report: Path) -> None:
        self.completed.append((day, report))
        if self.days is not None and len(self.completed) >= self.days:
            self.stop_event.set()

    def dead_actors(self) -> list[str]:
        """The daemon's own actors (not the position actors, which the supervisor rebuilds) that are no longer alive.
        pykka stops an actor whose handler raises and only logs it; one of these gone (the router, the writer,
        the cycle, …) leaves a daemon that looks alive and trades wrongly or not at all."""
        dead = []
        for part in self.parts:
            refs = part.refs if hasattr(part, "refs") else [part]
            dead.extend(ref.actor_class.__name__ for ref in refs if not ref.is_alive())
            stream = getattr(part, "stream", None)  # the trading system's: fills reach the router through it
            if stream is not None and not stream.running:
                dead.append("trade stream")
        return dead

    def emergency_stop(self, reason: str, resumed: bool = False) -> None:
        """The operator's emergency stop: no new entry, the cycle cancels entries and flattens every position, and
        the daemon stops (exit 0, which no supervisor restarts) once none is left at the broker and the day's report
        is written, so it does not trade again the next morning on its own. Kept in `<db>.emergency` until done: a
        daemon restarted meanwhile (a crash, a supervisor) goes on with it. The daily loss limit's emergency stop is
        the cycle's alone: flat for the day, trading the next."""
        from actors.cycle import EmergencyStop

        marker = emergency_marker(self.database_url)
        if marker is None:
            log.warning("system emergency stop not remembered across a restart: the database is not an SQLite file, "
                        "so there is no <db>.emergency beside it")
        elif not resumed:
            # Said if it fails, and the stop goes on: only a restart before it is done would forget it.
            _keep_emergency(marker, reason, "emergency stop not remembered across a restart")
        log.critical(f"system emergency stop ({reason}){' resumed after a restart' if resumed else ''}: no new "
                     "entry, every position is flattened, then the daemon stops; start it again to trade")
        self.emergency_flat_since, self.emergency_said = None, ""
        self.emergency_reason, self.emergency_day_closing = reason, False
        try:
            self.emergency_flatten = self.cycle.ask(EmergencyStop(reason=reason), block=False)
        except pykka.ActorDeadError:  # the main loop's actor check stops the daemon on it (exit 1) at once
            log.critical("system emergency stop not done: the cycle actor is gone, so nothing was flattened; the "
                         "daemon stops on it, and its restart goes on with the emergency stop")

    def _stop_once_flat(self, system: Any) -> None:
        """Stop (exit 0) once the cycle has asked every position to flatten, no position actor is left, the broker
        holds no share and no working order, and the day's report is written (or EMERGENCY_REPORT_WAIT_S has
        passed). A position the market cannot take out now (closed) keeps the daemon running until it can."""
        try:
            self.emergency_flatten.get(timeout=0)
        except pykka.Timeout:
            return  # the cycle has not told every position yet: one not yet told would be left behind
        except Exception as exc:  # noqa: BLE001 - the cycle's own error: the positions are flattened all the same
            log.error(f"system emergency stop: the cycle failed ({type(exc).__name__}: {exc}); asking every live "
                      "position to flatten directly")
            states = _live_position_states(system)
            for ref, _ in [] if isinstance(states, str) else states:
                tell_if_alive(ref, Flatten(reason=f"emergency: {OPERATOR_EMERGENCY}"))
            self.emergency_flatten = pykka.ThreadingFuture()
            self.emergency_flatten.set(None)  # asked: only the wait for flat is left
            return
        live = Answers(EMERGENCY_ANSWER_S).answer(system.supervisor.live_count())
        if live is BUSY or live is GONE or live:
            self.emergency_flat_since = self.emergency_held_since = None
            return
        now = time.monotonic()
        if self.emergency_flat_since is None:
            if now - self.emergency_broker_asked < EMERGENCY_BROKER_EVERY_S:
                return  # not a broker call every 0.2 s of the main loop: the rate limit is the positions' too
            self.emergency_broker_asked = now
            held = self._held_at_broker()
            if held is None:
                # Unknown is not flat (a review: one 429 on this read ended the stop, exit 0 and its marker gone, with
                # an order still working at the broker): asked again in EMERGENCY_BROKER_EVERY_S.
                return
            if held:  # an adopted or rebuilt position's actor may come; the doctor adopts what is ours
                if self.emergency_held_since is None:
                    self.emergency_held_since = now
                if now - self.emergency_held_since < POSITIONS_LAG_GRACE_S:
                    # Alpaca's positions list can lag its orders for several seconds after a fill (ALPACA.md §7), and
                    # this first read comes right after the last exit filled: asked again soon, said only if it lasts
                    # (a review: "the broker holds IRMT 256, …; close them at the broker" over shares just sold).
                    self.emergency_broker_asked = now - EMERGENCY_BROKER_EVERY_S + POSITIONS_LAG_RECHECK_S
                    return
                marker = emergency_marker(self.database_url)
                self._say_once(f"system emergency stop waiting: no position actor is left, but the broker holds "
                               f"{held}; it stops once they are gone (close them at the broker; or, to give up the "
                               f"emergency stop, `catalyst stop` and remove {marker})")
                return
            self.emergency_flat_since, self.emergency_held_since = now, None
        phase = self._cycle_phase()
        if phase is None:
            return  # the cycle is busy (writing the report, a doctor pass): not counted against the wait
        if phase in ACTIVE_PHASES and not self.emergency_day_closing:
            # A day that began after the stop was asked (asked at night, flat at the next open once the positions kept
            # overnight were sold): closed as the stop closes an active day, with the stop on its row and its report.
            # It was left in its phase for good, and its P&L in no report (a review).
            from actors.cycle import EmergencyStop

            self.emergency_day_closing = True
            log.info("system emergency stop: flat; the day begun since is closed too, with its report, before stopping")
            tell_if_alive(self.cycle, EmergencyStop(reason=self.emergency_reason or OPERATOR_EMERGENCY))
        reported = phase not in ACTIVE_PHASES and phase is not CyclePhase.CLOSED
        if not reported and now - self.emergency_flat_since < EMERGENCY_REPORT_WAIT_S:
            self._say_once("system emergency stop: flat; waiting for the day's report before stopping")
            return
        log.critical("system emergency stop done: no position left at the broker, every entry cancelled; stopping "
                     "(start the daemon again to trade)")
        self.emergency_flatten, self.emergency_done = None, True
        self.stop_event.set()

    def _say_once(self, line: str) -> None:
        if line != self.emergency_said:
            self.emergency_said = line
            log.warning(line)

    def _held_at_broker(self) -> str | None:
        """The shares and working orders the broker still has, in a few words; "" when none, None when it cannot be
        asked (said once per kind of failure)."""
        from catalyst.broker.errors import BrokerError

        try:
            positions = [p for p in self.broker.positions() if p.qty]
            working = self.broker.list_orders(status="open")
        except BrokerError as exc:
            self._say_once(f"system emergency stop waiting: the broker could not be asked what it holds "
                           f"({type(exc).__name__}); asking again every {EMERGENCY_BROKER_EVERY_S:g} s, it stops once "
                           f"the broker says it holds nothing ({exc})")
            return None
        held = [f"{p.symbol} {p.qty}" for p in positions] + [f"{len(working)} working orders"] * bool(working)
        return ", ".join(held)

    def _cycle_phase(self) -> CyclePhase | None:
        """The cycle's day's phase (idle when it has none): a closed day waits for its report (the emergency stop
        closes the day; its report comes at the cycle's next tick); None while the cycle is too busy to say."""
        try:
            state = Answers(EMERGENCY_ANSWER_S).answer(self.cycle.proxy().state())
        except pykka.ActorDeadError:
            return None  # the actor check stops the daemon on it
        return CyclePhase(state.get("phase", "idle")) if isinstance(state, dict) else None

    def check_actors(self) -> None:
        """Raise ActorDied if one of the daemon's actors died: exiting lets the supervisor restart the daemon,
        which rebuilds every position from the database (protection stays at the broker meanwhile). First, raise
        DatabaseError if the disk under the database refused a write (the writer's StorageHealth): the actors whose
        writes fail die of it one by one, and the cause, not the first actor to die, is what the operator must read."""
        system = self._trading_system()
        fault = system.storage.fault if system is not None else None
        if fault is not None:
            cause = "the other program's lock is gone" if is_held_lock(fault) else "the disk is fixed"
            log.critical(f"system stopping: the database refused a write ({fault}); nothing more can be recorded, "
                         "so no order can be sent. Stops already at the broker stay; a fill not yet recorded is "
                         f"protected by the catch-up of the restart once {cause}")
            raise DatabaseError(self._storage_failed(fault))
        reserve_used = system.storage.reserve_used if system is not None else None
        if reserve_used is not None:
            self._stop_once_protected(system, reserve_used)
        dead = self.dead_actors()
        if dead:
            log.critical(f"system actor {', '.join(dead)} died (its error is logged above): stopping so the "
                         "supervisor restarts the daemon; protection stays at the broker, a restart rebuilds from "
                         "the database")
            raise ActorDied(f"actor {', '.join(dead)} died unexpectedly (its error is in the log); restart the "
                            "daemon: it rebuilds every position from the database")
        if self.emergency_flatten is not None and system is not None:
            self._stop_once_flat(system)

    def check_disk_room(self) -> None:
        """Warn before the disk under the database fills up, not only once it has: free space below LOW_DISK_MB is said
        once (and again once it is back above), at start-up and with each state table."""
        database = sqlite_path(self.database_url)
        if database is None:
            return
        free = free_bytes(database.parent)
        if free is None:
            return  # the writer meets whatever is wrong with the folder, and says so
        free_mb = free / MB
        low = free_mb < LOW_DISK_MB
        if low and not self.disk_low:
            log.warning(f"system the disk under {database} has only {free_mb:.1f} MB free (under {LOW_DISK_MB} MB): "
                        "free disk space; once it is full the daemon records what is in flight on its disk reserve "
                        "and stops")
        elif self.disk_low and not low:
            log.info(f"system the disk under {database} has {free_mb:,.1f} MB free again")
        self.disk_low = low

    def _stop_once_protected(self, system: Any, reserve_used: str) -> None:
        """The disk is full and the reserve's space let the writes in flight through: open nothing more (the cycle's
        entries_allowed hook says no), wait until every filled share is under a working stop, then stop with exit 3
        as on any refused write. Bounded by RESERVE_DRAIN_S: the freed space is shared with whatever filled the disk,
        and a position whose stop does not come is named at the broker in the exit line instead."""
        now = time.monotonic()
        if self.full_disk_since is None:
            self.full_disk_since = now
            log.critical(f"system {reserve_used}: no new position will be opened; cancelling the entries still "
                         f"working, stopping once every filled share is under a working stop (at most "
                         f"{RESERVE_DRAIN_S:g} s)")
            states = _live_position_states(system)
            _cancel_working_entries(states)
        else:
            states = _live_position_states(system)
        waiting = _positions_not_yet_protected(states)
        if waiting and now - self.full_disk_since < RESERVE_DRAIN_S:
            return
        where = sqlite_path(self.database_url) or self.database_url
        if waiting:
            log.critical(f"system stopping on a full disk after {RESERVE_DRAIN_S:g} s with {', '.join(waiting)} "
                         "not yet under a working stop")
        else:
            log.critical("system stopping on a full disk: every filled share of the live positions is under a working "
                         "stop")
        raise DatabaseError(f"{where}: {reserve_used}, so the daemon stopped opening positions and then stopped "
                            f"(protection stays at the broker; {self._shares_without_a_stop()}); free disk space, "
                            "then restart: it sets the reserve aside again, rebuilds every position from the database "
                            "and catches up with the broker")

    def _storage_failed(self, fault: str) -> str:
        where = sqlite_path(self.database_url) or self.database_url
        stopped = (f"{where}: {fault}: nothing more could be recorded, so the daemon stopped (protection stays at the "
                   f"broker; {self._shares_without_a_stop()}); ")
        if is_damage(fault):  # the file itself, not the disk's space: a restart would rebuild from the damage
            return stopped + f"the database file is damaged: {DAMAGED_ADVICE}"
        if is_held_lock(fault):  # not the disk: another program's lock (a sqlite3 shell left inside a transaction)
            return stopped + ("close the program holding it (a sqlite3 shell left inside a transaction: end it with "
                              "ROLLBACK or quit it), then restart: it rebuilds every position from the database and "
                              "catches up with the broker")
        return stopped + ("free disk space or repair the disk, then restart: it rebuilds every position from the "
                          "database and catches up with the broker")

    def _shares_without_a_stop(self) -> str:
        """With the database refusing writes no order may be sent (order first), so a fill whose stop was not yet
        placed stays unprotected until the disk is fixed and the daemon restarted: ask the broker (a read needs no
        row) which shares its working stops leave uncovered, and name each, so the operator can protect them by
        hand meanwhile. One line for the exit message; a CRITICAL line per position."""
        from catalyst.broker.reports import order_views, position_view
        from catalyst.domain.reconcile import BrokerView, uncovered_at_broker

        broker = getattr(self, "broker", None)
        if broker is None:
            return "which shares have no stop is for you to check at the broker"
        self._let_the_positions_list_catch_up(broker)
        try:
            orders = broker.list_orders(status="open", nested=True)
            positions = broker.positions()
        except Exception as exc:  # noqa: BLE001 - stopping goes on; the operator is told to look instead
            log.error(f"system could not ask the broker which shares have no stop ({type(exc).__name__}: {exc}): "
                      "check every position there")
            return "the broker could not be asked which shares have no stop: check every position there"
        view = BrokerView(orders=tuple(v for _, v in order_views(orders)),
                          positions=tuple(position_view(p) for p in positions))
        uncovered = uncovered_at_broker(view)
        for shares in uncovered:
            log.critical(f"system position {shares.symbol} at the broker: {shares.describe()}; no order can be sent "
                         "while the database refuses writes: protect it by hand at the broker, or fix the disk and "
                         "restart")
        if not positions:
            return "no position is held at the broker"
        if not uncovered:
            held = f"{len(positions)} positions" if len(positions) > 1 else "1 position"
            return f"every share of the {held} at the broker is under a working stop"
        return "NOT under a working stop at the broker: " + "; ".join(s.describe() for s in uncovered)

    def _let_the_positions_list_catch_up(self, broker: Any) -> None:
        """Alpaca's positions list can lag its orders for several seconds after a fill (ALPACA.md §7), and a disk fault
        is most often met by a fill's own commit: read at once, the list said "no position is held at the broker"
        over shares just bought with no stop, and "protect it by hand" over shares a stop had just sold (reviews).
        So, when the latest fill is younger than POSITIONS_SETTLE_S (exchange time), wait out the rest of it first
        (wall seconds, at most POSITIONS_SETTLE_S): the stop is on its way out anyway, and sends nothing meanwhile."""
        clock = getattr(getattr(self, "endpoint", None), "clock", None)
        now = clock.now() if clock is not None else datetime.now(timezone.utc)
        try:
            fills = broker.fill_activities(after=now - timedelta(seconds=POSITIONS_SETTLE_S))
        except Exception as exc:  # noqa: BLE001 - stopping goes on; the operator is told what could not be read
            log.error(f"system could not read the broker's latest fills ({type(exc).__name__}: {exc}): its positions "
                      "list may not show them yet; check the account's latest orders too")
            return
        if not fills:
            return
        latest = max(fill.at for fill in fills)
        wait_s = min(POSITIONS_SETTLE_S - (now - latest).total_seconds(), POSITIONS_SETTLE_S)
        if wait_s > 0:
            log.info(f"system waiting {wait_s:.1f} s before asking which shares have no stop: the broker's positions "
                     f"list can lag its fills by several seconds, and one came at {exchange_time(latest):%H:%M:%S}")
            time.sleep(wait_s)

    def dump_state(self) -> None:
        """SIGUSR1: every thread's stack, then every actor's state. The stacks come first and always: an operator
        sends USR1 when something looks stuck, and a stuck actor's stack is what says why it does not answer."""
        names = {t.ident: t.name for t in threading.enumerate()}
        for ident, frame in sys._current_frames().items():
            where = " <- ".join(f"{f.name}:{f.lineno}" for f in reversed(traceback.extract_stack(frame)[-4:]))
            log.info(f"state thread {names.get(ident, ident)}: {where}")
        asked = Answers(STATE_ANSWER_S)
        try:
            cycle, refs = self.cycle.proxy().state(), asked.answer(self.system.supervisor.live_refs())
            positions = [] if refs is BUSY else [state for _, state in asked.states(refs)]
            cycle_state = asked.answer(cycle)
            log.info(f"state cycle {_busy('cycle') if cycle_state is BUSY else cycle_state}")
            if refs is BUSY:
                log.info(f"state positions {_busy('position supervisor')}")
            for state in positions:
                log.info(f"state position {_busy('position actor') if state is BUSY else state}")
        except Exception as exc:  # noqa: BLE001 - an actor gone (a stop under way): the stacks are out already
            log.warning(f"state dump stopped: {type(exc).__name__}: {exc}")

    def log_state_table(self) -> None:
        """The periodic `state` lines and the snapshot `catalyst status` shows. Every actor is asked at once and
        waited for up to STATE_ANSWER_S in all; one that is busy (the doctor in a pass whose broker read hangs, the
        cycle in a calendar read) is named in the table as busy, and the rest is shown: a busy doctor used to hide
        every position's line behind `state table skipped: Timeout: 5 seconds`."""
        asked = Answers(STATE_ANSWER_S)
        asking = "the cycle"
        try:
            cycle_state = self.cycle.proxy().state()
            doctor_halt = self.hooks.doctor.halt_reason
            asking = "the position supervisor"
            refs = asked.answer(self.system.supervisor.live_refs())
            asking = "the position actors"
            positions = [] if refs is BUSY else [state for _, state in asked.states(refs)]
            asking = "the cycle"
            cycle = asked.answer(cycle_state)
            if cycle is GONE:
                raise pykka.ActorDeadError("the cycle actor has stopped")
            # Entries stop for the cycle's own halt (the loss limit) or the doctor's: either is "halted".
            halted = cycle["halted"] if cycle is not BUSY else None
            if not halted:
                asking = "the doctor"
                doctor = asked.answer(doctor_halt)
                if doctor is GONE:
                    raise pykka.ActorDeadError("the doctor actor has stopped")
                # Never "no" on a guess: a busy cycle may have halted for the loss limit.
                halted = _busy("doctor") if doctor is BUSY else doctor or (_busy("cycle") if cycle is BUSY else None)
        except Exception as exc:  # noqa: BLE001 - an actor gone (a stop under way) must not kill the reporter
            log.warning(f"state table skipped: asking {asking}: {type(exc).__name__}: {exc}")
            return
        now = self.endpoint.clock.now()
        phase = _busy("cycle") if cycle is BUSY else cycle["phase"]
        known = [p for p in positions if p is not BUSY]
        live = _busy("position supervisor") if refs is BUSY else str(len(positions)) + (
            f" ({len(positions) - len(known)} busy: no answer in {STATE_ANSWER_S:g} s)" if len(known) < len(positions) else "")
        correction_s = getattr(self.endpoint.clock, "correction_s", 0.0)  # the wall clock following the broker's
        following = f" clock=broker's ({correction_s:+.1f} s on this machine's)" if correction_s else ""
        log.info(f"state {now:%Y-%m-%d %H:%M} phase={phase} live={live} halted={halted or 'no'}{following}")
        db_path = sqlite_path(self.database_url)
        if db_path is not None:
            try:
                write_state_snapshot(db_path, {"at": now.isoformat(), "phase": phase, "halted": halted,
                                               "positions": known})
            except OSError as exc:  # `catalyst status` shows an older one; the table below is what counts
                log.warning(f"state snapshot for `catalyst status` not written: {exc.strerror or exc}")
        for p in known:
            log.info(f"state   {p['position']:<14} {p['status']:<8} qty={p['qty']:<6} avg={p['avg']:<8} "
                     f"protected={p['protected']}")

    def _reopen_running_logs(self, args: argparse.Namespace, secrets: Any) -> None:
        try:
            _setup_logging(args, self.config, secrets)
        except ConfigError as exc:  # the file it wrote to has gone bad meanwhile (a removed mount, permissions)
            log.error(f"system SIGHUP: log file not reopened, logging to stderr only: {exc}")

    def reload(self, args: argparse.Namespace, secrets: Any) -> None:
        """SIGHUP: reopen log files and apply the safe part of a re-read config; name what needs a restart."""
        try:
            fresh = _load(args)
        except CatalystError as exc:
            self._reopen_running_logs(args, secrets)
            log.error(f"system SIGHUP: config not reloaded, the running one stays: {exc}")
            return
        daemon_part = self.config.daemon.model_copy(
            update={"state_table_interval_s": fresh.daemon.state_table_interval_s})
        waiting = [key for key in _changed(self.config.model_dump(), fresh.model_dump()) if not key.startswith(RELOADABLE)]
        candidate = self.config.model_copy(update={"logging": fresh.logging, "daemon": daemon_part})
        try:
            _setup_logging(args, candidate, secrets)
        except ConfigError as exc:  # e.g. a new logging.file nobody may write: keep logging where it did
            self._reopen_running_logs(args, secrets)
            log.error(f"system SIGHUP: config not reloaded, the running one stays: {exc}")
            return
        self.config = candidate
        log.info(f"system SIGHUP: log files reopened, logging.* and daemon.state_table_interval_s reloaded "
                 f"(state table every {daemon_part.state_table_interval_s:g} s)")
        if waiting:
            log.warning(f"system SIGHUP: {', '.join(waiting)} changed; that takes a restart")

    def _withdraw_working_entries(self, system: Any, bound_s: float | None = None) -> None:
        """A graceful stop leaves the stops at the broker, but an entry still working there would go on filling with
        no one to protect what it buys until the next start (a review: a TERM while a limit entry had filled 283 of
        1,789 shares left 1,506 without a stop). Every live position is asked to cancel its entry's rest (one without
        a working entry does nothing: asking each, a busy one is not left out), and any found later with an entry
        working not yet asked (an actor rebuilt after a crash) is asked then. The stop waits, within its bound, until
        each entry seen working has ended with the shares it bought under a working stop, and names any that has not."""
        if bound_s is None:
            bound_s = _withdrawal_bound_s(self.config.daemon.shutdown_timeout_s)
        deadline = time.monotonic() + bound_s
        refs = Answers(min(STATE_ANSWER_S, bound_s)).answer(system.supervisor.live_refs())
        if refs is BUSY or refs is GONE:
            log.warning("system stopping: the live positions could not be listed (the position supervisor is "
                        f"{'busy' if refs is BUSY else 'gone'}); an entry of theirs still working that fills while the "
                        "daemon is down has no stop until it starts again")
            return
        asked = {ref.actor_urn for ref in refs if tell_if_alive(ref, WithdrawEntry(reason=STOP_WITHDRAWAL))}
        withdrawal = _Withdrawal(asked)
        waiting = withdrawal.look(_live_position_states(system, within_s=_look_window_s(deadline)))
        while waiting:
            if time.monotonic() >= deadline:
                log.warning(f"system stopping with {', '.join(waiting)} not settled after {bound_s:g} s (an entry "
                            "still working at the broker, or shares it bought not yet under a stop): what it fills "
                            "while the daemon is down has no stop until it starts again, which protects it")
                return
            if not self._said_withdrawing:
                self._said_withdrawing = True
                log.info(f"system stopping: asked every position to cancel the rest of its working entry; waiting up "
                         f"to {bound_s:g} s for {', '.join(waiting)} to have no entry working and every share bought "
                         "under a stop")
            time.sleep(WITHDRAW_POLL_S)
            waiting = withdrawal.look(_live_position_states(system, within_s=_look_window_s(deadline)))
        if self._said_withdrawing:
            log.info("system stopping: every working entry ended, every share bought is under a working stop")

    def _trading_system(self) -> Any:
        """The part that owns the writer's StorageHealth (TradingSystem), if started."""
        return next((part for part in self.parts if hasattr(part, "storage")), None)

    def stop(self, graceful: bool = False) -> None:
        """Every part in reverse order. `graceful` (a TERM, the days done): once the cycle has stopped (no entry
        opens after it), the entries still working at the broker are cancelled first (_withdraw_working_entries)."""
        system = self._trading_system()
        if system is not None:
            system.entries_closed.set()  # first: an entry the router has not sent yet is never sent
        before = system.storage.fault if system is not None else None
        budget = _StopBudget(self.config.daemon.shutdown_timeout_s)
        for part in reversed(self.parts):
            if graceful and part is system and before is None:
                self._withdraw_working_entries(system, budget.share(WITHDRAW_WAIT_S))
            name = type(part).__name__ if hasattr(part, "refs") else part.actor_class.__name__
            log.info(f"system stopping {name}")  # one line each, so the reverse order can be read in the log
            try:
                if part is system:
                    system.broker_drain_s = budget.share(system.broker_drain_s)
                    part.stop()
                elif hasattr(part, "refs"):
                    part.stop()
                else:
                    # The cycle, the doctor, the scanner: one waiting on a broker that does not answer (a doctor's
                    # read in an outage) is left behind after its share (a daemon thread: the process still exits),
                    # instead of 10 s each out of the stop's bound (a review: 24.4 s, exit 1).
                    part.stop(block=True, timeout=budget.share(PART_STOP_WAIT_S))
            except pykka.Timeout:
                log.warning(f"system stopping: {name} is still busy (a broker call, or the day's report?); left "
                            "behind, as after a kill: the next start's doctor pass reconciles what it was doing")
            except Exception as exc:
                log.warning(f"system stopping {type(part).__name__}: {type(exc).__name__}: {exc}")
        self.parts.clear()
        # A write refused during the stop itself (a TERM while another program held the lock, a disk filling up): the
        # main loop that says so has ended, and the stop would read as clean, exit 0 (a review). One refused before
        # the stop was said by the loop (check_actors) already.
        after = system.storage.fault if system is not None else None
        self.fault_at_stop = after if before is None else None


class _StopBudget:
    """The stop's bound (daemon.shutdown_timeout_s) shared out as it goes: each step that may wait for the broker
    gets at most its own cap and a quarter of what is left, so the steps after it (the router and the writer, which
    record what the last calls did) still have most of the rest. Fixed quarters of the whole added up past the bound
    when an earlier step used its own (a review)."""

    def __init__(self, bound_s: float) -> None:
        self.deadline = time.monotonic() + bound_s

    def share(self, cap_s: float) -> float:
        return round(max(min(cap_s, (self.deadline - time.monotonic()) / 4), STOP_STEP_MIN_S), 1)


def _withdrawal_bound_s(shutdown_timeout_s: float) -> float:
    """Inside the stop's own bound (daemon.shutdown_timeout_s), with room for the rest of the stop: in a broker
    outage a cancel hangs for broker.timeout_s, and the workers' stop waits for it (a review: 10 s here took the stop
    to 20.2 s, the watchdog's exit 1)."""
    return min(WITHDRAW_WAIT_S, shutdown_timeout_s / 4)


def _entry_working(state: dict[str, Any]) -> bool:
    return any(view.partition(":")[0] == "entry" and OrderStatus(view.partition(":")[2]) not in ORDER_MACHINE.terminal
               for view in (state.get("orders") or {}).values())


STOP_WITHDRAWAL = "the daemon is stopping"


def _look_window_s(deadline: float) -> float:
    """How long a look at the positions may wait for their answers: what is left of the bound, at least enough for an
    actor with messages queued to answer (a review: a last look of 1 ms named every position "busy")."""
    return max(min(STATE_ANSWER_S, deadline - time.monotonic()), WITHDRAW_LOOK_MIN_S)


class _Withdrawal:
    """The entries a stopping daemon asked to be cancelled, by entry order id: a position's label changes from o-N to
    p-N with its first fill and its actor with a rebuild, its entry does neither (two reviews)."""

    def __init__(self, asked_actors: set[str]) -> None:
        self.asked_actors = asked_actors
        self.seen_working: set[int | str] = set()  # entry order ids, or actor urns for an entry not yet named

    def look(self, states: list[tuple[Any, Any]] | str) -> list[str]:
        """The positions not settled yet: an entry working, or still being made (pending, its row not yet named);
        shares an entry seen working bought not all under a working stop (the OCO of a piece that filled as the
        cancel went out), unless flattening; or no answer from an actor asked. An actor with an entry working not
        asked yet is asked now."""
        if isinstance(states, str):
            return [] if states.endswith("(gone)") else [states]
        waiting = []
        for ref, state in states:
            if state is BUSY:
                if ref.actor_urn in self.asked_actors:
                    waiting.append("a position actor that does not answer")
                continue
            # An entry is followed by its order id; without one (a row not yet named), by its actor.
            entry = state.get("entry") or ref.actor_urn
            being_made = state.get("entry") is None and state.get("status") == "pending"  # cancelled once named
            if being_made or _entry_working(state):
                if ref.actor_urn not in self.asked_actors:  # rebuilt after a crash, say: a new actor
                    self.asked_actors.add(ref.actor_urn)
                    tell_if_alive(ref, WithdrawEntry(reason=STOP_WITHDRAWAL))
                self.seen_working.add(entry)
                waiting.append(state["position"])
            elif (entry in self.seen_working and not state.get("flattening")
                  and Decimal(state.get("protected_at_broker", state["protected"])) < Decimal(state["qty"])):
                waiting.append(state["position"])
        return waiting


def _live_position_states(system: Any, within_s: float = STATE_ANSWER_S) -> list[tuple[Any, Any]] | str:
    """(ref, state or BUSY) of every live position; a phrase instead if the supervisor does not say which are live."""
    asked = Answers(within_s)
    try:
        refs = asked.answer(system.supervisor.live_refs())
    except Exception:  # noqa: BLE001 - a supervisor gone: the exit line asks the broker instead
        return "the position supervisor (gone)"
    if refs is BUSY or refs is GONE:
        return f"the position supervisor ({'busy' if refs is BUSY else 'gone'})"
    return asked.states(refs)


def _cancel_working_entries(states: list[tuple[Any, Any]] | str) -> None:
    """A pending position's entry still working at the broker could fill after the daemon stops on a full disk, and
    stay without a stop until the disk is freed: cancel it now (a flatten asked of a pending position cancels its
    entry, and sells at once whatever fills anyway, once protected)."""
    if isinstance(states, str):
        return
    for ref, state in states:
        if state is not BUSY and state["status"] == "pending":
            tell_if_alive(ref, Flatten(reason="the disk under the database is full: no new position"))


def _positions_not_yet_protected(states: list[tuple[Any, Any]] | str) -> list[str]:
    """The live positions holding shares their working stops do not all cover yet, or whose entry is still working
    (being cancelled), or that do not answer."""
    if isinstance(states, str):
        return [] if states.endswith("(gone)") else [states]
    return [_busy("position actor") if state is BUSY else state["position"] for _, state in states
            if state is BUSY or state["status"] == "pending" or Decimal(state["protected"]) < Decimal(state["qty"])]


def emergency_marker(database_url: str) -> Path | None:
    path = sqlite_path(database_url)
    return emergency_path(path) if path is not None else None


def _read_reason(marker: Path) -> str:
    try:
        return marker.read_text().strip() or OPERATOR_EMERGENCY
    except OSError:
        return OPERATOR_EMERGENCY


class Signals:
    """The daemon's signal handlers, installed before start-up begins so a supervisor's stop is never the default
    action (death without a word). Until `running`, TERM/INT unwind start-up (StopDuringStartup) and HUP/USR1/USR2
    are kept for when it is up; after, TERM/INT set the stop event the main loop waits on."""

    def __init__(self, stop_event: threading.Event) -> None:
        self.stop_event = stop_event
        self.daemon: Daemon | None = None
        self.stopped_by: str | None = None  # the signal that stopped the daemon once up, said by the main loop
        self.reload_requested = False
        self.emergency_requested = False

    def install(self, while_importing: list[int] | None = None) -> Signals:
        """`while_importing`: the HUP/USR1/USR2 the command line's handlers kept before these (catalyst.cli), acted
        on as if they came now. Read after these are installed: a signal is then either in it or handled here."""
        handlers = {signal.SIGHUP: self._reopen, signal.SIGUSR1: self._dump, signal.SIGUSR2: self._emergency}
        stop_request.keep_discarded_stops_quiet()
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
        for signum in while_importing or ():
            handlers[signum](signum, None)
        return self

    def running(self, daemon: Daemon) -> None:
        """Start-up is done: what was asked meanwhile applies now."""
        self.daemon = daemon
        daemon.reload_requested = daemon.reload_requested or self.reload_requested
        daemon.emergency_requested = daemon.emergency_requested or self.emergency_requested

    def _stop(self, signum: int, _frame: Any) -> None:
        # No log line here: the main thread may be inside a log call (loguru refuses it, printing a traceback);
        # whoever catches the exception says it, and once up the main loop does (`stopped_by`).
        # No Event.set() once up either: the main loop may be inside the Event's own lock (stop_event.wait), and the
        # handler, on the same thread, would wait for it forever. The loop looks at `stopped_by` after each wait.
        name = signal.Signals(signum).name
        if self.daemon is None:
            # Kept for the process too (stop_request): Python discards this exception inside a gc callback.
            if stop_request.first(name):
                self.stop_event.set()  # (nothing waits on it during start-up)
                raise StopDuringStartup(name)
            return
        self.stopped_by = self.stopped_by or name

    def _reopen(self, _signum: int, _frame: Any) -> None:
        # Handled by the main loop, not here: reconfiguring loguru inside a handler could meet its own sink lock.
        if self.daemon is None:
            self.reload_requested = True
        else:
            self.daemon.reload_requested = True

    def _dump(self, _signum: int, _frame: Any) -> None:
        if self.daemon is not None:
            threading.Thread(target=self.daemon.dump_state, name="state-dump", daemon=True).start()

    def _emergency(self, _signum: int, _frame: Any) -> None:
        # A flag only, as HUP's: logging or a pykka call in a handler can deadlock on a lock the interrupted main
        # thread holds (loguru refuses it outright), and the emergency would be lost.
        if self.daemon is None:
            self.emergency_requested = True  # applied once it is up
        else:
            self.daemon.emergency_requested = True


def _serve(args: argparse.Namespace, config: Config, secrets: Any, open_ep: Callable[[], Endpoint], database_url: str,
           days: int | None, what: str) -> Daemon:
    signals = Signals(threading.Event()).install(getattr(args, "signals_while_importing", None))
    stop_request.checkpoint()  # a TERM while the modules loaded whose exception Python discarded
    # Before any thread of ours starts (they inherit it); every thread already running is moved too.
    placement = cpu.apply(config.daemon.cpu)
    (log.info if placement.as_asked else log.warning)(f"system runs {placement}")
    # The lock comes before the broker: a second daemon, or an unusable database folder, must say so at once,
    # not after waiting broker.startup_wait_s for a broker.
    db_path = sqlite_path(database_url)
    lock = InstanceLock(db_path).acquire(what) if db_path else None
    try:
        if not embedded_exchange(config):  # (the embedded exchange's database is wiped, whatever it holds)
            _check_database_before_the_broker(database_url)
        endpoint = open_ep()
    except BaseException:
        if lock:
            _remember_an_early_emergency(signals, database_url)
            lock.release()
        raise
    daemon = Daemon(config, endpoint, database_url, days=days, stop_event=signals.stop_event)
    served = False  # until the main loop ends on its stop event: a stop on an error is not graceful
    try:
        if endpoint.exchange is not None and db_path is not None:
            _wipe(db_path, lock)
        marker = emergency_marker(database_url)
        if marker is not None and marker.exists():
            # Before start-up: the cycle's first tick must already find entries refused.
            daemon.emergency_resumed, daemon.emergency_requested = _read_reason(marker), True
        daemon.start()
        stop_request.checkpoint()
        signals.running(daemon)
        # After start-up, as what it made lives as long as the process.
        log.info(f"system {collector.settle()}")
        daemon.check_disk_room()
        last_table = time.monotonic()
        while not _stop_seen(daemon, signals):
            if daemon.emergency_requested:
                resumed, daemon.emergency_resumed = daemon.emergency_resumed, None
                daemon.emergency_stop(resumed or OPERATOR_EMERGENCY, resumed=resumed is not None)
                daemon.emergency_requested = False  # after: entries stay refused until the cycle has the stop
            daemon.check_actors()
            if daemon.reload_requested:
                daemon.reload_requested = False
                daemon.reload(args, secrets)
            if time.monotonic() - last_table >= daemon.config.daemon.state_table_interval_s:
                last_table = time.monotonic()
                daemon.log_state_table()
                daemon.check_disk_room()
        asked = signals.stopped_by or stop_request.asked()  # the latter: one whose exception Python discarded
        if asked is not None:
            log.info(f"system {asked}: graceful stop (protection stays at the broker)")
        daemon.stop_event.set()
        served = True
    except StopDuringStartup as stop:
        log.info(f"system {stop} during start-up: stopping what has started (protection stays at the broker)")
        raise
    except Exception as exc:  # a write the disk refused at start-up (a restore, the doctor's first pass): exit 3
        fault = storage_fault(exc)
        if fault is None:
            raise
        raise DatabaseError(daemon._storage_failed(fault)) from None
    finally:
        watchdog = _shutdown_watchdog(daemon.config.daemon.shutdown_timeout_s)
        daemon.stop(graceful=served)
        # Said before the broker's connection closes: the line names the shares no stop covers.
        refused = daemon._storage_failed(daemon.fault_at_stop) if daemon.fault_at_stop is not None else None
        _stop_leftover_actors()
        endpoint.close()
        marker = emergency_marker(database_url)
        if daemon.emergency_done and marker is not None:
            marker.unlink(missing_ok=True)  # only now: a stop that did not go through leaves it for the restart
        if lock:
            _remember_an_early_emergency(signals, database_url)
            lock.release()
        watchdog.cancel()
    if refused is not None:  # reached only by a stop that was otherwise clean
        raise DatabaseError(refused)
    return daemon


def _stop_seen(daemon: Daemon, signals: Signals) -> bool:
    """The main loop's wait: the daemon's own stop (the days done, an emergency done: stop_event, set by another
    thread) at once, for a simulation must not run on into the next day (a plain 0.2 s sleep created its cycle row);
    a stop signal within 0.2 s, through the plain flag its handler sets (an Event's lock it must not take, see
    Signals._stop)."""
    return daemon.stop_event.wait(timeout=0.2) or signals.stopped_by is not None


def _remember_an_early_emergency(signals: Signals, database_url: str) -> None:
    """An emergency stop (USR2) asked during a start that then failed (a broker unreachable: exit 4, restarted) was a
    flag in memory only, and the next start traded: it is written to `<db>.emergency`, as one under way is, so the
    next start goes on with it. Not once the daemon was up (its own stop keeps or removes the marker)."""
    marker = emergency_marker(database_url)
    if not signals.emergency_requested or signals.daemon is not None or marker is None or marker.exists():
        return
    if _keep_emergency(marker, OPERATOR_EMERGENCY, "emergency stop asked during a start that failed, and not "
                       "remembered (send it again once the daemon is up)"):
        log.critical(f"system emergency stop asked during a start that failed: kept in {marker}, the next start goes "
                     "on with it (no new entry, every position flattened)")


def keep_an_emergency_asked_before_the_handlers(args: argparse.Namespace) -> None:
    """USR2, then TERM, while the modules loaded or the config was read: the stop ended the start before `_serve`,
    whose cleanup keeps an early emergency for the next start (_remember_an_early_emergency), and the emergency was
    lost without a word (a review). Kept here the same way, in `<db>.emergency`."""
    try:
        config = _load(args)
    except CatalystError:  # a config it cannot read: the next start refuses it and says why, emergency or not
        return
    database_url = sim_database_url(config) if embedded_exchange(config) else config.daemon.database_url
    marker = emergency_marker(database_url)
    if marker is None or marker.exists():
        return
    try:
        marker.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # a first start stopped before making it
    except OSError:
        pass  # said by _keep_emergency's line
    if _keep_emergency(marker, OPERATOR_EMERGENCY, "emergency stop asked during a start that was then stopped, and "
                       "not remembered (send it again once the daemon is up)"):
        print(f"catalyst: emergency stop asked during a start that was then stopped: kept in {marker}, the next "
              "start goes on with it (no new entry, every position flattened)", file=sys.stderr)


def _keep_emergency(marker: Path, reason: str, unkept: str) -> bool:
    """`<db>.emergency` written with its reason; False, said on an ERROR line starting `unkept`, if it cannot be."""
    try:
        marker.write_text(reason)
        return True
    except OSError as exc:
        log.error(f"system {unkept} ({marker}: {exc.strerror or exc})")
        return False


def _stop_leftover_actors() -> None:
    """The last guard of the process's exit: an actor thread still running after the daemon's stop (a part that lost
    track of it) would keep the process alive after it said it stopped, and a supervisor never restarts a daemon
    that has not exited. Stopped here, and named, so the leak is seen and fixed."""
    # Not a broker worker the stop left waiting for a broker that does not answer: on a daemon thread, it does not
    # hold the exit, and waiting for it here would take the stop past its bound (TradingSystem._stop_broker_workers).
    left = [ref for ref in pykka.ActorRegistry.get_all() if ref.is_alive() and not ref.actor_class.use_daemon_thread]
    if not left:
        return
    names = ", ".join(sorted({ref.actor_class.__name__ for ref in left}))
    count = f"{len(left)} actors" if len(left) > 1 else "1 actor"
    log.warning(f"system {count} still running after the stop ({names}): stopping {'them' if len(left) > 1 else 'it'} "
                "so the process can exit")
    try:
        pykka.ActorRegistry.stop_all(block=True, timeout=10)
    except pykka.Timeout:  # one still busy (a write waiting out another program's lock): the rest of the stop goes on
        log.warning(f"system actors still running 10 s after being asked to stop "
                    f"({', '.join(sorted({r.actor_class.__name__ for r in left if r.is_alive()}))}); the process exits "
                    "without them")


def _check_database_before_the_broker(database_url: str) -> None:
    """A database the daemon would refuse (not SQLite, damaged, another application's, made by a newer Catalyst, a
    schema not its revision's) must say so now, not after broker.startup_wait_s of waiting for a broker as "broker
    unreachable". Read-only: the migration itself still comes after the broker answers."""
    from catalyst.store.errors import DatabaseFileError
    from catalyst.store.migrate import verify

    path = sqlite_path(database_url)
    if path is not None and path.is_dir():
        raise DatabaseError(f"{path}: is a directory, not a database file")
    if path is not None and path.exists() and not os.access(path, os.W_OK):
        # Met otherwise at the first write, after the broker's wait and a doctor pass, as a disk fault whose advice
        # (free disk space) was wrong (a review).
        mode = path.stat()
        raise DatabaseError(f"{path}: this user (uid {os.getuid()}) may not write the database file (mode "
                            f"{mode.st_mode & 0o777:o}, owner uid {mode.st_uid}): run the daemon as its owner, or give "
                            "it the file (chown, or chmod u+w)")
    try:
        verify(database_url)
    except DatabaseFileError as exc:
        raise DatabaseError(str(exc)) from None
    except OSError as exc:
        raise DatabaseError(f"{path}: cannot read the database file: {exc.strerror or exc}") from None


def _shutdown_watchdog(bound_s: float) -> threading.Timer:
    """A stop must end within daemon.shutdown_timeout_s so the supervisor is not left waiting; past it, exit 1."""
    def overrun() -> None:
        log.error(f"system stop did not finish within daemon.shutdown_timeout_s = {bound_s:g} s; exiting now "
                  "(protection stays at the broker; the next start reconciles)")
        os._exit(1)

    timer = threading.Timer(bound_s, overrun)
    timer.daemon = True
    timer.start()
    return timer


def _changed(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    keys: list[str] = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            keys += _changed(a, b, f"{prefix}{key}.")
        elif a != b:
            keys.append(f"{prefix}{key}")
    return keys


def run_daemon(args: argparse.Namespace) -> int:
    config, secrets = prepare(args)
    database_url = sim_database_url(config) if embedded_exchange(config) else config.daemon.database_url
    durability = config.daemon.sqlite_synchronous
    if durability == "FULL" and config.daemon.sqlite_defer_report_sync:
        durability += " for order rows, broker reports deferred"
    log.info(f"system catalyst run: config {config.source}, broker {config.broker.mode}, database {database_url}, "
             f"sync {durability}")
    _serve(args, config, secrets, lambda: open_endpoint(config, secrets), database_url, None, "catalyst run")
    log.info("system stopped cleanly")
    return 0


def run_sim(args: argparse.Namespace) -> int:
    config, secrets = prepare(args)
    database_url = sim_database_url(config)
    daemon_database = config.database_path
    # Resolved: a symlink naming the daemon's database is the daemon's database.
    if not embedded_exchange(config) and daemon_database is not None and _same_file(sqlite_path(database_url),
                                                                                     daemon_database):
        # The simulation's database is emptied at every run: never the daemon's own, holding its orders.
        raise ConfigError(f"{config.source}: daemon.database_url is {config.database_path}, the file `catalyst sim` "
                          "empties at every run: give the daemon's database another name")
    config = config.model_copy(update={"broker": config.broker.model_copy(update={"mode": "emulator", "url": None})})
    daemon = _serve(args, config, secrets, lambda: open_endpoint(config, secrets, speed=args.speed, seed=args.seed),
                    database_url, args.days, f"catalyst sim --days {args.days}")
    for day, report in daemon.completed:
        print(f"{day}: report {report}")
    if len(daemon.completed) < args.days:
        print(f"stopped after {len(daemon.completed)} of {args.days} days")
        return 1
    return 0


def _same_file(a: Path | None, b: Path) -> bool:
    """One file under two names: a symlink, a `..` path or a hard link (which only the inode tells)."""
    if a is None:
        return False
    try:
        return real_path(a) == real_path(b) or os.path.samefile(a, b)
    except OSError:  # one of them does not exist yet: not the same file
        return False


def _wipe(path: Path, lock: InstanceLock | None = None) -> None:
    """The embedded exchange's accounts are new every run, so the simulation's database is too (under the lock), and
    an emergency stop a killed run left under way (its positions were at an exchange that is gone)."""
    for suffix in ("", "-wal", "-shm", ".emergency"):
        # Removed, not emptied: a file with another name too (a hard link) keeps its data under that name (a review:
        # truncating it emptied a daemon's database linked as the simulation's).
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    if lock is not None:
        lock.hold_database_file_again()  # the new file, not the one just removed, is the one a link must not reach
    log.info(f"system simulation database {path} starts empty (the embedded exchange's accounts are new too)")
