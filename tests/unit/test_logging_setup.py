"""Logging: every line names its actor, stdlib loggers arrive, JSON is one object per line, secrets never appear."""

from __future__ import annotations

import json
import logging
import threading

from loguru import logger

from catalyst import logs
from catalyst.logs import setup_logging


def test_json_lines_name_the_actor_and_redact_secrets(tmp_path, capsys):
    log_file = tmp_path / "logs" / "catalyst.log"
    setup_logging(fmt="json", file=log_file, secrets=["AKSECRET123", "hunter2-secret"])
    logger.bind(actor="router", order="o-1").info("submitting with key AKSECRET123 and hunter2-secret")
    logging.getLogger("pykka.actor").warning("stdlib says hunter2-secret")
    logger.remove()
    lines = [json.loads(line) for line in log_file.read_text().splitlines()]
    # Each line once: the file's copy carried stderr's whole line in an `_json` key (seen under --log-format json).
    assert set(lines[0]) == {"ts", "level", "actor", "msg", "order"} and set(lines[1]) == {"ts", "level", "actor", "msg"}
    assert lines[0]["actor"] == "router" and lines[0]["order"] == "o-1"
    assert lines[0]["msg"] == "submitting with key *** and ***"
    assert lines[1]["actor"] == "pykka" and lines[1]["level"] == "WARNING"
    everything = log_file.read_text() + capsys.readouterr().err
    assert "AKSECRET123" not in everything and "hunter2-secret" not in everything
    assert oct(log_file.stat().st_mode & 0o777) == "0o600"


def test_text_lines_carry_the_actor_column(capsys):
    setup_logging(fmt="text")
    logger.bind(actor="position").info("position AAPL#p-12 pending → open qty=100")
    logger.remove()
    err = capsys.readouterr().err
    assert "position" in err and "| position AAPL#p-12 pending → open qty=100" in err


def test_an_error_text_with_line_breaks_is_logged_on_one_line_without_sqlalchemys_link(capsys):
    """Seen filling the disk under a running daemon: `router failed committing 8 updates: OperationalError: …` went
    on with a second line, SQLAlchemy's `(Background on this error at: https://sqlalche.me/e/…)`."""
    import sqlite3

    from sqlalchemy.exc import OperationalError

    error = OperationalError("COMMIT", (), sqlite3.OperationalError("database or disk is full"))
    assert "\n" in str(error)
    setup_logging(fmt="text")
    logger.bind(actor="router").error(f"router failed committing 8 updates: {type(error).__name__}: {error}")
    logger.bind(actor="system").warning("system first line\r\n  second line\n\nthird")
    logger.remove()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2
    assert lines[0].endswith("| router failed committing 8 updates: OperationalError: (sqlite3.OperationalError) "
                             "database or disk is full [SQL: COMMIT]")
    assert lines[1].endswith("| system first line second line third")


def test_alpacas_warning_on_our_own_clean_stream_close_is_info_but_a_real_error_stays_a_warning(tmp_path):
    log_file = tmp_path / "catalyst.log"
    setup_logging(fmt="json", file=log_file)
    stream_log = logging.getLogger("alpaca.trading.stream")
    stream_log.warning("trading stream websocket error, restarting  connection: sent 1000 (OK); then received 1000 (OK)")
    stream_log.warning("trading stream websocket error, restarting  connection: no close frame received or sent")
    logger.remove()
    lines = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert [line["level"] for line in lines] == ["INFO", "WARNING"]
    assert lines[0]["msg"] == "trading stream closed cleanly (close code 1000 both ways: ours, at a stop)"


def _config(tmp_path, logging_lines: str):
    path = tmp_path / "config.toml"
    path.write_text(f"[logging]\nformat = \"json\"\n{logging_lines}")
    return path


def test_a_log_file_that_cannot_be_set_up_is_a_config_error_naming_the_key(tmp_path):
    import argparse

    import pytest

    from catalyst.config import load_config, load_secrets
    from catalyst.daemon import _setup_logging
    from catalyst.errors import ConfigError

    (tmp_path / "plain-file").write_text("")
    cases = [('file = "x.log"\nrotation = "fifty"\n', "logging.rotation: Cannot parse rotation from: 'fifty'"),
             ('file = "plain-file/x.log"\n', f"logging.file: cannot write {tmp_path / 'plain-file' / 'x.log'}")]
    for lines, expected in cases:
        path = _config(tmp_path, lines)
        args = argparse.Namespace(config=path, log_level=None, log_format=None)
        with pytest.raises(ConfigError) as caught:
            _setup_logging(args, load_config(path), load_secrets({}))
        assert str(caught.value).startswith(f"{path}: {expected}") and "\n" not in str(caught.value)
        assert caught.value.exit_code == 2
    logger.remove()


def test_sighup_with_a_log_file_nobody_can_write_keeps_the_running_config_and_its_log_file(tmp_path):
    import argparse

    from catalyst.config import load_config, load_secrets
    from catalyst.daemon import Daemon, _setup_logging

    path = _config(tmp_path, 'file = "good.log"\n')
    args, secrets = argparse.Namespace(config=path, log_level=None, log_format=None), load_secrets({})
    daemon = Daemon(config=load_config(path), endpoint=None, database_url="")  # type: ignore[arg-type]
    _setup_logging(args, daemon.config, secrets)
    (tmp_path / "plain-file").write_text("")
    _config(tmp_path, 'file = "plain-file/x.log"\n')
    daemon.reload(args, secrets)  # the old code raised NotADirectoryError out of the signal handling here
    logger.bind(actor="system").info("still logging")
    logger.remove()
    assert daemon.config.logging.file == tmp_path / "good.log"
    lines = [json.loads(line)["msg"] for line in (tmp_path / "good.log").read_text().splitlines()]
    assert any(m.startswith("system SIGHUP: config not reloaded, the running one stays: ") and "logging.file: cannot write"
               in m for m in lines), lines
    assert lines[-1] == "still logging"


def test_a_log_file_on_a_full_disk_is_said_once_not_as_a_traceback_per_line_and_its_return_too(tmp_path, capsys):
    log_file = tmp_path / "catalyst.log"
    setup_logging(fmt="text", file=log_file)
    file_sink = logs._log_file
    assert file_sink is not None
    # Straight into loguru's file sink, not a second record per line (see _LogFile.open): a loguru that moved it
    # still logs, more slowly; this says so.
    assert type(getattr(file_sink._write, "__self__", None)).__name__ == "FileSink"
    log = logger.bind(actor="doctor")
    log.info("doctor pass #1: 0 findings")

    def disk(path: str) -> None:  # what the log file's writes meet from now on (/dev/full: ENOSPC on every write)
        file_sink.open(path)

    def reports() -> list[str]:
        for thread in threading.enumerate():
            if thread.name == "log-file-report":
                thread.join(5)
        return [line for line in capsys.readouterr().err.splitlines() if "| log file" in line]

    disk("/dev/full")
    for n in range(2, 12):
        log.info(f"doctor pass #{n}: 0 findings")
    said = reports()
    disk(str(log_file))
    log.info("doctor pass #12: 0 findings")
    said_again = reports()
    logger.remove()
    file_sink.close()

    assert said == [f"{said[0][:24]}ERROR   logs         | log file {log_file} cannot be written (No space left on "
                    "device): lines go to stderr only until it can (each line tries it again)"]
    assert said_again == [f"{said_again[0][:24]}WARNING logs         | log file {log_file} written again"]
    written = log_file.read_text()
    assert "doctor pass #1: 0 findings" in written and "doctor pass #12: 0 findings" in written
    assert "doctor pass #5" not in written


def test_a_log_file_on_a_full_disk_never_prints_loguru_tracebacks(tmp_path, capfd):
    setup_logging(fmt="text", file=tmp_path / "catalyst.log")
    file_sink = logs._log_file
    assert file_sink is not None
    file_sink.open("/dev/full")
    for n in range(20):
        logger.bind(actor="router").info(f"order AAPL#o-{n} created")
    for thread in threading.enumerate():
        if thread.name == "log-file-report":
            thread.join(5)
    logger.remove()
    file_sink.close()
    err = capfd.readouterr().err
    assert "Logging error" not in err and "Traceback" not in err
    assert err.count("order AAPL#o-") == 20  # every line still reached stderr


def test_every_rotation_loguru_accepts_writes_the_lines_to_the_log_file(tmp_path, capsys):
    # A time rotation ("1 day", "00:00", "1 week": config.toml documents them) reads each line's record time; a
    # plain string handed to the file sink had none, and every line missed the file.
    for rotation in ("1 day", "00:00", "1 week", "50 MB"):
        log_file = tmp_path / rotation.replace(" ", "_").replace(":", "") / "catalyst.log"
        setup_logging(fmt="text", file=log_file, rotation=rotation)
        logger.bind(actor="doctor").info(f"doctor pass #1 with rotation {rotation}")
        for thread in threading.enumerate():
            if thread.name == "log-file-report":
                thread.join(5)
        logger.remove()
        logs._log_file.close()
        assert f"doctor pass #1 with rotation {rotation}" in log_file.read_text(), rotation
        assert "cannot be written" not in capsys.readouterr().err, rotation
