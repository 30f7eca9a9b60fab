"""`catalyst exchange` as its own process: one ready line, Alpaca's wire protocol, a clean stop on SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import sys

from alpaca.trading.client import TradingClient


def test_exchange_process_serves_alpaca_and_stops_on_sigterm():
    process = subprocess.Popen(
        [sys.executable, "-m", "catalyst.cli", "exchange", "--port", "0", "--speed", "0",
         "--start", "2024-03-04T10:00:00", "--seed", "3"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        line = process.stdout.readline().strip()
        assert line.startswith("catalyst exchange ready at http://127.0.0.1:")
        url = line.rsplit(" ", 1)[1]
        client = TradingClient("PKE2E", "secret", paper=True, url_override=url)
        clock = client.get_clock()
        assert clock.is_open and clock.timestamp.isoformat().startswith("2024-03-04T")
        assert client.get_account().status.value == "ACTIVE"
        assets = client.get_all_assets()
        assert len(assets) >= 50
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0


def test_exchange_refuses_a_public_address_in_one_line():
    result = subprocess.run([sys.executable, "-m", "catalyst.cli", "exchange", "--host", "0.0.0.0"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "is not loopback" in result.stderr and result.stderr.count("\n") == 1
