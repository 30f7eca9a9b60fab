"""`python -m chaos`: seeded simulated days with broker faults and random `kill -9`s of the daemon, then the checker.

Each run: `catalyst exchange` (own process, faults on, accelerated clock) and `catalyst run --broker-url` against it;
the daemon is killed at random moments of the trading day and restarted at once; right after each kill the database it
left is checked against the broker for what must hold at any moment (every order it sent has its row, nothing doubled,
no fill recorded twice). With `--disk-full N`, N of those restarts cap the size of every file the daemon writes a
little above its database file's: a disk that fills up at a moment nobody chose; the daemon must stop by itself (exit
3, its error line naming what is and is not under a stop) and is checked like a killed one, then started as usual.
With `--fill-disk N` the database lives on a tmpfs of its own (root only), and N kill moments fill that disk instead,
as another program would: the daemon must record what is in flight on its disk reserve and stop by itself, every
share at the broker under a working stop (checked against the broker); the disk is then freed and the daemon started.
When the day is over the faults go off, the daemon gets one last quiet restart (its start-up doctor pass reconciles),
and the invariant checker compares its database with the emulator's truth. One summary line; exit 1 on any violation, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import random
import re
import sqlite3
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Sequence

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from chaos.harness import (STORAGE_FAULT_EXIT, BrokerOutage, DaemonProcess, ExchangeProcess, HandHolds, HarnessError,
                           SmallDisk)
from chaos.invariants import Report, Violation, check_files, check_mid_flight, read_database, unprotected_at_broker
from catalyst.runtime import SIM_SECRET
from catalyst.sim.faults import FaultPlan, FaultSpecError
from catalyst.sim.market import EXCHANGE_TZ
from catalyst.sim.wash_trade import WASH_TRADE_CHECKS, WashTradeCheck

DEFAULT_FAULTS = "http_5xx=0.05,reply_lost=0.05,drop=0.05,duplicate=0.05,reorder=0.05,disconnect=0.01"
SIM_KEY_ID = "CATALYST-SIM"
# The day is done when the cycle completes, or when a restart after the last kill finds it completed already.
DAY_DONE = r"cycle \d{4}-\d\d-\d\d (#\d+ resumed in )?completed"
# What a daemon stopped by a refused write must say last (catalyst.daemon's storage fault exit).
STORAGE_FAULT_LINE = re.compile(r"^catalyst: error: .+: nothing more could be recorded, so the daemon stopped "
                                r"\(protection stays at the broker; .+\); free disk space or repair the disk")
DISK_HEADROOM_KB = (16, 256)  # a capped start's files may grow this far past its database file (drawn per start)
# Kill moments a daemon on a filling disk is left running through, waiting for its refused write: between two kills
# its write-ahead log may not grow enough to meet the cap (outside the entry window, at 12 kills a day).
DISK_FULL_PATIENCE = 2
# What a daemon whose disk filled up must say last: its disk reserve recorded what was in flight, and every share at the
# broker is under a working stop (catalyst.daemon's _stop_once_protected).
RESERVE_STOP_LINE = re.compile(r"^catalyst: error: .+: the disk under .+ is full .+; its [\d.]+ MB reserve was given "
                               r"back to record what was in flight, so the daemon stopped opening positions and then "
                               r"stopped \(protection stays at the broker; (?P<held>.+)\); free disk space")
RESERVE_USED = "for a full disk: gave back the"  # the writer's ERROR line when it writes on the reserve's space
FILL_PATIENCE_S = 60.0  # wall seconds a daemon on a disk just filled has to meet it in a write and stop


class ChaosSettings(BaseModel):
    """One chaos campaign. Defaults are the full on-demand run; `short()` is the CI one."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    runs: int = Field(default=1, ge=1)
    kills: int = Field(default=24, ge=0)  # per run
    seed: int = 1
    faults: str = DEFAULT_FAULTS
    speed: float = Field(default=240.0, gt=0)  # exchange seconds per wall second
    # the broker a network away: every request, reply and stream event this late, one way (real ms); more kills
    # land while the broker has acted and the daemon has not heard yet
    latency_ms: float = Field(default=0.0, ge=0, le=10_000)
    # Alpaca's wash-trade refusal (catalyst/sim/wash_trade.py): "alpaca", its published table, OCOs exempt;
    # "strict", OCOs refused too: a partly filled entry's OCO is refused, and the entry cut short
    wash_trade_check: WashTradeCheck = "alpaca"
    # share of a minute bar's volume an order may take: lower, entries fill in more pieces over more minutes
    participation: Decimal = Field(default=Decimal("0.25"), gt=0, le=1)
    # Alpaca's order entry lagging a fill (wall seconds; the emulator's exit_shares_lag_s): an OCO right after a fill
    # is refused "insufficient qty", and tried again
    exit_shares_lag_s: float = Field(default=0.0, ge=0, le=60)
    # a triggered OCO stop reported as Alpaca was seen to: its take-profit `replaced`, then the stop fills
    trigger_replaces_take_profit: bool = False
    # kill moments (never the last) just before which a trader moves every working stop by hand (Alpaca's PATCH): the
    # kill lands while the daemon follows the replacements
    move_stops: int = Field(default=0, ge=0)
    # kill moments (never the last) just before which a trader sells a position by hand (its OCO cancelled first),
    # and one more a moment before the day's flatten with no kill: the daemon must never sell those shares again
    sell_by_hand: int = Field(default=0, ge=0)
    # the share of the position each of those hand sales sells (1: all of it; less: a trader taking part of the profit,
    # which the daemon must protect the rest of once the doctor has written the sale as the position's exit)
    hand_sale_share: Decimal = Field(default=Decimal("1"), gt=0, le=1)
    # kill moments (never the last) just before which a trader places a limit order for 40 % of the largest position
    # beyond its price (its OCO cancelled first: the daemon protects the shares left free) and cancels it up to
    # hand_hold_s wall seconds later, the kill and restart going on meanwhile (the daemon protects the shares it let
    # go of; some may have sold). Held past the 15 s a refusal is retried for, the daemon caps protection at the free
    # shares and must protect the rest when the order ends. Every hold ends by 15:50, before the day's flatten.
    hold_by_hand: int = Field(default=0, ge=0)
    hand_hold_s: float = Field(default=2.0, gt=0, le=600)
    # how far beyond the price those limit orders rest (0.002: 0.2 %, where moves often fill them in part; 0.02 keeps
    # most of them resting, holding their shares for as long as they are held)
    hand_hold_beyond: Decimal = Field(default=Decimal("0.002"), gt=0, lt=Decimal("0.5"))
    # kill moments (never the last) just before which the broker's API goes down (the emulator's `down` fault: REST
    # answers 503, the stream refuses connections, orders keep working and filling) for up to outage_s wall seconds,
    # the kill and restart going on meanwhile; every outage ends by 15:50, before the day's flatten
    outage: int = Field(default=0, ge=0)
    outage_s: float = Field(default=10.0, gt=0, le=120)
    # the outage of REST alone (`http_5xx=1`): the stream stays up, so fills are heard while every submit, cancel and
    # look-up fails (the daemon's stops then go again until the broker answers), instead of the whole API down
    outage_rest_only: bool = False
    day: str = "2026-03-02"  # a Monday; the synthetic market has catalysts on it for most seeds
    opens_at: str = "08:55"  # exchange time the emulator starts at (before the 09:15 scan)
    busy_share: float = Field(default=0.4, ge=0, le=1)  # share of kills in 09:33-10:30, where entries happen
    disk_full: int = Field(default=0, ge=0)  # restarts (after kills, never the last) whose disk fills up
    # kill moments (never the last) where the disk under the database (a tmpfs of its own) is filled instead
    fill_disk: int = Field(default=0, ge=0)
    # how long the final reconciliation may take; well under a night at the run's speed, or the next day trades
    settle_timeout_s: float = Field(default=30.0, gt=0)
    starting_cash: Decimal = Decimal("100000")

    @classmethod
    def short(cls, **overrides: object) -> ChaosSettings:
        return cls(**{"kills": 4, "speed": 720.0, **overrides})


@dataclass
class RunResult:
    seed: int
    kills: int = 0
    restarts: int = 0
    violations: list[Violation] = field(default_factory=list)
    report: Report | None = None
    wall_s: float = 0.0
    folder: Path | None = None
    orders_at_kills: list[int] = field(default_factory=list)  # broker orders the mid-flight check saw, per kill
    disk_full_starts: int = 0  # starts with the daemon's files capped
    disk_full_stops: int = 0  # of those, the daemon stopped by itself on the refused write, as it must
    disk_fills: int = 0  # moments the disk under the running daemon was filled up
    disk_fill_stops: int = 0  # of those, the daemon stopped on its reserve, every share under a stop
    disk_fill_idle: int = 0  # of those, the daemon wrote nothing within FILL_PATIENCE_S (its day over): left running
    stop_moves: int = 0  # moments a trader moved the working stops by hand
    stops_moved: int = 0  # stops replaced at the broker then
    hand_sales: int = 0  # moments a trader sold a position by hand
    shares_sold_by_hand: int = 0
    hand_holds: int = 0  # moments a trader placed, then cancelled, a limit order on a position by hand
    shares_held_by_hand: int = 0
    outages: int = 0  # moments the broker's API went down
    outage_wall_s: float = 0.0  # their wall seconds, all told

    def line(self) -> str:
        checked = self.report.summary() if self.report else "not checked"
        if self.report and self.report.broker_orders == 0:
            checked += " (NO TRADE: this run proves nothing about orders)"
        seen = self.orders_at_kills
        mid_flight = (f"; mid-flight checks at {len(seen)} kills, {sum(1 for n in seen if n)} with broker orders "
                      f"(up to {max(seen)})" if seen else "")
        disk = (f"; {self.disk_full_starts} starts on a filling disk, {self.disk_full_stops} stopped by the refused "
                f"write" if self.disk_full_starts else "")
        disk += (f"; {self.disk_fills} disks filled under the running daemon, {self.disk_fill_stops} stopped on the "
                 f"reserve with every share under a stop" if self.disk_fills else "")
        disk += (f", {self.disk_fill_idle} met no write (left running on the freed disk)" if self.disk_fill_idle
                 else "")
        disk += (f"; {self.stops_moved} stops moved by hand at {self.stop_moves} moments" if self.stop_moves else "")
        disk += (f"; {self.shares_sold_by_hand} shares sold by hand at {self.hand_sales} moments" if self.hand_sales
                 else "")
        disk += (f"; {self.shares_held_by_hand} shares held by a hand limit order at {self.hand_holds} moments"
                 if self.hand_holds else "")
        disk += (f"; the broker down {self.outages} times, {self.outage_wall_s:.0f} s in all" if self.outages else "")
        return (f"chaos run seed {self.seed}: {self.kills} kills, {len(self.violations)} violations, "
                f"{self.wall_s:.0f} s; {checked}{mid_flight}{disk}")


def _at(settings: ChaosSettings, hhmm: str) -> datetime:
    return datetime.fromisoformat(f"{settings.day}T{hhmm}").replace(tzinfo=EXCHANGE_TZ)


def kill_moments(settings: ChaosSettings, rng: random.Random) -> list[datetime]:
    """Exchange times to kill at: a share in the entry window (entries, fills, first protection), the rest all day."""
    busy = round(settings.kills * settings.busy_share)
    moments = []
    for index in range(settings.kills):
        start, end = (("09:33", "10:30") if index < busy else ("09:20", "15:58"))
        low, high = _at(settings, start), _at(settings, end)
        moments.append(low + timedelta(seconds=rng.uniform(0, (high - low).total_seconds())))
    return sorted(moments)


def disk_full_restarts(settings: ChaosSettings, seed: int) -> set[int]:
    """Indexes of the kills after which the daemon starts on a filling disk: never after the last, which must run
    the day to its end. Drawn from a generator of their own, so a seed's kill moments are those without the option."""
    return _kill_indexes(settings, settings.disk_full, f"disk-full-{seed}")


def disk_fill_moments(settings: ChaosSettings, seed: int, restarts_on_a_filling_disk: set[int]) -> set[int]:
    """Indexes of the kill moments where the disk is filled instead: never the last, never one followed by a start on
    a filling disk (`--disk-full`), from a generator of their own."""
    candidates = [i for i in range(max(settings.kills - 1, 0)) if i not in restarts_on_a_filling_disk]
    return set(random.Random(f"fill-disk-{seed}").sample(candidates, min(settings.fill_disk, len(candidates))))


def stop_move_moments(settings: ChaosSettings, seed: int) -> set[int]:
    """Indexes of the kill moments a trader moves the stops just before (`--move-stops`): never the last, from a
    generator of their own."""
    return _kill_indexes(settings, settings.move_stops, f"move-stops-{seed}")


def hand_sale_moments(settings: ChaosSettings, seed: int) -> set[int]:
    """Indexes of the kill moments a trader sells a position by hand just before (`--sell-by-hand`): never the last,
    from a generator of their own."""
    return _kill_indexes(settings, settings.sell_by_hand, f"sell-by-hand-{seed}")


def hand_hold_moments(settings: ChaosSettings, seed: int) -> set[int]:
    """Indexes of the kill moments a trader places and cancels a limit order just before (`--hold-by-hand`)."""
    return _kill_indexes(settings, settings.hold_by_hand, f"hold-by-hand-{seed}")


def outage_moments(settings: ChaosSettings, seed: int) -> set[int]:
    """Indexes of the kill moments the broker's API goes down just before (`--outage`)."""
    return _kill_indexes(settings, settings.outage, f"outage-{seed}")


HAND_HOLD_SHARE = Decimal("0.4")
QUIET_BEFORE_FLATTEN = "15:50"  # exchange time every hand limit order is cancelled by: the daemon flattens at 15:55
HAND_SALE_BEFORE_FLATTEN = "15:54:30"  # exchange time of the option's sale with no kill: the daemon flattens at 15:55


def _kill_indexes(settings: ChaosSettings, count: int, generator: str) -> set[int]:
    """`count` kill moment indexes, never the last, drawn by a generator named `generator` of their own (so a seed's
    kill moments stay those without the option)."""
    candidates = range(max(settings.kills - 1, 0))
    return set(random.Random(generator).sample(candidates, min(count, len(candidates))))


def _wait_clock(exchange: ExchangeProcess, target: datetime, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while exchange.clock() < target:
        if time.monotonic() > deadline:
            raise HarnessError(f"the exchange clock did not reach {target:%H:%M:%S} within {timeout_s:.0f} s")
        time.sleep(0.05)


def run_once(settings: ChaosSettings, seed: int, folder: Path, say=print) -> RunResult:
    """One seeded day with faults and kills; always stops both processes."""
    rng = random.Random(seed)
    result = RunResult(seed=seed, folder=folder)
    began = time.monotonic()
    day_wall_s = (_at(settings, "16:15") - _at(settings, settings.opens_at)).total_seconds() / settings.speed
    with ExchangeProcess(folder, seed=seed, speed=settings.speed, start_at=_at(settings, settings.opens_at),
                         faults=settings.faults, cash=str(settings.starting_cash),
                         latency_ms=settings.latency_ms, wash_trade_check=settings.wash_trade_check,
                         participation=str(settings.participation),
                         exit_shares_lag_s=settings.exit_shares_lag_s,
                         trigger_replaces_take_profit=settings.trigger_replaces_take_profit) as exchange:
        disk = SmallDisk(folder / "daemon" / "disk") if settings.fill_disk else None
        daemon = DaemonProcess(folder / "daemon", exchange.url, database_dir="disk" if disk else "")
        disk_full = disk_full_restarts(settings, seed)
        fills = disk_fill_moments(settings, seed, disk_full)
        disk_rng = random.Random(f"disk-headroom-{seed}")
        moves, move_rng = stop_move_moments(settings, seed), random.Random(f"stop-moves-{seed}")
        sales, sale_rng = hand_sale_moments(settings, seed), random.Random(f"hand-sales-{seed}")
        holds, hold_rng = hand_hold_moments(settings, seed), random.Random(f"hand-holds-{seed}")
        hand_holds = HandHolds(exchange, SIM_KEY_ID, SIM_SECRET, beyond=settings.hand_hold_beyond)
        outages, outage_rng = outage_moments(settings, seed), random.Random(f"outages-{seed}")
        outage = BrokerOutage(exchange, settings.faults, "http_5xx=1" if settings.outage_rest_only else "down=1")
        sale_before_flatten = _at(settings, HAND_SALE_BEFORE_FLATTEN) if settings.sell_by_hand else None
        spared = 0  # kill moments the running daemon on a filling disk was left through
        try:
            if disk is not None:
                disk.mount()
            daemon.start()
            for index, moment in enumerate(kill_moments(settings, rng)):
                if sale_before_flatten is not None and moment > sale_before_flatten:
                    _wait_clock(exchange, sale_before_flatten, timeout_s=day_wall_s + 60)
                    sell_by_hand(exchange, daemon, result, settings)
                    sale_before_flatten = None
                _wait_clock(exchange, moment, timeout_s=day_wall_s + 60)
                time.sleep(rng.uniform(0, 0.5))  # off the clock poll's rhythm
                if index in sales and daemon.running:
                    sell_by_hand(exchange, daemon, result, settings)
                    time.sleep(sale_rng.uniform(0, 2.0))  # the kill lands while the daemon reacts, or after
                if index in holds and daemon.running:
                    result.hand_holds += 1
                    drawn_s = hold_rng.uniform(0, settings.hand_hold_s)
                    result.shares_held_by_hand += hand_holds.place(
                        HAND_HOLD_SHARE, hold_s=until_the_flatten_s(settings, moment, drawn_s))
                    time.sleep(hold_rng.uniform(0, 1.0))  # the kill lands while the daemon protects them, or after
                if index in outages and daemon.running:
                    wall_s = until_the_flatten_s(settings, moment, outage_rng.uniform(1.0, settings.outage_s))
                    if wall_s > 0:
                        result.outages += 1
                        result.outage_wall_s += wall_s
                        outage.begin(wall_s)
                        # The kill lands anywhere in it (its restart waits for the broker), the daemon up before it.
                        time.sleep(outage_rng.uniform(0, wall_s))
                if index in moves and daemon.running:
                    result.stop_moves += 1
                    result.stops_moved += exchange.move_stops(SIM_KEY_ID, SIM_SECRET,
                                                              Decimal(str(round(move_rng.uniform(0.005, 0.02), 4))))
                    time.sleep(move_rng.uniform(0, 0.3))  # the kill lands while the daemon follows them, or after
                if disk is not None and index in fills and not stopped_by_itself(daemon, result) and daemon.running:
                    if not fill_the_disk(disk, exchange, daemon, result):
                        continue  # nothing written meanwhile: left running on the freed disk
                elif not stopped_by_itself(daemon, result) and daemon.running:
                    if daemon.file_size_cap is not None and spared < DISK_FULL_PATIENCE:
                        spared += 1
                        continue
                    daemon.kill9()
                    result.kills += 1
                spared = 0
                at_the_kill(exchange, daemon, result)
                try:
                    if index in disk_full:
                        start_on_a_filling_disk(daemon, result, disk_rng)
                    else:
                        daemon.start()
                    result.restarts += 1
                except HarnessError as exc:
                    result.violations.append(Violation("restart", str(exc)))
                    daemon.stop()
                    daemon.start()
            hand_holds.finish()
            outage.finish()
            stopped_by_itself(daemon, result)
            if not daemon.running:  # stopped by a refused write since the last kill
                daemon.start()
            if sale_before_flatten is not None:
                _wait_clock(exchange, sale_before_flatten, timeout_s=day_wall_s + 60)
                sell_by_hand(exchange, daemon, result, settings)
            daemon.wait_for(DAY_DONE, timeout_s=day_wall_s + 120)
            result.violations += settle(exchange, daemon, settings)
        except HarnessError as exc:
            result.violations.append(Violation("harness", str(exc)))
        finally:
            try:
                hand_holds.finish()  # no trader's order left working under the checker at rest
            except HarnessError as exc:
                result.violations.append(Violation("harness", str(exc)))
            try:
                outage.finish()  # the broker back before the daemon's stop and the checker's reads
            except HarnessError as exc:
                result.violations.append(Violation("harness", str(exc)))
            code = daemon.stop()
            if code not in (0, None):
                result.violations.append(Violation("exit", f"catalyst run exited {code} on SIGTERM"))
        try:
            result.report = check_files(daemon.database_path, exchange.snapshot(SIM_KEY_ID), settings.starting_cash)
        except (HarnessError, OSError) as exc:
            result.violations.append(Violation("harness", f"final check impossible: {exc}"))
        else:
            result.violations += result.report.violations
        finally:
            if disk is not None:
                disk.unmount()
    result.wall_s = time.monotonic() - began
    return result


def until_the_flatten_s(settings: ChaosSettings, now: datetime, drawn_s: float) -> float:
    """Wall seconds a hand limit order placed, or an outage begun, at exchange time `now` lasts: `drawn_s`, cut to
    end by QUIET_BEFORE_FLATTEN (an order still holding shares at the flatten, or a broker down through it, leaves
    shares for the next day: the trader's or the broker's doing, not the daemon's)."""
    left_s = (_at(settings, QUIET_BEFORE_FLATTEN) - now).total_seconds() / settings.speed
    return max(0.0, min(drawn_s, left_s))


def sell_by_hand(exchange: ExchangeProcess, daemon: DaemonProcess, result: RunResult, settings: ChaosSettings) -> None:
    if not daemon.running:
        return
    result.hand_sales += 1
    result.shares_sold_by_hand += exchange.sell_by_hand(SIM_KEY_ID, SIM_SECRET, share=settings.hand_sale_share)


def start_on_a_filling_disk(daemon: DaemonProcess, result: RunResult, rng: random.Random) -> None:
    """Start the daemon with no file allowed to grow much past its database file (the write-ahead log, which starts
    over after the restart's checkpoint, included): its disk fills up at some moment of what follows. A daemon that
    meets it before it is ready stops there, as it must (stopped_by_itself)."""
    cap = daemon.database_size() + rng.randint(*DISK_HEADROOM_KB) * 1024
    daemon.start(wait_ready=False, file_size_cap=cap)
    result.disk_full_starts += 1
    try:
        daemon.wait_ready()
    except HarnessError:
        if daemon.process is not None:
            daemon.process.wait(timeout=30)
        if not stopped_by_itself(daemon, result):
            raise


def fill_the_disk(disk: SmallDisk, exchange: ExchangeProcess, daemon: DaemonProcess, result: RunResult) -> bool:
    """Fill the disk under the running daemon's database, as another program would. The daemon must meet it in its
    next write, record what is in flight on its reserve, and stop by itself with exit 3 and every share at the broker
    under a working stop, checked here against the broker's own view. True if it stopped (so is to be started again,
    the disk freed first); a daemon that wrote nothing within FILL_PATIENCE_S is left running on the freed disk."""
    disk.fill()
    result.disk_fills += 1
    deadline = time.monotonic() + FILL_PATIENCE_S
    while daemon.running and time.monotonic() < deadline:
        time.sleep(0.1)
    if daemon.running and daemon.output is not None and any(RESERVE_USED in line for line in daemon.output.lines):
        deadline += 60  # met it at the last moment: its stop waits for protection (up to 30 s)
        while daemon.running and time.monotonic() < deadline:
            time.sleep(0.1)
        if daemon.running:
            result.violations.append(Violation("exit", f"catalyst run (start #{daemon.starts}) wrote on its disk "
                                                       "reserve but had not stopped 60 s later"))
    code = daemon.exited_by_itself()
    if code is None:
        result.disk_fill_idle += 1  # nothing to write (a day already over): said in the run's line
        disk.free()
        return False
    snapshot = exchange.snapshot(SIM_KEY_ID)  # at once: a stop or target may fill as time goes on, never unfill
    if daemon.output is not None:
        daemon.output.wait_closed(timeout_s=10)
    lines = daemon.output.lines if daemon.output else []
    said = last_said(lines)
    stop = RESERVE_STOP_LINE.search(said)
    if code != STORAGE_FAULT_EXIT or stop is None:
        result.violations.append(Violation("exit", f"catalyst run (start #{daemon.starts}) on a disk just filled "
                                                   f"stopped with exit {code}, not on its reserve: {said}"))
    elif stop["held"].startswith("NOT under"):
        result.violations.append(Violation("unprotected", f"on a disk just filled the daemon stopped saying: {said}"))
    else:
        result.disk_fill_stops += 1
    result.violations += [Violation(v.kind, f"when the daemon stopped on a full disk: {v.detail}")
                          for v in unprotected_at_broker(snapshot)]
    disk.free()
    return True


def last_said(lines: list[str]) -> str:
    """The daemon's exit line (`catalyst: ...`), and after it what a crash printed (a fatal error, a C++ terminate):
    a violation must say why the process really ended (exit -6 in CI was "terminate called without an active
    exception", below a good exit line)."""
    at = next((i for i in range(len(lines) - 1, -1, -1) if lines[i].startswith("catalyst: ")), None)
    if at is None:
        return "(nothing)" if not lines else f"(no exit line; its last line: {lines[-1]})"
    after = [line for line in lines[at + 1:] if line.strip()]
    return lines[at] + (f" [then: {' | '.join(after[-3:])}]" if after else "")


def stopped_by_itself(daemon: DaemonProcess, result: RunResult) -> bool:
    """True if the daemon is not running though the harness did not stop it. Only a start on a filling disk may do
    that, with exit 3 and the storage fault's line; anything else is a violation."""
    capped = daemon.file_size_cap is not None
    code = daemon.exited_by_itself()
    if code is None:
        return False
    if daemon.output is not None:
        daemon.output.wait_closed(timeout_s=10)  # its last line read
    lines = daemon.output.lines if daemon.output else []
    said = last_said(lines)
    if capped and code == STORAGE_FAULT_EXIT and STORAGE_FAULT_LINE.search(said):
        result.disk_full_stops += 1
    else:
        result.violations.append(Violation("exit", f"catalyst run (start #{daemon.starts}) stopped by itself, exit "
                                                   f"{code}{' on a filling disk' if capped else ''}: {said}"))
    return True


def at_the_kill(exchange: ExchangeProcess, daemon: DaemonProcess, result: RunResult) -> None:
    """The mid-flight invariants on the database the killed daemon left, against the broker as it is now (it only
    ever gains orders and fills, so what held when the daemon died still holds)."""
    kill = result.kills
    try:
        report = check_mid_flight(read_database(daemon.database_path), exchange.snapshot(SIM_KEY_ID))
    except (HarnessError, OSError, sqlite3.Error) as exc:
        result.violations.append(Violation("harness", f"at kill {kill}: mid-flight check impossible: {exc}"))
        return
    result.orders_at_kills.append(report.broker_orders)
    result.violations += [Violation(v.kind, f"at kill {kill}: {v.detail}") for v in report.violations]


def settle(exchange: ExchangeProcess, daemon: DaemonProcess, settings: ChaosSettings) -> list[Violation]:
    """Faults off, one last quiet restart, and poll the checker until it holds or the deadline passes."""
    exchange.set_faults("")
    daemon.kill9()
    daemon.start()
    daemon.wait_for(r"doctor pass #1 ", timeout_s=settings.settle_timeout_s)
    deadline = time.monotonic() + settings.settle_timeout_s
    while True:
        report = check_files(daemon.database_path, exchange.snapshot(SIM_KEY_ID), settings.starting_cash)
        if report.ok or time.monotonic() > deadline:
            return []  # the caller's final check (after the graceful stop) records what is still wrong
        time.sleep(1.0)


def run_chaos(settings: ChaosSettings, root: Path, say=print) -> list[RunResult]:
    results = []
    for index in range(settings.runs):
        seed = settings.seed + index
        result = run_once(settings, seed, root / f"run-{index + 1}-seed-{seed}", say)
        say(result.line())
        for violation in result.violations:
            say(f"  {violation}")
        results.append(result)
    return results


def summary(results: list[RunResult]) -> str:
    runs = len(results)
    kills = sum(r.kills for r in results)
    violations = sum(len(r.violations) for r in results)
    return f"chaos: {runs} run{'s' if runs != 1 else ''}, {kills} kills, {violations} violations"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m chaos", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, help="simulated days (default 1)")
    parser.add_argument("--kills", type=int, help="kill -9 per run (default 24; --short: 4)")
    parser.add_argument("--seed", type=int, help="first run's seed (market, faults, kill moments; default 1)")
    parser.add_argument("--faults", help=f"emulator fault spec (default {DEFAULT_FAULTS!r}; '' for none)")
    parser.add_argument("--speed", type=float, help="exchange seconds per wall second (default 240; --short: 720)")
    parser.add_argument("--latency-ms", type=float, help="the broker's one-way network delay, ms (default 0)")
    parser.add_argument("--disk-full", type=int, metavar="N",
                        help="N restarts on a disk that fills up: the daemon must stop by itself (default 0)")
    parser.add_argument("--fill-disk", type=int, metavar="N",
                        help="N kill moments fill the database's disk (a tmpfs; needs root) instead: the daemon must "
                             "protect what is in flight on its reserve and stop by itself (default 0)")
    parser.add_argument("--wash-trade-check", choices=WASH_TRADE_CHECKS,
                        help="the emulator's wash-trade refusal: alpaca, Alpaca's published table (OCOs exempt; "
                             "the default); strict, OCOs refused too, as some users report; off")
    parser.add_argument("--participation", type=Decimal, help="share of a minute bar's volume an order may take "
                        "(default 0.25; lower: more partial fills)")
    parser.add_argument("--exit-shares-lag-s", type=float, help="the emulator's order entry lagging a fill: an exit "
                        "may sell only shares held this many wall seconds ago too (default 0)")
    parser.add_argument("--trigger-replaces-take-profit", action="store_true", default=None,
                        help="the emulator reports a triggered OCO stop as Alpaca was seen to: its take-profit "
                             "`replaced`, then the stop fills")
    parser.add_argument("--move-stops", type=int, metavar="N",
                        help="N kill moments (never the last) where a trader first moves every working stop by hand")
    parser.add_argument("--sell-by-hand", type=int, metavar="N",
                        help="N kill moments (never the last) where a trader first sells a position by hand (its "
                             "orders cancelled), and one more just before the day's flatten with no kill")
    parser.add_argument("--hand-sale-share", type=Decimal, metavar="F",
                        help="the share of the position each hand sale sells (default 1: all of it; 0.4: a trader "
                             "taking part of the profit)")
    parser.add_argument("--hold-by-hand", type=int, metavar="N",
                        help="N kill moments (never the last) where a trader first places a limit order for 40%% of "
                             "a position beyond its price (its orders cancelled), and cancels it up to --hand-hold-s "
                             "seconds later while the kill and restart go on")
    parser.add_argument("--hand-hold-s", type=float, metavar="S",
                        help="the most wall seconds each of those limit orders rests (default 2; past 15 s the "
                             "daemon caps protection at the free shares; every one ends by 15:50)")
    parser.add_argument("--hand-hold-beyond", type=Decimal, metavar="F",
                        help="how far beyond the price those limit orders rest (default 0.002: 0.2 %%; 0.02 keeps "
                             "most from filling)")
    parser.add_argument("--outage", type=int, metavar="N",
                        help="N kill moments (never the last) where the broker's API first goes down (REST 503, the "
                             "stream refused; orders keep working) for up to --outage-s seconds, the kill and restart "
                             "going on meanwhile")
    parser.add_argument("--outage-s", type=float, metavar="S",
                        help="the most wall seconds each outage lasts (default 10; every one ends by 15:50)")
    parser.add_argument("--outage-rest-only", action="store_true", default=None,
                        help="the outages fail REST alone (every call a 503) while the stream stays up: fills are "
                             "heard that no stop can be sent for")
    parser.add_argument("--short", action="store_true", help="the CI run: 1 day at 720x with 4 kills")
    parser.add_argument("--keep", type=Path, metavar="DIR", help="keep logs and databases in DIR (default: a temp dir)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    given = {k: v for k, v in dict(runs=args.runs, kills=args.kills, seed=args.seed, faults=args.faults,
                                   speed=args.speed, latency_ms=args.latency_ms, disk_full=args.disk_full,
                                   fill_disk=args.fill_disk, wash_trade_check=args.wash_trade_check,
                                   participation=args.participation,
                                   exit_shares_lag_s=args.exit_shares_lag_s,
                                   trigger_replaces_take_profit=args.trigger_replaces_take_profit,
                                   move_stops=args.move_stops, sell_by_hand=args.sell_by_hand,
                                   hand_sale_share=args.hand_sale_share, hold_by_hand=args.hold_by_hand,
                                   hand_hold_s=args.hand_hold_s, hand_hold_beyond=args.hand_hold_beyond,
                                   outage=args.outage,
                                   outage_s=args.outage_s, outage_rest_only=args.outage_rest_only).items()
             if v is not None}
    try:
        FaultPlan.parse(given.get("faults", DEFAULT_FAULTS))
        settings = ChaosSettings.short(**given) if args.short else ChaosSettings(**given)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        print(f"chaos: error: --{str(first['loc'][0]).replace('_', '-')}: {first['msg']}", file=sys.stderr)
        return 2
    except FaultSpecError as exc:
        print(f"chaos: error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    distance = f", broker {settings.latency_ms:g} ms away" if settings.latency_ms else ""
    distance += f", {settings.disk_full} restarts on a filling disk" if settings.disk_full else ""
    distance += f", {settings.fill_disk} moments filling the disk" if settings.fill_disk else ""
    distance += f", the wash-trade check {settings.wash_trade_check}" if settings.wash_trade_check != "alpaca" else ""
    distance += f", participation {settings.participation}" if settings.participation != Decimal("0.25") else ""
    distance += f", exits lagging fills {settings.exit_shares_lag_s:g} s" if settings.exit_shares_lag_s else ""
    distance += ", triggered stops replace their take-profit" if settings.trigger_replaces_take_profit else ""
    distance += f", stops moved by hand at {settings.move_stops} moments" if settings.move_stops else ""
    distance += (f", positions sold by hand at {settings.sell_by_hand} moments and before the flatten"
                 + (f" ({settings.hand_sale_share:f} of each)" if settings.hand_sale_share < 1 else "")
                 if settings.sell_by_hand else "")
    distance += (f", limit orders placed and cancelled by hand at {settings.hold_by_hand} moments"
                 + (f" (each resting up to {settings.hand_hold_s:g} s)" if settings.hand_hold_s != 2.0 else "")
                 + (f" ({settings.hand_hold_beyond:f} beyond the price)"
                    if settings.hand_hold_beyond != Decimal("0.002") else "")
                 if settings.hold_by_hand else "")
    down = "REST" if settings.outage_rest_only else "API"
    distance += (f", the broker's {down} down at {settings.outage} moments (up to {settings.outage_s:g} s each)"
                 if settings.outage else "")
    print(f"chaos: {settings.runs} run(s), {settings.kills} kills each, seed {settings.seed}, speed {settings.speed:g}x, "
          f"faults {settings.faults or 'none'}{distance}", flush=True)
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        results = run_chaos(settings, args.keep, say=lambda s: print(s, flush=True))
    else:
        with tempfile.TemporaryDirectory(prefix="catalyst-chaos-") as root:
            results = run_chaos(settings, Path(root), say=lambda s: print(s, flush=True))
    print(summary(results), flush=True)
    return 1 if any(r.violations for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
