"""In-memory store: the reference backend, for tests and ``immediate=True``.

Same semantics as the file store except durability, in plain dicts under one lock.  Records
are immutable named tuples, so handing out the stored objects cannot change what is stored.
"""

from __future__ import annotations

import heapq
import os
import threading
import time
from typing import Callable, Iterable, Optional, Sequence

from ..errors import DuplicateTask
from ..records import PENDING, RUNNING, TERMINAL, TaskRecord, start_run
from ..wheel import Wheel
from .base import (
    BROKEN,
    Advanced,
    Claimed,
    Liveness,
    StoreState,
    WheelStore,
    check_existing,
    check_listable,
    page,
    purge_statuses,
)

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


class MemoryStore(WheelStore):
    def __init__(self, wheel: Wheel = Wheel(), *, clock: Callable[[], float] = time.time) -> None:
        self.wheel = wheel
        self.location = "memory"
        self.liveness = MemoryLiveness()
        self._clock = clock           # type: ignore[assignment]
        self._lock = threading.RLock()
        self._records: dict[str, TaskRecord] = {}
        self._wheel: dict[int, set[str]] = {}       # tick -> ids, pending and not yet ready
        self._ready: list[tuple[float, str, int]] = []   # heap of (eta, id, rev); stale entries skipped
        self._state = StoreState(horizon=wheel.current_tick(clock()))
        self._ring = False               # a task became ready: ring once the lock is released

    # -- placement ------------------------------------------------------------------------------
    def _store(self, rec: TaskRecord) -> None:
        old = self._records.get(rec.id)
        if old is not None and old.status == PENDING:
            bucket = self._wheel.get(self.wheel.due_tick(old.eta))
            if bucket is not None:
                bucket.discard(old.id)
        self._records[rec.id] = rec
        if rec.status == PENDING:
            t = self.wheel.due_tick(rec.eta)
            if t <= self._state.horizon:
                heapq.heappush(self._ready, (rec.eta, rec.id, rec.rev))
                self._ring = True
            else:
                self._wheel.setdefault(t, set()).add(rec.id)

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
            out: list[TaskRecord] = []
            plan: dict[str, TaskRecord] = {}
            for rec in records:
                old = plan.get(rec.id) or self._records.get(rec.id)
                if old is None:
                    plan[rec.id] = rec
                    out.append(rec)
                    continue
                if existing == "fail":
                    raise DuplicateTask(f"task id {rec.id!r} already exists; nothing was added")
                replace = (existing == "reuse" and old.status in TERMINAL) or (
                    existing == "replace" and old.status != RUNNING)
                if existing == "replace" and old.status == RUNNING:
                    raise DuplicateTask(f"task {rec.id!r} is running and cannot be replaced; "
                                        "nothing was added")
                if replace:
                    new = _replacing(rec, old)
                    plan[rec.id] = new
                    out.append(new)
                else:
                    out.append(old)
            for rec in plan.values():
                self._store(rec)
        self._flush_ring()
        return out

    def get(self, task_id: str) -> Optional[TaskRecord]:
        with self._lock:
            return self._records.get(task_id)

    def swap(self, changes: Sequence[tuple[TaskRecord, TaskRecord]]) -> list[Optional[TaskRecord]]:
        out: list[Optional[TaskRecord]] = []
        with self._lock:
            for old, new in changes:
                cur = self._records.get(old.id)
                if cur is None or cur.rev != old.rev or new.id != old.id:
                    out.append(None)
                    continue
                stored = _with_rev(new, old.rev + 1)
                self._store(stored)
                out.append(stored)
        self._flush_ring()
        return out

    # -- workers --------------------------------------------------------------------------------
    def claim(self, owner: str, now: float, limit: int, queued: int = 0) -> Claimed:
        taken: list[TaskRecord] = []
        with self._lock:
            while self._ready:
                eta, task_id, rev = self._ready[0]
                if not self._is_ready(eta, task_id, rev):
                    heapq.heappop(self._ready)
                    continue
                if eta > now or len(taken) >= limit + queued:
                    break
                heapq.heappop(self._ready)
                old = self._records[task_id]
                new = _with_rev(start_run(old, owner, now, queued=len(taken) >= limit), old.rev + 1)
                self._store(new)
                taken.append(new)
            return Claimed(taken, self._ready[0][0] if self._ready else None)

    # -- the ticking process --------------------------------------------------------------------
    def advance(self, through: int, limit: int, leader: str) -> Advanced:
        moved = 0
        with self._lock:
            reached = horizon = self._state.horizon
            for t in sorted(t for t in self._wheel if horizon < t <= through):
                bucket = self._wheel[t]
                while bucket and moved < limit:
                    rec = self._records[bucket.pop()]
                    heapq.heappush(self._ready, (rec.eta, rec.id, rec.rev))
                    moved += 1
                if bucket:
                    reached = t - 1          # the page is full: the rest of this tick next time
                    break
                del self._wheel[t]
            else:
                reached = through
            reached = max(horizon, reached)
            self._state = StoreState(reached, leader, self.now())
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
                       if r.status in wanted and (r.finished or 0.0) < finished_before][:limit]
            for task_id in victims:
                del self._records[task_id]
            return len(victims)

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
        if status == BROKEN:
            return []             # records are objects here: nothing can be undecodable
        with self._lock:
            recs = [r for r in self._records.values() if r.status == status
                    and (name is None or r.name == name)
                    and (not id_prefix or r.id.startswith(id_prefix))]
        if id_prefix:                        # in id order
            recs.sort(key=lambda r: r.id)
            return [r for r in recs if after is None or r.id > after.id][:limit]
        return page(recs, status, after, limit)


def _with_rev(rec: TaskRecord, rev: int) -> TaskRecord:
    return rec._replace(rev=rev)


def _replacing(new: TaskRecord, old: TaskRecord) -> TaskRecord:
    """``new`` taking over ``old``'s id: it continues old's rev, so stale fences stay stale."""
    return _with_rev(new, old.rev + 1)
