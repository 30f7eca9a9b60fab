"""Which CPUs the daemon's threads run on (`daemon.cpu`).

Why one CPU by default: CPython runs the Python code of one thread at a time (the GIL), so the daemon's actors never
use more than one CPU's worth of Python anyway. Left to roam, every hand-off (stream → router → writer → worker)
can wake a thread on the other CPU, and the interpreter's working set follows it from one CPU cache to the other.
Measured on the benchmark machine (docs/BENCHMARKS.md), side by side in six runs: fill → OCO p50 12-28 % lower in
five (3 % higher in one, where a slow disk dominated), 100 simultaneous fills protected 22-44 % sooner in five (level
in one), a quarter less CPU time for the same work. The cost is the little work that runs outside the GIL (SQLite
statements, socket and fsync system calls), which no longer overlaps Python code on a second CPU: the measurements
include it.

Settings: "auto" (one CPU: the last this process may use, as CPU 0 usually serves most interrupts), a CPU number,
or "all" (every CPU this process could use when it started: the operating system decides).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

from catalyst.errors import ConfigError

CpuSetting = Literal["auto", "all"] | int
_started_with: frozenset[int] | None = None  # the process's CPUs before the first pin


@dataclass(frozen=True)
class Placement:
    """What `apply` did, for the start-up log line; `as_asked` is False when the system refused or cannot."""

    said: str
    as_asked: bool = True

    def __str__(self) -> str:
        return self.said


def supported() -> bool:
    return hasattr(os, "sched_getaffinity") and os.path.isdir("/proc/self/task")


def allowed_at_start() -> frozenset[int]:
    global _started_with
    if _started_with is None:
        _started_with = frozenset(os.sched_getaffinity(0))
    return _started_with


def chosen(setting: CpuSetting, allowed: frozenset[int]) -> frozenset[int]:
    """The CPUs `setting` asks for, out of those the process may use; ConfigError naming the key if impossible."""
    if setting == "all":
        return allowed
    if setting == "auto":
        return frozenset({max(allowed)})
    if setting not in allowed:
        raise ConfigError(f"daemon.cpu = {setting}: this process may only use CPU {_spans(allowed)}")
    return frozenset({setting})


def apply(setting: CpuSetting) -> Placement:
    """Put every thread of the process (those running now and, by inheritance, those started later) on the CPUs
    `setting` chooses. Returns what was done, for the start-up log line."""
    if not supported():
        return Placement("on every CPU (daemon.cpu is not supported on this platform)", as_asked=setting == "all")
    allowed = allowed_at_start()
    cpus = chosen(setting, allowed)
    try:
        for tid in os.listdir("/proc/self/task"):
            try:
                os.sched_setaffinity(int(tid), cpus)
            except ProcessLookupError:  # a thread that ended after the listing
                continue
    except OSError as exc:  # a sandbox that forbids the call (seccomp): run unpinned rather than not at all
        return Placement(f"on every CPU it may use, {_spans(allowed)}: CPU placement refused by the system "
                         f"({exc.strerror or exc}; daemon.cpu = {setting})", as_asked=False)
    if len(cpus) == len(allowed):
        return Placement(f"on CPU {_spans(cpus)} (daemon.cpu = {setting})")
    return Placement(f"pinned to CPU {_spans(cpus)} of {_spans(allowed)} (daemon.cpu = {setting})")


def _spans(cpus: frozenset[int]) -> str:
    """"0-3,6" for {0, 1, 2, 3, 6}: how taskset and /proc spell a CPU list."""
    ordered = sorted(cpus)
    spans = []
    start = previous = ordered[0]
    for cpu in ordered[1:]:
        if cpu != previous + 1:
            spans.append(str(start) if start == previous else f"{start}-{previous}")
            start = cpu
        previous = cpu
    spans.append(str(start) if start == previous else f"{start}-{previous}")
    return ",".join(spans)
