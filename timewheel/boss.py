"""The boss: one thread per started wheel, in every process that called ``start()``.

It does two jobs, each a few store calls per round:

* **ticking**, only while this process holds the ticking role (:class:`~timewheel.store.Liveness`):
  at each tick boundary it *advances* the wheel ``lookahead`` ticks ahead of the clock (pending
  tasks of those ticks become ready, oldest first, a page at a time after downtime), every tick
  it requeues the tasks of processes that died (the documented re-run), and now and then it
  purges finished tasks past their TTL.  Ticks are absolute (``k * tick``): lateness never
  accumulates, and a clock that goes back loads nothing twice.  When the holder dies another
  process's boss takes the role within a tick.
* **working**, in every process: it claims due ready tasks -- no more than its idle workers,
  so work spreads over the processes and a claimed task is a started one; only while a
  backlog lasts (a claim came back full and more was due) it also queues a few more
  (:func:`queue_depth`), so that its workers never wait for a claim's round trip -- hands them
  to the pool, and records their outcomes in batches through the pure transitions of
  :mod:`timewheel.records` (a compare-and-set: an outcome fenced out by a recovery is dropped,
  and logged).  While it runs tasks it asks the store once a tick, in one read for all of
  them, which of them were asked to abort (issue 23), and tells those runs so; and it writes
  the progress they reported (at most a few writes a second per run, whatever they do).

Between rounds it sleeps until the earliest ready eta it knows, the next tick boundary (if
ticking), or a ring of the store's doorbell (a task became ready elsewhere, a worker finished
here), and looks at the store at least once a tick.  :meth:`Boss.step` does one round for a
given ``now``; the thread is a thin loop around it, so tests drive it with a fake clock.

Store errors (disk full, busy, a server away) never stop it: it backs off exponentially (up
to 5 s), keeps claimed tasks and unrecorded outcomes, logs once when it starts failing and
once when it recovers, and reports its state in :meth:`health`.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Optional

from . import processes
from .backoff import backoff
from .errors import StoreError
from .execute import PROGRESS_EVERY, abort_run, forget_run, reports_progress, unsent_progress
from .inbox import PAGE as PAGE_INBOX
from .inbox import Entry
from .pool import WorkerPool
from .records import (
    ABORTED,
    FAILED,
    MISFIRED,
    Outcome,
    TaskRecord,
    end_run,
    hand_back,
    is_misfire,
    requeue_crashed,
    skip_misfired,
    start_queued,
    with_progress,
)
from .store.base import Claimed, Doorbell, WheelStore
from .store.rules import outcome_event

__all__ = ["Boss", "Health"]

log = logging.getLogger("timewheel.boss")

_HOST = socket.gethostname()
PAGE = 20_000             #: tasks made ready per advance: bounds memory and a transaction
_BACKOFF_MIN, _BACKOFF_MAX = 0.05, 5.0


def queue_depth(workers: int, round_s: Optional[float], task_s: Optional[float]) -> int:
    """How many claimed tasks a process may hold queued beyond its workers in a backlog.

    Enough that its workers stay busy through the next store round (they finish about
    ``workers * round_s / task_s`` tasks meanwhile; twice that, for the round's jitter), so
    that a burst of short tasks is claimed in few, large transactions -- and no more, so that
    long tasks stay in the store for whichever process has a worker free.  At least
    ``workers``, at most ``64 * workers``; ``4 * workers`` until both times are known.
    """
    if not round_s or not task_s:
        return 4 * workers
    return max(workers, min(64 * workers, math.ceil(2 * workers * round_s / task_s)))


def _ewma(old: Optional[float], new: float, weight: float = 0.2) -> float:
    return new if old is None else old + weight * (new - old)


@dataclass(frozen=True)
class Health:
    """What a started wheel is doing, for the application (``TimeWheel.health()``)."""

    ok: bool                    #: False while store calls fail
    ticking: bool               #: this process holds the ticking role
    running: int                #: tasks claimed here and not yet recorded
    error: Optional[str] = None  #: the last failure while not ok
    since: Optional[float] = None  #: when the current state began (unix time)


class Boss:
    def __init__(self, store: WheelStore, pool: WorkerPool, *, lookahead: int = 4,
                 result_ttl: float = 7 * 86400.0, max_crashes: int = 3,
                 on_change: Callable[[], None] = lambda: None,
                 on_event: Callable[[str, TaskRecord, Optional[BaseException]], None] = lambda *a: None,
                 recover_every: Optional[float] = None,
                 purge_every: Optional[float] = None, queues: Optional[frozenset] = None,
                 inbox: Optional[Callable[[Entry], TaskRecord]] = None) -> None:
        self.store = store
        #: takes in the store's inbox (timewheel/inbox.py) each tick; None: no entries taken in
        self._inbox = _InboxTaker(store, inbox) if inbox is not None and store.inbox_kept else None
        #: the queues this process claims (None: every queue; see timewheel.flow)
        self.queues = queues
        self.wheel = store.wheel
        self.liveness = store.liveness
        self.clock = store.now
        self.lookahead = lookahead
        self.result_ttl = result_ttl
        self.max_crashes = max_crashes
        self.recover_every = recover_every or self.wheel.tick
        self.purge_every = purge_every or min(60.0, max(1.0, result_ttl / 10))
        self.on_change = on_change
        self.on_event = on_event
        self.pool = pool
        self._extra = 0                  # tasks to queue beyond the workers (a backlog), up to max_extra
        self._round_s: Optional[float] = None    # how long a claim round takes (moving average)
        self._task_s: Optional[float] = None     # how long a run takes here (moving average)
        self.leading = False
        self.bell: Doorbell = Doorbell()
        self._running: dict[str, TaskRecord] = {}      # claimed here, outcome not yet recorded
        self._outcomes: "deque[tuple[TaskRecord, Outcome]]" = deque()
        #: queued tasks a worker took since the last round: (id, when), for records.start_queued
        self._starts: "deque[tuple[str, float]]" = deque()
        #: id -> the rev its run was claimed at (the worker's record, its run state in execute.py);
        #: ``_running`` holds the record as last stored (a recorded start moves the rev)
        self._claim_rev: dict[str, int] = {}
        self._next_eta: Optional[float] = None          # earliest ready eta at the last look
        self._look_at = 0.0                             # the next look even if nothing rang
        self._rang = True
        self._horizon: Optional[int] = None
        self._complete = True
        self._lead_at = self._recover_at = self._purge_at = self._renew_at = self._verify_at = 0.0
        self._report_at = self._forget_at = self._aborts_at = self._deps_at = 0.0
        self._started_at = time.time()
        self._stopping = threading.Event()
        self._accepting = False
        self._report_lock = threading.Lock()
        self._thread: Optional[threading.Thread] = None
        self._health = Health(True, False, 0, since=time.time())
        self._pauses = backoff(_BACKOFF_MIN, _BACKOFF_MAX)   # between failing rounds

    # -- called from worker threads ---------------------------------------------------------
    def _done(self, rec: TaskRecord, outcome: Outcome) -> None:
        """A worker finished ``rec`` (the pool's callback)."""
        with self._report_lock:
            if self._accepting:
                # The first outcome of a batch wakes the boss; the others ride along.
                first = not self._outcomes
                self._outcomes.append((rec, outcome))
                if first:
                    self.bell.poke()
                return
        # The boss has stopped (stop(wait=False)): record it from this thread, and keep
        # trying while the store fails, since a lost outcome leaves the task running forever.
        pauses = backoff(_BACKOFF_MIN, _BACKOFF_MAX)
        while True:
            try:
                self._apply([(rec, outcome)])
                return
            except StoreError as exc:
                log.warning("could not record the outcome of task %s yet (%s); retrying", rec.id, exc)
                time.sleep(next(pauses))

    def _started(self, rec: TaskRecord) -> None:
        """A worker took ``rec`` (the pool's callback): a start from the queue goes to the store
        with the next round, not one of its own: a short task's outcome usually comes first
        and records it (20,000 no-op tasks on 4 workers: 1,854 starts written)."""
        if rec.started is None:
            self._starts.append((rec.id, self.clock()))

    # -- one round --------------------------------------------------------------------------
    def step(self, now: Optional[float] = None) -> float:
        """Do whatever is due at ``now``; return the seconds until there is more to do."""
        given = now
        now = self.clock() if now is None else now
        batch = self._take_outcomes()
        try:
            if self._lead(now):
                self._tick(now)
            self._work(now, batch)
        except BaseException:
            # Not recorded (e.g. StoreBusy): keep them for the next round.  Dropping them would
            # leave the tasks RUNNING under a live owner -- stuck until this process dies.
            self._keep_outcomes(batch)
            raise
        self._renew(now)
        if self._running and _due(self, "_aborts_at", self.wheel.tick, now):
            self._watch_aborts()
        if self._running:
            self._write_progress()
        if _due(self, "_report_at", processes.REPORT_EVERY, now):
            self._report(now)
        # The calls above took time (a round trip each to a server): sleep from a fresh
        # reading, or every wake-up is late by this round's length.
        return self._sleep_for(now if given is not None else self.clock())

    def _lead(self, now: float) -> bool:
        if self.leading or now >= self._lead_at or self._lead_at - now > self.wheel.tick:
            if _due(self, "_verify_at", self.wheel.tick, now):
                notice = self.liveness.verify()       # once a tick: the lock file still there?
                if notice:
                    log.warning("%s", notice)
            was = self.leading
            self.leading = self.liveness.try_lead()
            self._lead_at = now + self.wheel.tick
            if self.leading and not was:
                st = self.store.state()
                self._horizon, self._complete = st.horizon, False
                self._recover_at = now
                log.info("%s now ticks %s (horizon tick %d, %d ticks behind)", self.liveness.token,
                         self.store.location, st.horizon,
                         max(0, self.wheel.current_tick(now) - st.horizon))
            elif was and not self.leading:
                log.warning("%s lost the ticking role of %s", self.liveness.token, self.store.location)
        return self.leading

    def _tick(self, now: float) -> None:
        current = self.wheel.current_tick(now)
        if not self._complete or self._horizon is None or current + 1 > self._horizon:
            adv = self.store.advance(current + self.lookahead, PAGE, self.liveness.token)
            if not adv.led:
                # Stalled past its lease (stopped, frozen, starved): another process ticks now.
                log.warning("%s lost the ticking role of %s while it was not renewing it",
                            self.liveness.token, self.store.location)
                self.leading = False
                return
            self._horizon, self._complete = adv.horizon, adv.complete
            if adv.moved:
                self._rang = True
        if self._inbox is not None and self._inbox.take():
            self._rang = True
            self.on_change()
        if _due(self, "_recover_at", self.recover_every, now):
            lost = self.store.abandoned(now)
            if lost:
                back = self.store.swap([(r, requeue_crashed(r, now, self.max_crashes)) for r in lost])
                n = sum(b is not None for b in back)
                if n:
                    log.warning("requeued %d task(s) whose process died while running them: %s",
                                n, ", ".join(b.id for b in back if b is not None)[:300])
                    for b in back:
                        if b is not None and b.status in (FAILED, ABORTED):   # died max_crashes
                            self.on_event(b.status, b, None)                 # times; asked to stop
                    self._rang = True
                    self.on_change()
            # Batches (issue 23) are finished by the write of their last member's outcome;
            # this backstop finishes any that a store left with no open member, not done.
            if self.store.sweep_batches():
                log.warning("finished batch(es) left with no open member by an earlier write")
                self._rang = True
        if _due(self, "_purge_at", self.purge_every, now):
            n = self.store.purge(now - self.result_ttl)
            if n:
                log.info("purged %d finished task(s) past their result TTL", n)
        if _due(self, "_deps_at", 60.0, now):
            # Dependents (issue 23) are released or cancelled by the write of their dependency's
            # outcome; this backstop tells those a store left waiting for a finished one.
            if self.store.sweep_dependents():
                log.warning("told waiting tasks of dependencies that had finished before")
                self._rang = True
        if _due(self, "_forget_at", 60.0, now):
            self.store.forget_processes(processes.gone_long_ago(self.store.process_reports(), now,
                                                                self.liveness.is_dead))

    @property
    def queueing(self) -> int:
        """How many claimed tasks it queues beyond its workers now (0 but in a backlog)."""
        return self._extra

    @property
    def max_extra(self) -> int:
        """The most tasks queued here beyond the workers, in a backlog."""
        return queue_depth(self.pool.workers, self._round_s, self._task_s)

    def _room(self, finishing: int = 0) -> tuple[int, int]:
        """How many tasks to claim now, once ``finishing`` outcomes are recorded: (for idle
        workers, to queue while a backlog lasts)."""
        busy = len(self._running) - finishing
        idle = max(0, self.pool.workers - busy)
        return idle, max(0, self.pool.workers + self._extra - busy - idle) if self._extra else 0

    def _work(self, now: float, batch: list[tuple[TaskRecord, Outcome]]) -> None:
        """Record the outcomes of ``batch`` and claim what the workers can take, in one store
        round (one transaction, one round trip) when both are wanted."""
        idle, queue = self._room(len(batch))
        due = self._next_eta is not None and self._next_eta <= now
        wanted = (idle + queue > 0 and not self._stopping.is_set()
                  and (self._rang or due or now >= self._look_at or bool(batch)))
        pairs = [(rec, end_run(rec, out)) for rec, out in self._as_known(batch)]
        starts = _start_pairs(self._starts, self._running, {rec.id for rec, _ in batch}, now,
                              getattr(self.store, "lease", None))
        pairs += starts
        try:
            if wanted:
                t0 = time.perf_counter()
                # (queues= only when some are named: a store without flow control takes none)
                served = {} if self.queues is None else {"queues": self.queues}
                stored, got = self.store.record_and_claim(pairs, self.liveness.token, now, idle, queue,
                                                          **served)
                self._round_s = _ewma(self._round_s, time.perf_counter() - t0)
            else:
                stored, got = (self.store.swap(pairs) if pairs else []), None
        except BaseException:
            self._starts.extendleft(reversed([(new.id, new.started) for _, new in starts]))   # next round
            raise
        for (old, _), new in zip(starts, stored[len(batch):]):
            if new is not None and old.id in self._running:
                self._running[old.id] = new          # the rev its outcome and notes are written at
        if batch:
            self._recorded(batch, stored[:len(batch)])
        if got is not None:
            self._rang = False
            self._claimed(now, got, idle + queue)

    def _claimed(self, now: float, got: Claimed, room: int) -> None:
        self._next_eta = got.next_eta
        self._look_at = now + self.wheel.tick
        # A backlog (a full claim, and more already due): queue some tasks here so the workers
        # never wait for the next claim's round trip.  Without one, claim only for idle
        # workers, so that tasks go to whichever process has a worker free.
        if len(got.records) == room and got.next_eta is not None and got.next_eta <= now:
            self._extra = min(self.max_extra, max(self.pool.workers, 2 * self._extra))
        elif len(got.records) < room:
            self._extra = 0
        misfired = []
        for rec in got.records:
            if is_misfire(rec, now):
                misfired.append((rec, skip_misfired(rec, now)))
                continue
            self._running[rec.id] = rec
            self._claim_rev[rec.id] = rec.rev
            self.pool.submit(rec)
            self.on_event("started", rec, None)
        if misfired:
            for new in self.store.swap(misfired):
                if new is not None:
                    log.warning("task %s (%s) misfired: %s", new.id, new.name, new.error)
                    self.on_event(MISFIRED, new, None)
            self.on_change()

    def _as_known(self, batch: list[tuple[TaskRecord, Outcome]]) -> list[tuple[TaskRecord, Outcome]]:
        """``batch`` with each run's record as the boss knows it: with an abort it learned of
        (same rev), so that its outcome ends it aborted, and with its start if that was recorded
        (a new rev).  An older claim's outcome keeps its own record, and is fenced."""
        run, claimed = self._running, self._claim_rev
        return [(run[rec.id] if rec.id in run and claimed.get(rec.id) == rec.rev else rec, out)
                for rec, out in batch]

    def _watch_aborts(self) -> None:
        """Ask the store which runs held here were asked to abort (one read for all of them),
        and tell each: an async one is cancelled, a sync one sees ``aborted``."""
        unaware = [r for r in self._running.values() if r.abort is None]
        if not unaware:
            return
        for task_id, at in self.store.aborting(self.liveness.token, unaware).items():
            rec = self._running.get(task_id)
            if rec is None or rec.abort is not None:
                continue
            self._running[task_id] = rec._replace(abort=at)
            abort_run(task_id, self._claim_rev.get(task_id, rec.rev))
            log.info("task %s (%s): asked to abort; told its run", task_id, rec.name)

    def _write_progress(self) -> None:
        """Write the latest progress each run here reported since its last write (at most one
        write per run every execute.PROGRESS_EVERY; the boss looks that often while a run
        reports): a note that keeps the run's fence (WheelStore.note)."""
        for rec in list(self._running.values()):
            value = unsent_progress(rec.id, self._claim_rev.get(rec.id, rec.rev))
            if value is not None:
                self.store.note(rec, with_progress(rec, value))

    def _renew(self, now: float) -> None:
        every = self.liveness.renew_every
        if not every or now < self._renew_at:
            return
        self._renew_at = now + every
        for task_id in self.liveness.keepalive(list(self._running.values())):
            log.warning("task %s is still running here, but its lease was lost (this process was "
                        "paused or cut off from the store): it will run again elsewhere, and "
                        "this run's outcome will be refused", task_id)

    def _report(self, now: float, stopped: Optional[float] = None) -> None:
        """Tell the store who this process is and how busy (timewheel/processes.py)."""
        report = processes.ProcessReport(
            host=_HOST, pid=os.getpid(), started=self._started_at,
            queues=None if self.queues is None else tuple(sorted(self.queues)), workers=self.pool.workers,
            busy=self.pool.busy, queued=self.pool.queued, heartbeat=now, stopped=stopped)
        self.store.report_process(self.liveness.token, processes.encode_report(report))

    def _take_outcomes(self) -> list[tuple[TaskRecord, Outcome]]:
        with self._report_lock:          # drained under the lock _done appends under: see there
            batch = list(self._outcomes)
            self._outcomes.clear()
        return batch

    def _keep_outcomes(self, batch: list[tuple[TaskRecord, Outcome]]) -> None:
        with self._report_lock:
            self._outcomes.extendleft(reversed(batch))

    def _record(self) -> None:
        """Record the outcomes that arrived, alone (while stopping)."""
        batch = self._take_outcomes()
        if not batch:
            return
        try:
            self._apply(batch)
        except BaseException:
            self._keep_outcomes(batch)
            raise

    def _apply(self, batch: list[tuple[TaskRecord, Outcome]]) -> None:
        known = self._as_known(batch)
        self._recorded(batch, self.store.swap([(rec, end_run(rec, out)) for rec, out in known]))

    def _recorded(self, batch: list[tuple[TaskRecord, Outcome]],
                  stored: list[Optional[TaskRecord]]) -> None:
        """Account for the outcomes of ``batch`` once the store answered (``stored``)."""
        for (rec, out), new in zip(batch, stored):
            self._running.pop(rec.id, None)
            forget_run(rec.id, rec.rev)
            if self._claim_rev.get(rec.id) == rec.rev:
                del self._claim_rev[rec.id]
            self._task_s = _ewma(self._task_s, max(0.0, out.finished - out.started))
            if new is None:
                log.warning("task %s (%s): this run's outcome was refused: the task was recovered "
                            "meanwhile (its process was taken for dead) and runs again", rec.id, rec.name)
                continue
            event = outcome_event(new)
            if event is not None:
                if event == "retrying":
                    log.info("task %s (%s) will retry at %.3f", new.id, new.name, new.eta)
                self.on_event(event, new, out.exception)
        self.on_change()

    def _sleep_for(self, now: float) -> float:
        if self._outcomes or (self._rang and sum(self._room())):
            return 0.0
        wake = self._look_at
        if self._next_eta is not None and sum(self._room()):
            wake = min(wake, self._next_eta)
        if self.leading:
            if not self._complete:
                return 0.0
            wake = min(wake, self.wheel.tick_end(self.wheel.current_tick(now) + 1),
                       self._recover_at, self._purge_at)
        else:
            wake = min(wake, self._lead_at)
        if self.liveness.renew_every:
            wake = min(wake, self._renew_at)
        if self._running:
            wake = min(wake, self._aborts_at)
            if any(reports_progress(r.id, r.rev) for r in self._running.values()):
                wake = min(wake, now + PROGRESS_EVERY + 0.005)   # its next value waits no longer
        return max(0.0, min(wake, self._report_at) - now)

    # -- the thread ---------------------------------------------------------------------------
    def start(self, thread: bool = True) -> None:
        """Open the doorbell, start the pool, do a first round here (so a store that cannot be
        used fails ``start()``), then run rounds on the boss thread.  ``thread=False`` leaves
        the rounds to the caller's :meth:`step` (tests, on a fake clock)."""
        self.bell = self.store.doorbell()
        self._started_at = time.time()
        self._stopping.clear()
        self._accepting = True
        self.pool.start(self._done, self._started)
        if not thread:
            return
        try:
            self.store.serve(self.liveness.token, self.queues)
            delay = self.step()
        except BaseException:
            self._accepting = False
            self.pool.stop(wait=False)
            self._close_bell()
            raise
        self._healthy()                  # health() tells of that round (ticking, running) at once
        self._thread = threading.Thread(target=self._run, args=(delay,), name="timewheel-boss",
                                        daemon=True)
        self._thread.start()

    def _run(self, delay: float) -> None:
        while not self._stopping.is_set():
            if delay > 0 and self.bell.wait(delay):
                self._rang = True
            if self._stopping.is_set():
                break
            try:
                delay = self.step()
                self._healthy()
            except Exception as exc:  # noqa: BLE001 - log and keep going: see the module doc
                delay = self._failing(exc)

    def _healthy(self) -> None:
        h = self._health
        if not h.ok:
            log.warning("the store %s works again (it failed since %s)", self.store.location,
                        time.strftime("%H:%M:%S", time.localtime(h.since)))
            self._pauses = backoff(_BACKOFF_MIN, _BACKOFF_MAX)
        if not h.ok or h.ticking != self.leading or h.running != len(self._running):
            self._health = Health(True, self.leading, len(self._running),
                                  since=h.since if h.ok else time.time())

    def _failing(self, exc: Exception) -> float:
        text = f"{exc.__class__.__name__}: {exc}"
        h = self._health
        if h.ok or h.error != text:
            if isinstance(exc, (StoreError, OSError)):
                log.error("store %s fails: %s; retrying with backoff (up to %gs), tasks are kept",
                          self.store.location, text, _BACKOFF_MAX)
            else:
                log.exception("internal error in the boss of %s; retrying", self.store.location)
        self._health = Health(False, self.leading, len(self._running), text,
                              h.since if not h.ok else time.time())
        return next(self._pauses)

    def health(self) -> Health:
        return self._health

    def stop(self, wait: bool = True, timeout: Optional[float] = None) -> int:
        """Stop claiming; hand the claimed tasks no worker has started back to the store at
        once (they run elsewhere); with ``wait``, let running tasks finish (up to ``timeout``
        s) and record them first.  Returns how many claimed tasks were still unfinished."""
        deadline = None if timeout is None else time.monotonic() + timeout
        self._stopping.set()
        self.bell.poke()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._hand_back()
        while wait and self._running and (deadline is None or time.monotonic() < deadline):
            self.bell.wait(0.05 if deadline is None else max(0.0, min(0.05, deadline - time.monotonic())))
            self._record_quietly()
        with self._report_lock:
            self._accepting = False
        self._record_quietly()
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        self.pool.stop(wait=wait, timeout=remaining)
        unfinished = len(self._running)
        try:
            now = self.clock()
            self._report(now, stopped=now)
        except StoreError as exc:        # (a process that stops reporting is listed as dead)
            log.debug("could not report this process stopped: %s", exc)
        if self.leading:
            self.liveness.resign()
            self.leading = False
        try:
            self.store.unserve(self.liveness.token)
        except StoreError as exc:        # (dead processes' entries are ignored anyway)
            log.debug("could not forget what this process served: %s", exc)
        self._close_bell()
        return unfinished

    def _hand_back(self) -> None:
        """Give the store back the tasks queued here that no worker took (issue 26): pending
        again as before their claim, for any process to start.  A task whose hand-back is
        refused (its claim was recovered meanwhile) is someone else's already.  If the store
        cannot be reached they go back to the workers, as before."""
        # (as the boss knows them: one whose abort it learned of ends aborted, not handed back)
        queued = [self._running.get(rec.id, rec) for rec in self.pool.withdraw()]
        if not queued:
            return
        try:
            back = self.store.swap([(rec, hand_back(rec)) for rec in queued])
        except StoreError as exc:
            log.warning("could not hand back %d queued task(s) while stopping (%s): they run here",
                        len(queued), exc)
            for rec in queued:
                self.pool.submit(rec)
            return
        for rec in queued:
            self._running.pop(rec.id, None)
            self._claim_rev.pop(rec.id, None)
            forget_run(rec.id, rec.rev)
        log.info("handed back %d claimed task(s) no worker had started", sum(b is not None for b in back))
        self.store.ring()
        self.on_change()

    def _record_quietly(self) -> None:
        try:
            self._record()
        except StoreError as exc:
            log.warning("could not record outcomes while stopping: %s", exc)

    def _close_bell(self) -> None:
        try:
            self.bell.close()
        except Exception:  # noqa: BLE001 - a bell that cannot unregister is forgotten by the ticker
            log.debug("closing the doorbell failed", exc_info=True)


def _start_pairs(starts: "deque[tuple[str, float]]", running: dict[str, TaskRecord], finished: set,
                 now: float, lease: Optional[float]) -> list[tuple[TaskRecord, TaskRecord]]:
    """The starts to record in a round (taken off ``starts``): of tasks still ``running`` here
    whose outcome is not in this round (an outcome records the start itself); a leased one
    with its lease renewed from ``now``, as a renewal would (the write stores the record's
    lease: the claim's deadline, renewed in the store meanwhile, may be long past)."""
    pairs = []
    while starts:
        task_id, at = starts.popleft()
        rec = running.get(task_id)
        if rec is not None and rec.started is None and task_id not in finished:
            renewed = now + lease if rec.lease is not None and lease else None
            pairs.append((rec, start_queued(rec, at, renewed)))
    return pairs


class _InboxTaker:
    """Takes in what other tools put in a store's inbox (timewheel/inbox.py), for the ticking
    process: a page per call, up to ten while pages come full (2,000 entries a tick), so a
    flood of entries cannot stall the tick."""

    def __init__(self, store: WheelStore, build: Callable[[Entry], TaskRecord]) -> None:
        self.store, self.build = store, build
        self.failing = False

    def take(self) -> int:
        """Take entries in; how many tasks were added."""
        added = 0
        for _ in range(10):
            try:
                n, aside = self.store.take_inbox(self.build, PAGE_INBOX)
            except StoreError as exc:
                # An inbox another tool damaged (a Redis key of another type, a dropped table)
                # must not stop the wheel: it ticks on, and says so once until it works again.
                if not self.failing:
                    log.error("cannot take the inbox of %s in (%s); the wheel goes on without it",
                              self.store.location, exc)
                self.failing = True
                return added
            self.failing = False
            if n:
                log.info("took %d task(s) in from the inbox", n)
            added += n
            if n + aside < PAGE_INBOX:
                return added
        return added


def _due(boss: Boss, attr: str, interval: float, now: float) -> bool:
    """True (and re-armed) when the periodic chore in ``attr`` is due.  A deadline more than
    one interval ahead means the clock went back: due now rather than in hours."""
    at = getattr(boss, attr)
    if now >= at or at - now > interval:
        setattr(boss, attr, now + interval)
        return True
    return False
