"""A seeded, deterministic fault plan for the emulator, parsed from a spec string; off by default."""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field

# share-of-calls faults (0..1), and knobs that are not shares
RATES = ("http_5xx", "submit_5xx", "submit_429", "timeout", "reply_lost", "drop", "duplicate", "delay", "reorder",
         "disconnect", "burst_429", "down")
KNOBS = {"hang_s": 30.0, "delay_s": 0.5, "burst_s": 5.0}


class FaultSpecError(ValueError):
    """A fault spec item that cannot be understood; the message names the item."""


@dataclass
class FaultPlan:
    """`http_5xx`: a REST call fails with 503 before acting; `submit_5xx`: only an order submit (POST /v2/orders)
    does, so cancels and look-ups still work (an outage of order entry alone); `submit_429`: an order submit is
    refused with a 429 (the Reset header naming the current window's end), as when other clients of the same key
    spent its budget. `timeout`: it hangs `hang_s`
    seconds, then the connection is closed without an answer, also before acting. `reply_lost`: a mutating call IS
    carried out but its answer is a 5xx or a hang. `drop`/`duplicate`/`delay`/`reorder`: stream events lost, sent
    twice, sent `delay_s` late, or held back behind the next one. `disconnect`: the stream is closed after an event.
    `burst_429`: a call starts `burst_s` (real) seconds of 429 answers for that key, their Reset header naming its end.
    `down`: the broker unreachable (an outage of Alpaca's API, not of its matching): a REST call answers 503, a stream
    connection is refused before its upgrade, and an event closes the connection it was for, undelivered. Orders keep
    working meanwhile: stops trigger and fill, and the client learns of it only once back, over REST.

    Each fault draws from its own generator seeded from (seed, name), so one fault's rate does not shift
    another's sequence, and the same spec and seed replay the same faults for the same call order.
    """

    rates: dict[str, float] = field(default_factory=dict)
    knobs: dict[str, float] = field(default_factory=lambda: dict(KNOBS))
    seed: int = 0
    spec: str = ""
    _generators: dict[str, random.Random] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def parse(cls, spec: str | None, seed: int = 0) -> FaultPlan:
        rates: dict[str, float] = {}
        knobs = dict(KNOBS)
        for raw in (spec or "").split(","):
            item = raw.strip()
            if not item:
                continue
            name, sep, value = item.partition("=")
            name = name.strip()
            if not sep:
                raise FaultSpecError(f"bad fault item {item!r}: expected name=value")
            if name not in RATES and name not in KNOBS:
                raise FaultSpecError(f"bad fault item {item!r}: unknown fault {name!r} "
                                     f"(known: {', '.join(RATES + tuple(KNOBS))})")
            try:
                number = float(value)
            except ValueError:
                raise FaultSpecError(f"bad fault item {item!r}: {value.strip()!r} is not a number") from None
            if name in RATES and not 0.0 <= number <= 1.0:
                raise FaultSpecError(f"bad fault item {item!r}: a rate must be between 0 and 1")
            if name in KNOBS and number < 0:
                raise FaultSpecError(f"bad fault item {item!r}: must not be negative")
            (rates if name in RATES else knobs)[name] = number
        return cls(rates=rates, knobs=knobs, seed=seed, spec=(spec or "").strip())

    @property
    def enabled(self) -> bool:
        return any(rate > 0 for rate in self.rates.values())

    def hits(self, name: str) -> bool:
        """Draws for fault `name`: True when it should happen this time."""
        rate = self.rates.get(name, 0.0)
        if rate <= 0:
            return False
        with self._lock:
            generator = self._generators.get(name)
            if generator is None:
                generator = self._generators[name] = random.Random(f"{self.seed}:{name}")
            return generator.random() < rate

    def coin(self, name: str) -> bool:
        """A fair, seeded 50/50 choice (e.g. whether a lost reply is a 5xx or a hang)."""
        with self._lock:
            generator = self._generators.setdefault(f"coin:{name}", random.Random(f"{self.seed}:coin:{name}"))
            return generator.random() < 0.5

    def knob(self, name: str) -> float:
        return self.knobs[name]
