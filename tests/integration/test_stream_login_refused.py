"""A trade stream login the broker refuses (here Alpaca's one-connection-per-account limit): one line per attempt
that says what it means, the router's ERROR once, and never a traceback in the log."""

from __future__ import annotations

import json
import re
import time

from loguru import logger
from websockets.sync.client import connect

from catalyst.broker.stream import TradeStream
from catalyst.logs import setup_logging

KEY, SECRET = "PKTESTKEY", "test-secret"
LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} (?P<level>[A-Z]+) +(?P<actor>\S+) +\| (?P<msg>.*)$")


def test_a_second_connection_on_the_account_is_refused_in_one_line_each_time_without_a_traceback(exchange, tmp_path):
    log_file = tmp_path / "catalyst.log"
    setup_logging(fmt="text", file=log_file)  # as a trader tails it: a traceback there is lines of its own
    refusals: list[str] = []
    with connect(exchange.stream_url, open_timeout=5) as first:  # another program holds the account's one stream
        first.send(json.dumps({"action": "authenticate", "data": {"key_id": KEY, "secret_key": SECRET}}))
        assert json.loads(first.recv(timeout=5))["data"]["status"] == "authorized"
        stream = TradeStream(KEY, SECRET, exchange.stream_url, on_update=lambda _: None, on_connected=lambda _: None,
                             on_auth_failed=refusals.append, reconnect_min_s=0.1)
        stream.start()
        try:
            deadline = time.monotonic() + 20
            while len(refusals) < 3 and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            stream.stop()
    logger.remove()

    assert len(refusals) >= 3 and all("connection limit exceeded" in r for r in refusals)
    text = log_file.read_text()
    assert "Traceback" not in text
    records = [LINE.match(line) for line in text.splitlines()]
    assert all(records), [line for line in text.splitlines() if not LINE.match(line)][:5]  # one line per event
    refused = [r for r in records if "login refused" in r["msg"]]
    assert len(refused) >= 3 and all(r["level"] == "ERROR" and r["actor"] == "broker" for r in refused)
    assert all("one trade stream per account: another program, or another catalyst daemon" in r["msg"] for r in refused)
    assert not [r for r in records if "error during websocket communication" in r["msg"]]  # alpaca-py's echo of it
