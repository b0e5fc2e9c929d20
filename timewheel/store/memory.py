"""In-memory store: the reference backend, for tests and ``immediate=True``.

Same semantics as the file store except durability, in plain dicts under one lock.  Records
are immutable named tuples, so handing out the stored objects cannot change what is stored.
Records cannot be undecodable here; a placeholder of status ``"broken"`` (what
:meth:`~timewheel.store.WheelStore.scan` lists for one elsewhere) stands in for one where a
test puts it: listed and counted as broken, never claimed, read as RecordDecodeError, replaced
by ``add`` as :mod:`timewheel.store.rules` says.
"""

from __future__ import annotations

import heapq
import os
import threading
import time
from typing import Callable, Iterable, Optional, Sequence

from ..records import PENDING, RUNNING, RecordDecodeError, TaskRecord
from ..wheel import Wheel
from . import rules
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
            out, plan = rules.admit_all(records, self._stored, existing)
            for rec in plan.values():
                self._store(rec)
        self._flush_ring()
        return out

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
                stored = rules.swapped(old, new)
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
                new = rules.claimed(self._records[task_id], owner, now, queued=len(taken) >= limit)
                self._store(new)
                taken.append(new)
            return Claimed(taken, self._ready_head())

    def next_ready_eta(self) -> Optional[float]:
        with self._lock:
            return self._ready_head()

    def _ready_head(self) -> Optional[float]:
        while self._ready and not self._is_ready(*self._ready[0]):
            heapq.heappop(self._ready)            # stale: changed since it was queued
        return self._ready[0][0] if self._ready else None

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
        with self._lock:
            recs = [r for r in self._records.values() if r.status == status
                    and (name is None or r.name == name)
                    and (not id_prefix or r.id.startswith(id_prefix))]
        if id_prefix or status == BROKEN:    # in id order
            recs.sort(key=lambda r: r.id)
            return [r for r in recs if after is None or r.id > after.id][:limit]
        return page(recs, status, after, limit)
