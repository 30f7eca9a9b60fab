"""Shared benchmark pieces: machine facts, latency statistics, goals, deadline polling and a log probe."""

from __future__ import annotations

import gc
import os
import platform
import re
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import psutil

T = TypeVar("T")


def machine_facts() -> dict[str, Any]:
    """What a reader needs to judge the figures: the CPU, how many cores, Python, and the load at the start."""
    return {
        "cpu": _cpu_model(),
        "cores_logical": os.cpu_count(),
        "cores_physical": psutil.cpu_count(logical=False),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "memory_total_mb": round(psutil.virtual_memory().total / 2**20),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def latency_ms(samples_s: Iterable[float]) -> dict[str, float | int]:
    """p50/p99/max/mean in milliseconds over the samples (nearest-rank percentiles: no interpolation)."""
    ordered = sorted(samples_s)
    if not ordered:
        return {"n": 0}

    def rank(p: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]

    return {
        "n": len(ordered),
        "p50_ms": round(rank(50) * 1000, 3),
        "p99_ms": round(rank(99) * 1000, 3),
        "max_ms": round(ordered[-1] * 1000, 3),
        "mean_ms": round(statistics.fmean(ordered) * 1000, 3),
    }


def goal(what: str, target: str, measured: float | None, met: bool | None) -> dict[str, Any]:
    """One line of the verdict; `met=None` marks a baseline figure that has no goal of its own."""
    return {"what": what, "target": target, "measured": measured, "met": None if met is None else bool(met)}


def ratio(numerator: float, denominator: float) -> float:
    return round(numerator / denominator, 2) if denominator else float("inf")


def wait_for(predicate: Callable[[], T], what: str, timeout: float = 60.0, interval: float = 0.002,
             probe: LogProbe | None = None) -> T:
    """Poll until `predicate()` is truthy; a benchmark that never gets there fails loudly, naming what.

    With `probe`, the predicate is evaluated again only when the probe has caught a new line: a waiting benchmark
    then sleeps on a condition instead of taking the GIL every `interval` from the threads it is timing.
    """
    deadline = time.monotonic() + timeout
    while True:
        seen = probe.count if probe is not None else 0
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        if probe is not None:
            probe.wait_past(seen, timeout=min(0.5, max(0.0, deadline - time.monotonic())))
        else:
            time.sleep(interval)


@dataclass
class LogProbe:
    """A loguru sink stamping matching lines with perf_counter as they are written, on the writing thread.

    This observes the actors from outside (they already log every step) instead of changing actor code.
    """

    patterns: tuple[re.Pattern[str], ...]
    lines: list[tuple[float, re.Match[str]]] = field(default_factory=list)
    generation: int = 0  # bumped by clear()
    _lock: threading.Condition = field(default_factory=threading.Condition)

    def __call__(self, message: Any) -> None:
        stamp = time.perf_counter()
        text = message.record["message"]
        for pattern in self.patterns:
            if (match := pattern.search(text)) is not None:
                with self._lock:
                    self.lines.append((stamp, match))
                    self._lock.notify_all()
                return

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.lines)

    def wait_past(self, seen: int, timeout: float) -> None:
        """Block until more than `seen` lines are caught (or `timeout` seconds pass)."""
        with self._lock:
            self._lock.wait_for(lambda: len(self.lines) != seen, timeout=timeout)

    def matches(self, pattern: re.Pattern[str]) -> list[tuple[float, re.Match[str]]]:
        with self._lock:
            return [(t, m) for t, m in self.lines if m.re is pattern]

    def clear(self) -> None:
        with self._lock:
            self.lines.clear()
            self.generation += 1

    def since(self, seen: int, generation: int) -> tuple[list[tuple[float, re.Match[str]]], int]:
        """The lines caught after the first `seen` (all of them if cleared since `generation`), and the generation:
        readers that keep their place pay for new lines only, not for every line so far on every wake."""
        with self._lock:
            return list(self.lines[seen if generation == self.generation else 0:]), self.generation


def quiet_logs(probe: LogProbe | None = None) -> None:
    """Drop loguru's stderr handler (a terminal full of actor lines is not the daemon's cost) and add the probe."""
    import logging

    from loguru import logger

    logging.getLogger("alpaca").setLevel(logging.ERROR)  # its "websocket error, restarting" on every stop
    logger.remove()
    if probe is not None:
        logger.add(probe, level="INFO", format="{message}", catch=False)


class GcPauses:
    """Every garbage collection while in the `with` block (gc.callbacks): how many, and how long each held the GIL,
    i.e. stood every actor still."""

    def __init__(self) -> None:
        self.pauses_s: list[float] = []
        self._started = 0.0

    def _seen(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.pauses_s.append(time.perf_counter() - self._started)

    def __enter__(self) -> GcPauses:
        gc.callbacks.append(self._seen)
        return self

    def __exit__(self, *_: Any) -> None:
        gc.callbacks.remove(self._seen)

    def figures(self) -> dict[str, Any]:
        return {"collections": len(self.pauses_s), "total_ms": round(sum(self.pauses_s) * 1000, 1),
                "longest_ms": round(max(self.pauses_s, default=0.0) * 1000, 1)}


class CpuUse:
    """CPU time (user + system, every thread) that each named process spent while in the `with` block.

    Why: the burst is judged against raw submits on the same two cores, with the exchange on them too, so
    whether a ratio is the daemon's code or the machine's limit shows in how much CPU each side used. psutil
    reads /proc's clock ticks (10 ms here): over a burst of a few hundred ms that is a few per cent."""

    def __init__(self, **pids: int) -> None:
        self._processes = {name: psutil.Process(pid) for name, pid in pids.items()}
        self._start: dict[str, float] = {}
        self.seconds: dict[str, float] = {}

    @staticmethod
    def _used(process: psutil.Process) -> float:
        times = process.cpu_times()
        return float(times.user + times.system)

    def __enter__(self) -> CpuUse:
        self._start = {name: self._used(process) for name, process in self._processes.items()}
        return self

    def __exit__(self, *_: Any) -> None:
        self.seconds = {name: self._used(process) - self._start[name] for name, process in self._processes.items()}

    def per_item_ms(self, items: int) -> dict[str, float]:
        return {name: round(used / items * 1000, 2) for name, used in self.seconds.items()}


def process_facts() -> dict[str, Any]:
    proc = psutil.Process()
    return {"rss_mb": round(proc.memory_info().rss / 2**20, 1), "threads": proc.num_threads()}


SCRATCH_ROOT = Path(__file__).resolve().parent / "results" / "scratch"


@contextmanager
def scratch_dir(name: str) -> Iterator[Path]:
    """A fresh directory on the project's disk (not a tmpfs) for database files; removed afterwards."""
    SCRATCH_ROOT.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=SCRATCH_ROOT))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
