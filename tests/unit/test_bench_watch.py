"""The benchmarks' log reader: milestones read incrementally from the actors' own lines, reset by a clear."""

from __future__ import annotations

from types import SimpleNamespace

from bench import watch


def feed(probe: watch.LogProbe, text: str) -> None:
    probe(SimpleNamespace(record={"message": text}))


def test_an_oco_is_protected_once_both_legs_are_acknowledged_whatever_the_order() -> None:
    probe = watch.new_probe()
    feed(probe, "order AAPL#o-1 created entry buy 100 market cid=cat-x-1")
    feed(probe, "order AAPL#o-1 created → submitted")
    assert watch.entries_acknowledged(probe, 1) and watch.protection_of(probe, "AAPL") is None
    feed(probe, "order AAPL#o-2+AAPL#o-3 created OCO sell 100 tp=11 sl=9")
    feed(probe, "order AAPL#o-3 created → submitted")  # the stop leg first
    assert watch.protection_of(probe, "AAPL").acknowledged_at is None and watch.acknowledged_count(probe) == 0
    feed(probe, "order AAPL#o-2 created → submitted")

    found = watch.protection_of(probe, "AAPL")
    assert (found.take_profit, found.stop_loss) == (2, 3) and found.acknowledged_at >= found.created_at
    assert watch.acknowledged_count(probe) == 1 and watch.acknowledged_ids(probe) == {1, 2, 3}
    assert watch.entries(probe) == {"AAPL": (1, "cat-x-1")}
    assert [p.symbol for p in watch.protections(probe)] == ["AAPL"]


def test_a_cleared_probe_is_read_from_scratch() -> None:
    probe = watch.new_probe()
    for line in ("order MSFT#o-7+MSFT#o-8 created OCO sell 5 tp=1 sl=2", "order MSFT#o-7 created → submitted",
                 "order MSFT#o-8 created → submitted"):
        feed(probe, line)
    assert watch.acknowledged_count(probe) == 1

    probe.clear()  # a new database numbers its orders from 1 again
    feed(probe, "order NVDA#o-7+NVDA#o-8 created OCO sell 5 tp=1 sl=2")

    assert watch.acknowledged_count(probe) == 0 and watch.protection_of(probe, "MSFT") is None
    assert watch.protection_of(probe, "NVDA").acknowledged_at is None
