"""The bounded worker pool: user code runs here, never on the boss thread.

The boss hands over no more claimed tasks than there are idle workers -- but in a backlog,
when it queues a few more so that the workers never wait for a claim (boss.queue_depth);
:meth:`WorkerPool.withdraw` takes those back when the process stops.  A thread-per-worker
loop over a SimpleQueue is used instead of ``concurrent.futures`` because the boss needs no
future per task, only a callback.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Callable, Optional

from .errors import shown
from .records import Outcome, TaskRecord

__all__ = ["WorkerPool"]

log = logging.getLogger("timewheel.pool")
_STOP = None


class WorkerPool:
    def __init__(self, workers: int, execute: Callable[[TaskRecord], Outcome],
                 name: str = "timewheel-worker") -> None:
        if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
            raise ValueError(f"workers must be a positive int, got {shown(workers)}")
        self.workers = workers
        self._execute = execute
        self._on_done: Callable[[TaskRecord, Outcome], None] = lambda rec, out: None
        self._on_start: Callable[[TaskRecord], None] = lambda rec: None
        self._name = name
        self._queue: "queue.SimpleQueue[Optional[TaskRecord]]" = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._busy = 0                   # workers running a task now
        self._busy_lock = threading.Lock()

    @property
    def busy(self) -> int:
        """How many workers are running a task now."""
        return self._busy

    @property
    def queued(self) -> int:
        """How many tasks handed over wait for a worker."""
        return self._queue.qsize()

    def start(self, on_done: Callable[[TaskRecord, Outcome], None],
              on_start: Callable[[TaskRecord], None] = lambda rec: None) -> None:
        """Start the workers; ``on_start(record)`` as a worker takes a task, each outcome goes
        to ``on_done(record, outcome)``."""
        self._on_done, self._on_start = on_done, on_start
        self._threads = [threading.Thread(target=self._loop, name=f"{self._name}-{i}", daemon=True)
                         for i in range(self.workers)]
        for t in self._threads:
            t.start()

    def submit(self, rec: TaskRecord) -> None:
        self._queue.put(rec)

    def withdraw(self) -> list[TaskRecord]:
        """Take back the tasks handed over that no worker has started (a stopping process
        hands them back to the store: issue 26).  A worker that takes one meanwhile runs it,
        and it is not in the list: each task is either run here or returned, never both."""
        taken: list[TaskRecord] = []
        stops = 0
        while True:
            try:
                rec = self._queue.get_nowait()
            except queue.Empty:
                break
            if rec is _STOP:
                stops += 1
            else:
                taken.append(rec)
        for _ in range(stops):
            self._queue.put(_STOP)
        return taken

    def _loop(self) -> None:
        while True:
            rec = self._queue.get()
            if rec is _STOP:
                return
            with self._busy_lock:
                self._busy += 1
            try:
                self._on_start(rec)
                outcome = self._execute(rec)
            except BaseException:   # execute() catches task errors; this is our own bug
                log.exception("internal error running task %s", rec.id)
                continue
            finally:
                with self._busy_lock:
                    self._busy -= 1
            try:
                self._on_done(rec, outcome)
            except BaseException:
                log.exception("could not hand over the outcome of task %s", rec.id)

    def stop(self, wait: bool = True, timeout: Optional[float] = None) -> None:
        """Let the workers finish what they were handed, then end them; ``timeout`` bounds
        the whole wait, not each thread's."""
        for _ in self._threads:
            self._queue.put(_STOP)
        if wait:
            deadline = None if timeout is None else time.monotonic() + timeout
            for t in self._threads:
                t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        self._threads = []
