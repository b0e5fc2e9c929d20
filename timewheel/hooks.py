"""Hooks (``hu.on(event, fn)``), called on a thread of their own.

A hook is user code, and user code never runs on the boss thread: a hook that blocks (a slow
HTTP call, a lock, a ``sleep``) on the thread that claims tasks and turns the wheel would stop
this process from starting anything -- and, were it the leader, every process's wheel.  So
the boss only *posts* each durable change here, and one thread per wheel calls the hooks, in
the order the changes were made.

The queue is bounded: when hooks fall more than :data:`BACKLOG` events behind, posting waits.
That stalls this process's boss rather than growing memory without bound; other processes
go on (the ticking role is a lease that passes on when its holder stops renewing it).
"""

from __future__ import annotations

import logging
import os
import queue
import sys
import threading
import time
from typing import Any, Callable, Optional

from .errors import shown
from .records import TaskRecord

__all__ = ["Hooks", "BACKLOG"]

log = logging.getLogger("timewheel")

#: events posted and not yet handed to the hooks, beyond which posting waits
BACKLOG = 10_000

Hook = Callable[[TaskRecord, Optional[BaseException]], Any]


class Hooks:
    """The hooks of one wheel, per event, and the thread that calls them."""

    def __init__(self, events: tuple[str, ...]) -> None:
        self.events = events
        self._by_event: dict[str, list[Hook]] = {e: [] for e in events}
        self._start_lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self._queue: "queue.Queue[tuple[str, TaskRecord, Optional[BaseException]]]" = queue.Queue(BACKLOG)
        self._thread: Optional[threading.Thread] = None
        self._pid = os.getpid()

    def add(self, event: str, fn: Hook) -> None:
        self._by_event[event].append(fn)

    def of(self, event: str) -> tuple[Hook, ...]:
        """The hooks of ``event``, in the order they were added."""
        return tuple(self._by_event[event])

    def post(self, event: str, rec: TaskRecord, exc: Optional[BaseException]) -> None:
        """Have the hooks of ``event`` called with ``(rec, exc)`` on the hooks thread.  Costs
        nothing for an event without hooks."""
        if not self._by_event[event]:
            return
        if self._thread is None or self._pid != os.getpid():
            self._start()
        self._queue.put((event, rec, exc))

    def _start(self) -> None:
        with self._start_lock:
            if self._pid != os.getpid():           # forked: the parent's thread is not here
                self._reset()
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="timewheel-hooks", daemon=True)
                self._thread.start()

    def _loop(self) -> None:
        while True:
            event, rec, exc = self._queue.get()
            try:
                self.call(event, rec, exc)
            finally:
                self._queue.task_done()

    def call(self, event: str, rec: TaskRecord, exc: Optional[BaseException]) -> None:
        """Call the hooks of ``event`` here and now (the hooks thread; ``immediate=True``)."""
        for hook in self._by_event[event]:
            try:
                hook(rec, exc)
            except BaseException:  # noqa: BLE001 - a hook never changes a task's outcome
                # sys.exit() in a hook would otherwise end the hooks thread; only a Ctrl-C (or
                # exit) in the application's own main thread (immediate mode) goes on.
                if (threading.current_thread() is threading.main_thread()
                        and not isinstance(sys.exc_info()[1], Exception)):
                    raise
                log.exception("%s hook %s raised for task %s", event, shown(hook), rec.id)

    def drain(self, timeout: Optional[float] = None) -> bool:
        """Wait until every event posted so far has been handed to its hooks (at most
        ``timeout`` seconds); True if it was."""
        if self._thread is None or self._pid != os.getpid():
            return True
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._queue.all_tasks_done:
            while self._queue.unfinished_tasks:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._queue.all_tasks_done.wait(left)
        return True
