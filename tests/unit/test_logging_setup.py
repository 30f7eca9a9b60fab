"""Logging: every line names its actor, stdlib loggers arrive, JSON is one object per line, secrets never appear."""

from __future__ import annotations

import json
import logging

from loguru import logger

from catalyst.logs import setup_logging


def test_json_lines_name_the_actor_and_redact_secrets(tmp_path, capsys):
    log_file = tmp_path / "logs" / "catalyst.log"
    setup_logging(fmt="json", file=log_file, secrets=["AKSECRET123", "hunter2-secret"])
    logger.bind(actor="router", order="o-1").info("submitting with key AKSECRET123 and hunter2-secret")
    logging.getLogger("pykka.actor").warning("stdlib says hunter2-secret")
    logger.remove()
    lines = [json.loads(line) for line in log_file.read_text().splitlines()]
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


def test_alpacas_warning_on_our_own_clean_stream_close_is_info_but_a_real_error_stays_a_warning(tmp_path):
    log_file = tmp_path / "catalyst.log"
    setup_logging(fmt="json", file=log_file)
    stream_log = logging.getLogger("alpaca.trading.stream")
    stream_log.warning("trading stream websocket error, restarting  connection: sent 1000 (OK); then received 1000 (OK)")
    stream_log.warning("trading stream websocket error, restarting  connection: no close frame received or sent")
    logger.remove()
    levels = [json.loads(line)["level"] for line in log_file.read_text().splitlines()]
    assert levels == ["INFO", "WARNING"]
