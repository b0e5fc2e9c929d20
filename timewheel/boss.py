"""The boss: turns the wheel and hands due tasks to the pool.

One boss per process; in each store only the process holding the ticking lock
(:class:`~timewheel.locks.ProcessLocks`) acts, the others retry every tick and take over
when the holder dies.  :meth:`Boss.step` does one round of work for a given ``now`` and says
how long to sleep; the thread is a thin loop around it, so tests can drive it with a fake
clock.

How a task gets from the store to a worker:

1. At tick boundary ``k``, if tick ``k + 1`` is not loaded yet, the boss *loads* ticks
   ``k + 1 .. k + lookahead`` into an in-memory heap ordered by exact eta, and raises the
   stored horizon in the same transaction; a task added later into a loaded tick gets a late
   marker instead, which the boss polls every ``late_poll`` seconds.  Ticks are absolute
   (``k * tick``), so lateness never accumulates; after a pause, downtime or a clock jump
   forward every skipped tick is loaded, and when the clock goes back nothing is loaded twice.
2. When a heap entry's eta has passed, the boss *claims* it (one transaction, which re-checks
   the exact eta: never early) and submits it, but only as many as the pool has room for.
   Due work beyond that waits on disk.
3. Workers report outcomes back; the boss records them in batches (group commit).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections import deque
from typing import Callable, NamedTuple, Optional

from .errors import StoreError
from .locks import ProcessLocks
from .pool import WorkerPool
from .store.base import Due, Outcome, WheelStore

__all__ = ["Boss"]

log = logging.getLogger("timewheel.boss")


class _Entry(NamedTuple):
    eta: float
    seq: int
    due: Due


class Boss:
    def __init__(self, store: WheelStore, locks: ProcessLocks, pool: WorkerPool, *,
                 capacity: int, clock: Callable[[], float] = time.time,
                 late_poll: float = 0.2, recover_every: float = 10.0, purge_every: float = 60.0,
                 max_crashes: int = 3, heap_cap: int = 100_000, lookahead: int = 1,
                 on_change: Callable[[], None] = lambda: None) -> None:
        self.store = store
        self.wheel = store.wheel
        self.locks = locks
        self.pool = pool
        self.capacity = capacity
        self.clock = clock
        self.late_poll = late_poll
        self.recover_every = recover_every
        self.purge_every = purge_every
        self.max_crashes = max_crashes
        self.heap_cap = heap_cap
        self.lookahead = max(1, lookahead)
        self.on_change = on_change

        self.loaded_through: Optional[int] = None   # None: not the ticking process
        self.inflight = 0
        self._heap: list[_Entry] = []
        self._known: set[str] = set()   # ids in the heap or in flight: a task is queued once
        self._seq = itertools.count()
        self._inbox: "deque[Due]" = deque()
        self._outcomes: "deque[Outcome]" = deque()
        self._next_late = self._next_recover = self._next_purge = 0.0
        self._leader_token = ""
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._accepting = False          # outcomes go through the boss thread (batched)
        self._report_lock = threading.Lock()

    # -- called from other threads ----------------------------------------------------------
    def notify(self, due: Due) -> None:
        """A task was just added in this process; schedule it without waiting for a reload."""
        lt = self.loaded_through
        if lt is not None and self.wheel.due_tick(due.eta) <= lt:
            self._inbox.append(due)
            self._wake.set()

    def report(self, outcome: Outcome) -> None:
        """A worker finished a task (the pool's ``on_done``)."""
        with self._report_lock:
            if self._accepting:
                self._outcomes.append(outcome)
                self._wake.set()
                return
        # The boss has stopped (stop(wait=False)): record it from the worker thread, and
        # keep trying while the store is busy, since a lost outcome leaves the task stuck.
        pause = 0.05
        while True:
            try:
                self.store.finish([outcome])
                break
            except StoreError:
                log.warning("could not record the outcome of task %s yet; retrying", outcome.id,
                            exc_info=True)
                time.sleep(pause)
                pause = min(pause * 2, 5.0)
        self.on_change()

    # -- one round --------------------------------------------------------------------------
    def step(self, now: Optional[float] = None) -> float:
        """Do whatever is due at ``now``; return the seconds until there is more to do."""
        explicit = now is not None
        now = self.clock() if now is None else now
        if self.loaded_through is None:
            if not self.locks.try_lead(self):
                return self.wheel.tick
            self._take_over(now)
        self._record_outcomes()
        self._drain_inbox()
        self._maintain(now)
        self._load(now)
        self._dispatch(now)
        return self._sleep_for(now if explicit else self.clock())

    def _take_over(self, now: float) -> None:
        st = self.store.state()
        self.loaded_through = st.done_through
        self._heap.clear()
        self._known.clear()
        self._next_late = self._next_recover = now
        log.info("pid %s is now ticking %s (resuming after tick %d, %d behind)",
                 self.locks.token, self.store.path or "memory", st.done_through,
                 max(0, self.wheel.current_tick(now) - st.done_through))
        self._leader_token = self.locks.token

    def _push(self, due: Due) -> None:
        if due.id in self._known:
            return
        self._known.add(due.id)
        self._requeue(due)

    def _requeue(self, due: Due) -> None:
        """Into the heap, for a task already counted in ``_known``."""
        heapq.heappush(self._heap, _Entry(due.eta, next(self._seq), due))

    def _record_outcomes(self) -> None:
        batch = []
        while self._outcomes:
            batch.append(self._outcomes.popleft())
        if not batch:
            return
        try:
            again = self.store.finish(batch)
        except BaseException:
            # Not recorded (e.g. StoreBusy): keep them for the next round.  Dropping them would
            # leave the tasks RUNNING under a live owner -- stuck until this process dies.
            self._outcomes.extendleft(reversed(batch))
            raise
        self.inflight -= len(batch)
        for out in batch:
            self._known.discard(out.id)
        lt = self.loaded_through if self.loaded_through is not None else -1
        for due in again:
            if self.wheel.due_tick(due.eta) <= lt:
                self._push(due)
        self.on_change()

    def _drain_inbox(self) -> None:
        while self._inbox:
            self._push(self._inbox.popleft())

    def _maintain(self, now: float) -> None:
        if self._timer_due("_next_recover", self.recover_every, now):
            if self.store.recover(self.locks.is_dead, now, self.max_crashes):
                self._next_late = now      # they came back with late markers
                self.on_change()
        if self._timer_due("_next_purge", self.purge_every, now):
            n = self.store.purge(now)
            if n:
                log.info("purged %d finished task(s) past their result TTL", n)
        if self._timer_due("_next_late", self.late_poll, now):
            for due in self.store.late():
                self._push(due)

    def _timer_due(self, attr: str, interval: float, now: float) -> bool:
        """True (and re-armed) when the periodic chore in ``attr`` is due.  A deadline more
        than one interval ahead means the clock went back: due now rather than in hours."""
        at = getattr(self, attr)
        if now >= at or at - now > interval:
            setattr(self, attr, now + interval)
            return True
        return False

    def _load(self, now: float) -> None:
        assert self.loaded_through is not None
        current = self.wheel.current_tick(now)
        if current + 1 <= self.loaded_through or len(self._heap) >= self.heap_cap:
            return
        # Next tick needed: load ``lookahead`` ticks at once.  Each load is a write (the
        # horizon), so an idle wheel commits once per ``lookahead`` ticks, not every tick.
        target = current + self.lookahead
        if self._heap:
            done = min(self.loaded_through, self.wheel.due_tick(self._heap[0].eta) - 1)
        else:
            done = self.loaded_through
        found = self.store.load(self.loaded_through, target, done, self._leader_token)
        self.loaded_through = target
        for due in found:
            self._push(due)

    def _dispatch(self, now: float) -> None:
        room = self.capacity - self.inflight
        if room <= 0 or not self._heap or self._heap[0].eta > now:
            return
        ready: list[Due] = []
        while self._heap and self._heap[0].eta <= now and len(ready) < room:
            ready.append(heapq.heappop(self._heap).due)
        idle = max(0, self.pool.workers - self.inflight)
        try:
            claim = self.store.claim(ready, self.locks.token, now, starting=idle)
        except BaseException:
            # Nothing was claimed: put them back, or they would wait for the next leader.
            for due in ready:
                self._requeue(due)
            raise
        for i in claim.gone:
            self._known.discard(i)
        for rec in claim.misfired:
            self._known.discard(rec.id)
        for due in claim.not_due:
            self._requeue(due)
        for rec in claim.run:
            self.inflight += 1
            self.pool.submit(rec)
        if claim.misfired or claim.gone:
            self.on_change()

    def _sleep_for(self, now: float) -> float:
        if self._outcomes or self._inbox:
            return 0.0
        if self.loaded_through is None:
            return self.wheel.tick
        wake = min(self.wheel.tick_end(self.wheel.current_tick(now) + 1),
                   self._next_late, self._next_recover, self._next_purge)
        if self._heap and self.inflight < self.capacity:
            wake = min(wake, self._heap[0].eta)
        return max(0.0, wake - now)

    # -- the thread ---------------------------------------------------------------------------
    def start(self) -> None:
        self._stopping.clear()
        self._accepting = True
        self._thread = threading.Thread(target=self._run, name="timewheel-boss", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                delay = self.step()
            except Exception:
                # Log and keep ticking: a transient "locked" or I/O error must not stop the
                # wheel.  Nothing is lost: the store rolled the failed transaction back.
                log.exception("boss step failed; retrying")
                delay = min(1.0, self.wheel.tick)
            if delay > 0:
                self._wake.wait(delay)
            self._wake.clear()

    def stop(self, wait: bool = True, timeout: Optional[float] = None) -> None:
        """Stop claiming; with ``wait``, let running tasks finish and record them first."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
        if wait:
            deadline = None if timeout is None else time.monotonic() + timeout
            while self.inflight > 0:
                if deadline is not None and time.monotonic() >= deadline:
                    break
                self._wake.wait(0.05)
                self._wake.clear()
                self._record_outcomes()
        with self._report_lock:
            self._accepting = False
        self._thread = None
        self._record_outcomes()
        self.locks.resign(self)
        self.loaded_through = None
        self._heap.clear()
        self._known.clear()
