"""The doctor looks at this machine's clock against the broker's again each periodic pass (start-up looked once):
a time sync that steps the clock mid-day, or stops and lets it drift, moves the 15:55 flatten with it. The broker's
clock is the emulator's `/v2/clock` through alpaca-py; this machine's is a clock set off it by hand."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from loguru import logger

from actors.doctor import DoctorActor
from catalyst.clock import WallClock
from catalyst.domain.reconcile import DoctorSettings


class MachineClock(WallClock):
    """The daemon's wall clock, its machine's time `off_s` seconds from the exchange's manual one (which stands still;
    `moving`: the machine's runs on, so periodic passes come due)."""

    def __init__(self, exchange, moving: bool = False) -> None:
        super().__init__(source=self._machine_time)
        self.exchange, self.off_s, self.moving, self.started = exchange, 0.0, moving, time.monotonic()

    def _machine_time(self):
        ran_s = time.monotonic() - self.started if self.moving else 0.0
        return self.exchange.clock.now() + timedelta(seconds=self.off_s + ran_s)


def test_a_clock_off_mid_day_is_followed_to_the_brokers_and_said_once_per_change(trading, doctor_broker):
    lines: list[tuple[str, str]] = []
    sink = logger.add(lambda message: lines.append((message.record["level"].name, message.record["message"])),
                      level="INFO", filter=lambda record: record["name"] == "actors.doctor")
    machine = MachineClock(trading.exchange)
    system = trading.system
    ref = DoctorActor.start(system.writer, doctor_broker, system.router, system.supervisor, machine,
                            DoctorSettings(), clock_limit_s=60)
    doctor = ref.proxy()
    try:
        def said_now(off_s: float) -> list[tuple[str, str]]:
            machine.off_s = off_s
            before = len(lines)
            doctor.check_clock().get()
            return lines[before:]

        def off_the_exchange_s() -> float:
            return (machine.now() - trading.exchange.clock.now()).total_seconds()

        assert said_now(0.3) == []  # within 2 s: nothing to say, nothing corrected
        assert off_the_exchange_s() == pytest.approx(0.3)
        assert said_now(-5.0) == [("WARNING", "doctor this machine's clock is 5.0 s behind the broker's: the entry "
                                   "window and the 15:55 flatten follow the broker's clock meanwhile; fix this "
                                   "machine's time sync (timedatectl, chronyc tracking)")]
        assert off_the_exchange_s() == pytest.approx(0.0, abs=1e-3)  # the daemon's times are the exchange's now
        assert said_now(-6.0) == []  # the same state again: not repeated every pass, but followed
        assert off_the_exchange_s() == pytest.approx(0.0, abs=1e-3)
        (level, text), = said_now(95.0)
        assert level == "ERROR" and text == ("doctor this machine's clock is 95.0 s ahead of the broker's "
                                             "(broker.max_clock_skew_s = 60): the entry window and the 15:55 flatten "
                                             "follow the broker's clock meanwhile; fix this machine's time sync "
                                             "(timedatectl, chronyc tracking)")
        assert off_the_exchange_s() == pytest.approx(0.0, abs=1e-3)  # 15:55 is the exchange's 15:55 all the same
        assert said_now(0.5) == [("INFO", "doctor this machine's clock is 0.5 s ahead of the broker's: within 2 s "
                                  "again; the schedule runs on this machine's clock again")]
        assert off_the_exchange_s() == pytest.approx(0.5)  # no correction within 2 s
    finally:
        ref.stop()
        logger.remove(sink)


def test_a_clock_without_a_correction_is_only_reported(trading, doctor_broker):
    """A clock that cannot follow the broker's (none of the daemon's today but the wall clock can) is said as before."""

    class ReportOnly:
        speed = 1.0

        def now(self):
            return trading.exchange.clock.now() - timedelta(seconds=7)

    system = trading.system
    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(message.record["message"]), level="WARNING",
                      filter=lambda record: record["name"] == "actors.doctor")
    ref = DoctorActor.start(system.writer, doctor_broker, system.router, system.supervisor, ReportOnly(),
                            DoctorSettings(), clock_limit_s=60)
    try:
        ref.proxy().check_clock().get()
        assert lines == ["doctor this machine's clock is 7.0 s behind the broker's: the entry window and the 15:55 "
                         "flatten run on this machine's clock; fix its time sync (timedatectl, chronyc tracking)"]
    finally:
        ref.stop()
        logger.remove(sink)


def test_on_the_emulators_clock_the_doctor_does_not_look(trading, doctor_broker):
    """The daemon follows an emulator's clock: there is nothing to compare, and no broker call is made."""
    system = trading.system
    ref = DoctorActor.start(system.writer, doctor_broker, system.router, system.supervisor, trading.exchange.clock,
                            DoctorSettings())
    try:
        ref.proxy().check_clock().get()
        assert doctor_broker.calls.get("clock", 0) == 0
    finally:
        ref.stop()


def test_each_look_at_the_wall_clock_asks_the_broker(trading, doctor_broker):
    system = trading.system
    ref = DoctorActor.start(system.writer, doctor_broker, system.router, system.supervisor,
                            MachineClock(trading.exchange), DoctorSettings(), clock_limit_s=60)
    try:
        ref.proxy().check_clock().get()
        ref.proxy().check_clock().get()
        assert doctor_broker.calls["clock"] == 2
    finally:
        ref.stop()


def test_the_periodic_pass_looks_at_the_clock(trading, doctor_broker):
    warnings: list[str] = []
    sink = logger.add(lambda message: warnings.append(message.record["message"]), level="WARNING",
                      filter=lambda record: record["name"] == "actors.doctor" and "clock" in record["message"])
    machine = MachineClock(trading.exchange, moving=True)
    machine.off_s = -10.0
    system = trading.system
    ref = DoctorActor.start(system.writer, doctor_broker, system.router, system.supervisor, machine,
                            DoctorSettings(interval_s=0.2), clock_limit_s=60)
    try:
        trading.wait_for(lambda: warnings, "a periodic pass to say the clock is off", timeout=10)
        assert warnings[0].startswith("doctor this machine's clock is ") and " s behind the broker's" in warnings[0]
    finally:
        ref.stop()
        logger.remove(sink)
