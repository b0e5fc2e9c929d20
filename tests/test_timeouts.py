"""Time limits: ``@hu.task(timeout=...)`` and ``TimeWheel(timeout=...)``.

An ``async def`` task is cancelled at its deadline; a sync task gets TaskTimeout raised in
its thread by the watchdog, which interrupts Python code but not a blocking C call (that one
is interrupted when it returns).  Either way the run fails with TaskTimeout, is retried while
attempts remain, and the worker is free again.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from timewheel import TaskFailed, TimeWheel, current_task


@pytest.fixture
def hu(db_path):
    wheel = TimeWheel(db_path, workers=1, tick=0.1, slots=600)    # one worker: it must come back
    yield wheel
    wheel.close()


def timed_out(h, within: float) -> float:
    """Wait for ``h`` to fail with TaskTimeout; return how long its run took."""
    with pytest.raises(TaskFailed) as info:
        h.result(timeout=within + 5)
    rec = h.record
    assert rec.status == "failed" and rec.error.startswith("TaskTimeout: did not finish within"), rec.error
    assert info.value.error == rec.error
    return rec.finished - rec.started


def test_a_spinning_sync_task_fails_at_its_deadline_and_frees_the_worker(hu) -> None:
    @hu.task(name="spin", timeout=1)
    def spin():
        while True:
            pass

    hu.start()
    took = timed_out(spin.delay(), within=2)
    assert 1.0 <= took < 2.0
    assert hu.task(name="after")(lambda: "free").delay().result(timeout=5) == "free"


def test_the_traceback_shows_where_the_task_was_stopped(hu) -> None:
    @hu.task(name="spin_here", timeout=0.3)
    def spin_here():
        n = 0
        while True:
            n += 1

    hu.start()
    h = spin_here.delay()
    timed_out(h, within=2)
    assert ", in spin_here\n" in h.record.traceback          # the loop it was stuck in


def test_an_async_task_is_cancelled_at_its_deadline_and_frees_the_worker(hu) -> None:
    cancelled = threading.Event()

    @hu.task(name="nap", timeout=1)
    async def nap():
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    hu.start()
    took = timed_out(nap.delay(), within=2)
    assert 1.0 <= took < 2.0 and cancelled.is_set()
    assert hu.task(name="after")(lambda: "free").delay().result(timeout=5) == "free"


def test_a_timed_out_task_with_retries_is_retried(hu) -> None:
    @hu.task(name="slow_first", timeout=0.5, retries=1, retry_delay=0.05)
    def slow_first():
        if current_task().attempt == 1:
            while True:
                pass
        return "second attempt"

    @hu.task(name="async_slow_first", timeout=0.5, retries=1, retry_delay=0.05)
    async def async_slow_first():
        if current_task().attempt == 1:
            await asyncio.sleep(60)
        return "second attempt"

    hu.start()
    for task in (slow_first, async_slow_first):
        h = task.delay()
        assert h.result(timeout=10) == "second attempt"
        assert h.record.attempts == 2


def test_a_task_that_swallows_the_timeout_still_fails_with_it(hu) -> None:
    @hu.task(name="stubborn", timeout=0.3)
    def stubborn():
        try:
            while True:
                pass
        except Exception:             # noqa: BLE001 - what careless task code does
            return "pretends it finished"

    hu.start()
    timed_out(stubborn.delay(), within=2)


def test_a_blocking_c_call_is_interrupted_only_when_it_returns(hu) -> None:
    @hu.task(name="sleeper", timeout=0.3)
    def sleeper():
        time.sleep(1.5)               # one C call: the exception waits for it to return
        return "unreachable"

    hu.start()
    took = timed_out(sleeper.delay(), within=3)
    assert took >= 1.5


def test_the_wheel_default_and_per_task_override(db_path) -> None:
    hu = TimeWheel(db_path, workers=2, tick=0.1, slots=600, timeout=0.3)
    try:
        spin = hu.task(name="spin")(lambda: [None for _ in iter(int, 1)])
        unlimited = hu.task(name="unlimited", timeout=None)(lambda: time.sleep(0.6) or "done")
        assert spin.delay().record.timeout == 0.3 and unlimited.delay().record.timeout is None
        hu.start()
        h = spin.delay()
        timed_out(h, within=2)
        assert unlimited.delay().result(timeout=5) == "done"
    finally:
        hu.close()


def test_runs_ending_just_at_their_deadline_are_recorded_either_way(hu) -> None:
    """Runs that end within a millisecond or so of their limit: each is recorded as
    succeeded or as a TaskTimeout, and no stray TaskTimeout lands in the worker after a run
    (it would leave the outcome unrecorded and the task running for ever)."""
    @hu.task(name="edge", timeout=0.02)
    def edge(i):
        t = time.monotonic() + 0.018 + (i % 5) * 0.001
        while time.monotonic() < t:
            pass
        return i

    hu.start()
    handles = [edge.delay(i) for i in range(60)]
    outcomes = set()
    for i, h in enumerate(handles):
        try:
            assert h.result(timeout=10) == i
            outcomes.add("succeeded")
        except TaskFailed as exc:
            assert exc.error.startswith("TaskTimeout"), exc.error
            outcomes.add("timed out")
    assert hu.health().running == 0
    assert hu.task(name="after")(lambda: "free").delay().result(timeout=5) == "free"


def test_immediate_mode_enforces_the_limit_too() -> None:
    hu = TimeWheel(immediate=True)
    spin = hu.task(name="spin", timeout=0.2)(lambda: [None for _ in iter(int, 1)])
    h = spin.delay()
    assert h.status == "failed" and h.record.error.startswith("TaskTimeout")


@pytest.mark.parametrize("bad, error", [(0, ValueError), (-1, ValueError), (float("inf"), ValueError),
                                        ("1", TypeError), (True, TypeError)])
def test_bad_timeouts_are_refused(bad, error) -> None:
    hu = TimeWheel(None)
    with pytest.raises(error, match="timeout"):
        hu.task(name="t", timeout=bad)(lambda: None)
    with pytest.raises(error, match="timeout"):
        TimeWheel(None, timeout=bad)


def test_no_limit_by_default(hu) -> None:
    slow = hu.task(name="slow")(lambda: time.sleep(0.2) or "ok")
    h = slow.delay()
    assert h.record.timeout is None
    hu.start()
    assert h.result(timeout=5) == "ok"
