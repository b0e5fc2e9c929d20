"""``timewheel.current_task()``: who the running task is, from sync and async tasks."""

from __future__ import annotations

import asyncio
import threading

import pytest

import timewheel
from timewheel import TimeWheel


@pytest.fixture
def hu(db_path):
    wheel = TimeWheel(db_path, workers=2, tick=0.1, slots=600)
    yield wheel
    wheel.close()


def contexts_of(hu: TimeWheel, kind: str):
    """A task that fails its first attempt, noting what current_task() and the store said."""
    seen = []

    def note():
        ctx = timewheel.current_task()
        seen.append((ctx, hu.store.get(ctx.id)))
        if ctx.attempt == 1:
            raise RuntimeError("first attempt fails")
        return ctx.attempt

    if kind == "sync":
        task = hu.task(name="ctx_sync", retries=1, retry_delay=0.05)(note)
    else:
        @hu.task(name="ctx_async", retries=1, retry_delay=0.05)
        async def task_fn():
            await asyncio.sleep(0)
            before = timewheel.current_task()
            attempt = note()                      # after an await: still this task's context
            assert timewheel.current_task() is before
            return attempt
        task = task_fn
    return task, seen


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_attempt_one_then_two_with_the_same_id(hu, kind) -> None:
    task, seen = contexts_of(hu, kind)
    hu.start()
    h = task.delay()
    assert h.result(timeout=10) == 2
    (first, stored1), (second, stored2) = seen
    assert (first.id, first.attempt) == (h.id, 1) and (second.id, second.attempt) == (h.id, 2)
    assert first.name == second.name == task.name
    # the fence is the claim's rev: what the store holds for the running task right then
    assert (first.fence, second.fence) == (stored1.rev, stored2.rev) and second.fence > first.fence
    assert stored1.status == stored2.status == "running"
    assert first.eta == stored1.eta and second.eta == stored2.eta > first.eta   # the retry's eta
    assert timewheel.current_task() is None


def test_none_outside_a_task_and_in_threads_a_task_starts(hu) -> None:
    assert timewheel.current_task() is None
    inner = []

    @hu.task(name="spawns")
    def spawns():
        t = threading.Thread(target=lambda: inner.append(timewheel.current_task()))
        t.start()
        t.join()
        return timewheel.current_task().id

    hu.start()
    h = spawns.delay()
    assert h.result(timeout=10) == h.id
    assert inner == [None]              # a context variable: a new thread starts without it


def test_immediate_mode_and_a_task_run_from_a_task() -> None:
    hu = TimeWheel(immediate=True)
    seen = []

    @hu.task(name="inner")
    def inner():
        seen.append(timewheel.current_task().name)

    @hu.task(name="outer", retries=1)
    def outer():
        ctx = timewheel.current_task()
        seen.append((ctx.name, ctx.attempt))
        inner.delay()                       # runs inline, as its own task
        assert timewheel.current_task() is ctx
        if ctx.attempt == 1:
            raise RuntimeError("again")

    outer.delay()
    assert seen == [("outer", 1), "inner", ("outer", 2), "inner"]
    assert timewheel.current_task() is None
