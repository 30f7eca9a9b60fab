"""The `catalyst` command: one console script, one sub-command per job; every failure is one line and an exit code."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import traceback
from pathlib import Path
from typing import Any, Callable, Sequence

from catalyst.sim.clock import MAX_SPEED
from catalyst import stop_request
from catalyst.errors import CatalystError, DatabaseError, StopDuringStartup, UsageError
from catalyst.logs import close_sinks, keep_secrets_out, redact, to_log_file_only
from catalyst.parent_tie import follow_parent_from_environment
from catalyst.sim.wash_trade import WASH_TRADE_CHECKS
from catalyst.store.errors import StoreError, storage_fault

DEFAULT_CONFIG = "config.toml"
Handler = Callable[[argparse.Namespace], int]


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing usage and exiting, so errors share one format and exit code."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def _add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=DEFAULT_CONFIG, metavar="PATH",
                   help=f"config file (default: ./{DEFAULT_CONFIG}); relative paths inside resolve against its folder")


def _add_env_file(p: argparse.ArgumentParser) -> None:
    p.add_argument("--env-file", type=Path, metavar="PATH",
                   help="read APCA_API_KEY_ID and APCA_API_SECRET_KEY from this NAME=VALUE file (refused unless mode 0600)")


def _add_logging(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log-format", choices=("text", "json"), help="override logging.format")
    p.add_argument("--log-level", choices=("TRACE", "DEBUG", "INFO", "WARNING", "ERROR"), help="override logging.level")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="catalyst", description=__doc__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    run = sub.add_parser("run", help="run the trading daemon in the foreground (for systemd/supervisord)")
    _add_config(run)
    _add_logging(run)
    _add_env_file(run)
    run.add_argument("--broker-url", metavar="URL", help="an Alpaca-compatible broker in its own process, e.g. `catalyst exchange`")
    run.add_argument("--i-mean-live", action="store_true", help="second confirmation required for broker.mode = live")
    run.set_defaults(handler=_cmd_run)

    sim = sub.add_parser("sim", help="run N simulated trading days against the built-in exchange, then exit")
    _add_config(sim)
    _add_logging(sim)
    _add_env_file(sim)
    sim.add_argument("--days", type=_positive_int, default=1, help="trading days to simulate (default 1)")
    sim.add_argument("--seed", type=int, help="market seed (default: exchange.seed)")
    sim.add_argument("--speed", type=_sim_speed, help="simulated seconds per wall second (default: exchange.speed)")
    sim.set_defaults(handler=_cmd_sim, simulation=True)

    stop = sub.add_parser("stop", help="stop the running daemon (graceful: protection stays at the broker)")
    _add_config(stop)
    stop.add_argument("--emergency", action="store_true",
                      help="cancel working entries, flatten every position, close the cycle")
    stop.set_defaults(handler=_cmd_stop)

    status = sub.add_parser("status", help="today's phase, positions, working orders, P&L and the last findings")
    _add_config(status)
    status.add_argument("--sim", action="store_true", help="read the simulation database (`catalyst sim`, embedded run)")
    status.set_defaults(handler=_cmd_status)

    tail = sub.add_parser("tail", help="pretty-print (and follow) the daemon's JSON log")
    _add_config(tail)
    tail.add_argument("--file", type=Path, help="log file (default: logging.file from the config)")
    tail.add_argument("--actor", help="only lines of this actor (router, position, cycle, doctor, scanner, …)")
    tail.add_argument("--follow", "-f", action="store_true", help="keep reading as the log grows (survives rotation)")
    tail.set_defaults(handler=_cmd_tail)

    db = sub.add_parser("db", help="database maintenance")
    db_sub = db.add_subparsers(dest="db_command", metavar="ACTION", parser_class=_Parser)
    db_sub.required = True
    upgrade = db_sub.add_parser("upgrade", help="create or migrate the database to the latest schema")
    _add_config(upgrade)
    upgrade.set_defaults(handler=_cmd_db_upgrade)
    downgrade = db_sub.add_parser("downgrade", help="take the database back to an older schema (before running an "
                                  "older Catalyst on it)")
    _add_config(downgrade)
    downgrade.add_argument("revision", metavar="REVISION", help="the schema revision to go back to, e.g. 0001")
    downgrade.set_defaults(handler=_cmd_db_downgrade)

    exchange = sub.add_parser("exchange", help="serve the Alpaca-compatible exchange emulator in this process")
    exchange.add_argument("--host", default="127.0.0.1")
    exchange.add_argument("--port", type=int, default=0, help="0 picks a free port")
    exchange.add_argument("--seed", type=int, default=7)
    exchange.add_argument("--speed", type=float, default=720.0, help="simulated seconds per wall second (0: manual)")
    exchange.add_argument("--start", metavar="YYYY-MM-DDTHH:MM:SS", help="exchange time (America/New_York) to start at")
    exchange.add_argument("--data", type=Path, metavar="FILE", help="replay a minute or daily bar CSV instead of the synthetic market")
    exchange.add_argument("--faults", default="", metavar="SPEC", help="e.g. http_5xx=0.05,drop=0.05 (off by default)")
    exchange.add_argument("--cash", default="100000", help="starting cash of each account")
    exchange.add_argument("--rate-limit", type=int, default=200, help="requests/minute per key (0: off)")
    exchange.add_argument("--latency-ms", type=float, default=0.0,
                          help="one-way network delay added to every request, reply and stream event (default 0)")
    exchange.add_argument("--data-plan", choices=("unlimited", "basic"), default="unlimited",
                          help="market-data plan: basic (Alpaca's free one) refuses recent SIP data (default unlimited)")
    exchange.add_argument("--participation", default="0.25",
                          help="share of a minute bar's volume one order may take (default 0.25): lower, more partial fills")
    exchange.add_argument("--wash-trade-check", choices=WASH_TRADE_CHECKS, default="alpaca",
                          help="Alpaca's wash-trade refusal: alpaca, its published table (complex orders exempt; the "
                               "default); strict, complex orders refused too, as some users report; off")
    exchange.add_argument("--positions-lag-s", type=float, default=0.0,
                          help="the positions endpoints answer as of this many wall seconds ago, as Alpaca's can lag "
                               "its orders after a fill (default 0)")
    exchange.add_argument("--exit-shares-lag-s", type=float, default=0.0,
                          help="an exit order may sell only shares held this many wall seconds ago too, as Alpaca's "
                               "order entry can lag a fill (default 0)")
    exchange.add_argument("--trigger-replaces-take-profit", action="store_true",
                          help="report a triggered OCO stop as Alpaca was seen to: its take-profit ends `replaced`, "
                               "then the stop fills")
    exchange.set_defaults(handler=_cmd_exchange)
    return parser


def _load(args: argparse.Namespace):
    from catalyst.config import load_config

    return load_config(args.config)


def _cmd_db_upgrade(args: argparse.Namespace) -> int:
    from catalyst.store.migrate import upgrade

    config = _load(args)
    if config.database_path is not None:
        try:
            config.database_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise DatabaseError(f"{config.database_path.parent}: cannot create the database folder: {exc.strerror}") from None
    revision = _migrating(config, "catalyst db upgrade", lambda: upgrade(config.daemon.database_url))
    print(f"database {config.database_path or config.daemon.database_url} is at revision {revision}")
    return 0


def _cmd_db_downgrade(args: argparse.Namespace) -> int:
    from catalyst.store.migrate import downgrade

    config = _load(args)
    if config.database_path is not None and not config.database_path.is_file():
        raise DatabaseError(f"{config.database_path}: no database to take back")  # not created to be taken back
    revision = _migrating(config, "catalyst db downgrade",
                          lambda: downgrade(config.daemon.database_url, args.revision))
    print(f"database {config.database_path or config.daemon.database_url} is at revision {revision}")
    return 0


def _migrating(config: Any, what: str, migrate: Callable[[], str]) -> str:
    """Under the daemon's instance lock: a migration may rebuild a table, which must not happen under a running
    daemon's feet (the daemon upgrades the database itself at every start)."""
    from catalyst.instance import InstanceLock, owner_only_files

    owner_only_files()  # as the daemon's: the database and its -wal/-shm this creates
    lock = InstanceLock(config.database_path).acquire(what) if config.database_path else None
    try:
        return migrate()
    finally:
        if lock is not None:
            lock.release()


def _catch_signals_while_importing(args: argparse.Namespace) -> None:
    """TERM or INT while the daemon's modules load (most of a second): a supervisor's stop then is a clean exit 0
    with its line, as during the rest of start-up, not death by the default action. HUP, USR1 and USR2 then are
    remembered in `args.signals_while_importing`, not death without a word either: the daemon's own handlers, which
    replace these (catalyst.daemon.Signals), act on them once it is up; an emergency stop (USR2) is never lost."""
    stop_request.forget()
    stop_request.keep_discarded_stops_quiet()

    def stop(signum: int, _frame: Any) -> None:
        if stop_request.first(signal.Signals(signum).name) and not stop_request.held():
            raise StopDuringStartup(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    args.signals_while_importing = remembered = []
    for kept in (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(kept, lambda signum, _frame: remembered.append(signum))


def _cmd_run(args: argparse.Namespace) -> int:
    _catch_signals_while_importing(args)
    try:
        with stop_request.while_importing():
            from catalyst.daemon import run_daemon

        return run_daemon(args)
    except (StopDuringStartup, Exception) as exc:
        stop = stop_request.carried_by(exc)
        if stop is None:
            raise
        if signal.SIGUSR2 in args.signals_while_importing:  # USR2, then the stop, before the daemon's handlers
            from catalyst.daemon import keep_an_emergency_asked_before_the_handlers

            keep_an_emergency_asked_before_the_handlers(args)
        raise stop from None


def _cmd_sim(args: argparse.Namespace) -> int:
    _catch_signals_while_importing(args)
    with stop_request.while_importing():
        from catalyst.daemon import run_sim

    return run_sim(args)


def _cmd_stop(args: argparse.Namespace) -> int:
    from catalyst.control import stop_daemon

    return stop_daemon(_load(args), emergency=args.emergency)


def _cmd_status(args: argparse.Namespace) -> int:
    from catalyst.status import status_text

    print(status_text(_load(args), simulation=args.sim))
    return 0


def _cmd_tail(args: argparse.Namespace) -> int:
    from catalyst.tail import tail

    path = args.file
    if path is None:
        path = _load(args).logging.file
        if path is None:
            raise UsageError("no log file: pass --file or set logging.file in the config")
    return tail(path, args.actor, args.follow)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _sim_speed(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not 0 < value <= MAX_SPEED:  # False for NaN too
        raise argparse.ArgumentTypeError(f"must be greater than 0 and at most {MAX_SPEED:,.0f}, got {text!r}")
    return value


def _cmd_exchange(args: argparse.Namespace) -> int:
    from catalyst.sim.cli import run_exchange

    return run_exchange(args)


def _exit_with(line: str, code: int) -> int:
    """`line` on stderr, and as the last line of the log file when the command logs to one (a daemon's exit)."""
    stop_request.leaving()
    to_log_file_only("INFO" if code == 0 else "CRITICAL", f"system exiting with code {code}: {line}")
    try:
        print(redact(line), file=sys.stderr)  # as the log's lines: an error may quote a URL with the keys in it
    except OSError:  # stderr is the pipe that broke (`catalyst run 2>&1 | tee`): the log file has the line
        pass
    return code


# Commands whose output is read by another program (`catalyst tail | head`): a reader that leaves early is no error.
READERS = ("tail", "status")


def main(argv: Sequence[str] | None = None) -> int:
    args = None
    # Every command's lines are redacted, not only the daemon's (which adds an --env-file's keys): `status`, `stop`,
    # `tail` and `db` quote a bad config value as it is, and a broker URL may hold the keys. (catalyst.config's
    # KEY_ID_ENV and SECRET_KEY_ENV, named here: importing it, and pydantic, would slow every command's start.)
    keep_secrets_out(os.environ.get(name, "").strip() for name in ("APCA_API_KEY_ID", "APCA_API_SECRET_KEY"))
    try:
        args = build_parser().parse_args(argv)
        said = follow_parent_from_environment()
        if said:
            print(f"catalyst: {said}", file=sys.stderr)
        return int(args.handler(args) or 0)
    except CatalystError as exc:
        return _exit_with(f"catalyst: error: {exc}", exc.exit_code)
    except StoreError as exc:  # the database file or schema: not a bug of ours, an operator's matter
        return _exit_with(f"catalyst: error: {exc}", DatabaseError.exit_code)
    except StopDuringStartup as stop:  # a stop asked and done: as clean as one after start-up
        return _exit_with(f"catalyst: stopped by {stop} during start-up", 0)
    except KeyboardInterrupt:
        print("catalyst: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError as exc:
        # As Python's docs advise: whatever is still buffered goes nowhere, not into a second error at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        if getattr(args, "command", None) in READERS:  # `catalyst tail | head`: the reader has what it wanted
            return 0
        # A daemon whose output pipe broke (a `tee` that exited) has failed: a supervisor must see it and restart it.
        return _exit_with(f"catalyst: error: its output pipe broke ({exc.strerror or exc}): nothing reads it", 1)
    except SystemExit as exc:  # --help and friends
        return int(exc.code or 0)
    except Exception as exc:  # the last line of defence: one line, never a traceback (unless asked for)
        fault = storage_fault(exc)
        if fault is not None:  # the disk under the database (full, read-only, failing), wherever it was met
            return _exit_with(f"catalyst: error: the database's disk failed: {fault}; free disk space or repair the "
                              "disk, then run again", DatabaseError.exit_code)
        # One line, whatever the text: SQLAlchemy's errors add the SQL, its parameters and a link on lines of their own.
        _exit_with(f"catalyst: internal error: {type(exc).__name__}: {' '.join(str(exc).split())}", 1)
        if os.environ.get("CATALYST_TRACEBACK"):
            print(redact(traceback.format_exc()), end="", file=sys.stderr)
        else:
            print("catalyst: set CATALYST_TRACEBACK=1 to see where", file=sys.stderr)
        return 1


def run_command(argv: Sequence[str] | None = None) -> None:
    """The console script: `main`, then the process ends with its code."""
    leave(main(argv))


def leave(code: int) -> None:
    """Exit with `code`. A thread a stop left behind (the cycle busy writing the day's report in matplotlib's C++
    code, a broker worker waiting on a socket) must not meet Python's own shutdown: a daemon thread stopped there
    inside C++ code ends the process on SIGABRT or SIGSEGV, and a daemon that had printed its exit 3 and its reason
    died with exit -6 instead (CI, a disk-fault stop; 4 of 20 exits of a probe with a thread drawing a chart). So
    while any other thread runs, the sinks are closed (the log file flushed), stdio flushed, and the process ends
    at once, finalization skipped: nothing is left to it (every write of ours is committed or abandoned by then)."""
    # From here on a signal changes nothing: without this, Python's shutdown puts the default actions back and a
    # second TERM during it ended a clean exit 0 as -15 (a review: 38 of 40 double TERMs during start-up).
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
        try:
            signal.signal(signum, signal.SIG_IGN)
        except ValueError:  # not the main thread (a test calling this): its signals are not ours to change
            break
    if any(thread is not threading.main_thread() and thread.is_alive() for thread in threading.enumerate()):
        close_sinks()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # a pipe that broke, a stream already closed: nothing more can reach it
                pass
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    run_command()
