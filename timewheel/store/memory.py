"""In-memory store: the reference backend, for tests and ``immediate=True``.

Same semantics as the file store except durability, in plain dicts under one lock.  Records
are immutable named tuples, so handing out the stored objects cannot change what is stored.
Records cannot be undecodable here; a placeholder of status ``"broken"`` (what
:meth:`~timewheel.store.WheelStore.scan` lists for one elsewhere) stands in for one where a
test puts it: listed and counted as broken, never claimed, read as RecordDecodeError, replaced
by ``add`` as :mod:`timewheel.store.rules` says.
"""

from __future__ import annotations

import bisect
import heapq
import os
import threading
import time
from typing import Callable, Iterable, Mapping, Optional, Sequence

from .. import batches as batch_rules
from .. import deps, flow
from ..errors import BatchClosed, BatchNotFound
from ..records import PENDING, RUNNING, TERMINAL, RecordDecodeError, TaskRecord
from ..wheel import Wheel
from . import rules
from .base import (
    BROKEN,
    Advanced,
    Claimed,
    LimitState,
    Liveness,
    QueueState,
    StoreState,
    WheelStore,
    check_existing,
    check_listable,
    page,
    purge_statuses,
)

Band = tuple[str, int]          #: (queue, priority): one ready queue of the claim's

__all__ = ["MemoryStore", "MemoryLiveness"]


class MemoryLiveness(Liveness):
    """One process owns everything in a memory store: its own tasks are alive, others not."""

    def __init__(self) -> None:
        self._token = f"memory:{os.getpid()}:{os.urandom(4).hex()}"

    @property
    def token(self) -> str:
        return self._token

    def try_lead(self) -> bool:
        return True

    def resign(self) -> None:
        pass

    def leader(self) -> Optional[str]:
        return self._token

    def is_dead(self, token: str) -> bool:
        return token != self._token


class _Batch:
    """A batch as the memory store keeps it."""

    __slots__ = ("created", "done", "counts", "templates", "members")

    def __init__(self, created: float, templates: dict) -> None:
        self.created = created
        self.done: Optional[float] = None
        self.counts: dict[str, int] = {}
        self.templates = templates
        self.members: list[str] = []


class _Dependencies:
    """The dependency methods of :class:`MemoryStore` (timewheel/deps.py), under its lock."""

    dependencies_kept = True  #: see WheelStore.dependencies_kept

    _lock: threading.RLock
    _records: dict[str, TaskRecord]
    _dependents: dict[str, dict[str, None]]
    _followers: dict[str, dict[str, None]]
    _concluded: list[tuple[Optional[TaskRecord], TaskRecord]]
    _store: Callable[[TaskRecord], None]
    _settle: Callable[[], None]
    _flush_ring: Callable[[], None]
    now: Callable[[], float]

    def _tell_dependents(self) -> None:
        """The dependents of the outcomes this write recorded are released or cancelled
        (deps.Cascade), in the same write, under the lock."""
        if not self._concluded:
            return
        cascade = deps.Cascade(lambda i: self._dependents.pop(i, {}), self._records.get,
                               lambda old, new: self._store(rules.swapped(old, new)), self.now())
        while self._concluded:
            cascade.wrote(*self._concluded.pop())
            cascade.run()

    def _write_new(self, out: list[TaskRecord], plan: dict[str, TaskRecord]) -> list[TaskRecord]:
        """Store an add's plan (dependencies resolved first: TaskNotFound writes nothing) and
        what follows from it; what ``add`` returns."""
        if not deps.has_dependencies(plan):
            for rec in plan.values():
                self._store(rec)
            self._settle()
            return out
        resolved = {r.id: r for r in deps.resolve_all(list(plan.values()), self._known, self.now())}
        out = [resolved[r.id] if plan.get(r.id) is r else r for r in out]
        for rec in resolved.values():
            self._store(rec)
            for dep_id in deps.edges_of(rec, self._known):
                self._dependents.setdefault(dep_id, {})[rec.id] = None
            for dep_id in rec.depends_on:
                self._followers.setdefault(dep_id, {})[rec.id] = None
        self._tell_dependents()
        self._settle()
        return out

    def sweep_dependents(self, limit: int = 100) -> int:
        with self._lock:
            done = [r for i in self._dependents if (r := self._records.get(i)) is not None
                    and r.status in TERMINAL][:limit]
            self._concluded += [(None, r) for r in done]
            self._tell_dependents()
            self._settle()
        self._flush_ring()
        return len(done)

    def dependents(self, task_id: str) -> list[str]:
        with self._lock:
            return list(self._followers.get(task_id, ()))

    def _known(self, task_id: str) -> Optional[TaskRecord]:
        rec = self._records.get(task_id)
        return None if rec is None or rec.status == BROKEN else rec


class MemoryStore(_Dependencies, WheelStore):
    flow_control = True       #: see WheelStore.flow_control
    batches_kept = True       #: see WheelStore.batches_kept

    def __init__(self, wheel: Wheel = Wheel(), *, clock: Callable[[], float] = time.time) -> None:
        self.wheel = wheel
        self.location = "memory"
        self.liveness = MemoryLiveness()
        self._clock = clock           # type: ignore[assignment]
        self._lock = threading.RLock()
        self._records: dict[str, TaskRecord] = {}
        self._wheel: dict[int, set[str]] = {}       # tick -> ids, pending and not yet ready
        # ready tasks per (queue, priority): heaps of (eta, id, rev); stale entries skipped
        self._bands: dict[Band, list[tuple[float, str, int]]] = {}
        # flow control: parked tasks per limit key, heaps of (-priority, eta, id, rev); slots
        # held (ids running under each limit); starts logged per limit (ascending); the last
        # spec seen per limit; when a closed rate window lets its parked tasks in
        self._parked: dict[str, list[tuple[int, float, str, int]]] = {}
        self._held: dict[str, set[str]] = {}
        self._starts: dict[str, list[float]] = {}
        self._specs: dict[str, flow.Limit] = {}
        self._reopen: dict[str, float] = {}
        self._paused: set[str] = set()
        self._serving: dict[str, Optional[frozenset]] = {}
        self._reports: dict[str, str] = {}
        self._state = StoreState(horizon=wheel.current_tick(clock()))
        self._ring = False               # a task became ready: ring once the lock is released
        self._batches: dict[str, _Batch] = {}
        self._touched: set[str] = set()  # batches whose counts this write changed
        # dependencies (timewheel/deps.py): unfinished dependency -> the tasks waiting for it;
        # the outcomes this write recorded that have dependents to tell
        self._dependents: dict[str, dict[str, None]] = {}
        self._followers: dict[str, dict[str, None]] = {}     # every dependent, for show (until purged)
        self._concluded: list[tuple[Optional[TaskRecord], TaskRecord]] = []

    # -- placement ------------------------------------------------------------------------------
    def _store(self, rec: TaskRecord) -> None:
        old = self._records.get(rec.id)
        if old is not None and old.status == PENDING:
            bucket = self._wheel.get(self.wheel.due_tick(old.eta))
            if bucket is not None:
                bucket.discard(old.id)
        self._records[rec.id] = rec
        if rec.batch is not None or (old is not None and old.batch is not None):
            self._count(old, rec)
        if rec.status in TERMINAL and rec.id in self._dependents:
            self._concluded.append((old, rec))
        if old is not None and old.status == RUNNING and old.limits and rec.status != RUNNING:
            self._free(old)                  # its outcome or requeue frees its slots
        elif old is not None and old.status == PENDING and old.limits and rec.status != PENDING:
            self._pass_on(old)
        if rec.status == PENDING and not rec.waiting:      # (a waiting one stays parked)
            t = self.wheel.due_tick(rec.eta)
            if t <= self._state.horizon:
                self._make_ready(rec)
            else:
                self._wheel.setdefault(t, set()).add(rec.id)

    def _count(self, old: Optional[TaskRecord], new: TaskRecord) -> None:
        """A member changed: its batch's counts, in this write (batch_rules.moves)."""
        for batch_id, deltas in batch_rules.moves([(old, new)]).items():
            b = self._batches.get(batch_id)
            if b is None:
                continue
            for c, d in deltas.items():
                b.counts[c] = b.counts.get(c, 0) + d
            self._touched.add(batch_id)

    def _settle(self) -> None:
        """The batches this write finished get their callbacks (where the id is free) and are
        done: in the same write, under the lock."""
        while self._touched:
            batch_id = self._touched.pop()
            b = self._batches[batch_id]
            if b.done is None and batch_rules.finished(b.counts):
                b.done = self.now()
                for rec in batch_rules.callback_records(b.templates, b.counts):
                    if rec.id not in self._records:
                        self._store(rec)

    def _make_ready(self, rec: TaskRecord) -> None:
        heapq.heappush(self._bands.setdefault((rec.queue, rec.priority), []), (rec.eta, rec.id, rec.rev))
        self._ring = True

    def _free(self, old: TaskRecord) -> None:
        """``old`` no longer runs: free its slots, and let one parked task per slot back in."""
        for key, *_ in old.limits:
            holders = self._held.get(key)
            if holders is not None and old.id in holders:
                holders.discard(old.id)
                if not holders:
                    del self._held[key]
                self._release(key, 1)

    def _pass_on(self, old: TaskRecord) -> None:
        """A pending task with limits leaves (cancelled): a slot freed for it, if it was let
        back in for one, goes to the next task parked on that limit."""
        for key, concurrency, _, _ in old.limits:
            if concurrency and len(self._held.get(key, ())) < concurrency:
                self._release(key, 1)

    def _release(self, key: str, n: int) -> int:
        """Move up to ``n`` tasks parked on ``key`` back to the ready queue (the claim decides
        again); how many."""
        heap = self._parked.get(key, [])
        moved = 0
        while heap and moved < n:
            _, _, task_id, rev = heapq.heappop(heap)
            rec = self._records.get(task_id)
            if rec is not None and rec.rev == rev and rec.status == PENDING:
                self._make_ready(rec)
                moved += 1
        if not heap:
            self._parked.pop(key, None)
            self._reopen.pop(key, None)
        return moved

    def _flush_ring(self) -> None:
        if self._ring:
            self._ring = False
            self.ring()

    def _is_ready(self, eta: float, task_id: str, rev: int) -> bool:
        rec = self._records.get(task_id)
        return rec is not None and rec.rev == rev and rec.status == PENDING and rec.eta == eta

    # -- tasks ----------------------------------------------------------------------------------
    def add(self, records: Sequence[TaskRecord], *, existing: str = "fail") -> list[TaskRecord]:
        check_existing(existing)
        with self._lock:
            out, plan = rules.admit_all(records, self._stored, existing)
            out = self._write_new(out, plan)
        self._flush_ring()
        return out

    # -- batches ----------------------------------------------------------------------------------
    def add_batch(self, batch_id: str, members: Sequence[TaskRecord], *,
                  callbacks: "Optional[Mapping[str, TaskRecord]]" = None, opened: Optional[float] = None
                  ) -> list[TaskRecord]:
        batch_rules.check_members(batch_id, members)
        with self._lock:
            b = self._batches.get(batch_id)
            if callbacks is not None and b is not None:
                raise BatchClosed(f"batch {batch_id!r} already exists; nothing was added")
            if callbacks is None and b is None:
                raise BatchNotFound(f"no batch {batch_id!r} in {self.location}; nothing was added")
            if b is not None and b.done is not None:
                raise BatchClosed(f"batch {batch_id} is done (its callbacks were added); nothing was added")
            out, plan = rules.admit_all(members, self._stored, "fail")
            if deps.has_dependencies(plan):            # (TaskNotFound before anything is written)
                deps.resolve_all(list(plan.values()), self._known, self.now())
            if b is None:
                b = self._batches[batch_id] = _Batch(self.now() if opened is None else opened,
                                                     dict(callbacks or {}))
                self._touched.add(batch_id)
            b.members += plan
            self._write_new(out, plan)
        self._flush_ring()
        return list(members)

    def batch(self, batch_id: str) -> "Optional[batch_rules.BatchState]":
        with self._lock:
            b = self._batches.get(batch_id)
            return None if b is None else self._state_of(batch_id, b)

    def _state_of(self, batch_id: str, b: _Batch) -> "batch_rules.BatchState":
        return batch_rules.BatchState(batch_id, b.created, b.done, {c: n for c, n in b.counts.items() if n},
                                  batch_rules.described(b.templates))

    def batch_members(self, batch_id: str, start: int = 0, limit: Optional[int] = None) -> list[str]:
        with self._lock:
            b = self._batches.get(batch_id)
            if b is None:
                return []
            return b.members[start:None if limit is None else start + limit]

    def batches(self, *, limit: int = 100) -> "list[batch_rules.BatchState]":
        with self._lock:
            newest = sorted(self._batches.items(), key=lambda i: (-i[1].created, i[0]))[:limit]
            return [self._state_of(i, b) for i, b in newest]

    def sweep_batches(self, limit: int = 100) -> int:
        with self._lock:
            stalled = [i for i, b in self._batches.items()
                       if b.done is None and batch_rules.finished(b.counts)]
            self._touched.update(stalled[:limit])
            self._settle()
        self._flush_ring()
        return len(stalled[:limit])

    def _stored(self, task_id: str) -> "TaskRecord | rules.Unreadable | None":
        rec = self._records.get(task_id)
        return rules.Unreadable(rec.rev) if rec is not None and rec.status == BROKEN else rec

    def get(self, task_id: str) -> Optional[TaskRecord]:
        with self._lock:
            rec = self._records.get(task_id)
        if rec is not None and rec.status == BROKEN:
            raise RecordDecodeError(rec.error or "broken")
        return rec

    def swap(self, changes: Sequence[tuple[TaskRecord, TaskRecord]]) -> list[Optional[TaskRecord]]:
        out: list[Optional[TaskRecord]] = []
        with self._lock:
            for old, new in changes:
                cur = self._records.get(old.id)
                if cur is None or cur.status == BROKEN or cur.rev != old.rev or new.id != old.id:
                    out.append(None)
                    continue
                stored = rules.swapped(old, rules.kept_notes(cur, new))
                self._store(stored)
                out.append(stored)
            self._tell_dependents()
            self._settle()
        self._flush_ring()
        return out

    def note(self, old: TaskRecord, new: TaskRecord) -> bool:
        fields = rules.noted(old, new)
        with self._lock:
            cur = self._records.get(old.id)
            if cur is None or cur.status != RUNNING or cur.rev != old.rev:
                return False
            self._records[old.id] = cur._replace(**fields)
            return True

    def aborting(self, owner: str, running: Sequence[TaskRecord]) -> dict[str, float]:
        out: dict[str, float] = {}
        with self._lock:
            for rec in running:
                cur = self._records.get(rec.id)
                if (cur is not None and cur.abort is not None and cur.rev == rec.rev
                        and cur.status == RUNNING and cur.owner == owner):
                    out[rec.id] = cur.abort
        return out

    # -- workers --------------------------------------------------------------------------------
    def claim(self, owner: str, now: float, limit: int, queued: int = 0, *,
              queues: Optional[frozenset] = None) -> Claimed:
        taken: list[TaskRecord] = []
        with self._lock:
            now = max(now, self.now())          # under the lock: starts are logged in order
            self._release_reopened(now)
            adm = flow.Admission(lambda lim: self._usage(lim, now), now, limit, queued)
            bands = self._served_bands(queues)
            left: list[tuple[Band, tuple[float, str, int]]] = []
            while not adm.full:
                best = self._best_due(bands, now)
                if best is None:
                    break
                band, entry = best
                heapq.heappop(self._bands[band])
                rec = self._records[entry[1]]
                verdict = adm.offer(rec.limits)
                if verdict.kind in (flow.START, flow.QUEUE):
                    new = rules.claimed(rec, owner, now, queued=verdict.kind == flow.QUEUE)
                    self._store(new)
                    for key, _, rate, _ in rec.limits:
                        self._held.setdefault(key, set()).add(rec.id)
                        if rate:
                            bisect.insort(self._starts.setdefault(key, []), now)
                    taken.append(new)
                elif verdict.kind == flow.PARK:
                    self._park(rec, verdict)
                else:
                    left.append((band, entry))
            for band, entry in left:
                heapq.heappush(self._bands[band], entry)
            for key in adm.taken:
                self._specs[key] = next(flow.Limit._make(x) for r in taken for x in r.limits if x[0] == key)
                self._rearm(key, now)
            for key, free in adm.free_slots().items():
                self._release(key, free)
            return Claimed(taken, self._next_eta(bands))

    def _served_bands(self, queues: Optional[frozenset]) -> list[Band]:
        return [b for b in self._bands if (queues is None or b[0] in queues) and b[0] not in self._paused]

    def _best_due(self, bands: list[Band], now: float) -> "Optional[tuple[Band, tuple[float, str, int]]]":
        """The due ready task to offer next: highest priority, then earliest eta."""
        best = None
        for band in bands:
            heap = self._bands[band]
            while heap and not self._is_ready(*heap[0]):
                heapq.heappop(heap)               # stale: changed since it was queued
            if heap and heap[0][0] <= now and (best is None or (-band[1], heap[0]) < (-best[0][1], best[1])):
                best = (band, heap[0])
        return best

    def _park(self, rec: TaskRecord, verdict: flow.Verdict) -> None:
        lim = verdict.limit
        assert lim is not None
        heapq.heappush(self._parked.setdefault(lim.key, []), (-rec.priority, rec.eta, rec.id, rec.rev))
        self._specs[lim.key] = lim
        if verdict.until is not None:
            self._reopen[lim.key] = min(self._reopen.get(lim.key, verdict.until), verdict.until)

    def _usage(self, lim: flow.Limit, now: float) -> flow.Usage:
        starts = self._starts.get(lim.key, [])
        cut = bisect.bisect_right(starts, now - lim.per - 1.0)
        if cut:
            del starts[:cut]                  # a second out of the window: forgotten
        # (a microsecond's margin: now - per rounded up must not drop a start just inside)
        return flow.Usage(len(self._held.get(lim.key, ())),
                          starts[bisect.bisect_right(starts, now - lim.per - 1e-6):] if lim.rate else ())

    def _release_reopened(self, now: float) -> None:
        """Let the tasks parked on rate windows that have reopened back in, as many as each
        window admits now."""
        for key, at in list(self._reopen.items()):
            if at <= now:
                spec = self._specs[key]
                room = spec.rate - len(self._usage(spec, now).starts)
                if room > 0:
                    self._release(key, room)
                self._rearm(key, now)

    def _rearm(self, key: str, now: float) -> None:
        """When the parked tasks of ``key`` may next come in by its rate window (none: a slot
        frees them, or nothing is parked)."""
        spec = self._specs.get(key)
        if key not in self._parked or spec is None or not spec.rate:
            self._reopen.pop(key, None)
            return
        self._reopen[key] = flow.next_opening(self._usage(spec, now).starts, spec.rate, spec.per, now)

    def _next_eta(self, bands: list[Band]) -> Optional[float]:
        heads = [h for h in (self._band_head(b) for b in bands) if h is not None]
        return min(heads + list(self._reopen.values()), default=None)

    def _band_head(self, band: Band) -> Optional[float]:
        heap = self._bands.get(band, [])
        while heap and not self._is_ready(*heap[0]):
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def next_ready_eta(self) -> Optional[float]:
        with self._lock:
            return min((h for h in map(self._band_head, list(self._bands)) if h is not None), default=None)

    # -- the ticking process --------------------------------------------------------------------
    def advance(self, through: int, limit: int, leader: str) -> Advanced:
        moved = 0
        with self._lock:
            reached = horizon = self._state.horizon
            for t in sorted(t for t in self._wheel if horizon < t <= through):
                bucket = self._wheel[t]
                while bucket and moved < limit:
                    self._make_ready(self._records[bucket.pop()])
                    moved += 1
                if bucket:
                    reached = t - 1          # the page is full: the rest of this tick next time
                    break
                del self._wheel[t]
            else:
                reached = through
            reached = max(horizon, reached)
            self._state = StoreState(reached, leader, self.now())
            self._ring = False
        if moved:
            self.ring()
        return Advanced(reached, moved, reached >= through)

    def abandoned(self, now: float, limit: int = 1000) -> list[TaskRecord]:
        with self._lock:
            running = [r for r in self._records.values() if r.status == RUNNING]
        return [r for r in running if self.liveness.is_dead(r.owner or "")][:limit]

    def purge(self, finished_before: float, statuses: Optional[Iterable[str]] = None,
              limit: int = 1000) -> int:
        wanted = set(purge_statuses(statuses))
        with self._lock:
            victims = [r.id for r in self._records.values()
                       if r.status in wanted and (r.finished or 0.0) < finished_before
                       and (r.batch is None or self._batch_done(r.batch))][:limit]
            for task_id in victims:
                del self._records[task_id]
                self._followers.pop(task_id, None)
            self._forget_idle_limits(self._clock())
            return len(victims)

    def _batch_done(self, batch_id: str) -> bool:
        """Members are kept until their batch is done (its callbacks exist)."""
        b = self._batches.get(batch_id)
        return b is None or b.done is not None

    def _forget_idle_limits(self, now: float) -> None:
        """Drop what is kept of limits that hold nothing -- no slot, no parked task, no start
        in their window, no window to reopen -- so that per-key limits do not pile up."""
        for key, spec in list(self._specs.items()):
            starts = self._starts.get(key)
            if (self._held.get(key) or self._parked.get(key) or key in self._reopen
                    or (starts and starts[-1] > now - spec.per - 1.0)):
                continue
            del self._specs[key]
            self._starts.pop(key, None)

    # -- observers ------------------------------------------------------------------------------
    def state(self) -> StoreState:
        with self._lock:
            return self._state

    def counts(self) -> dict[tuple[str, str], int]:
        out: dict[tuple[str, str], int] = {}
        with self._lock:
            for r in self._records.values():
                out[(r.status, r.name)] = out.get((r.status, r.name), 0) + 1
        return out

    def scan(self, status: str, *, name: Optional[str] = None, id_prefix: Optional[str] = None,
             after: Optional[TaskRecord] = None, limit: Optional[int] = None) -> list[TaskRecord]:
        check_listable(status)
        with self._lock:
            recs = [r for r in self._records.values() if r.status == status
                    and (name is None or r.name == name)
                    and (not id_prefix or r.id.startswith(id_prefix))]
        if id_prefix or status == BROKEN:    # in id order
            recs.sort(key=lambda r: r.id)
            return [r for r in recs if after is None or r.id > after.id][:limit]
        return page(recs, status, after, limit)

    # -- flow control -----------------------------------------------------------------------------
    def pause(self, queue: str) -> bool:
        flow.check_queue(queue)
        with self._lock:
            was = queue in self._paused
            self._paused.add(queue)
        return not was

    def resume(self, queue: str) -> bool:
        flow.check_queue(queue)
        with self._lock:
            was = queue in self._paused
            self._paused.discard(queue)
        self.ring()
        return was

    def paused(self) -> frozenset:
        with self._lock:
            return frozenset(self._paused)

    def serve(self, token: str, queues: Optional[frozenset]) -> None:
        with self._lock:
            self._serving[token] = queues

    def unserve(self, token: str) -> None:
        with self._lock:
            self._serving.pop(token, None)

    def served(self) -> dict[str, Optional[frozenset]]:
        with self._lock:
            return {t: q for t, q in self._serving.items() if not self.liveness.is_dead(t)}

    def agree_serializer(self, name: str) -> None:
        """Nothing to agree on: the store lives and dies with its one wheel."""

    def report_process(self, token: str, report: str) -> None:
        with self._lock:
            self._reports[token] = report

    def process_reports(self) -> dict[str, str]:
        with self._lock:
            return dict(self._reports)

    def forget_processes(self, tokens: Sequence[str]) -> None:
        with self._lock:
            for token in tokens:
                self._reports.pop(token, None)

    def limit_states(self, keys: Optional[Iterable[str]] = None) -> list[LimitState]:
        now = self.now()
        with self._lock:
            wanted = set(keys) if keys is not None else (
                set(self._held) | set(self._parked) | {k for k, v in self._starts.items() if v})
            out = []
            for key in sorted(wanted):
                spec = self._specs.get(key, flow.Limit(key))
                parked = sum(1 for _, _, i, rev in self._parked.get(key, ())
                             if (r := self._records.get(i)) is not None and r.rev == rev)
                recent = len(self._usage(spec, now).starts) if spec.rate else 0
                out.append(LimitState(key, spec.concurrency, spec.rate, spec.per,
                                      len(self._held.get(key, ())), parked, recent, self._reopen.get(key)))
            return out

    def queue_states(self, now: float) -> list[QueueState]:
        per: dict[str, list[int]] = {}
        with self._lock:
            parked = {(i, rev) for heap in self._parked.values() for _, _, i, rev in heap}
            for r in self._records.values():
                if r.status not in (PENDING, RUNNING):
                    continue
                c = per.setdefault(r.queue, [0, 0, 0])
                if r.status == RUNNING:
                    c[2] += 1
                else:
                    c[0] += 1
                    c[1] += r.eta <= now or (r.id, r.rev) in parked
            for q in self._paused:
                per.setdefault(q, [0, 0, 0])
            return [QueueState(q, p, w, n, q in self._paused) for q, (p, w, n) in sorted(per.items())]
