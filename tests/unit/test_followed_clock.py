"""FollowedClock: an emulator's clock read once per resync over one kept-alive connection, extrapolated between."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from catalyst.clock import FollowedClock


class ClockServer(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), ClockHandler)
        self.requests = 0
        self.peers: set[int] = set()  # client ports: one per connection
        self.delay_s = 0.0
        self.down = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class ClockHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    server: ClockServer

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.server.requests += 1
        self.server.peers.add(self.client_address[1])
        time.sleep(self.server.delay_s)
        if self.server.down:
            self.send_error(503)
            return
        body = json.dumps({"timestamp": "2026-03-02T14:30:00Z", "speed": 60.0}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[ClockServer]:
    made = ClockServer()
    thread = threading.Thread(target=made.serve_forever, daemon=True)
    thread.start()
    yield made
    made.shutdown()
    made.server_close()


def test_reads_once_per_resync_over_one_connection_and_extrapolates_between(server: ClockServer) -> None:
    clock = FollowedClock(server.url, resync_s=0.3)
    first = clock.now()
    later = [clock.now() for _ in range(50)]
    read_in_a_burst = server.requests
    time.sleep(0.35)
    clock.now()

    assert first >= datetime(2026, 3, 2, 14, 30, tzinfo=timezone.utc) and later[-1] >= first
    assert read_in_a_burst <= 2  # the first reading (and one more only if this machine stalled 0.3 s)
    assert server.requests == read_in_a_burst + 1  # read again once resync_s has passed
    assert len(server.peers) == 1  # one kept-alive connection
    assert clock.speed == 60.0


def test_a_thread_asking_while_another_reads_is_not_held_up(server: ClockServer) -> None:
    clock = FollowedClock(server.url, resync_s=0.0)
    server.delay_s = 0.5
    reader = threading.Thread(target=clock.now)
    reader.start()
    time.sleep(0.1)  # the reader is inside its slow poll
    started = time.monotonic()
    clock.now()
    asked_for = time.monotonic() - started
    reader.join()

    assert asked_for < 0.25


def test_an_emulator_that_stops_answering_is_extrapolated_from_the_last_reading(server: ClockServer) -> None:
    clock = FollowedClock(server.url, resync_s=0.0)
    before = clock.now()
    server.down = True
    time.sleep(0.02)

    assert clock.now() > before
