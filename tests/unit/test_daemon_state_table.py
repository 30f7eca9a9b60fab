"""The periodic state table (and the snapshot `catalyst status` shows) says entries are halted when the doctor halted
them, not only when the cycle did (the loss limit); an actor too busy to answer is named, and the rest is shown."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any

import pykka
import pytest
from loguru import logger

from catalyst.clock import WallClock
from catalyst.config import load_config
from catalyst.daemon import Daemon
from catalyst.status import state_snapshot_path

NOW = datetime(2026, 3, 2, 15, 0, tzinfo=timezone.utc)


def answer(value: Any) -> Any:
    return SimpleNamespace(get=lambda timeout=None: value)


def state_lines(tmp_path, clock: Any, phase: str, doctor_halt: str | None) -> list[str]:
    """The state table of a daemon over answering stand-ins for its cycle, supervisor and doctor: the lines logged."""
    config_file = tmp_path / "config.toml"
    config_file.write_text('[daemon]\ndatabase_url = "sqlite+aiosqlite:///catalyst.db"\n')
    daemon = Daemon(load_config(config_file), SimpleNamespace(clock=clock),  # type: ignore[arg-type]
                    f"sqlite+aiosqlite:///{tmp_path / 'catalyst.db'}")
    daemon.cycle = SimpleNamespace(proxy=lambda: SimpleNamespace(state=lambda: answer({"phase": phase,
                                                                                        "halted": None})))
    daemon.system = SimpleNamespace(supervisor=SimpleNamespace(live_refs=lambda: answer([])))
    daemon.hooks = SimpleNamespace(doctor=SimpleNamespace(halt_reason=answer(doctor_halt)))
    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(message.record["message"]), level="INFO")
    try:
        daemon.log_state_table()
    finally:
        logger.remove(sink)
    return lines


def test_a_doctor_halt_shows_in_the_state_table_and_the_snapshot(tmp_path):
    now = datetime(2026, 3, 2, 15, 0, tzinfo=timezone.utc)
    lines = state_lines(tmp_path, SimpleNamespace(now=lambda: now), "monitoring", "another catalyst daemon (database x)")
    assert lines == ["state 2026-03-02 15:00 phase=monitoring live=0 halted=another catalyst daemon (database x)"]
    snapshot = json.loads(state_snapshot_path(tmp_path / "catalyst.db").read_text())
    assert snapshot["halted"] == "another catalyst daemon (database x)"


def test_a_clock_following_the_brokers_says_so_in_the_state_line(tmp_path):
    """An operator tailing the log sees the correction the daemon runs on (catalyst.clock.WallClock.follow)."""
    clock = WallClock(source=lambda: NOW - timedelta(seconds=20.3))
    clock.follow(20.3)
    assert state_lines(tmp_path, clock, "trading", None) == [
        "state 2026-03-02 15:00 phase=trading live=0 halted=no clock=broker's (+20.3 s on this machine's)"]


class Busy(pykka.ThreadingActor):
    """An actor held in a long call, as the doctor is in a pass whose broker read hangs."""

    def __init__(self, answer_when_free: dict[str, Any] | str | None) -> None:
        super().__init__()
        self.halt_reason = answer_when_free
        self.answer_when_free = answer_when_free

    def hold(self, until: threading.Event, holding: threading.Event) -> None:
        holding.set()
        until.wait(10)

    def state(self) -> Any:
        return self.answer_when_free


def position(label: str) -> dict[str, Any]:
    return {"position": label, "status": "open", "qty": "35", "avg": "461.17", "protected": "35"}


@pytest.fixture
def quick(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Daemon:
    """A daemon whose state table waits 1 s for its answers (5 s as shipped)."""
    monkeypatch.setattr("catalyst.daemon.STATE_ANSWER_S", 1.0)
    config_file = tmp_path / "config.toml"
    config_file.write_text('[daemon]\ndatabase_url = "sqlite+aiosqlite:///catalyst.db"\n')
    return Daemon(load_config(config_file), SimpleNamespace(clock=SimpleNamespace(now=lambda: NOW)),  # type: ignore[arg-type]
                  f"sqlite+aiosqlite:///{tmp_path / 'catalyst.db'}")


@pytest.fixture
def free() -> Iterator[threading.Event]:
    """Set at the end of the test: every actor held by `wire` is let go."""
    event = threading.Event()
    yield event
    event.set()


def wire(daemon: Daemon, free: threading.Event, cycle: Any, positions: list[Any], doctor: Any,
         held: tuple[Any, ...]) -> None:
    daemon.cycle = cycle
    daemon.system = SimpleNamespace(supervisor=SimpleNamespace(live_refs=lambda: answer(positions)))
    daemon.hooks = SimpleNamespace(doctor=doctor.proxy())
    for actor in held:  # each inside its long call before the test goes on (its stack shows it there)
        holding = threading.Event()
        actor.proxy().hold(free, holding)
        assert holding.wait(10), "the actor never started its long call"


def logged(step: Any) -> list[str]:
    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(message.record["message"]), level="INFO")
    try:
        step()
    finally:
        logger.remove(sink)
    return lines


def test_a_busy_actor_is_named_in_the_state_table_and_the_rest_is_shown(quick, free, tmp_path):
    doctor, stuck_position = Busy.start(None), Busy.start(position("COBS#p-4"))
    wire(quick, free, Busy.start({"phase": "monitoring", "halted": None}),
         [Busy.start(position("KERB#p-3")), stuck_position], doctor, held=(doctor, stuck_position))
    assert logged(quick.log_state_table) == [
        "state 2026-03-02 15:00 phase=monitoring live=2 (1 busy: no answer in 1 s) "
        "halted=unknown (the doctor is busy: no answer in 1 s)",
        "state   KERB#p-3       open     qty=35     avg=461.17   protected=35",
    ]
    snapshot = json.loads(state_snapshot_path(tmp_path / "catalyst.db").read_text())
    assert snapshot["halted"] == "unknown (the doctor is busy: no answer in 1 s)"
    assert [p["position"] for p in snapshot["positions"]] == ["KERB#p-3"]


def test_a_busy_cycle_shows_its_phase_as_unknown_and_asks_the_doctor(quick, free):
    cycle = Busy.start({"phase": "monitoring", "halted": None})
    wire(quick, free, cycle, [], Busy.start("broker positions disagree"), held=(cycle,))
    assert logged(quick.log_state_table) == [
        "state 2026-03-02 15:00 phase=unknown (the cycle is busy: no answer in 1 s) live=0 "
        "halted=broker positions disagree"]


def test_a_busy_cycle_is_never_shown_as_not_halted(quick, free):
    """The cycle halts entries itself at the loss limit: while it is busy, "halted=no" would be a guess."""
    cycle = Busy.start({"phase": "monitoring", "halted": "daily loss limit"})
    wire(quick, free, cycle, [], Busy.start(None), held=(cycle,))
    assert logged(quick.log_state_table) == [
        "state 2026-03-02 15:00 phase=unknown (the cycle is busy: no answer in 1 s) live=0 "
        "halted=unknown (the cycle is busy: no answer in 1 s)"]


def test_usr1_dumps_every_stack_and_names_a_busy_actor_instead_of_dying_on_it(quick, free):
    """SIGUSR1 is what an operator sends when something looks stuck: the busy actor's stack must be in the dump."""
    cycle = Busy.start({"phase": "monitoring", "halted": None})
    wire(quick, free, cycle, [Busy.start(position("KERB#p-3"))], Busy.start(None), held=(cycle,))
    lines = logged(quick.dump_state)
    assert any(line.startswith("state thread ") and "hold:" in line for line in lines), lines
    assert "state cycle unknown (the cycle is busy: no answer in 1 s)" in lines
    assert f"state position {position('KERB#p-3')}" in lines


def test_a_position_that_closed_meanwhile_is_left_out_and_the_table_shown(quick, free):
    closed = Busy.start(position("SOSW#p-2"))
    closed.stop()  # a closed position's actor stops: between the supervisor's list and the question, it may
    wire(quick, free, Busy.start({"phase": "monitoring", "halted": None}),
         [Busy.start(position("KERB#p-3")), closed], Busy.start(None), held=())
    assert logged(quick.log_state_table) == [
        "state 2026-03-02 15:00 phase=monitoring live=1 halted=no",
        "state   KERB#p-3       open     qty=35     avg=461.17   protected=35",
    ]


def test_a_state_snapshot_that_cannot_be_written_is_a_warning_and_the_table_is_still_logged(tmp_path):
    config_file = tmp_path / "config.toml"
    config_file.write_text('[daemon]\ndatabase_url = "sqlite+aiosqlite:///catalyst.db"\n')
    daemon = Daemon(load_config(config_file), SimpleNamespace(clock=SimpleNamespace(now=lambda: NOW)),  # type: ignore[arg-type]
                    f"sqlite+aiosqlite:///{tmp_path / 'catalyst.db'}")
    daemon.cycle = SimpleNamespace(proxy=lambda: SimpleNamespace(state=lambda: answer({"phase": "monitoring",
                                                                                        "halted": None})))
    daemon.system = SimpleNamespace(supervisor=SimpleNamespace(live_refs=lambda: answer([])))
    daemon.hooks = SimpleNamespace(doctor=SimpleNamespace(halt_reason=answer(None)))
    state_snapshot_path(tmp_path / "catalyst.db").with_suffix(".tmp").mkdir()  # where the snapshot is written first
    lines: list[tuple[str, str]] = []
    sink = logger.add(lambda message: lines.append((message.record["level"].name, message.record["message"])),
                      level="INFO")
    try:
        daemon.log_state_table()
    finally:
        logger.remove(sink)
    assert lines[0] == ("INFO", "state 2026-03-02 15:00 phase=monitoring live=0 halted=no")
    assert lines[1] == ("WARNING", "state snapshot for `catalyst status` not written: Is a directory")
