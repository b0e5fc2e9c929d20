"""``async def`` tasks: one shared background loop, bounded by the pool; awaiting results."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import threading
import time
from typing import Any, Awaitable, Generator

import pytest

from timewheel import TaskFailed, TimeWheel
from timewheel.aio import run_coroutine
from timewheel.testing import processes as procs

from .conftest import records_of, wait_for


def aio_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "timewheel-aio"]


async def heartbeat_while(awaitable: Awaitable[Any]) -> tuple[Any, float]:
    """Await ``awaitable`` while measuring the longest stall of the calling loop."""
    worst = 0.0

    async def beat() -> None:
        nonlocal worst
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.01)
            now = time.monotonic()
            worst, last = max(worst, now - last), now

    beater = asyncio.ensure_future(beat())
    await asyncio.sleep(0.02)                   # the beat is going before we start waiting
    try:
        return await awaitable, worst
    finally:
        beater.cancel()


@pytest.fixture
def hu(db_path: str) -> Generator[TimeWheel, None, None]:
    wheel = TimeWheel(db_path, workers=4)
    yield wheel
    wheel.stop()


def test_async_tasks_share_one_loop_and_run_concurrently(hu: TimeWheel) -> None:
    seen: list[tuple[int, str]] = []

    @hu.task()
    async def nap(i: int) -> int:
        seen.append((id(asyncio.get_running_loop()), threading.current_thread().name))
        await asyncio.sleep(0.5)
        return i * 10

    hu.start()
    t0 = time.monotonic()
    handles = [nap.delay(i) for i in range(4)]
    assert [h.result(timeout=10) for h in handles] == [0, 10, 20, 30]
    assert time.monotonic() - t0 < 1.8          # four 0.5 s naps on one loop, side by side
    assert len({loop for loop, _ in seen}) == 1 and {name for _, name in seen} == {"timewheel-aio"}
    assert len(aio_threads()) == 1


def test_async_failures_are_retried_then_failed(hu: TimeWheel) -> None:
    calls: list[int] = []

    @hu.task(retries=1, retry_delay=0.05)
    async def broken() -> None:
        calls.append(1)
        await asyncio.sleep(0)
        raise ValueError("nope")

    hu.start()
    with pytest.raises(TaskFailed, match="ValueError: nope"):
        broken.delay().result(timeout=10)
    assert len(calls) == 2


def test_any_awaitable_is_awaited(hu: TimeWheel) -> None:
    class Later:
        def __await__(self) -> Generator[Any, None, str]:
            yield from asyncio.sleep(0.01).__await__()
            return "awaited"

    @hu.task()
    def returns_awaitable() -> Later:          # a plain def returning an awaitable
        return Later()

    hu.start()
    assert returns_awaitable.delay().result(timeout=10) == "awaited"


def test_loop_thread_stops_with_the_pool_and_comes_back(hu: TimeWheel) -> None:
    @hu.task()
    async def one() -> int:
        return 1

    hu.start()
    assert one.delay().result(timeout=10) == 1
    assert len(aio_threads()) == 1
    hu.stop()
    wait_for(lambda: not aio_threads(), timeout=5)
    hu.start()
    assert one.delay().result(timeout=10) == 1


def test_aresult_does_not_block_the_callers_loop(hu: TimeWheel) -> None:
    @hu.task()
    async def slow(x: int) -> int:
        await asyncio.sleep(0.3)
        return x + 1

    @hu.task()
    async def fails() -> None:
        raise RuntimeError("bad")

    hu.start()

    async def main() -> None:
        value, stall = await heartbeat_while(slow.delay(41).aresult(timeout=10))
        assert value == 42 and stall < 0.2
        with pytest.raises(TaskFailed, match="RuntimeError: bad"):
            await fails.delay().aresult(timeout=10)
        with pytest.raises(TimeoutError):
            await slow.delay(0, count_down=30).aresult(timeout=0.1)

    asyncio.run(main())


def test_aresult_stays_responsive_while_another_process_writes(hu: TimeWheel, db_path: str) -> None:
    # aresult() must not read the store on the loop: the read can wait behind this process's
    # writer, which itself waits (up to busy_timeout) for another process's write lock.
    @hu.task()
    async def quick() -> int:
        await asyncio.sleep(0.2)
        return 1

    hu.start()
    h = quick.delay(count_down=0.1)
    held, release = threading.Event(), threading.Event()

    def other_process_writes() -> None:
        con = sqlite3.connect(db_path, isolation_level=None)
        con.execute("BEGIN IMMEDIATE")
        held.set()
        release.wait(1.0)
        con.execute("COMMIT")
        con.close()

    threading.Thread(target=other_process_writes).start()
    held.wait()
    # A writer of this process (here a cancel; in real life the boss) now waits for the file.
    writer = threading.Thread(target=hu.cancel, args=("no-such-task",))
    writer.start()
    time.sleep(0.05)
    try:
        value, stall = asyncio.run(heartbeat_while(h.aresult(timeout=10)))
    finally:
        release.set()
        writer.join()
    assert value == 1 and stall < 0.2


def test_immediate_mode_runs_async_tasks_inline() -> None:
    hu = TimeWheel(immediate=True)

    @hu.task()
    async def double(x: int) -> int:
        await asyncio.sleep(0.01)
        return 2 * x

    @hu.task()
    async def outer(x: int) -> int:
        # Runs on the shared loop and enqueues another async task, which runs inline too.
        return double.delay(x).result() + 1

    assert double.delay(4).result() == 8
    assert outer.delay(5).result() == 11

    async def from_a_running_loop() -> int:   # e.g. an async web handler under test
        return outer.delay(1).result()

    assert asyncio.run(from_a_running_loop()) == 3


def test_run_coroutine_propagates_exceptions() -> None:
    async def boom() -> None:
        raise KeyError("k")

    with pytest.raises(KeyError):
        run_coroutine(boom())


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_gets_its_own_loop() -> None:
    async def where() -> int:
        await asyncio.sleep(0)
        return os.getpid()

    assert run_coroutine(where()) == os.getpid()       # the parent's loop now exists
    pid = os.fork()
    if pid == 0:                                       # child: must not wait on the parent's loop
        procs.die_with_parent()
        signal.alarm(10)
        ok = False
        try:
            ok = run_coroutine(where()) == os.getpid()
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert run_coroutine(where()) == os.getpid()


def test_async_task_can_use_loop_bound_state_across_runs(hu: TimeWheel) -> None:
    # One long-lived loop: an object created on it in one task is usable in the next.
    state: dict[str, Any] = {}

    @hu.task()
    async def remember() -> bool:
        loop = asyncio.get_running_loop()
        if "queue" not in state:
            state["queue"], state["loop"] = asyncio.Queue(), loop
        await state["queue"].put(1)
        return state["loop"] is loop

    hu.start()
    assert [remember.delay().result(timeout=10) for _ in range(3)] == [True, True, True]
    assert state["queue"].qsize() == 3


def test_periodic_async_task(hu: TimeWheel) -> None:
    runs: list[int] = []

    @hu.periodic(every=1, name="async-tick")
    async def tick() -> int:
        await asyncio.sleep(0)
        runs.append(1)
        return len(runs)

    hu.start()
    wait_for(lambda: len(runs) >= 2, timeout=6)
    done = records_of(hu.store, "succeeded", "async-tick")
    assert sorted(hu.get(r.id).result(timeout=0) for r in done) == list(range(1, len(done) + 1))
