"""Leader/follower batching: calls that many threads of a process make at once are served
together, by whichever of them leads -- one transaction for the file store's writes
(store/sqlite_group.py), one round trip for the Redis store's scripts (store/redis_pipeline.py).

* a caller queues its :class:`Call`; if no other caller is leading, it leads;
* the leader calls ``serve`` with a batch of its own call, to which ``serve`` adds the calls
  queued (:meth:`Combiner.take`; again for those queued meanwhile, if it likes) once it is
  ready to serve them -- holding the file's lock, say -- and sets each one's result or error;
  then the leader wakes their callers and hands the lead to the first caller queued after
  them, if any (one batch at a time: two round trips in flight were slower, 10,000 tasks/s
  against 12,500 with 8 threads on the Redis store);
* each caller returns once its own call is served, with its own result or error.

Each waiting caller is woken once, by a lock of its own (not every waiter on each change of a
shared condition: measured with 8 threads enqueueing, 39-44 us of CPU per task that way, 31-33
with one lock each, 26 with one thread).

After a batch of several calls, the next leader waits a moment (half a batch's time, at most
1 ms) for as many callers to queue again (:meth:`Combiner._gather`): they are the threads of
the last batch, coming back with their next call.  Without it the first one back goes alone
and the others queue behind it: batches of 1 and N-1 instead of N, twice the transactions or
round trips.

Pure threading: what a batch does is ``serve``'s business.
"""

from __future__ import annotations

import threading
import time
from _thread import allocate_lock
from typing import Any, Callable, Optional

__all__ = ["Call", "Combiner"]

_CROWD_FRESH = 0.002      #: seconds after a batch of several calls that its callers count as coming back
_GATHER_MOST = 0.001      #: the longest a leader waits for them


class Call:
    """One caller's call in the queue; ``serve`` sets :attr:`value` or :attr:`error`."""

    __slots__ = ("value", "error", "done", "_wake")

    def __init__(self) -> None:
        self.value: Any = None
        self.error: Optional[BaseException] = None
        self.done = False
        self._wake = allocate_lock()      # held until the call is served or its caller leads
        self._wake.acquire()

    def outcome(self) -> Any:
        """The result, or the error raised."""
        if self.error is not None:
            raise self.error
        return self.value


class Combiner:
    """The queue of one store's calls.  Thread-safe.

    :param serve: ``serve(batch)`` serves a batch (in the leading caller's thread): ``batch``
        holds the leader's own call; ``serve`` adds the calls queued with :meth:`take` (at
        least once) and serves them all.  An exception it raises is raised in the leader.
    :param interrupted: ``interrupted(exc)``: the error that each call of the batch left
        unserved by such an exception gets.
    """

    def __init__(self, serve: Callable[[list], None],
                 interrupted: Callable[[BaseException], BaseException]) -> None:
        self._serve = serve
        self._interrupted = interrupted
        self.reset()

    def reset(self) -> None:
        """An empty queue, nobody leading (also in a forked child, where the parent's
        callers and leaders do not exist)."""
        self._mutex = threading.Lock()                      # the queue and the lead
        self._grown = threading.Condition(self._mutex)     # the queue reached _crowd calls
        self._queue: list[Call] = []
        self._leading = False
        self._crowd = 0              # calls in the last batch served ...
        self._crowd_at = 0.0         # ... and when (time.monotonic())
        self._serve_s = 0.0          # how long a batch of several takes (moving average)

    @property
    def waiting(self) -> int:
        """Calls queued for the next batch (none has started to be served)."""
        return len(self._queue)

    def idle(self) -> bool:
        """Nobody queued, nobody leading, no batch of several a moment ago: a call may be made
        directly, without the queue."""
        return not self._queue and not self._leading and not self.crowded()

    def crowded(self) -> bool:
        """Whether the last batch had several calls and ended a moment ago: their callers are
        likely coming back (a web app's threads under load, a benchmark's loop)."""
        return self._crowd > 1 and time.monotonic() - self._crowd_at < _CROWD_FRESH

    def submit(self, call: Call) -> Any:
        """Queue ``call``, lead or wait, and return its result (or raise its error)."""
        with self._mutex:
            lead = not self._leading
            if lead:
                self._leading = True
            else:
                self._queue.append(call)
                if len(self._queue) + 1 >= self._crowd:
                    self._grown.notify()
        if not lead:
            call._wake.acquire()
            if call.done:
                return call.outcome()
            # handed the lead: taken out of the queue by the leader that handed it over
        self._lead(call)
        return call.outcome()

    def take(self, batch: list) -> list:
        """In ``serve``: the calls queued (since the last take), added to ``batch``."""
        with self._mutex:
            more, self._queue = self._queue, []
        batch += more
        return more

    def _lead(self, own: Call) -> None:
        batch: list[Call] = [own]
        t0 = time.monotonic()
        try:
            self._gather()
            t0 = time.monotonic()
            self._serve(batch)
        except BaseException as exc:
            for c in batch:
                if c.error is None:
                    c.error = self._interrupted(exc)
            raise
        finally:
            t1 = time.monotonic()
            if len(batch) > 1:
                self._serve_s += 0.2 * (t1 - t0 - self._serve_s)
            with self._mutex:
                self._crowd, self._crowd_at = len(batch), t1
                for c in batch:
                    c.done = True
                after = self._queue.pop(0) if self._queue else None    # the lead goes to it
                self._leading = after is not None
            for c in batch:
                c._wake.release()
            if after is not None:
                after._wake.release()

    def _gather(self) -> None:
        if not self.crowded():
            return
        with self._mutex:
            if len(self._queue) + 1 < self._crowd:
                self._grown.wait(min(_GATHER_MOST, self._serve_s / 2))
