"""FollowedClock: an emulator's clock read once per resync over one kept-alive connection, extrapolated between."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from loguru import logger

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


@pytest.fixture
def following(server: ClockServer) -> Iterator[Callable[..., FollowedClock]]:
    made: list[FollowedClock] = []

    def follow(resync_s: float) -> FollowedClock:
        made.append(FollowedClock(server.url, resync_s=resync_s))
        return made[-1]

    yield follow
    for clock in made:
        clock.close()


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_now_never_reads_the_emulator_a_thread_of_its_own_does_over_one_connection(
        server: ClockServer, following: Callable[..., FollowedClock]) -> None:
    clock = following(resync_s=0.3)
    first = clock.now()
    later = [clock.now() for _ in range(200)]
    read_in_a_burst = server.requests
    wait_until(lambda: server.requests >= read_in_a_burst + 2)  # two more readings, asked by no one

    assert first >= datetime(2026, 3, 2, 14, 30, tzinfo=timezone.utc) and later[-1] >= first
    assert read_in_a_burst <= 2  # the first reading (and one more only if this machine stalled 0.3 s)
    assert len(server.peers) == 1  # one kept-alive connection
    assert clock.speed == 60.0


def test_now_does_not_wait_while_a_reading_is_slow(server: ClockServer,
                                                   following: Callable[..., FollowedClock]) -> None:
    clock = following(resync_s=0.05)
    server.delay_s = 0.5
    wait_until(lambda: server.requests >= 2)  # the follower is inside its slow reading
    started = time.monotonic()
    for _ in range(100):
        clock.now()
    asked_for = time.monotonic() - started

    assert asked_for < 0.25


def test_an_emulator_that_stops_answering_is_extrapolated_from_the_last_reading(
        server: ClockServer, following: Callable[..., FollowedClock]) -> None:
    clock = following(resync_s=0.02)
    before = clock.now()
    server.down = True
    wait_until(lambda: server.requests >= 3)  # readings refused since

    assert clock.now() > before


def test_closed_it_reads_no_more_and_goes_on_extrapolating(server: ClockServer) -> None:
    clock = FollowedClock(server.url, resync_s=0.02)
    wait_until(lambda: server.requests >= 2)
    clock.close()
    read = server.requests
    before = clock.now()
    time.sleep(0.1)

    assert server.requests == read
    assert clock.now() > before
    assert not any(t.name == "clock-follower" and t.is_alive() for t in threading.enumerate())


def test_readings_failing_for_a_while_give_one_warning_and_their_return_one_line(server: ClockServer) -> None:
    lines: list[tuple[str, str]] = []
    sink = logger.add(lambda m: lines.append((m.record["level"].name, m.record["message"])), level="INFO")
    clock = FollowedClock(server.url, resync_s=0.02, silent_for_s=0.2)
    try:
        server.down = True
        wait_until(lambda: any(level == "WARNING" for level, _ in lines))
        failing = server.requests
        wait_until(lambda: server.requests >= failing + 5)  # still refused: no second warning
        server.down = False
        wait_until(lambda: any("readings back" in text for _, text in lines))
    finally:
        clock.close()
        logger.remove(sink)

    warnings = [text for level, text in lines if level == "WARNING"]
    assert len(warnings) == 1
    assert warnings[0].startswith(f"exchange clock {server.url}/sim/v1/clock: no reading for ")
    assert "(09:30:00) at 60x" in warnings[0]  # the last reading (14:30Z, New York time) it goes on from
    assert [level for level, text in lines if "readings back" in text] == ["INFO"]
