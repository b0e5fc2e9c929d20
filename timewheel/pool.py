"""The bounded worker pool: user code runs here, never on the boss thread.

The boss hands over no more claimed tasks than there are idle workers, so nothing waits in
here and a task claimed is a task started.  A thread-per-worker loop over a SimpleQueue is
used instead of ``concurrent.futures`` because the boss needs no future per task, only a
callback.
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
        self._name = name
        self._queue: "queue.SimpleQueue[Optional[TaskRecord]]" = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []

    def start(self, on_done: Callable[[TaskRecord, Outcome], None]) -> None:
        """Start the workers; each outcome goes to ``on_done(record, outcome)``."""
        self._on_done = on_done
        self._threads = [threading.Thread(target=self._loop, name=f"{self._name}-{i}", daemon=True)
                         for i in range(self.workers)]
        for t in self._threads:
            t.start()

    def submit(self, rec: TaskRecord) -> None:
        self._queue.put(rec)

    def _loop(self) -> None:
        while True:
            rec = self._queue.get()
            if rec is _STOP:
                return
            try:
                outcome = self._execute(rec)
            except BaseException:   # execute() catches task errors; this is our own bug
                log.exception("internal error running task %s", rec.id)
                continue
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
