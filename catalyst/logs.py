"""Logging for `tail -f`: loguru everywhere, stdlib loggers routed in, one line per event, secrets never written.

Every line names its actor (`logger.bind(actor="router")`); lines without one are attributed to the stdlib
logger they came from (`pykka`, `alpaca`, `sqlalchemy`, …). `--log-format json` writes one JSON object per line:
{"ts", "level", "actor", "msg", ...extra fields}.
"""

from __future__ import annotations

import copy
import json
import logging
import re
import sys
import threading
from pathlib import Path
from typing import Any, Iterable

from loguru import logger

from catalyst.store.errors import is_held_lock, storage_fault

# loguru appends the newline (and any exception) itself to a string format.
TEXT_FORMAT = "{time:YYYY-MM-DD HH:mm:ss.SSS} {level:<7} {extra[actor]:<12} | {message}"
REDACTED = "***"
_secrets: tuple[str, ...] = ()


class LogFileError(ValueError):
    """The log file cannot be set up as configured; the message names the config key (logging.file/rotation)."""


def keep_secrets_out(secrets: Iterable[str]) -> None:
    """The strings `redact` replaces from now on: in every log line, and in every line the command line prints."""
    global _secrets
    _secrets = tuple(sorted((s for s in secrets if s), key=len, reverse=True))


def redact(text: str) -> str:
    """Replace every configured secret in `text`."""
    for secret in _secrets:
        if secret and secret in text:
            text = text.replace(secret, REDACTED)
    return text


def _patch(record: dict[str, Any]) -> None:
    record["extra"].setdefault("actor", _actor_of(record["name"] or "-"))
    record["message"] = one_line(redact(record["message"]))
    for key, value in record["extra"].items():
        if isinstance(value, str):
            record["extra"][key] = redact(value)


_SQLALCHEMY_LINK = re.compile(r"\s*\(Background on this error at: \S+\)")


def one_line(message: str) -> str:
    """Every event on ONE line, whatever an exception's text brings (SQLAlchemy's errors end in a second line, a link
    to its docs, dropped here): an operator greps and tails the log by line."""
    if "\n" not in message and "\r" not in message:
        return message
    return " ".join(part.strip() for part in _SQLALCHEMY_LINK.sub("", message).splitlines() if part.strip())


def _actor_of(module: str) -> str:
    """`catalyst.broker.stream` → broker; `pykka.actor` → pykka: unbound lines still name their part."""
    parts = module.split(".")
    return parts[1] if parts[0] == "catalyst" and len(parts) > 1 else parts[0]


def _json_line(record: dict[str, Any]) -> str:
    payload: dict[str, Any] = {
        "ts": record["time"].isoformat(timespec="milliseconds"),
        "level": record["level"].name,
        "actor": record["extra"].get("actor", "-"),
        "msg": record["message"],
    }
    # Not `_json`: the sink before this one (stderr, then the file) left its own line there.
    payload.update({k: v for k, v in record["extra"].items() if k != "actor" and not k.startswith("_")})
    if record["exception"] is not None:
        payload["exception"] = redact(f"{record['exception'].type.__name__}: {record['exception'].value}")
    record["extra"]["_json"] = json.dumps(payload, default=str)
    return "{extra[_json]}\n"


CLEAN_CLOSE = "sent 1000 (OK); then received 1000 (OK)"
LOGIN_REFUSED = "error during websocket communication: login refused"  # alpaca-py's words around ours


class _InterceptHandler(logging.Handler):
    """Send stdlib records (pykka, alpaca-py, SQLAlchemy, Alembic, aiohttp) to loguru, keeping their level."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        message = record.getMessage()
        exc_info = record.exc_info
        if record.name.startswith("alpaca"):
            # alpaca-py logs its stream's errors with a traceback (log.exception) while it retries by itself; the
            # message already names the error, and what it means is ours to say (catalyst.broker.stream): one line.
            exc_info = None
            if CLEAN_CLOSE in message:
                # alpaca-py warns "websocket error, restarting" even when we closed the stream ourselves (close code
                # 1000 both ways, at every stop): not a warning an operator should have to learn to ignore, nor
                # words ("error, restarting") that sound like one.
                level, message = "INFO", "trading stream closed cleanly (close code 1000 both ways: ours, at a stop)"
            elif LOGIN_REFUSED in message:
                level = "DEBUG"  # our own refusal, raised to make alpaca-py retry: `broker stream … login refused` said it
        elif exc_info is not None and (fault := storage_fault(exc_info[1])) is not None:
            # pykka logs each actor a failing disk kills ("Unhandled exception in DoctorActor …") and each write it
            # refused ("Exception returned from DbWriter … to caller") with a 100-line traceback that says nothing
            # beyond SQLite's few words; the writer and the daemon say what it means (Daemon.check_actors).
            cause = "another program held the database's lock" if is_held_lock(fault) else "the database's disk failed"
            exc_info, message = None, f"{message.rstrip(': ')}: {fault} ({cause})"
        logger.opt(exception=exc_info).bind(actor=_actor_of(record.name)).log(level, message)


class _LogFile:
    """The log file, written through a loguru logger of its own (loguru's documented `copy.deepcopy` recipe) whose
    write errors come back here instead of being printed: with the default, a full disk under the log file printed
    a ten-line "Logging error in Loguru Handler" traceback to stderr for every line, hundreds a minute, around the
    lines that matter. Now its failure and its recovery are said once each, on the daemon's other sinks; meanwhile
    every line still goes to stderr (the supervisor's journal), and each tries the file again."""

    def __init__(self, file: Path, rotation: str, retention: int, blank: Any) -> None:
        self.file = file
        self.failing: str | None = None
        self._logger = blank
        self._rotation, self._retention = rotation, retention
        self.open(file)

    def open(self, target: Path | str) -> None:
        """Write to `target` from now on (the file given at start; a test points it at /dev/full)."""
        self.close()
        handler_id = self._logger.add(target, level=0, format="{message}", rotation=self._rotation,
                                      retention=self._retention, backtrace=False, diagnose=False, enqueue=False,
                                      catch=False)
        # The line is formatted already: hand it straight to loguru's file sink (rotation, retention) when this
        # loguru has the attributes 0.7 has. Through the logger it is a second record per line, which doubled the
        # cost of a line (40 → 70-95 µs here), and the trading path logs several per trade.
        try:
            self._write = self._logger._core.handlers[handler_id]._sink.write
        except (AttributeError, KeyError, TypeError):
            self._write = self._logger.opt(raw=True).info

    def write(self, message: Any) -> None:
        try:
            # loguru's Message as it came, not str(message): a time rotation ("1 day", "00:00") reads its `.record`.
            self._write(message)
        except Exception as exc:  # noqa: BLE001 - a log line must never take its caller down
            if self.failing is None:
                self.failing = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
                self._say(f"log file {self.file} cannot be written ({self.failing}): lines go to stderr only until "
                          "it can (each line tries it again)", "ERROR")
        else:
            if self.failing is not None:
                self.failing = None
                self._say(f"log file {self.file} written again", "WARNING")

    @staticmethod
    def _say(text: str, level: str) -> None:
        # From another thread: this sink runs under its handler's lock, which a log call from here would take again.
        threading.Thread(target=lambda: logger.bind(actor="logs").log(level, text), name="log-file-report").start()

    def close(self) -> None:
        try:
            self._logger.remove()
        except OSError:  # its last flush on a full disk: those lines reached stderr, the file is let go regardless
            pass


_log_file: _LogFile | None = None


def _add_file_sink(file: Path, level: str, formatter: Any, rotation: str, retention: int, blank: Any) -> None:
    global _log_file
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        _log_file = _LogFile(file, rotation, retention, blank)
        logger.add(_log_file.write, level=level, format=formatter, backtrace=False, diagnose=False, enqueue=False)
        # Logs may name positions and P&L: readable by the owner only.
        file.touch(exist_ok=True)
        file.chmod(0o600)
    except OSError as exc:
        raise LogFileError(f"logging.file: cannot write {file}: {exc.strerror or exc}") from None
    except ValueError as exc:  # loguru parses the rotation only here: "Cannot parse rotation from: 'fifty'"
        raise LogFileError(f'logging.rotation: {exc} (a size like "50 MB", an interval like "1 day", '
                           f'or a time like "00:00")') from None


def _not_file_only(record: dict[str, Any]) -> bool:
    return not record["extra"].get("_file_only")


def to_log_file_only(level: str, message: str) -> None:
    """A `system` line for the log file alone, when there is one: the caller has said it on stderr already. So the
    reason a daemon exits (printed by the command line) is also the last line of the file its operator tails."""
    if _log_file is not None:
        logger.bind(actor="system", _file_only=True).log(level, message)


def close_sinks() -> None:
    """Every sink removed (loguru waits for a line being written) and the log file closed, flushing it: for an exit
    that skips Python's own shutdown (cli.run_command). A thread logging after this logs nothing."""
    global _log_file
    try:
        logger.remove()
    except OSError:  # the log file's last flush on a full disk: its lines reached stderr already
        pass
    if _log_file is not None:
        _log_file.close()
        _log_file = None


def setup_logging(
    level: str = "INFO",
    fmt: str = "text",
    file: Path | None = None,
    rotation: str = "50 MB",
    retention: int = 10,
    secrets: Iterable[str] = (),
) -> None:
    """(Re)configure every sink. Called at start and on SIGHUP (which reopens the log file)."""
    keep_secrets_out(secrets)
    global _log_file
    logger.remove()
    if _log_file is not None:  # SIGHUP: the old file is closed, the new one opened below
        _log_file.close()
        _log_file = None
    blank = copy.deepcopy(logger)  # no sinks, no patcher: the log file's own logger (_LogFile)
    logger.configure(patcher=_patch, extra={})
    formatter: Any = _json_line if fmt == "json" else TEXT_FORMAT
    logger.add(sys.stderr, level=level, format=formatter, backtrace=False, diagnose=False, filter=_not_file_only)
    if file is not None:
        _add_file_sink(file, level, formatter, rotation, retention, blank)  # stderr keeps logging if this raises
    logging.basicConfig(handlers=[_InterceptHandler()], level=logging.INFO, force=True)
    for noisy in ("sqlalchemy.engine", "aiohttp.access", "websockets", "urllib3", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
