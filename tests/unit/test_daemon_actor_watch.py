"""A daemon whose own actor died (pykka stops an actor whose handler raises, and only logs it) says so and exits,
so its supervisor restarts it and the restart rebuilds everything from the database."""

from __future__ import annotations

import argparse
import os
import signal
import threading
from types import SimpleNamespace
from typing import Any, Iterator

import pykka
import pytest
from loguru import logger

from catalyst import daemon as daemon_module
from catalyst.cli import main
from catalyst.config import load_config
from catalyst.daemon import Daemon
from catalyst.errors import ActorDied


class Steady(pykka.ThreadingActor):
    def on_receive(self, message: Any) -> Any:
        if message == "bug":
            raise ValueError("a bug")
        return message


class Fragile(Steady):
    pass


@pytest.fixture
def actors() -> Iterator[dict[str, Any]]:
    refs = {"worker": Steady.start(), "router": Fragile.start(), "cycle": Steady.start()}
    yield refs
    for ref in refs.values():
        if ref.is_alive():
            ref.stop()


def a_daemon(actors: dict[str, Any]) -> Daemon:
    daemon = Daemon(SimpleNamespace(), SimpleNamespace(), "sqlite+aiosqlite:///unused.db")  # type: ignore[arg-type]
    # As in Daemon.start: the trading system (its refs), then the cycle's ref.
    daemon.parts = [SimpleNamespace(refs=[actors["worker"], actors["router"]]), actors["cycle"]]
    return daemon


def test_all_alive_passes_the_check(actors: dict[str, Any]) -> None:
    daemon = a_daemon(actors)
    daemon.check_actors()
    assert daemon.dead_actors() == []


def test_an_actor_that_died_of_an_error_stops_the_daemon_naming_it(actors: dict[str, Any]) -> None:
    daemon = a_daemon(actors)
    with pytest.raises(pykka.ActorDeadError):  # the tell is handled, the actor is gone after it
        actors["router"].tell("bug")
        for _ in range(200):
            actors["router"].ask("still there?", timeout=5)
    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(message.record["message"]), level="CRITICAL")
    try:
        with pytest.raises(ActorDied, match="actor Fragile died unexpectedly") as died:
            daemon.check_actors()
    finally:
        logger.remove(sink)
    assert lines == ["system actor Fragile died (its error is logged above): stopping so the supervisor restarts "
                     "the daemon; protection stays at the broker, a restart rebuilds from the database"]
    assert died.value.exit_code == 1 and actors["worker"].is_alive() and actors["cycle"].is_alive()


def test_a_trade_stream_whose_thread_ended_is_named_too(actors: dict[str, Any]) -> None:
    daemon = a_daemon(actors)
    stream = SimpleNamespace(running=True)
    daemon.parts[0].stream = stream
    assert daemon.dead_actors() == []
    stream.running = False
    assert daemon.dead_actors() == ["trade stream"]


def test_the_cli_turns_it_into_one_line_and_exit_1(monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    def dies(_args: Any) -> int:
        raise ActorDied("actor OrderRouter died unexpectedly (its error is in the log); restart the daemon: it "
                        "rebuilds every position from the database")
    monkeypatch.setattr("catalyst.daemon.run_daemon", dies)
    assert main(["run"]) == 1
    assert capsys.readouterr().err == ("catalyst: error: actor OrderRouter died unexpectedly (its error is in the "
                                       "log); restart the daemon: it rebuilds every position from the database\n")


def test_the_running_daemon_checks_its_actors_and_stops_everything_when_one_died(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch, actors: dict[str, Any]) -> None:
    """Through the main loop itself: a `catalyst run` whose router dies exits with ActorDied, the rest stopped."""
    config_file = tmp_path / "config.toml"
    config_file.write_text(f'[daemon]\ndatabase_url = "sqlite+aiosqlite:///{tmp_path / "catalyst.db"}"\ncpu = "all"\n'
                           '[broker]\nurl = "http://127.0.0.1:9"\n')
    config = load_config(config_file)

    def start(self: Daemon) -> Daemon:
        self.parts = [SimpleNamespace(refs=[actors["worker"], actors["router"]], stop=lambda: None), actors["cycle"]]
        actors["router"].tell("bug")  # dies a moment after start-up
        return self

    monkeypatch.setattr(Daemon, "start", start)
    monkeypatch.setattr(daemon_module, "_check_database_before_the_broker", lambda url: None)
    endpoint = SimpleNamespace(exchange=None, close=lambda: None)
    handled = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)
    before = {sig: signal.getsignal(sig) for sig in handled}  # _serve installs the daemon's: pytest's come back
    # Without the check the loop would wait for ever: a SIGTERM after 20 s ends it (and the test fails).
    deadline = threading.Timer(20, lambda: os.kill(os.getpid(), signal.SIGTERM))
    deadline.start()
    try:
        with pytest.raises(ActorDied, match="Fragile"):
            daemon_module._serve(argparse.Namespace(config=config_file), config, SimpleNamespace(), lambda: endpoint,
                                 config.daemon.database_url, None, "catalyst run")
    finally:
        deadline.cancel()
        for sig, handler in before.items():
            signal.signal(sig, handler)
    assert not actors["cycle"].is_alive()  # the daemon stopped what was left


def test_an_actor_left_running_after_the_stop_is_named_and_stopped_so_the_process_exits() -> None:
    """Seen on a full disk: position actors nobody stopped kept `catalyst run` alive after its error line."""
    lines: list[tuple[str, str]] = []
    sink = logger.add(lambda message: lines.append((message.record["level"].name, message.record["message"])),
                      level="INFO")
    left = Fragile.start()
    try:
        daemon_module._stop_leftover_actors()
    finally:
        logger.remove(sink)
        if left.is_alive():
            left.stop()
            pytest.fail("the leftover actor was not stopped")
    assert ("WARNING", "system 1 actor still running after the stop (Fragile): stopping it so the process can "
            "exit") in lines
    daemon_module._stop_leftover_actors()  # none left: nothing said
    assert len(lines) == 1


def test_an_actor_that_does_not_stop_in_time_does_not_cut_the_rest_of_the_stop_short(monkeypatch) -> None:
    """A write waiting out another program's lock outlasted the last guard's 10 s, and its pykka.Timeout escaped the
    daemon's final steps (the lock released, the emergency marker settled, the watchdog cancelled): exit 1 as an
    internal error (a review)."""
    lines: list[tuple[str, str]] = []
    sink = logger.add(lambda message: lines.append((message.record["level"].name, message.record["message"])),
                      level="INFO")

    def too_slow(**_: Any) -> None:
        raise pykka.Timeout("10 seconds")

    monkeypatch.setattr(pykka.ActorRegistry, "stop_all", too_slow)
    left = Fragile.start()
    try:
        daemon_module._stop_leftover_actors()
    finally:
        logger.remove(sink)
        left.stop()
    assert lines[-1] == ("WARNING", "system actors still running 10 s after being asked to stop (Fragile); the process "
                                    "exits without them")


def test_a_storage_fault_with_no_broker_to_ask_tells_the_operator_to_check_there(tmp_path) -> None:
    """Start-up can meet the full disk before the broker is connected: the exit line still says where to look."""
    daemon = Daemon(SimpleNamespace(), SimpleNamespace(), f"sqlite+aiosqlite:///{tmp_path}/c.db")  # type: ignore[arg-type]
    assert daemon._storage_failed("database or disk is full") == (
        f"{tmp_path}/c.db: database or disk is full: nothing more could be recorded, so the daemon stopped (protection "
        "stays at the broker; which shares have no stop is for you to check at the broker); free disk space or repair "
        "the disk, then restart: it rebuilds every position from the database and catches up with the broker")
