"""A pool's jobs are taken by whichever worker is free: none waits behind a call that hangs while another worker
is idle, and a job no worker has taken yet can be taken back (never sent)."""

from __future__ import annotations

import threading
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Callable

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


def pool_of(size: int, hang: set[str], release: threading.Event, sent: list[str]) -> BrokerPool:
    pool = BrokerPool("general")
    for i in range(size):
        pool.add(BrokerWorker.start(HangingBroker(hang, release, sent), f"general-{i}", pool))
    return pool


def entry(order_id: int) -> Any:
    return row(order_id, "entry", f"cat-test-{order_id}")


def answered(router: Any) -> list[tuple[int, ...]]:
    return [r.order_ids for r in router.proxy().received().get() if isinstance(r, m.SubmitResult)]


def test_no_job_waits_behind_a_hanging_call_while_another_worker_is_free(recording_actor: Callable[[], Any]) -> None:
    router, release, sent = recording_actor(), threading.Event(), []
    pool = pool_of(2, {"cat-test-1"}, release, sent)
    try:
        pool.tell(SubmitOrder(row=entry(1), reply_to=router))
        wait_for(lambda: sent == ["cat-test-1"], "the first submit to hang")
        for order_id in (2, 3, 4):  # dealt in turn, 3 would have waited behind 1 on the same worker
            pool.tell(SubmitOrder(row=entry(order_id), reply_to=router))

        wait_for(lambda: len(answered(router)) == 3, "the three other submits to be answered")
        assert answered(router) == [(2,), (3,), (4,)]  # the first still hangs
        release.set()
        wait_for(lambda: len(answered(router)) == 4, "the first submit's answer")
    finally:
        release.set()
        for worker in pool.workers:
            worker.stop()


def test_a_job_not_yet_taken_is_withdrawn_and_never_sent_one_taken_is_not(recording_actor: Callable[[], Any]) -> None:
    router, release, sent = recording_actor(), threading.Event(), []
    pool = pool_of(1, {"cat-test-1"}, release, sent)
    try:
        pool.tell(SubmitOrder(row=entry(1), reply_to=router))
        wait_for(lambda: sent == ["cat-test-1"], "the first submit to hang")
        pool.tell(SubmitOrder(row=entry(2), reply_to=router))
        pool.tell(SubmitOrder(row=entry(3), reply_to=router))

        assert pool.withdraw(2) is True
        assert pool.withdraw(1) is False  # being sent: only its acknowledgement can tell
        assert pool.withdraw(2) is False  # already taken back
        release.set()
        wait_for(lambda: len(answered(router)) == 2, "the two submits left")
        assert sent == ["cat-test-1", "cat-test-3"] and answered(router) == [(1,), (3,)]
    finally:
        release.set()
        for worker in pool.workers:
            worker.stop()


def test_jobs_told_before_the_workers_are_stopped_are_sent_before_they_stop(recording_actor: Callable[[], Any]) -> None:
    router, release, sent = recording_actor(), threading.Event(), []
    pool = pool_of(1, {"cat-test-1"}, release, sent)
    pool.tell(SubmitOrder(row=entry(1), reply_to=router))
    wait_for(lambda: sent == ["cat-test-1"], "the first submit to hang")
    pool.tell(SubmitOrder(row=entry(2), reply_to=router))
    stopping = threading.Thread(target=lambda: [w.stop() for w in pool.workers])
    stopping.start()
    release.set()
    stopping.join(30)

    assert sent == ["cat-test-1", "cat-test-2"] and answered(router) == [(1,), (2,)]
