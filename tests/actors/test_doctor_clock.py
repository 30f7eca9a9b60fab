"""The doctor looks at this machine's clock against the broker's again each periodic pass (start-up looked once):
a time sync that steps the clock mid-day, or stops and lets it drift, moves the 15:55 flatten with it. The broker's
clock is the emulator's `/v2/clock` through alpaca-py; this machine's is a clock set off it by hand."""

from __future__ import annotations

import time
from datetime import timedelta

from loguru import logger

from actors.doctor import DoctorActor
from catalyst.domain.reconcile import DoctorSettings


class MachineClock:
    """This machine's clock on the wall (speed 1), `off_s` seconds from the exchange's manual one (which stands
    still; `moving`: this one runs on, so periodic passes come due)."""

    speed = 1.0

    def __init__(self, exchange, moving: bool = False) -> None:
        self.exchange, self.off_s, self.moving, self.started = exchange, 0.0, moving, time.monotonic()

    def now(self):
        ran_s = time.monotonic() - self.started if self.moving else 0.0
        return self.exchange.clock.now() + timedelta(seconds=self.off_s + ran_s)


def test_a_clock_that_drifts_mid_day_is_said_once_per_change_and_once_back(trading, doctor_broker):
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

        assert said_now(0.3) == []  # within 2 s: nothing to say
        assert said_now(-5.0) == [("WARNING", "doctor this machine's clock is 5.0 s behind the broker's: the entry "
                                   "window and the 15:55 flatten run on this machine's clock; fix its time sync "
                                   "(timedatectl, chronyc tracking)")]
        assert said_now(-6.0) == []  # the same state again: not repeated every pass
        (level, text), = said_now(95.0)
        assert level == "ERROR" and text.startswith("doctor this machine's clock is 95.0 s ahead of the broker's "
                                                    "(broker.max_clock_skew_s = 60): the entry window")
        assert said_now(0.5) == [("INFO", "doctor this machine's clock is 0.5 s ahead of the broker's: within 2 s "
                                  "again")]
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
