"""The benchmarks' exchange in a process of its own, driven over its /sim/v1 control routes.

Why: Alpaca is another machine. An exchange inside the benchmark's process would take the GIL for every order it
matches and every event it streams, from the very threads being timed, and a raw round trip measured while the
daemon idles would not pay that. In its own process the exchange runs beside the daemon as the broker does, and
the raw client and the daemon both reach it over loopback, the same way.

`python -m bench.remote_exchange NAMES PRICE [CPUS [LATENCY_MS]]` serves a ScriptedMarket of NAMES (comma-separated)
printed at PRICE, prints its URLs as one JSON line, and stops when its stdin closes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import requests

from catalyst import cpu
from catalyst.clock import FollowedClock

PROJECT = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 60.0


class RemoteExchange:
    """The subset of EmbeddedExchange's control methods the benchmarks use, over HTTP."""

    def __init__(self, base_url: str, stream_url: str, pid: int) -> None:
        self.base_url, self.stream_url = base_url, stream_url
        self.pid = pid  # the exchange process, for the CPU it spends
        self._http = requests.Session()
        self.clock = FollowedClock(base_url)

    def _post(self, path: str, body: dict[str, Any]) -> Any:
        reply = self._http.post(f"{self.base_url}/sim/v1/{path}", json=body, timeout=30)
        reply.raise_for_status()
        return reply.json()

    def _get(self, path: str) -> Any:
        reply = self._http.get(f"{self.base_url}/sim/v1/{path}", timeout=30)
        reply.raise_for_status()
        return reply.json()

    def set_price(self, symbol: str, price: Decimal | str | float, volume: int | None = None) -> None:
        self._post("price", {"symbol": symbol, "price": str(price), **({"volume": volume} if volume else {})})

    def advance(self, delta: timedelta) -> datetime:
        return datetime.fromisoformat(self._post("clock/advance", {"seconds": delta.total_seconds()})["timestamp"])

    def account_snapshot(self, key_id: str) -> dict[str, Any]:
        return dict(self._get(f"accounts/{key_id}/snapshot"))

    def stream_connected(self, key_id: str) -> bool:
        return key_id in self._get("streams")["connected_keys"]


@contextmanager
def exchange_process(names: list[str], price: str = "10.00", latency_ms: float = 0.0) -> Iterator[RemoteExchange]:
    # Alpaca is another machine: the exchange never shares the CPU a benchmark pins the daemon to (its child
    # would inherit the pin), it may use every CPU this process could when it started.
    cpus = ",".join(map(str, sorted(cpu.allowed_at_start()))) if cpu.supported() else ""
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.remote_exchange", ",".join(names), price, cpus, str(latency_ms)], cwd=PROJECT,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line:
            raise RuntimeError(f"the benchmark exchange process exited with {process.wait(START_TIMEOUT_S)}")
        urls = json.loads(line)
        remote = RemoteExchange(urls["base_url"], urls["stream_url"], process.pid)
        try:
            yield remote
        finally:
            remote.clock.close()
    finally:
        if process.stdin is not None:
            process.stdin.close()  # the child's signal to stop
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def main(argv: list[str]) -> int:
    from bench.rig import scripted_exchange  # the child's only heavy import

    names, price = argv[0].split(","), argv[1]
    if len(argv) > 2 and argv[2]:
        os.sched_setaffinity(0, {int(n) for n in argv[2].split(",")})  # before any thread of its own starts
    latency_ms = float(argv[3]) if len(argv) > 3 else 0.0
    with scripted_exchange(names, price, latency_ms) as exchange:
        print(json.dumps({"base_url": exchange.base_url, "stream_url": exchange.stream_url}), flush=True)
        sys.stdin.read()  # until the parent closes it (or dies)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
