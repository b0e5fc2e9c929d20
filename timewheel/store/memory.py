"""In-memory store: the reference backend, for tests and ``immediate=True``.

Same semantics as the file store except durability.  Records are kept encoded so that a
caller editing a returned record never changes what is stored, as with a real file.
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Iterable, Optional, Sequence

from ..records import PENDING, RUNNING, STATUSES, TaskRecord, decode_record, encode_record
from ..wheel import Wheel
from .base import (
    RETRYABLE,
    Claim,
    Due,
    Outcome,
    StoreState,
    WheelStore,
    cancel_record,
    end_run,
    ordered,
    purge_statuses,
    requeue_crashed,
    reset_for_retry,
    start_run,
)

__all__ = ["MemoryStore"]


class MemoryStore(WheelStore):
    def __init__(self, wheel: Wheel = Wheel(), *, now: Optional[float] = None,
                 result_ttl: float = 7 * 86400.0) -> None:
        self.wheel = wheel
        self.result_ttl = result_ttl
        self._lock = threading.RLock()
        self._records: dict[str, bytes] = {}
        self._ring: dict[tuple[int, int], dict[str, float]] = {}   # (slot, cycle) -> {id: eta}
        self._late: dict[str, float] = {}
        self._running: dict[str, str] = {}
        self._expiry: dict[str, float] = {}
        t = wheel.current_tick(time.time() if now is None else now)
        self._state = StoreState(horizon=t, done_through=t)

    # -- index helpers --------------------------------------------------------------------
    def _place(self, rec: TaskRecord) -> None:
        t = self.wheel.due_tick(rec.eta)
        self._ring.setdefault((self.wheel.slot(t), self.wheel.cycle(t)), {})[rec.id] = rec.eta
        if t <= self._state.horizon:
            self._late[rec.id] = rec.eta

    def _unplace(self, rec: TaskRecord) -> None:
        t = self.wheel.due_tick(rec.eta)
        key = (self.wheel.slot(t), self.wheel.cycle(t))
        bucket = self._ring.get(key)
        if bucket is not None:
            bucket.pop(rec.id, None)
            if not bucket:
                del self._ring[key]
        self._late.pop(rec.id, None)

    def _put(self, rec: TaskRecord) -> None:
        self._records[rec.id] = encode_record(rec)

    def _finished(self, rec: TaskRecord) -> None:
        self._expiry[rec.id] = (rec.finished or 0.0) + self.result_ttl

    # -- producers ------------------------------------------------------------------------
    def add(self, records: Sequence[TaskRecord]) -> None:
        with self._lock:
            ids = [r.id for r in records]
            if len(set(ids)) != len(ids) or any(i in self._records for i in ids):
                raise ValueError("task id already exists")
            for rec in records:
                self._put(rec)
                self._place(rec)

    def get(self, task_id: str) -> Optional[TaskRecord]:
        with self._lock:
            blob = self._records.get(task_id)
        return None if blob is None else decode_record(blob)

    def cancel(self, task_id: str, now: float) -> bool:
        with self._lock:
            rec = self.get(task_id)
            if rec is None or rec.status != PENDING:
                return False
            self._unplace(rec)
            cancel_record(rec, now)
            self._put(rec)
            self._expiry[rec.id] = now + self.result_ttl
            return True

    def retry(self, task_id: str, now: float) -> bool:
        with self._lock:
            rec = self.get(task_id)
            if rec is None or rec.status not in RETRYABLE:
                return False
            self._expiry.pop(rec.id, None)
            reset_for_retry(rec, now)
            self._put(rec)
            self._place(rec)
            return True

    # -- the ticking process ----------------------------------------------------------------
    def state(self) -> StoreState:
        with self._lock:
            return StoreState(self._state.horizon, self._state.done_through, self._state.leader)

    def load(self, after: int, through: int, done_through: int,
             leader: Optional[str] = None) -> list[Due]:
        with self._lock:
            self._state.horizon = max(self._state.horizon, through)
            self._state.done_through = done_through
            if leader is not None:
                self._state.leader = leader
            out: list[Due] = []
            for r in self.wheel.ranges(after, through):
                for c in range(r.cycle_lo, r.cycle_hi + 1):
                    for i, eta in self._ring.get((r.slot, c), {}).items():
                        out.append(Due(eta, i))
            out.extend(self.late())
            return out

    def late(self) -> list[Due]:
        with self._lock:
            return [Due(eta, i, True) for i, eta in self._late.items()]

    def claim(self, due: Sequence[Due], owner: str, now: float, starting: int = 0) -> Claim:
        claim = Claim()
        with self._lock:
            for d in due:
                i = d.id
                rec = self.get(i)
                if rec is None or rec.status != PENDING:
                    claim.gone.append(i)
                    continue
                if rec.eta > now:
                    claim.not_due.append(Due(rec.eta, i, d.late))
                    continue
                self._unplace(rec)
                if start_run(rec, owner, now, len(claim.run) < starting):
                    self._running[i] = owner
                    claim.run.append(rec)
                else:
                    self._finished(rec)
                    claim.misfired.append(rec)
                self._put(rec)
        return claim

    def finish(self, outcomes: Sequence[Outcome]) -> list[Due]:
        again: list[Due] = []
        with self._lock:
            for out in outcomes:
                rec = self.get(out.id)
                if rec is None or rec.status != RUNNING:
                    continue
                end_run(rec, out)
                self._running.pop(rec.id, None)
                if rec.status == PENDING:
                    self._place(rec)
                    again.append(Due(rec.eta, rec.id))
                else:
                    self._finished(rec)
                self._put(rec)
        return again

    def recover(self, is_dead: Callable[[str], bool], now: float, max_crashes: int) -> list[str]:
        with self._lock:
            back = []
            for i, owner in list(self._running.items()):
                if not is_dead(owner):
                    continue
                rec = self.get(i)
                del self._running[i]
                if rec is None:
                    continue
                requeue_crashed(rec, now, max_crashes)
                if rec.status == PENDING:
                    self._place(rec)
                else:
                    self._finished(rec)
                self._put(rec)
                back.append(i)
            return back

    def purge(self, now: float, limit: int = 1000, statuses: Optional[Iterable[str]] = None,
              finished_before: Optional[float] = None) -> int:
        wanted = set(purge_statuses(statuses))
        with self._lock:
            if finished_before is None:
                victims = [i for i, exp in self._expiry.items() if exp <= now][:limit]
            else:
                victims = []
                for i in list(self._expiry):
                    rec = self.get(i)
                    if rec and rec.status in wanted and (rec.finished or 0) < finished_before:
                        victims.append(i)
            for i in victims:
                self._expiry.pop(i, None)
                self._records.pop(i, None)
            return len(victims)

    # -- observers ------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(STATUSES, 0)
        for rec in self.tasks():
            out[rec.status] += 1
        return out

    def tasks(self, status: Optional[str] = None, name: Optional[str] = None,
              limit: Optional[int] = None, id_prefix: Optional[str] = None) -> list[TaskRecord]:
        with self._lock:
            blobs = [b for i, b in self._records.items() if not id_prefix or i.startswith(id_prefix)]
        recs = []
        for b in blobs:
            try:
                recs.append(decode_record(b))
            except ValueError:
                continue
        recs = [r for r in recs if (status is None or r.status == status)
                and (name is None or r.name == name)]
        return ordered(recs)[:limit]

    def broken(self) -> list[tuple[str, str]]:
        out = []
        with self._lock:
            items = list(self._records.items())
        for i, b in items:
            try:
                decode_record(b)
            except ValueError as exc:
                out.append((i, str(exc)))
        return out

    def close(self) -> None:
        """Nothing to release: the data goes with the object."""

    def occupancy(self) -> list[tuple[int, int, int]]:
        with self._lock:
            return sorted((s, c, len(b)) for (s, c), b in self._ring.items() if b)

