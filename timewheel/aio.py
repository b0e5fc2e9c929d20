"""Running ``async def`` tasks: one event loop per process, on a background thread.

A worker that gets an awaitable from a task submits it to this loop and blocks until it is
done, so async tasks are bounded by the pool exactly like sync ones, and all of them share
one loop: resources bound to a loop (clients, connection pools) can be reused across tasks.

The loop thread is started by the first async task, and stops on its own once every thread
that used it has ended (the pool was stopped) and nothing runs on it; the next async task
starts a new one.  A forked child forgets its parent's loop (its thread does not exist
there) and starts its own.  At exit an idle loop is shut down cleanly; one still running
tasks (a TimeWheel that was never stopped) is left to die with the process, like the sync
tasks on the daemon worker threads, so those tasks are re-run after a restart instead of
being recorded as failed by a cancellation.
"""

from __future__ import annotations

import asyncio
import atexit
import contextvars
import os
import threading
import weakref
from typing import Any, Awaitable, Callable, Optional

from .errors import TaskTimeout

__all__ = ["run_coroutine"]

_IDLE_CHECK = 1.0          # seconds between checks whether the loop's users are all gone
_SHUTDOWN_GRACE = 1.0      # seconds leftover background tasks get to handle cancellation


async def _await(awaitable: Awaitable[Any], timeout: Optional[float] = None) -> Any:
    if timeout is None:
        return await awaitable
    try:
        return await asyncio.wait_for(awaitable, timeout)
    except asyncio.TimeoutError:
        raise TaskTimeout(f"did not finish within its timeout of {timeout:g}s") from None


class _LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.active = 0                       # run_coroutine() calls waiting on this loop
        self.users: "weakref.WeakSet[threading.Thread]" = weakref.WeakSet()
        self.thread = threading.Thread(target=self._run, name="timewheel-aio", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_later(_IDLE_CHECK, self._check_idle)
        try:
            self.loop.run_forever()
        finally:
            self._close()

    def _check_idle(self) -> None:
        global _current
        with _lock:
            if self.active == 0 and not any(t.is_alive() for t in self.users):
                if _current is self:
                    _current = None           # later calls start a fresh loop
                self.loop.stop()
                return
        self.loop.call_later(_IDLE_CHECK, self._check_idle)

    def _close(self) -> None:
        # Only fire-and-forget tasks a coroutine left behind can still be here: every awaited
        # one had a waiting caller, which keeps the loop alive.
        leftovers = asyncio.all_tasks(self.loop)
        for task in leftovers:
            task.cancel()
        if leftovers:
            self.loop.run_until_complete(asyncio.wait(leftovers, timeout=_SHUTDOWN_GRACE))
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()


_lock = threading.Lock()
_current: Optional[_LoopThread] = None
_aside = threading.local()                    # .active: this thread runs a private loop


def run_coroutine(awaitable: Awaitable[Any], timeout: Optional[float] = None,
                  cancel_on: Optional[Callable[[Callable[[], Any]], None]] = None) -> Any:
    """Run an awaitable to completion on the shared loop and return its value (or raise its
    exception); past ``timeout`` seconds it is cancelled and TaskTimeout raised.  Blocks the
    calling thread, never the loop.  The awaitable sees the caller's context variables.
    ``cancel_on(cancel)`` is handed a function that cancels it (an abort: issue 23)."""
    global _current
    me = threading.current_thread()
    lt = _current
    if getattr(_aside, "active", False) or (lt is not None and me is lt.thread):
        # A task on the loop ran another one inline (immediate=True): waiting here for the
        # loop would deadlock it, so that one gets a private loop on a helper thread.
        return _run_aside(awaitable, timeout)
    with _lock:
        if _current is None:
            _current = _LoopThread()
        lt = _current
        lt.active += 1
        lt.users.add(me)
        try:
            future = asyncio.run_coroutine_threadsafe(_await(awaitable, timeout), lt.loop)
        except BaseException:
            lt.active -= 1
            raise
    if cancel_on is not None:
        cancel_on(future.cancel)          # cancels the task on the loop (thread-safe)
    try:
        return future.result()
    finally:
        with _lock:
            lt.active -= 1


def _run_aside(awaitable: Awaitable[Any], timeout: Optional[float]) -> Any:
    box: dict[str, Any] = {}

    def run() -> None:
        _aside.active = True
        try:
            box["value"] = asyncio.run(_await(awaitable, timeout))
        except BaseException as exc:
            box["error"] = exc

    ctx = contextvars.copy_context()
    t = threading.Thread(target=ctx.run, args=(run,), name="timewheel-aio-nested", daemon=True)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def _stop_at_exit() -> None:
    with _lock:
        lt = _current
        if lt is None or lt.active:
            return
        lt.loop.call_soon_threadsafe(lt.loop.stop)
    lt.thread.join(_SHUTDOWN_GRACE + 1.0)


def _after_fork_in_child() -> None:
    # The loop's thread did not survive the fork and _lock may have been held by a thread
    # that did not either.  The old loop is abandoned, not closed: it still looks "running".
    global _lock, _current
    _lock = threading.Lock()
    _current = None


atexit.register(_stop_at_exit)
os.register_at_fork(after_in_child=_after_fork_in_child)
