"""A pool's jobs are taken by whichever worker is free: none waits behind a call that hangs while another worker
is idle, and a job no worker has taken yet can be taken back (never sent)."""

from __future__ import annotations

import threading
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Callable, Iterator

import pytest
from loguru import logger

from actors import messages as m
from actors.broker_worker import BrokerPool, BrokerWorker, SubmitOrder
from catalyst.broker.reports import OrderReport
from tests.actors.conftest import wait_for
from tests.actors.test_broker_worker_reply_first import row

T0 = datetime(2024, 3, 4, 14, 45, tzinfo=timezone.utc)


class HangingBroker:
    """Answers every submit at once, except those of client ids in `hang`, which wait for `release` (as a lost reply
    waits out the HTTP timeout). The broker is not what is tested here: the pool's dealing of jobs is."""

    def __init__(self, hang: set[str], release: threading.Event, sent: list[str]) -> None:
        self.hang, self.release, self.sent = hang, release, sent

    def submit_with_lookup(self, order: Any, priority: Any, announce: bool) -> OrderReport:
        self.sent.append(order.client_order_id)
        if order.client_order_id in self.hang:
            self.release.wait(30)
        return OrderReport(broker_id=f"b-{order.client_order_id}", client_order_id=order.client_order_id,
                           symbol=order.symbol, side=order.side, type="market", order_class="simple", tif="day",
                           qty=order.qty, filled_qty=Decimal(0), filled_avg_price=None, limit_price=None,
                           stop_price=None, status="accepted", created_at=T0, updated_at=T0, submitted_at=T0,
                           filled_at=None, canceled_at=None)

    def announce_submit(self, order: Any, report: Any) -> None:
        pass


class HungPool:
    """A pool of `size` workers whose first submit (cat-test-1) hangs until `release`; its answers go to `router`."""

    def __init__(self, size: int, router: Any) -> None:
        self.router, self.release, self.sent = router, threading.Event(), []
        self.pool = BrokerPool()
        for i in range(size):
            self.pool.add(BrokerWorker.start(HangingBroker({"cat-test-1"}, self.release, self.sent), f"general-{i}",
                                             self.pool))
        self.tell(1)
        wait_for(lambda: self.sent == ["cat-test-1"], "the first submit to hang")

    def tell(self, order_id: int) -> None:
        self.pool.tell(SubmitOrder(row=row(order_id, "entry", f"cat-test-{order_id}"), reply_to=self.router))

    def answered(self) -> list[tuple[int, ...]]:
        return [r.order_ids for r in self.router.proxy().received().get() if isinstance(r, m.SubmitResult)]

    def stop(self) -> None:
        self.release.set()
        for worker in self.pool.workers:
            worker.stop()


@pytest.fixture
def hung_pool(recording_actor: Callable[[], Any]) -> Iterator[Callable[[int], HungPool]]:
    made: list[HungPool] = []

    def make(size: int) -> HungPool:
        made.append(HungPool(size, recording_actor()))
        return made[-1]

    yield make
    for pool in made:
        pool.stop()


def test_no_job_waits_behind_a_hanging_call_while_another_worker_is_free(hung_pool: Any) -> None:
    rig = hung_pool(2)
    for order_id in (2, 3, 4):  # dealt in turn, 3 would have waited behind 1 on the same worker
        rig.tell(order_id)

    wait_for(lambda: len(rig.answered()) == 3, "the three other submits to be answered")
    assert rig.answered() == [(2,), (3,), (4,)]  # the first still hangs
    rig.release.set()
    wait_for(lambda: len(rig.answered()) == 4, "the first submit's answer")


def test_a_job_not_yet_taken_is_withdrawn_and_never_sent_one_taken_is_not(hung_pool: Any) -> None:
    rig = hung_pool(1)
    rig.tell(2)
    rig.tell(3)

    assert rig.pool.withdraw(2) is True
    assert rig.pool.withdraw(1) is False  # being sent: only its acknowledgement can tell
    assert rig.pool.withdraw(2) is False  # already taken back
    rig.release.set()
    wait_for(lambda: len(rig.answered()) == 2, "the two submits left")
    assert rig.sent == ["cat-test-1", "cat-test-3"] and rig.answered() == [(1,), (3,)]


def test_jobs_told_before_the_workers_are_stopped_are_sent_before_they_stop(hung_pool: Any) -> None:
    rig = hung_pool(1)
    rig.tell(2)
    stopping = threading.Thread(target=lambda: [w.stop() for w in rig.pool.workers])
    stopping.start()
    rig.release.set()
    stopping.join(30)

    assert rig.sent == ["cat-test-1", "cat-test-2"] and rig.answered() == [(1,), (2,)]


class BuggyBroker(HangingBroker):
    """Fails one submit with an error no broker call explains (a bug, not a broker answer)."""

    def submit_with_lookup(self, order: Any, priority: Any, announce: bool) -> OrderReport:
        if order.client_order_id == "cat-test-1":
            self.sent.append(order.client_order_id)
            raise RuntimeError("a bug in the port")
        return super().submit_with_lookup(order, priority, announce)


def test_a_job_failing_unexpectedly_is_answered_outcome_unknown_and_the_worker_takes_the_next(
        recording_actor: Callable[[], Any]) -> None:
    router, sent, errors = recording_actor(), [], []
    sink = logger.add(lambda message: errors.append(message.record["message"]), level="ERROR",
                      filter=lambda record: record["name"] == "actors.broker_worker")
    pool = BrokerPool()
    pool.add(BrokerWorker.start(BuggyBroker(set(), threading.Event(), sent), "protection-0", pool))
    try:
        for order_id in (1, 2):
            pool.tell(SubmitOrder(row=row(order_id, "entry", f"cat-test-{order_id}"), reply_to=router))
        wait_for(lambda: len([r for r in router.proxy().received().get() if isinstance(r, m.SubmitResult)]) == 2,
                 "both submits answered")
    finally:
        for worker in pool.workers:
            worker.stop()
        logger.remove(sink)

    first, second = [r for r in router.proxy().received().get() if isinstance(r, m.SubmitResult)]
    assert first.order_ids == (1,) and first.report is None and "RuntimeError: a bug in the port" in first.unknown
    assert second.order_ids == (2,) and second.report is not None  # the worker lived on
    assert sent == ["cat-test-1", "cat-test-2"]
    assert errors == ["broker worker protection-0: SubmitOrder for o-1 failed unexpectedly: "
                      "RuntimeError: a bug in the port"]


def test_a_stop_waits_once_for_all_the_workers_a_hung_broker_holds_not_a_grace_each(recording_actor):
    """From a review: each worker still busy after the drain's deadline added its own 0.5 s grace, so 32 hung
    protection workers took a 5 s drain to 22 s. One wait for them all now; every hung one is named, and the
    submits no worker took are named too, each once."""
    import time

    from actors.system import WORKER_STOP_GRACE_S, TradingSystem
    from tests.actors.conftest import logged_lines

    router = recording_actor()
    release, sent = threading.Event(), []
    pool = BrokerPool()
    hang = {f"cat-test-{i}" for i in range(1, 7)}
    for i in range(6):
        pool.add(BrokerWorker.start(HangingBroker(hang, release, sent), f"protect-{i}", pool), f"protect-{i}")
    for order_id in [*range(1, 7), 7, 7]:  # six hang, one on the wire each; o-7 is left in line, told twice
        pool.tell(SubmitOrder(row=row(order_id, "entry", f"cat-test-{order_id}"), reply_to=router))
    wait_for(lambda: len(sent) == 6, "every worker on a hung submit")
    system = object.__new__(TradingSystem)  # the drain alone: the rest of the system is not what is tested
    system._pools, system.broker_drain_s = [pool], 1.0
    try:
        with logged_lines("actors.system", "WARNING") as lines:
            started = time.monotonic()
            left = system._stop_broker_workers()
            took_s = time.monotonic() - started
    finally:
        release.set()
    assert len(left) == 6
    assert took_s < 1.0 + WORKER_STOP_GRACE_S + 0.5, took_s  # was 1.0 + 6 × 0.5
    busy = [line for line in lines if " still busy with a broker call after 1 s (SubmitOrder for o-" in line]
    assert len(busy) == 6, lines
    assert lines[-1] == ("system stopping with 1 order or cancel call(s) not sent (SubmitOrder for o-7): their rows "
                         "are kept, and the next start sends or asks again")
    assert "cat-test-7" not in sent
