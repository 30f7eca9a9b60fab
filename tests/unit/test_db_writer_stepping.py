"""run_to_end: the DbWriter steps plain-SQL coroutines by hand, and anything that suspends still finishes on the loop."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Iterator

import pytest

from actors.db_writer import run_to_end
from catalyst.store.batch import StoreCall
from catalyst.store.repository import runs_plain

SEEN: contextvars.ContextVar[str] = contextvars.ContextVar("seen", default="outside")


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    made = asyncio.new_event_loop()
    yield made
    made.close()


def test_a_coroutine_that_never_suspends_runs_without_the_loop(loop: asyncio.AbstractEventLoop) -> None:
    async def plain() -> tuple[bool, str]:
        SEEN.set("inside")  # a task's own context: never the caller's
        return asyncio._get_running_loop() is None, SEEN.get()

    assert run_to_end(loop, plain()) == (True, "inside")
    assert SEEN.get() == "outside"


def test_a_coroutine_that_suspends_finishes_on_the_loop_in_its_own_context(loop: asyncio.AbstractEventLoop) -> None:
    async def suspends() -> list[str]:
        SEEN.set("inside")
        steps = [SEEN.get()]
        await asyncio.sleep(0)  # a bare yield
        future = loop.create_future()
        loop.call_later(0.01, future.set_result, "settled later")
        steps.append(await future)  # a future not yet settled
        steps.append(SEEN.get())
        return steps

    assert run_to_end(loop, suspends()) == ["inside", "settled later", "inside"]
    assert SEEN.get() == "outside"


def test_an_exception_reaches_the_caller_whether_or_not_it_suspended(loop: asyncio.AbstractEventLoop) -> None:
    async def fails_at_once() -> None:
        raise ValueError("at once")

    async def fails_later() -> None:
        future = loop.create_future()
        loop.call_soon(future.set_exception, KeyError("from a future"))
        await future

    with pytest.raises(ValueError, match="at once"):
        run_to_end(loop, fails_at_once())
    with pytest.raises(KeyError, match="from a future"):
        run_to_end(loop, fails_later())


def test_only_plain_sql_calls_and_batches_of_them_skip_the_loop() -> None:
    plain = StoreCall("record_fill", (), {"execution_id": "x"})
    orm = StoreCall("get_order", (1,))
    assert runs_plain([plain, StoreCall("mark_submitted", (1, "b", "new"))])
    assert runs_plain([StoreCall("batch", ([plain, StoreCall("together", ((plain,),))],))])
    assert not runs_plain([plain, orm])
    assert not runs_plain([StoreCall("batch", ([plain, orm],))])
    assert not runs_plain([StoreCall("together", ((orm,),))])
