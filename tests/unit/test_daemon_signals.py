"""The daemon's signal handlers before and after start-up, called as the interpreter calls them (no real signals:
the test's own process must not be stopped)."""

from __future__ import annotations

import gc
import signal
import sys
import threading
import time
import weakref
from types import SimpleNamespace
from typing import Any

import pytest

from catalyst import stop_request
from catalyst.daemon import Signals
from catalyst.errors import StopDuringStartup


class Cycle:
    def __init__(self) -> None:
        self.told: list[Any] = []

    def tell(self, message: Any) -> None:
        self.told.append(message)


def started_daemon() -> Any:
    return SimpleNamespace(cycle=Cycle(), reload_requested=False, emergency_requested=False)


def test_a_stop_during_start_up_unwinds_it_once_and_a_second_signal_leaves_the_cleanup_alone():
    signals = Signals(threading.Event())

    with pytest.raises(StopDuringStartup, match="SIGTERM"):
        signals._stop(signal.SIGTERM, None)
    assert signals.stop_event.is_set()
    signals._stop(signal.SIGINT, None)  # while what started is being stopped: no second exception in its cleanup


def test_after_start_up_a_stop_only_names_itself_for_the_main_loop(caplog):
    signals = Signals(threading.Event())
    signals.running(started_daemon())

    signals._stop(signal.SIGTERM, None)  # no exception: the main loop stops gracefully
    signals._stop(signal.SIGINT, None)

    assert not signals.stop_event.is_set()  # a plain flag: an Event's lock may be held by the loop it interrupted
    # Named for the main loop's line, not logged here: the interrupted main thread may be inside a log call, which
    # loguru refuses with a traceback on stderr.
    assert signals.stopped_by == "SIGTERM" and caplog.records == []


class Collected:
    pass


def discarded_in_a_weakref_callback(raise_it: Any) -> None:
    thing = Collected()
    watch = weakref.ref(thing, lambda _ref: raise_it())
    del thing
    gc.collect()
    assert watch() is None


def test_a_stop_whose_exception_python_discarded_is_carried_by_the_next_checkpoint(monkeypatch):
    # Raised in a garbage-collection or weakref callback (SQLAlchemy's), the handler's exception is discarded by Python
    # with an "Exception ignored" traceback, and start-up ran on to its end, entries included (a review).
    reported: list[BaseException] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda unraisable: reported.append(unraisable.exc_value))
    stop_request.keep_discarded_stops_quiet()
    signals = Signals(threading.Event())

    discarded_in_a_weakref_callback(lambda: signals._stop(signal.SIGTERM, None))

    assert signals.stop_event.is_set() and reported == []  # nothing printed: the checkpoint carries it
    with pytest.raises(StopDuringStartup, match="SIGTERM"):
        stop_request.checkpoint()
    signals._stop(signal.SIGTERM, None)  # a second one while unwinding: nothing raised

    def broken() -> None:
        raise ValueError("not a stop")

    discarded_in_a_weakref_callback(broken)  # anything else discarded still reaches the hook there was
    assert [type(exc) for exc in reported] == [ValueError]


def test_a_stop_while_the_exit_is_being_said_does_not_interrupt_it():
    # A start failing (exit 4, a broker unreachable) and a TERM landing as its line was printed: a traceback, exit 1.
    signals = Signals(threading.Event())
    stop_request.leaving()
    signals._stop(signal.SIGTERM, None)  # nothing raised
    assert stop_request.asked() is None


def test_a_start_up_wait_ends_as_soon_as_a_stop_is_asked():
    # tenacity's sleep in the broker and clock waits (broker.startup_wait_s): not the rest of a 30 s backoff.
    threading.Timer(0.2, stop_request.ask, args=("SIGTERM",)).start()
    began = time.monotonic()
    with pytest.raises(StopDuringStartup, match="SIGTERM"):
        stop_request.pause(30)
    assert time.monotonic() - began < 10


def test_an_emergency_stop_and_a_reload_asked_during_start_up_apply_once_it_is_up():
    signals = Signals(threading.Event())
    signals._emergency(signal.SIGUSR2, None)
    signals._reopen(signal.SIGHUP, None)
    signals._dump(signal.SIGUSR1, None)  # nothing to dump yet: ignored, not a crash
    daemon = started_daemon()

    signals.running(daemon)

    assert daemon.emergency_requested and daemon.cycle.told == []  # the main loop asks the cycle, not the handler
    assert daemon.reload_requested and not signals.stop_event.is_set()


def test_an_emergency_stop_after_start_up_only_raises_the_flag_the_main_loop_acts_on():
    # Logging or a pykka call in a signal handler can deadlock on a lock the interrupted main thread holds.
    signals = Signals(threading.Event())
    daemon = started_daemon()
    signals.running(daemon)

    signals._emergency(signal.SIGUSR2, None)

    assert daemon.emergency_requested and daemon.cycle.told == [] and not signals.stop_event.is_set()


def schema_error_as_pydantic_core_made_it() -> Exception:
    # pydantic-core building a schema when the TERM's exception went through it keeps only its text (CI).
    return RuntimeError('Error building "model" validator: SchemaError: Error building "enum" validator: '
                        'StopDuringStartup: SIGTERM')


def test_a_stop_a_library_wrapped_in_its_own_error_is_still_the_stop():
    stop_request.first("SIGTERM")
    chained = ValueError("while building")
    chained.__cause__ = StopDuringStartup("SIGTERM")

    for error in (schema_error_as_pydantic_core_made_it(), chained):
        carried = stop_request.carried_by(error)
        assert isinstance(carried, StopDuringStartup) and str(carried) == "SIGTERM"
    assert stop_request.carried_by(ValueError("disk says no")) is None


def test_a_genuine_error_is_never_taken_for_a_stop_when_none_was_asked():
    assert stop_request.carried_by(schema_error_as_pydantic_core_made_it()) is None


@pytest.fixture
def signal_handlers_put_back():
    kept = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1,
                                                   signal.SIGUSR2)}
    yield
    for sig, handler in kept.items():
        signal.signal(sig, handler)


def test_catalyst_run_stopped_while_a_library_wrapped_the_stop_exits_0_with_its_line(monkeypatch, capsys, tmp_path,
                                                                                     signal_handlers_put_back):
    # The CI failure: "catalyst: internal error: SchemaError: ... StopDuringStartup: SIGTERM", exit 1.
    import catalyst.daemon
    from catalyst.cli import main

    def run_daemon(args: Any) -> int:
        stop_request.first("SIGTERM")  # as the start-up handler does, before raising through pydantic-core
        raise schema_error_as_pydantic_core_made_it()

    monkeypatch.setattr(catalyst.daemon, "run_daemon", run_daemon)

    assert main(["run", "--config", str(tmp_path / "config.toml")]) == 0
    assert capsys.readouterr().err.strip().splitlines() == ["catalyst: stopped by SIGTERM during start-up"]


def test_a_stop_while_the_daemons_modules_import_is_held_until_they_are_in(monkeypatch, capsys, tmp_path,
                                                                           signal_handlers_put_back):
    # CI: a TERM raised inside the import of the daemon's modules left half-made ones behind (Python drops the module
    # it interrupted, not the packages holding part of it); the cleanup, importing the daemon's module again to keep
    # the emergency asked just before, failed on them: "internal error: AttributeError: module 'sqlalchemy.sql' has
    # no attribute 'base'", exit 1, the emergency lost. The stop is now held until the import is done.
    import types

    import catalyst.daemon as daemon_module
    from catalyst.cli import main

    raised_inside: list[str] = []

    class Importing(types.ModuleType):
        def __getattr__(self, name: str) -> Any:
            if name != "run_daemon":
                return getattr(daemon_module, name)
            signal.getsignal(signal.SIGUSR2)(signal.SIGUSR2, None)  # an emergency stop, then a stop, mid-import
            try:
                signal.getsignal(signal.SIGTERM)(signal.SIGTERM, None)
            except StopDuringStartup:
                raised_inside.append("the import")
                raise
            return lambda args: pytest.fail("the start went on past a stop")

    monkeypatch.setitem(sys.modules, "catalyst.daemon", Importing("catalyst.daemon"))
    config = tmp_path / "config.toml"
    config.write_text(f'[daemon]\ndatabase_url = "sqlite+aiosqlite:///{tmp_path}/var/catalyst.db"\n'
                      '[broker]\nmode = "paper"\nurl = "http://127.0.0.1:9"\n')
    monkeypatch.setenv("APCA_API_KEY_ID", "PKSTARTUP")
    monkeypatch.setenv("APCA_API_SECRET_KEY", "not-a-real-secret")

    assert main(["run", "--config", str(config)]) == 0
    assert raised_inside == []
    marker = tmp_path / "var" / "catalyst.db.emergency"
    assert capsys.readouterr().err.strip().splitlines() == [
        f"catalyst: emergency stop asked during a start that was then stopped: kept in {marker}, the next start goes "
        "on with it (no new entry, every position flattened)",
        "catalyst: stopped by SIGTERM during start-up"]
    assert marker.read_text() == daemon_module.OPERATOR_EMERGENCY
