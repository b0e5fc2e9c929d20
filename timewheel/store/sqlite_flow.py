"""Flow control in the file store (issue 21): the tables a claim reads and writes besides the
tasks, inside the claim's transaction -- what :class:`timewheel.flow.Admission` decides is
applied here and nowhere else.

==========================  ===================================================================
``timewheel_held``          (limit key, task key): a slot of the limit, held by a running task
                            from its claim until its outcome (or its requeue after a crash)
                            is recorded, in the transaction that records it
``timewheel_starts``        (limit key, at): the starts of rate-limited tasks, in microseconds
                            of the store's clock, kept while inside their window
``timewheel_limits``        limit key -> the hash that names it in parked positions, its last
                            seen concurrency and rate, and ``reopen``: when its closed rate
                            window lets its parked tasks back in (us; NULL: a slot frees them)
``timewheel_paused``        the paused queues
``timewheel_queues``        (queue, state) -> pending and running tasks of the queues other than
                            "default", kept with the other counters (store/sqlite_counters.py)
==========================  ===================================================================

A due task that a full limit holds back is moved to ``l:<hash>:<p>:<eta>:<queue>``
(store/positions.py): off the ready queue, so later claims do not read it.  A freed slot
moves the first parked task (priority, then eta) of that limit back to the ready queue in the
transaction that freed it; a claim at or after a limit's ``reopen`` moves as many as its
window admits then.  Either way the claim decides again, so a released task that another
limit holds back is parked there.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

from .. import flow
from ..records import RUNNING, RecordDecodeError, TaskRecord, decode_record
from ..wheel import Wheel
from . import positions, rules
from .connection import RECORD, TABLE
from .sqlite_counters import Counters, counted
from .sqlite_file import StoreFile

__all__ = ["SCHEMA", "FileFlow", "LazyStarts", "HELD", "STARTS", "LIMITS", "PAUSED", "QUEUES"]

HELD, STARTS, LIMITS = f"{TABLE}_held", f"{TABLE}_starts", f"{TABLE}_limits"
PAUSED, QUEUES = f"{TABLE}_paused", f"{TABLE}_queues"
SCHEMA = (
    f'CREATE TABLE IF NOT EXISTS "{HELD}" (lim TEXT NOT NULL, key TEXT NOT NULL, '
    "PRIMARY KEY (lim, key)) WITHOUT ROWID",
    f'CREATE INDEX IF NOT EXISTS "{HELD}_key" ON "{HELD}" (key)',
    f'CREATE TABLE IF NOT EXISTS "{STARTS}" (lim TEXT NOT NULL, at INTEGER NOT NULL)',
    f'CREATE INDEX IF NOT EXISTS "{STARTS}_at" ON "{STARTS}" (lim, at)',
    f'CREATE TABLE IF NOT EXISTS "{LIMITS}" (lim TEXT PRIMARY KEY, hash TEXT NOT NULL, '
    "concurrency INTEGER NOT NULL, rate INTEGER NOT NULL, per REAL NOT NULL, reopen INTEGER) WITHOUT ROWID",
    f'CREATE INDEX IF NOT EXISTS "{LIMITS}_reopen" ON "{LIMITS}" (reopen) WHERE reopen IS NOT NULL',
    f'CREATE INDEX IF NOT EXISTS "{LIMITS}_hash" ON "{LIMITS}" (hash)',
    f'CREATE TABLE IF NOT EXISTS "{PAUSED}" (queue TEXT PRIMARY KEY) WITHOUT ROWID',
    f'CREATE TABLE IF NOT EXISTS "{QUEUES}" (queue TEXT NOT NULL, state TEXT NOT NULL, '
    "n INTEGER NOT NULL, PRIMARY KEY (queue, state)) WITHOUT ROWID",
)
_SET_POS = f'UPDATE "{TABLE}" SET pos = ? WHERE key = ?'
_FIRST = f'SELECT pos FROM "{TABLE}" WHERE pos >= ? AND pos < ? ORDER BY pos LIMIT 1'


class LazyStarts(Sequence[float]):
    """A limit's starts after ``since`` (ascending), read from the index as asked: the
    admission looks at their number and at most one of them."""

    def __init__(self, file: StoreFile, key: str, since_us: int) -> None:
        self._f, self._key, self._since = file, key, since_us
        self._n: Optional[int] = None

    def __len__(self) -> int:
        if self._n is None:
            self._n = self._f.q(f'SELECT count(*) FROM "{STARTS}" WHERE lim = ? AND at > ?',
                                (self._key, self._since))[0][0]
        return self._n

    def __getitem__(self, i: Any) -> Any:
        if not isinstance(i, int) or not 0 <= i < len(self):
            raise IndexError(i)
        return self._f.q(f'SELECT at FROM "{STARTS}" WHERE lim = ? AND at > ? ORDER BY at LIMIT 1 OFFSET ?',
                         (self._key, self._since, i))[0][0] / 1e6


class FileFlow:
    """The flow-control half of one claim, release or observer of the file store: every
    method runs inside a transaction of ``file``."""

    def __init__(self, file: StoreFile, wheel: Wheel, counters: Optional[Counters] = None) -> None:
        self._f = file
        self._wheel = wheel
        self._counters = counters or Counters()        # the transaction's (a broken parked row)
        self._specs: dict[str, flow.Limit] = {}      # limits whose spec this transaction writes
        self._held: list[tuple[str, str]] = []
        self._starts: list[tuple[str, int]] = []
        self.released = 0                            #: tasks moved back to ready (ring when > 0)

    # -- reading -------------------------------------------------------------------------------
    def paused(self) -> frozenset:
        return frozenset(q for (q,) in self._f.q(f'SELECT queue FROM "{PAUSED}"'))

    def usage(self, lim: flow.Limit, now: float) -> flow.Usage:
        running = self._holders(lim.key)
        if not lim.rate:
            return flow.Usage(running)
        # Integer microseconds, rounded so that a start is never missed: stamps up, the
        # window's edge down (a start 0.9999997 s ago is inside a 1 s window).
        since = math.floor((now - lim.per) * 1e6)
        # (forgotten a second after they leave the window: a clock stepped back a little
        # still counts them)
        self._f.x(f'DELETE FROM "{STARTS}" WHERE lim = ? AND at <= ?', (lim.key, since - 1_000_000))
        return flow.Usage(running, LazyStarts(self._f, lim.key, since))

    def bands(self, queues: Optional[frozenset], paused: frozenset, head: Optional[str] = "",
              others: Any = True) -> list[tuple[str, str]]:
        """(band, head position) of every band with ready tasks, of ``queues`` (None: all)
        and not paused: one index seek per band (a loose index scan), whatever they hold.
        ``head``: the default band's head if known (None: empty); ``others``: False if no
        other band has ready tasks."""
        f = self._f
        out = []
        if (queues is None or flow.DEFAULT_QUEUE in queues) and flow.DEFAULT_QUEUE not in paused:
            if head == "":
                found = f.q(_FIRST, (positions.READY, positions.BANDS))
                head = found[0][0] if found else None
            if head is not None:
                out.append(("", head))
        if not others:
            return out
        starts = [positions.BANDS] if queues is None else [positions.BANDS + q + ":" for q in sorted(queues)]
        for lo in starts:
            hi = positions.READY_END if queues is None else lo[:-1] + ";"
            while True:
                row = f.q(_FIRST, (lo, hi))
                if not row:
                    break
                pos = row[0][0]
                band = positions.band_of_ready(pos)
                queue = band[1:].rpartition(":")[0]
                if queue not in paused:
                    out.append((band, pos))
                lo = positions.band_ready(band)[:-1] + ";"      # past this band
        return out

    def next_reopen(self) -> Optional[float]:
        at = self._f.q(f'SELECT min(reopen) FROM "{LIMITS}"')[0][0]
        return None if at is None else at / 1e6

    # -- a claim ---------------------------------------------------------------------------------
    def took(self, rec: TaskRecord, now: float) -> None:
        """``rec`` (with limits) was claimed: it holds their slots; its start is logged."""
        key = "t:" + rec.id
        for lim in rec.limits:
            lim = flow.Limit._make(lim)
            self._held.append((lim.key, key))
            if lim.rate:
                self._starts.append((lim.key, math.ceil(now * 1e6)))
            self._specs[lim.key] = lim

    def park(self, rec: TaskRecord, verdict: flow.Verdict) -> None:
        lim = verdict.limit
        assert lim is not None
        self._spec(lim)
        self._f.x(_SET_POS, (positions.parked(positions.limit_hash(lim.key), rec), "t:" + rec.id))
        if verdict.until is not None:
            self._f.x(f'UPDATE "{LIMITS}" SET reopen = min(coalesce(reopen, ?), ?) WHERE lim = ?',
                      (int(verdict.until * 1e6),) * 2 + (lim.key,))

    def finish(self, taken: Sequence[str], now: float) -> None:
        """Write what the claim counted, and re-arm the windows of the limits it used."""
        f = self._f
        if self._held:
            f.many(f'INSERT OR IGNORE INTO "{HELD}" (lim, key) VALUES (?, ?)', self._held)
        if self._starts:
            f.many(f'INSERT INTO "{STARTS}" (lim, at) VALUES (?, ?)', self._starts)
        for lim in self._specs.values():
            self._spec(lim)
        for key in taken:
            self.rearm(key, now)
        self._held, self._starts, self._specs = [], [], {}

    def _spec(self, lim: flow.Limit) -> None:
        self._f.x(f'INSERT INTO "{LIMITS}" (lim, hash, concurrency, rate, per) VALUES (?, ?, ?, ?, ?) '
                  "ON CONFLICT (lim) DO UPDATE SET concurrency = excluded.concurrency, rate = excluded.rate, "
                  "per = excluded.per", (lim.key, positions.limit_hash(lim.key), lim.concurrency, lim.rate,
                                         lim.per))

    def rearm(self, key: str, now: float) -> None:
        """Set when the tasks parked on ``key`` may next come in by its rate window; none
        when nothing is parked or it has no rate (a freed slot lets them in)."""
        f = self._f
        row = f.q(f'SELECT hash, concurrency, rate, per FROM "{LIMITS}" WHERE lim = ?', (key,))
        if not row:
            return
        h, concurrency, rate, per = row[0]
        lo, hi = positions.parked_range(h)
        reopen = None
        if rate and f.q(f'SELECT 1 FROM "{TABLE}" WHERE pos >= ? AND pos < ? LIMIT 1', (lo, hi)):
            lim = flow.Limit(key, concurrency, rate, per)
            reopen = int(flow.next_opening(self.usage(lim, now).starts, rate, per, now) * 1e6)
        f.x(f'UPDATE "{LIMITS}" SET reopen = ? WHERE lim = ?', (reopen, key))

    def release_reopened(self, now: float, horizon: int) -> None:
        """Let the tasks parked on rate windows that have reopened back in, as many as each
        window admits now (at a claim: every process looks at least once a tick, and
        ``next_eta`` names the earliest reopening)."""
        f = self._f
        for key, concurrency, rate, per in f.q(f'SELECT lim, concurrency, rate, per FROM "{LIMITS}" '
                                               "WHERE reopen IS NOT NULL AND reopen <= ?", (int(now * 1e6),)):
            room = rate - len(self.usage(flow.Limit(key, concurrency, rate, per), now).starts)
            if room > 0:
                self.release(key, room, horizon)
            self.rearm(key, now)

    # -- freeing ------------------------------------------------------------------------------
    def free(self, rec: TaskRecord, horizon: int) -> None:
        """``rec`` no longer runs: free its slots and let one parked task per slot back in."""
        if rec.status != RUNNING or not rec.limits:
            return
        key = "t:" + rec.id
        for lim in rec.limits:
            if self._f.x(f'DELETE FROM "{HELD}" WHERE lim = ? AND key = ?', (lim[0], key)):
                self.release(lim[0], 1, horizon)

    def pass_on(self, rec: TaskRecord, horizon: int) -> None:
        """A pending task with limits leaves (cancelled): a slot freed for it, if it was let
        back in for one, goes to the next task parked on that limit."""
        for key, concurrency, _, _ in rec.limits:
            if concurrency and self._holders(key) < concurrency:
                self.release(key, 1, horizon)

    def _holders(self, key: str) -> int:
        return self._f.q(f'SELECT count(*) FROM "{HELD}" WHERE lim = ?', (key,))[0][0]

    def forget_idle_limits(self, now: float) -> None:
        """Drop what is kept of limits that hold nothing -- no slot, no parked task, no start
        in the last week, no window to reopen -- so that per-key limits (one per customer)
        do not pile up.  (The ticking process's purge, now and then.)"""
        week = math.floor((now - 7 * 86400) * 1e6)
        self._f.x(f'DELETE FROM "{STARTS}" WHERE at < ?', (week,))
        self._f.x(f'DELETE FROM "{LIMITS}" WHERE reopen IS NULL AND lim NOT IN (SELECT lim FROM "{HELD}") '
                  f'AND lim NOT IN (SELECT lim FROM "{STARTS}") AND hash NOT IN '
                  f'(SELECT {positions.PARKED_LIMIT} FROM "{TABLE}" WHERE {positions.IS_PARKED})')

    def free_key(self, key: str, horizon: int) -> None:
        """Free whatever the row ``key`` holds (it cannot be decoded any more)."""
        for (lim,) in self._f.q(f'SELECT lim FROM "{HELD}" WHERE key = ?', (key,)):
            self._f.x(f'DELETE FROM "{HELD}" WHERE lim = ? AND key = ?', (lim, key))
            self.release(lim, 1, horizon)

    def release(self, key: str, n: int, horizon: int) -> None:
        """Move the first ``n`` tasks parked on ``key`` back to where their record says."""
        f = self._f
        lo, hi = positions.parked_range(positions.limit_hash(key))
        rows = f.q(f'SELECT key, {RECORD}, pos, name FROM "{TABLE}" WHERE pos >= ? AND pos < ? '
                   "ORDER BY pos LIMIT ?", (lo, hi, n))
        moves = []
        for task_key, blob, pos, name in rows:
            try:
                rec = decode_record(blob)
            except RecordDecodeError as exc:
                if rules.set_aside(task_key[2:], exc):
                    self._counters.move(counted(pos, name, None, self._wheel),
                                        counted(positions.BROKEN_POS, name, None, self._wheel))
                    moves.append((positions.BROKEN_POS, task_key))
                continue
            moves.append((positions.of(rec, horizon, self._wheel), task_key))
        f.many(_SET_POS, moves)
        self.released += len(moves)

