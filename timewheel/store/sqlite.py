"""The default store: one SQLite file, its bookkeeping kept through sqlitedict.

The file holds the task table ``timewheel`` -- ``key``/``value`` as sqlitedict keeps them,
plus columns of ours --, the metadata map ``timewheel_meta`` (a SqliteDict: format, geometry,
horizon, the ticking role's holder and lease, doorbells; see store/connection.py) and the counter tables
(store/sqlite_counters.py).  One row per task:

=========  ======================================================================================
``key``    ``t:<id>`` (and ``m:format``, the format's name for timewheel 0.1 and 0.2 to read)
``value``  the record (:func:`timewheel.records.encode_record`)
``name``   the task's name, for the counters and ``--name`` filters
``pos``    where the task is, indexed (``timewheel_pos``): wheel cell, ready, running, finished,
           broken -- see store/positions.py, the one module that builds and reads positions
``rev``    the record's ``rev``, written whenever the row is rewritten (NULL until then): read
           where the record cannot be decoded (store/rules.py)
=========  ======================================================================================

Positions make every question an index range: "the tasks of slot 12, cycle 480", "ready and
due at ``now``", "succeeded, most recent first".  The counters are updated in the same
transactions that move tasks, so the CLI and the web view answer from them without reading
the tasks.  One exception keeps ``delay()`` as cheap as a bare INSERT: a task added on its own
is one statement that writes one row, uncounted, which the next transaction absorbs.

The parts: the file (vetting, opening, fork, transactions, errors: store/sqlite_file.py), its
format and conversions (store/sqlite_format.py), counters (store/sqlite_counters.py), the
observers (store/sqlite_read.py), the doorbells (store/sqlite_bells.py); this module is the
store interface and its writes.
"""

from __future__ import annotations

import functools
import os
import sqlite3
import time
from collections import defaultdict
from typing import Any, Callable, Iterable, Optional, Sequence, Union

from .. import deps, flow
from ..errors import DuplicateTask, shown
from ..records import PENDING, RUNNING, RecordDecodeError, TaskRecord, decode_record, encode_record
from ..wheel import Wheel
from . import positions, rules
from .base import (
    Advanced,
    Claimed,
    Doorbell,
    LimitState,
    Liveness,
    QueueState,
    StoreState,
    WheelStore,
    check_existing,
    eta_us,
    finished_ms,
    purge_statuses,
)
from .connection import DURABILITY, RECORD, TABLE
from .locks import FileLiveness, probe
from .sqlite_abort import FileAborts
from .sqlite_batches import KEPT_FOR_BATCH, FileBatchStore
from .sqlite_bells import Doorbells
from .sqlite_claim import LOOK, SET_RECORD, claim_due
from .sqlite_counters import Counters, absorb, counted
from .sqlite_deps import FileDeps, FileDepsStore
from .sqlite_file import V1_FORMAT, StoreFile
from .sqlite_flow import PAUSED, FileFlow
from .sqlite_format import horizon_of, set_up
from .sqlite_inbox import FileInboxStore
from .sqlite_read import PROCESS, SERVE, FileReader

__all__ = ["SqliteDictStore", "OLD_FORMAT"]

OLD_FORMAT = V1_FORMAT      #: a read-only open refuses it (the CLI lets a write command convert it)
_CHUNK = 400          # rows per multi-row statement (SQLite allows 32766 bound variables)
_ADD = f'INSERT INTO "{TABLE}" (key, value, pos, name) VALUES (?, ?, ?, ?)'


@functools.lru_cache(maxsize=None)
def _insert_rows(n: int) -> str:
    """An INSERT of ``n`` rows (key, value, pos, name): one statement per _CHUNK rows."""
    return f'INSERT INTO "{TABLE}" (key, value, pos, name) VALUES ' + ",".join(["(?,?,?,?)"] * n)


class _ReadOnlyLiveness(Liveness):
    """What a read-only opener may know of liveness: probes, never locks (see locks.probe)."""

    def __init__(self, store: "SqliteDictStore") -> None:
        self._store = store
        self._probe = probe(store.path)

    @property
    def token(self) -> str:
        return f"{os.getpid()}:readonly:0"

    def try_lead(self) -> bool:
        return False

    def resign(self) -> None:
        pass

    def leader(self) -> Optional[str]:
        holder = self._store.role_holder(self._store.now())
        return None if holder is None or self._probe.is_dead(holder) else holder

    def is_dead(self, token: str) -> bool:
        return self._probe.is_dead(token)

    def close(self) -> None:
        self._probe.close()


class SqliteDictStore(FileDepsStore, FileAborts, FileBatchStore, FileInboxStore, WheelStore):
    """A :class:`WheelStore` in one SQLite file.  Thread-safe; one instance per process.

    :param path: the store file; created (mode 0600) unless ``readonly``.
    :param readonly: open an existing store for reading only (the CLI's read commands): the
        file is never created, converted or written, nor are files created beside it.
    :param busy_timeout: seconds a write waits for another process's transaction before
        :class:`StoreBusy` is raised.
    :param durability: ``"normal"`` (commits survive a crash of the process: SQLite's
        ``synchronous=NORMAL``) or ``"fsync"`` (they survive a power cut too: ``synchronous=FULL``,
        one fsync per commit, which concurrent writes of this process share).
    """

    flow_control = True       #: see WheelStore.flow_control
    batches_kept = True       #: see WheelStore.batches_kept
    dependencies_kept = True  #: see WheelStore.dependencies_kept (store/sqlite_deps.py)

    def __init__(self, path: "str | os.PathLike[str]", wheel: Optional[Wheel] = None, *,
                 readonly: bool = False, busy_timeout: float = 10.0,
                 clock: Callable[[], float] = time.time, durability: str = "normal") -> None:
        if durability not in DURABILITY:
            raise ValueError(f"durability must be one of {', '.join(map(repr, DURABILITY))}, "
                             f"got {shown(durability)}")
        self.path = os.path.abspath(os.fspath(path))
        self.location = self.path
        self.readonly = readonly
        self.busy_timeout = busy_timeout
        self.durability = durability
        self._clock = clock            # type: ignore[assignment]
        #: the file: its transactions and its metadata map (``file.meta``)
        self.file = StoreFile(self.path, readonly=readonly, busy_timeout=busy_timeout,
                              durability=durability)
        self.wheel, layout = set_up(self.file, wheel, self.now())
        self._reader = FileReader(self.file, self.wheel, layout)
        self._bells = Doorbells(self.file, lambda: horizon_of(self.file))
        self.liveness: Liveness = (_ReadOnlyLiveness(self) if readonly
                                   else FileLiveness(self.path, self, self.wheel.tick))

    def close(self) -> None:
        with self.file.lock:
            self.liveness.close()
            self.file.close()

    # -- tasks ------------------------------------------------------------------------------
    def add(self, records: Sequence[TaskRecord], *, existing: str = "fail") -> list[TaskRecord]:
        check_existing(existing)
        if not records:
            return []
        if len(records) == 1 and existing == "fail" and not (records[0].queue != "default"
                                                               or records[0].priority
                                                               or records[0].depends_on):
            # The hot path of delay(): one statement, one row, uncounted until absorbed.
            rec = records[0]
            t = self.wheel.due_tick(rec.eta)
            at = positions.FRESH_AT % (positions.fresh_cell(t, self.wheel.slots), eta_us(rec.eta), rec.name)
            row = ("t:" + rec.id, bytearray(encode_record(rec)), at, rec.name)  # bytearray: see _insert
            f = self.file
            f.check_still_there()
            try:
                f.group.insert(_ADD, row)          # shares a transaction with concurrent writes
            except sqlite3.IntegrityError:
                raise DuplicateTask(f"task id {rec.id!r} already exists; nothing was added") from None
            except sqlite3.Error as exc:
                raise f.translate(exc) from None
            self._bells.ring_if_near(t)
            return [rec]
        out, earliest = self.file.group.run(lambda: self._add_in_transaction(records, existing))
        self._bells.ring_if_near(earliest)
        return out

    def _add_in_transaction(self, records: Sequence[TaskRecord], existing: str
                            ) -> tuple[list[TaskRecord], Optional[int]]:
        """What is stored for each record, and the earliest tick of a task it made pending."""
        horizon = horizon_of(self.file)
        counters = Counters()
        if existing == "fail":
            records, known = self._resolve(records) if any(r.depends_on for r in records) else (records, None)
            pending = records if known is None else self._finished_at_add(records, horizon, counters)
            ticks = self._insert(pending, horizon, counters)
            counters.flush(self.file.x, self.file.many)
            if known is not None:
                self._index(records, known, horizon)
            return list(records), min(ticks, default=None)
        rows = self._reader.fetch(["t:" + r.id for r in records], rev=True)
        olds = {key[2:]: _stored(row) for key, row in rows.items()}
        out, plan = rules.admit_all(records, olds.get, existing)
        resolved, known = self._resolve(list(plan.values())) if deps.has_dependencies(plan) else ([], None)
        if known is not None:
            out, plan = [known[r.id] if plan.get(r.id) is r else r for r in out], {r.id: r for r in resolved}
        inserts = [new for task_id, new in plan.items() if task_id not in olds]
        updates: list[tuple[bytes, str, str, int, str]] = []
        members: list[tuple[TaskRecord, TaskRecord]] = []
        for task_id, new in plan.items():
            old = olds.get(task_id)
            if old is None:
                continue
            key = "t:" + task_id
            _, was, name, _ = rows[key]
            pos = positions.of(new, horizon, self.wheel)
            counters.move(counted(was, name, old if isinstance(old, TaskRecord) else None, self.wheel),
                          counted(pos, new.name, new, self.wheel))
            counters.queue(old if isinstance(old, TaskRecord) else None, new)
            updates.append((encode_record(new), pos, new.name, new.rev, key))
            if isinstance(old, TaskRecord) and old.batch is not None:
                members.append((old, new))       # a member replaced: it leaves its batch's counts
        self._insert(inserts if known is None else self._finished_at_add(inserts, horizon, counters),
                     horizon, counters)
        self.file.many(SET_RECORD, updates)
        counters.flush(self.file.x, self.file.many)
        if members:
            self._count_members(members)
        if known is not None:
            self._index(list(plan.values()), known, horizon)
        earliest = min((r.eta for r in out if r.status == PENDING), default=None)
        return out, None if earliest is None else self.wheel.due_tick(earliest)

    def _insert(self, records: Sequence[TaskRecord], horizon: int, counters: Counters) -> Iterable[int]:
        """INSERT new pending records, counted; the batch path of delay(), kept tight.

        Per task it pickles the record and formats its eta; what depends on the tick (the
        wheel cell in the position) is worked out once per tick, as the tasks of a batch
        mostly share ticks, and the counters are summed per name and tick before they go
        into the Counters.  Rows go out _CHUNK at a time in multi-row INSERTs, which SQLite
        runs faster than executemany() of the same rows.
        """
        wheel = self.wheel
        slots = wheel.slots
        at = positions.AT
        cells: dict[tuple[str, int], int] = defaultdict(int)     # tasks per (name, due tick)
        lo = hi = 0.0      # the interval (lo, hi] of the last task's tick, as due_tick() defines it
        t, cell = 0, ""
        try:
            for start in range(0, len(records), _CHUNK):
                params: list[Any] = []
                for rec in records[start:start + _CHUNK]:
                    eta = rec.eta
                    if not lo < eta <= hi:
                        t = wheel.due_tick(eta)
                        lo, hi = wheel.tick_end(t - 1), wheel.tick_end(t)
                        cell = positions.READY if t <= horizon else positions.cell(t, slots)
                    # A bytearray: the sqlite3 module passes a bytes parameter through its
                    # adaptation protocol (a registry lookup, then attribute lookups that raise
                    # and clear an AttributeError: 0.25-0.6 us on CPython 3.9-3.13) but binds a
                    # bytearray at once.  Both are stored as the same BLOB, read back as bytes.
                    if rec.queue == "default" and not rec.priority and not rec.waiting:
                        pos = at % (cell, eta_us(eta))
                    else:                        # another band (flow control): counted apart
                        pos = positions.of(rec, horizon, wheel)
                        counters.queue(None, rec)
                    params += ("t:" + rec.id, bytearray(encode_record(rec)), pos, rec.name)
                    cells[(rec.name, t)] += 1
                self.file.x(_insert_rows(len(params) // 4), params)
        except sqlite3.IntegrityError:
            raise DuplicateTask("a task id is given twice or already exists; nothing was added") from None
        for (name, t), n in cells.items():
            counters.states[(PENDING, name)] += n
            counters.ticks[t] += n
            counters.named[(name, t)] += n
        return {t for _, t in cells}

    def get(self, task_id: str) -> Optional[TaskRecord]:
        with self.file.reading():
            rows = self.file.q(f'SELECT {RECORD} FROM "{TABLE}" WHERE key = ?', ("t:" + task_id,))
        return decode_record(rows[0][0]) if rows else None

    def swap(self, changes: Sequence[tuple[TaskRecord, TaskRecord]]) -> list[Optional[TaskRecord]]:
        if not changes:
            return []

        def work() -> tuple[list[Optional[TaskRecord]], int]:
            fl = FileFlow(self.file, self.wheel)      # (made anew if the group runs it again)
            return self._swap_in_transaction(changes, horizon_of(self.file), fl), fl.released
        out, released = self.file.group.run(work)
        self._ring_if_pending(out, released)
        return out

    def _swap_in_transaction(self, changes: Sequence[tuple[TaskRecord, TaskRecord]], horizon: int,
                             fl: FileFlow, tell: bool = True) -> list[Optional[TaskRecord]]:
        out: list[Optional[TaskRecord]] = []
        rows = self._reader.fetch(["t:" + old.id for old, _ in changes])
        counters = Counters()
        updates = []
        members: list[tuple[TaskRecord, TaskRecord]] = []
        for old, new in changes:
            key = "t:" + old.id
            row = rows.get(key)
            cur = None
            if row is not None and new.id == old.id:
                try:
                    cur = decode_record(row[0])
                except RecordDecodeError:
                    cur = None
            if cur is None or cur.rev != old.rev:
                out.append(None)
                continue
            stored = rules.swapped(old, rules.kept_notes(cur, new))
            pos = positions.of(stored, horizon, self.wheel)
            counters.move(counted(row[1], row[2], cur, self.wheel), (stored.status, stored.name, (
                self.wheel.due_tick(stored.eta) if stored.status == PENDING else None)))
            if cur.queue != "default" or stored.queue != "default":
                counters.queue(cur, stored)
            if cur.limits and cur.status == RUNNING and stored.status != RUNNING:
                fl.free(cur, horizon)         # its outcome or requeue frees its slots, here
            elif cur.limits and cur.status == PENDING and stored.status != PENDING:
                fl.pass_on(cur, horizon)
            updates.append((encode_record(stored), pos, stored.name, stored.rev, key))
            rows[key] = (updates[-1][0], pos, stored.name, stored.rev)
            out.append(stored)
            if cur.batch is not None or stored.batch is not None:
                members.append((cur, stored))
        self.file.many(SET_RECORD, updates)
        counters.flush(self.file.x, self.file.many)
        if members:
            # the outcome and its batch's counts in one transaction; callbacks that became
            # ready wake the runners as released tasks do
            fl.released += self._count_members(members)
        if tell:
            self._tell_dependents([(old, new) for (old, _), new in zip(changes, out)], horizon, fl)
        return out

    def _ring_if_pending(self, stored: Sequence[Optional[TaskRecord]], released: int = 0) -> None:
        if released:                  # parked tasks came back: whoever serves them may claim
            self.ring()
            return
        earliest = min((r.eta for r in stored if r is not None and r.status == PENDING), default=None)
        self._bells.ring_if_near(None if earliest is None else self.wheel.due_tick(earliest))

    # -- workers ----------------------------------------------------------------------------
    def claim(self, owner: str, now: float, limit: int, queued: int = 0, *,
              queues: Optional[frozenset] = None) -> Claimed:
        f = self.file
        with f.reading():
            fresh, head, bands, reopen, paused = f.q(LOOK)[0]
            paused = frozenset((paused or "").split(",")) - {""}
            default = (queues is None or "default" in queues) and "default" not in paused
            # Rows added on their own are not in the ready queue until absorbed: with any,
            # claim.  Nothing else due (the common case: one band, no limits), or no room:
            # no write transaction.
            if limit + queued <= 0 or not fresh and not bands and (reopen is None or reopen > now * 1e6) and (
                    not default or head is None or head > positions.ready_bound(now)):
                heads = FileFlow(f, self.wheel).bands(queues, paused, head, bands)
                etas = [positions.ready_eta_us(pos) for _, pos in heads] + ([reopen] if reopen else [])
                if fresh and default:         # (no room:) rows added on their own, of the default band
                    etas += self._reader.fresh_head(horizon_of(f))
                return Claimed([], min(etas) / 1e6 if etas else None)

        def work() -> tuple[Claimed, int]:
            fl = FileFlow(f, self.wheel)
            got = self._claim_in_transaction(owner, now, limit, queued, horizon_of(f), queues, fl)
            return got, fl.released
        got, released = f.group.run(work)
        if released:
            self.ring()
        return got

    def record_and_claim(self, changes: Sequence[tuple[TaskRecord, TaskRecord]], owner: str, now: float,
                         limit: int, queued: int = 0, *, queues: Optional[frozenset] = None
                         ) -> tuple[list[Optional[TaskRecord]], Claimed]:
        """:meth:`swap` then :meth:`claim`, in one transaction -- a worker's round costs one,
        shared with the ``delay()`` calls of this process's threads meanwhile."""
        f = self.file

        def work() -> tuple[list[Optional[TaskRecord]], Claimed, int]:
            fl = FileFlow(f, self.wheel)
            horizon = horizon_of(f)
            out = self._swap_in_transaction(changes, horizon, fl) if changes else []
            got = self._claim_in_transaction(owner, now, limit, queued, horizon, queues, fl)
            return out, got, fl.released
        out, got, released = f.group.run(work)
        self._ring_if_pending(out, released)
        return out, got

    def _claim_in_transaction(self, owner: str, now: float, limit: int, queued: int, horizon: int,
                              queues: Optional[frozenset], fl: FileFlow) -> Claimed:
        # The clock read under the write lock: claims stamp starts in the order they commit,
        # so a rate's log never gains a start older than one a later claim already counted.
        return claim_due(self.file, self.wheel, owner, max(now, self.now()), limit, queued, horizon,
                         queues, fl, self._bells.saw_horizon)

    # -- the ticking process ----------------------------------------------------------------
    def advance(self, through: int, limit: int, leader: str) -> Advanced:
        moved = 0
        f = self.file
        slots = self.wheel.slots
        with f.writing():
            holder = self._role_holder(self.now())
            if holder is not None and holder != leader:       # fenced: see WheelStore.advance
                return Advanced(horizon_of(f), 0, True, led=False)
            horizon = reached = horizon_of(f)
            absorb(f.x, f.q, slots, horizon)
            complete = True
            while reached < through and complete:
                ticks = [t for (t,) in f.q(
                    f'SELECT tick FROM "{TABLE}_ticks" WHERE tick > ? AND tick <= ? ORDER BY tick LIMIT 1000',
                    (reached, through))]
                if not ticks:
                    reached = through
                    break
                for t in ticks:
                    lo, hi = positions.cell_range(t, slots)
                    if moved < limit:
                        moved += f.x(f'UPDATE "{TABLE}" SET pos = {positions.READY_OF_CELL} WHERE key IN '
                                     f'(SELECT key FROM "{TABLE}" WHERE pos >= ? AND pos < ? LIMIT ?)',
                                     (lo, hi, limit - moved))
                    if moved >= limit and f.q(f'SELECT 1 FROM "{TABLE}" WHERE pos >= ? AND pos < ? LIMIT 1',
                                              (lo, hi)):
                        complete = False        # the page is full: the rest of this cell next time
                        reached = t - 1
                        break
                    reached = t
            f.meta.update({"horizon": reached} if reached > horizon else {}, leader=leader,
                          advanced=self.now())
            self._bells.forget_dead(self.liveness.is_dead)
            meta = f.meta
            for k in [k for k in meta.keys() if k.startswith(SERVE)]:
                if self.liveness.is_dead(k[len(SERVE):]):
                    del meta[k]
        self._bells.saw_horizon(max(horizon, reached))
        if moved:
            self.ring()
        return Advanced(max(horizon, reached), moved, reached >= through)

    def abandoned(self, now: float, limit: int = 1000) -> list[TaskRecord]:
        f = self.file
        with f.reading():
            owners = [o for (o,) in f.q(f'SELECT DISTINCT {positions.OWNER} FROM "{TABLE}" '
                                        f"WHERE {positions.IS_RUNNING}")]
        out: list[TaskRecord] = []
        for owner in owners:
            if len(out) >= limit or not self.liveness.is_dead(owner):
                continue
            with f.reading():
                rows = f.q(f'SELECT key, {RECORD} FROM "{TABLE}" WHERE pos = ? LIMIT ?',
                           (positions.running(owner), limit - len(out)))
            for key, blob in rows:
                try:
                    out.append(decode_record(blob))
                except RecordDecodeError as exc:
                    if rules.set_aside(key[2:], exc):
                        self._mark_broken(key)
        return out

    def _mark_broken(self, key: str) -> None:
        f = self.file
        with f.writing():
            rows = f.q(f'SELECT pos, name FROM "{TABLE}" WHERE key = ?', (key,))
            if not rows or rows[0][0] == positions.BROKEN_POS:
                return
            counters = Counters()
            counters.move(counted(rows[0][0], rows[0][1], None, self.wheel),
                          counted(positions.BROKEN_POS, rows[0][1], None, self.wheel))
            f.x(f'UPDATE "{TABLE}" SET pos = ? WHERE key = ?', (positions.BROKEN_POS, key))
            FileFlow(f, self.wheel, counters).free_key(key, horizon_of(f))
            counters.flush(f.x, f.many)

    def purge(self, finished_before: float, statuses: Optional[Iterable[str]] = None,
              limit: int = 1000) -> int:
        wanted = purge_statuses(statuses)
        bound = finished_ms(finished_before)
        n = 0
        f = self.file
        kept = f"AND {KEPT_FOR_BATCH}" if self._reader.layout.batches else ""
        with f.writing():
            counters = Counters()
            for status in wanted:
                lo, _ = positions.RANGE[status]
                rows = f.q(f'SELECT key, name FROM "{TABLE}" WHERE pos >= ? AND pos < ? {kept} ORDER BY pos '
                           'LIMIT ?', (lo, positions.finished(status, bound), limit - n))
                f.many(f'DELETE FROM "{TABLE}" WHERE key = ?', [(k,) for k, _ in rows])
                if self._reader.layout.batches:
                    FileDeps(f).forget([k[2:] for k, _ in rows])
                for _, name in rows:
                    counters.move((status, name or "", None), None)
                n += len(rows)
                if n >= limit:
                    break
            counters.flush(f.x, f.many)
            FileFlow(f, self.wheel).forget_idle_limits(self.now())
        return n

    # -- the ticking role (a lease in the metadata map: see locks.FileLiveness) ---------------
    def take_role(self, token: str, now: float, ttl: float, is_dead: Callable[[str], bool]) -> bool:
        def free(holder: Optional[str]) -> bool:
            return holder is None or holder == token or is_dead(holder)

        with self.file.reading():              # the common case, a look without the write lock
            if not free(self._role_holder(now)):
                return False
        with self.file.writing():
            if not free(self._role_holder(now)):
                return False
            self.file.meta.update(leader=token, lease=now + ttl)
        return True

    def drop_role(self, token: str) -> None:
        with self.file.writing():
            if _meta_value(self.file.meta, "leader") == token:
                self.file.meta["lease"] = 0.0

    def role_holder(self, now: float) -> Optional[str]:
        with self.file.reading():
            return self._role_holder(now)

    def _role_holder(self, now: float) -> Optional[str]:
        """Who holds an unexpired lease (inside a transaction of the file)."""
        meta = self.file.meta
        holder, until = _meta_value(meta, "leader"), _meta_value(meta, "lease")
        if (not isinstance(holder, str) or isinstance(until, bool) or not isinstance(until, (int, float))
                or until <= now):
            return None
        return holder

    # -- observers (store/sqlite_read.py) ---------------------------------------------------
    def state(self) -> StoreState:
        return self._reader.state()

    def next_ready_eta(self) -> Optional[float]:
        return self._reader.next_ready_eta()

    def counts(self) -> dict[tuple[str, str], int]:
        return self._reader.counts()

    def scan(self, status: str, *, name: Optional[str] = None, id_prefix: Optional[str] = None,
             after: Optional[TaskRecord] = None, limit: Optional[int] = None) -> list[TaskRecord]:
        return self._reader.scan(status, name=name, id_prefix=id_prefix, after=after, limit=limit)

    def ticks(self, start: Optional[int] = None, stop: Optional[int] = None, *,
              limit: Optional[int] = None) -> list[tuple[int, int]]:
        return self._reader.ticks(start, stop, limit=limit)

    def histogram(self, start: int, stop: int, bucket: int, *, name: Optional[str] = None) -> list[int]:
        return self._reader.histogram(self, start, stop, bucket, name=name)

    def wheel_stats(self) -> tuple[int, int]:
        return self._reader.wheel_stats()

    def info(self) -> dict[str, Any]:
        """Journal mode and file sizes, for ``timewheel inspect``."""
        return self._reader.info()

    # -- flow control: pauses, who serves what (the metadata map), observers -----------------
    def pause(self, queue: str) -> bool:
        with self.file.writing():
            return bool(self.file.x(f'INSERT OR IGNORE INTO "{PAUSED}" (queue) VALUES (?)',
                                    (flow.check_queue(queue),)))

    def resume(self, queue: str) -> bool:
        with self.file.writing():
            was = bool(self.file.x(f'DELETE FROM "{PAUSED}" WHERE queue = ?', (flow.check_queue(queue),)))
        self.ring()
        return was

    def paused(self) -> frozenset:
        return self._reader.paused()

    def serve(self, token: str, queues: Optional[frozenset]) -> None:
        with self.file.writing():
            self.file.meta[SERVE + token] = "*" if queues is None else ",".join(sorted(queues))

    def unserve(self, token: str) -> None:
        with self.file.writing():
            self.file.meta.pop(SERVE + token, None)

    def served(self) -> dict[str, Optional[frozenset]]:
        return {t: q for t, q in self._reader.served().items() if not self.liveness.is_dead(t)}

    def stored_serializer(self) -> Optional[str]:
        with self.file.reading():
            value = self.file.meta.get("serializer")
        return value if isinstance(value, str) else None

    def record_serializer(self, name: str) -> None:
        with self.file.writing():
            self.file.meta["serializer"] = name

    def report_process(self, token: str, report: str) -> None:
        with self.file.writing():
            self.file.meta[PROCESS + token] = report

    def process_reports(self) -> dict[str, str]:
        return self._reader.process_reports()

    def forget_processes(self, tokens: Sequence[str]) -> None:
        with self.file.writing():
            for token in tokens:
                self.file.meta.pop(PROCESS + token, None)

    def limit_states(self, keys: Optional[Iterable[str]] = None) -> list[LimitState]:
        return self._reader.limit_states(self.now(), keys)

    def queue_states(self, now: float) -> list[QueueState]:
        return self._reader.queue_states(now)

    # -- the doorbell (store/sqlite_bells.py) -----------------------------------------------
    def doorbell(self) -> Doorbell:
        return self._bells.bell(self.liveness.token)

    def ring(self) -> None:
        """Wake every runner of this store, in any process on this host."""
        self._bells.ring()


def _meta_value(meta: Any, key: str) -> Any:
    """A metadata value, or None where there is none, or none we wrote (damaged: the role is
    then nobody's, and the next holder writes it anew)."""
    try:
        return meta[key]
    except (KeyError, ValueError):
        return None


def _stored(row: tuple) -> Union[TaskRecord, rules.Unreadable]:
    """The record of a (value, pos, name, rev) row, or what is known of it if it cannot be
    decoded: its rev column."""
    try:
        return decode_record(row[0])
    except RecordDecodeError:
        return rules.Unreadable(rules.stored_rev(row[3]))

