"""The file store's observers: what the CLI, the web view and the workers read.

Counts, the ring and the timeline come from the counter tables (store/sqlite_counters.py) plus
the few rows added on their own and not yet absorbed, counted here in SQL from their
positions; listings read about as many records as they return, along the position index.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Any, Iterable, Optional

from .. import flow
from ..errors import StoreError, shown
from ..records import PENDING, RUNNING, RecordDecodeError, TaskRecord, decode_record
from ..wheel import Wheel
from . import positions
from .base import (
    BROKEN,
    LimitState,
    QueueState,
    StoreState,
    WheelStore,
    broken_record,
    check_listable,
    eta_us,
    finished_ms,
    page,
)
from .connection import RECORD, TABLE, read_header
from .sqlite_counters import NAMED_TABLE, SLOTS_TABLE
from .sqlite_file import StoreFile
from .sqlite_flow import HELD, LIMITS, QUEUES, STARTS, FileFlow
from .sqlite_format import Layout, horizon_of

__all__ = ["FileReader", "SERVE", "PROCESS"]

_CHUNK = 400          # keys per IN (...) list (SQLite allows 32766 bound variables)
#: metadata: serve:<token> -> the queues that started process claims ("*": every queue)
SERVE = "serve:"
#: the metadata key prefix of a process's report (timewheel/processes.py), then its token
PROCESS = "process:"
# The rows not yet absorbed are counted in SQL, grouped by tick, never pulled into Python one
# by one: a store that took many single adds while no worker ran holds many.
_FRESH_TICKS = f'SELECT {positions.TICK_OF_CELL} AS tick FROM "{TABLE}" WHERE {positions.IS_FRESH}'


class FileReader:
    """The observers of :class:`~timewheel.store.sqlite.SqliteDictStore` (its methods of the
    same names delegate here)."""

    def __init__(self, file: StoreFile, wheel: Wheel, layout: Layout) -> None:
        self._file = file
        self.wheel = wheel
        self.layout = layout

    def fetch(self, keys: list[str], *, rev: bool = False
              ) -> dict[str, tuple[Any, Optional[str], Optional[str], Any]]:
        """key -> (record blob, pos, name, rev column if ``rev`` else None) for the keys that
        exist.  (The rev column only when asked: reading past the record costs a swap of 8
        tasks 5 us, 2% of a worker's round.)"""
        out: dict[str, tuple[Any, Optional[str], Optional[str], Any]] = {}
        column = "rev" if rev else "NULL"
        for i in range(0, len(keys), _CHUNK):
            part = keys[i:i + _CHUNK]
            for key, value, pos, name, stored_rev in self._file.q(
                    f'SELECT key, {RECORD}, pos, name, {column} FROM "{TABLE}" WHERE key IN '
                    f'({",".join("?" * len(part))})', part):
                out[key] = (value, pos, name, stored_rev)
        return out

    def state(self) -> StoreState:
        f = self._file
        with f.reading():
            horizon = horizon_of(f)
            meta = f.meta
            try:
                leader = meta["leader"]
            except (KeyError, ValueError):        # none yet, or not one we wrote: nobody
                leader = None
            try:
                advanced = meta["advanced"]
            except KeyError:
                advanced = None
        try:
            advanced = None if advanced is None else float(advanced)
        except (TypeError, ValueError, OverflowError):
            raise StoreError(f"{f.path}: its bookkeeping is damaged (advanced {shown(advanced)})") from None
        return StoreState(horizon, leader if isinstance(leader, str) else None, advanced)

    def fresh_head(self, horizon: int) -> list[int]:
        """The earliest eta (us) of the rows added on their own that are ready once absorbed
        (their tick within ``horizon``), if any (inside a transaction of the file)."""
        (eta,) = self._file.q(f'SELECT min({positions.FRESH_ETA}) FROM "{TABLE}" WHERE {positions.IS_FRESH} '
                              f"AND {positions.TICK_OF_CELL} <= :horizon",
                              {"slots": self.wheel.slots, "horizon": horizon})[0]
        return [] if eta is None else [int(eta)]

    def next_ready_eta(self) -> Optional[float]:
        """The eta of the earliest ready task: the head of the ready queue (of each band), or
        a row added on its own whose tick is within the horizon (ready as soon as absorbed)."""
        f = self._file
        with f.reading():
            horizon = horizon_of(f)
            head, fresh = f.q(
                f'SELECT (SELECT {positions.READY_ETA} FROM "{TABLE}" WHERE {positions.IS_READY} '
                f'ORDER BY pos LIMIT 1), (SELECT min({positions.FRESH_ETA}) FROM "{TABLE}" '
                f"WHERE {positions.IS_FRESH} AND {positions.TICK_OF_CELL} <= :horizon)",
                {"slots": self.wheel.slots, "horizon": horizon})[0]
            etas = [int(e) for e in (head, fresh) if e is not None]     # damaged: StoreError
            if self.layout.flow and head is not None:         # the other bands' heads
                etas += [positions.ready_eta_us(pos) for _, pos in
                         FileFlow(f, self.wheel).bands(None, frozenset(), None)]
        return min(etas) / 1e6 if etas else None

    # -- flow control ------------------------------------------------------------------------
    def paused(self) -> frozenset:
        if not self.layout.flow:
            return frozenset()
        with self._file.reading():
            return FileFlow(self._file, self.wheel).paused()

    def served(self) -> dict[str, Optional[frozenset]]:
        """What every started process registered it claims (dead ones too)."""
        return {token: None if value == "*" else frozenset(value.split(","))
                for token, value in self._prefixed(SERVE).items()}

    def process_reports(self) -> dict[str, str]:
        """Every process's report (timewheel/processes.py) by token."""
        return self._prefixed(PROCESS)

    def _prefixed(self, prefix: str) -> dict[str, str]:
        """The str values of the metadata keys that start with ``prefix``, by the rest of the key."""
        out: dict[str, str] = {}
        with self._file.reading():
            meta = self._file.meta
            for key in [k for k in meta.keys() if k.startswith(prefix)]:
                try:
                    value = meta[key]
                except (KeyError, ValueError):     # gone meanwhile, or not one we wrote
                    continue
                if isinstance(value, str):
                    out[key[len(prefix):]] = value
        return out

    def limit_states(self, now: float, keys: Optional[Iterable[str]]) -> list[LimitState]:
        f = self._file
        if not self.layout.flow:
            return []
        with f.reading():
            if keys is None:
                wanted = [k for (k,) in f.q(
                    f'SELECT lim FROM "{LIMITS}" WHERE lim IN (SELECT lim FROM "{HELD}") '
                    f'OR reopen IS NOT NULL OR lim IN (SELECT lim FROM "{STARTS}" WHERE at > ?) ORDER BY lim',
                    (int((now - 7 * 86400) * 1e6),))]
                hashes = dict(f.q(f'SELECT hash, lim FROM "{LIMITS}"'))
                for (h,) in f.q(f'SELECT DISTINCT {positions.PARKED_LIMIT} FROM "{TABLE}" '
                                f"WHERE {positions.IS_PARKED}"):
                    if h in hashes and hashes[h] not in wanted:
                        wanted.append(hashes[h])
            else:
                wanted = list(keys)
            out = []
            for key in sorted(wanted):
                row = f.q(f'SELECT concurrency, rate, per, reopen FROM "{LIMITS}" WHERE lim = ?', (key,))
                concurrency, rate, per, reopen = row[0] if row else (0, 0, 0.0, None)
                lo, hi = positions.parked_range(positions.limit_hash(key))
                held = f.q(f'SELECT count(*) FROM "{HELD}" WHERE lim = ?', (key,))[0][0]
                parked = f.q(f'SELECT count(*) FROM "{TABLE}" WHERE pos >= ? AND pos < ?', (lo, hi))[0][0]
                recent = f.q(f'SELECT count(*) FROM "{STARTS}" WHERE lim = ? AND at > ?',
                             (key, int((now - per) * 1e6)))[0][0] if rate else 0
                out.append(LimitState(key, concurrency, rate, per, held, parked, recent,
                                      None if reopen is None else reopen / 1e6))
        return out

    def queue_states(self, now: float) -> list[QueueState]:
        f = self._file
        totals = {PENDING: 0, RUNNING: 0}
        for (state, _), n in self.counts().items():
            if state in totals:
                totals[state] += n
        per: dict[str, list[int]] = {}
        if not self.layout.flow:
            if totals[PENDING] or totals[RUNNING]:
                per[flow.DEFAULT_QUEUE] = [totals[PENDING], 0, totals[RUNNING]]
            paused: frozenset = frozenset()
        with f.reading():
            if self.layout.flow:
                for queue, state, n in f.q(f'SELECT queue, state, n FROM "{QUEUES}" WHERE n > 0'):
                    c = per.setdefault(queue, [0, 0, 0])
                    c[0 if state == PENDING else 2] += n
                default = [totals[PENDING] - sum(c[0] for c in per.values()), 0,
                           totals[RUNNING] - sum(c[2] for c in per.values())]
                if default[0] or default[2]:
                    per[flow.DEFAULT_QUEUE] = default
                paused = FileFlow(f, self.wheel).paused()
                # due and waiting: the due part of every ready band, and every parked task
                for band, _ in FileFlow(f, self.wheel).bands(None, frozenset()):
                    n = f.q(f'SELECT count(*) FROM "{TABLE}" WHERE pos >= ? AND pos <= ?',
                            (positions.band_ready(band), positions.band_bound(band, now)))[0][0]
                    queue = band[1:].rpartition(":")[0] if band else flow.DEFAULT_QUEUE
                    per.setdefault(queue, [0, 0, 0])[1] += n
                for queue, n in f.q(f'SELECT {positions.PARKED_QUEUE}, count(*) FROM "{TABLE}" '
                                    f"WHERE {positions.IS_PARKED} GROUP BY 1"):
                    per.setdefault(queue, [0, 0, 0])[1] += n
            else:
                n = f.q(f'SELECT count(*) FROM "{TABLE}" WHERE pos >= ? AND pos <= ?',
                        (positions.READY, positions.ready_bound(now)))[0][0]
                if n:
                    per.setdefault(flow.DEFAULT_QUEUE, [0, 0, 0])[1] += n
        for q in paused:
            per.setdefault(q, [0, 0, 0])
        return [QueueState(q, max(0, p), w, max(0, r), q in paused) for q, (p, w, r) in sorted(per.items())]

    def counts(self) -> dict[tuple[str, str], int]:
        f = self._file
        with f.reading():
            out = {(s, n): c for s, n, c in f.q(f'SELECT state, name, n FROM "{TABLE}_counts" WHERE n > 0')}
            for name, c in f.q(f'SELECT {positions.FRESH_NAME}, count(*) FROM "{TABLE}" '
                               f"WHERE {positions.IS_FRESH} GROUP BY 1"):
                out[(PENDING, name)] = out.get((PENDING, name), 0) + c
        return out

    def ticks(self, start: Optional[int] = None, stop: Optional[int] = None, *,
              limit: Optional[int] = None) -> list[tuple[int, int]]:
        args = {"lo": -1 if start is None else start, "hi": 2 ** 62 if stop is None else stop,
                "limit": -1 if limit is None else limit, "slots": self.wheel.slots}
        f = self._file
        # The first ``limit`` ticks of the two sources together are among the first ``limit``
        # of each: two range reads that stop early, merged here (a GROUP BY over their UNION
        # read every counter first: 120 ms for the first 10 on a million tasks).
        with f.reading():
            merged = Counter(dict(f.q(
                f'SELECT tick, n FROM "{TABLE}_ticks" WHERE tick >= :lo AND tick < :hi AND n > 0 '
                "ORDER BY tick LIMIT :limit", args)))
            merged.update(dict(f.q(
                f"SELECT tick, count(*) FROM ({_FRESH_TICKS}) WHERE tick >= :lo AND tick < :hi "
                "GROUP BY tick ORDER BY tick LIMIT :limit", args)))
            out = sorted((int(t), int(n)) for t, n in merged.items())   # damaged counters: StoreError
        return out if limit is None else out[:limit]

    def histogram(self, store: WheelStore, start: int, stop: int, bucket: int, *,
                  name: Optional[str] = None) -> list[int]:
        if name is not None and not self.layout.named_ticks:   # a read-only open of an older store
            return WheelStore.histogram(store, start, stop, bucket, name=name)
        out = [0] * max(0, -(-(stop - start) // bucket))
        args = {"start": start, "stop": stop, "bucket": bucket, "slots": self.wheel.slots, "name": name}
        if name is None:
            counted = f'SELECT tick, n FROM "{TABLE}_ticks"'
            fresh = _FRESH_TICKS
        else:
            counted = f'SELECT tick, n FROM "{NAMED_TABLE}" WHERE name = :name'
            fresh = f"{_FRESH_TICKS} AND {positions.FRESH_NAME} = :name"
        with self._file.reading():
            rows = self._file.q("SELECT (tick - :start) / :bucket, sum(n) FROM "
                                f"({counted} UNION ALL SELECT tick, 1 FROM ({fresh})) "
                                "WHERE tick >= :start AND tick < :stop GROUP BY 1", args)
        for i, n in rows:
            out[int(i)] += int(n)
        return out

    def wheel_stats(self) -> tuple[int, int]:
        args = {"slots": self.wheel.slots}
        f = self._file
        with f.reading():
            if not self.layout.slot_cells:      # a read-only open of a store written before them
                cells, slots = f.q(
                    f'SELECT count(*), count(DISTINCT tick % :slots) FROM (SELECT tick FROM '
                    f'"{TABLE}_ticks" WHERE n > 0 UNION SELECT tick FROM ({_FRESH_TICKS}))', args)[0]
                return int(cells), int(slots)
            # Counted cells from the counters (a tick row exists only while n > 0), plus the
            # ticks of rows not yet absorbed that no counter holds yet.
            cells, slots = f.q(
                f"WITH fresh AS (SELECT DISTINCT tick FROM ({_FRESH_TICKS}) "
                f'WHERE tick NOT IN (SELECT tick FROM "{TABLE}_ticks")) '
                f'SELECT (SELECT count(*) FROM "{TABLE}_ticks") + (SELECT count(*) FROM fresh), '
                f'(SELECT count(*) FROM (SELECT slot FROM "{SLOTS_TABLE}" WHERE cells > 0 '
                "UNION SELECT tick % :slots FROM fresh))", args)[0]
        return int(cells), int(slots)

    def scan(self, status: str, *, name: Optional[str] = None, id_prefix: Optional[str] = None,
             after: Optional[TaskRecord] = None, limit: Optional[int] = None) -> list[TaskRecord]:
        check_listable(status)
        if limit is not None and limit <= 0:
            return []
        f = self._file
        named = [name] if name else []
        only = " AND name = ?" if name else ""
        with f.reading():
            if status == BROKEN:
                lo = "t:" + (id_prefix or "")
                hi = lo + "\U0010ffff" if id_prefix else "t;"
                rows = f.q(f'SELECT key, {RECORD}, pos, name FROM "{TABLE}" WHERE pos = ? '
                           f"AND key >= ? AND key < ?{only} ORDER BY key LIMIT ?",
                           [positions.BROKEN_POS, lo, hi, *named, -1 if limit is None else limit])
                return [_broken(key, blob, rname) for key, blob, _, rname in rows
                        if after is None or key > "t:" + after.id]
            if id_prefix:
                # The primary key's range of those ids, in key order, the status's positions
                # filtered on the way: never the whole status (a prefix is anyone's input).
                lo, hi = "t:" + id_prefix, "t:" + id_prefix + "\U0010ffff"
                if after is not None:
                    lo = max(lo, "t:" + after.id + "\0")
                rows = f.q(f'SELECT key, {RECORD}, pos, name FROM "{TABLE}" NOT INDEXED '
                           f"WHERE key >= ? AND key < ? AND pos >= ? AND pos < ?{only} ORDER BY key LIMIT ?",
                           [lo, hi, *positions.RANGE[status], *named, -1 if limit is None else limit])
                return self._records(rows, status)
            if status == PENDING:
                return self._pending(name, after, limit)
            lo, hi = positions.RANGE[status]
            if status == RUNNING:
                rows = f.q(f'SELECT key, {RECORD}, pos, name FROM "{TABLE}" WHERE pos >= ? AND pos < ?'
                           f"{only}", [lo, hi, *named])
                return page(self._records(rows, status), status, after, limit)
            sql = f'SELECT key, {RECORD}, pos, name FROM "{TABLE}" WHERE pos >= ? AND pos < ?{only}'
            params: list[Any] = [lo, hi, *named]
            if after is not None:
                mark = positions.finished(status, finished_ms(after.finished))
                sql += " AND (pos < ? OR (pos = ? AND key < ?))"
                params += [mark, mark, "t:" + after.id]
            rows = f.q(sql + " ORDER BY pos DESC, key DESC LIMIT ?",
                       params + [-1 if limit is None else limit])
            return self._records(rows, status)

    def _records(self, rows: Iterable[tuple], status: str) -> list[TaskRecord]:
        """Decode (key, value, pos[, name]) rows of ``status``.  An undecodable row of a
        running or finished task comes as a placeholder in its place (nobody else would ever
        notice it); a pending one is skipped: the claim that meets it sets it aside."""
        out = []
        for key, blob, pos, *name in rows:
            state = positions.status_of(pos)
            if (state is None and status != PENDING) or (state is not None and state != status):
                continue
            try:
                out.append(decode_record(blob))
            except RecordDecodeError:
                if status != PENDING:
                    out.append(_broken(key, blob, name[0] if name else None, pos))
        return out

    def _pending(self, name: Optional[str], after: Optional[TaskRecord],
                 limit: Optional[int]) -> list[TaskRecord]:
        """Pending tasks in due order: the ready ones, then the wheel's cells tick by tick
        (from the tick counters), merged with the rows not yet absorbed."""
        f = self._file
        want = None if limit is None else limit
        mark = None if after is None else (eta_us(after.eta), after.id)
        only = " AND name = ?" if name else ""
        named = [name] if name else []
        out: list[TaskRecord] = []

        def keep(rows: Iterable[tuple]) -> bool:
            for rec in self._records(rows, PENDING):
                if mark is None or (eta_us(rec.eta), rec.id) > mark:
                    out.append(rec)
            return want is not None and len(out) >= want

        # The rows not yet absorbed: ordered and cut by the eta in their position, read from
        # the index alone, and only the records that can be shown are fetched and decoded.
        eta = positions.FRESH_ETA
        after_mark = "" if mark is None else f" AND ({eta} > ? OR ({eta} = ? AND key > ?))"
        marked = [] if mark is None else [positions.eta_field(mark[0]), positions.eta_field(mark[0]),
                                          "t:" + mark[1]]
        keys = [k for (k,) in f.q(
            f'SELECT key FROM "{TABLE}" WHERE {positions.IS_FRESH}'
            + (f" AND {positions.FRESH_NAME} = ?" if name else "")
            + f"{after_mark} ORDER BY {eta}, key" + ("" if want is None else " LIMIT ?"),
            named + marked + ([] if want is None else [want]))]
        rows = self.fetch(keys)
        fresh = self._records([(k, rows[k][0], rows[k][1]) for k in keys if k in rows], PENDING)
        start = positions.READY if mark is None else positions.ready(mark[0])
        ready = f.q(f'SELECT key, {RECORD}, pos FROM "{TABLE}" WHERE pos >= ? AND pos < ?'
                    f"{only} ORDER BY pos, key" + ("" if want is None else " LIMIT ?"),
                    [start, positions.BANDS] + named + ([] if want is None else [want + 1]))
        if self.layout.flow:          # the other bands, each in eta order, and the parked tasks
            for band, _ in FileFlow(f, self.wheel).bands(None, frozenset(), None):
                lo = positions.band_ready(band) if mark is None else positions.AT % (
                    positions.band_ready(band), mark[0])
                ready += f.q(f'SELECT key, {RECORD}, pos FROM "{TABLE}" WHERE pos >= ? AND pos < ?'
                             f"{only} ORDER BY pos, key" + ("" if want is None else " LIMIT ?"),
                             [lo, positions.band_ready(band)[:-1] + ";"] + named
                             + ([] if want is None else [want + 1]))
            ready += f.q(f'SELECT key, {RECORD}, pos FROM "{TABLE}" WHERE pos >= ? AND pos < ?{only}',
                         [positions.PARKED, positions.PARKED_END] + named)
        if not keep(ready):
            first = horizon_of(f) + 1
            if mark is not None:
                first = max(first, self.wheel.due_tick(mark[0] / 1e6))
            done = False
            while not done:
                ticks = [t for (t,) in f.q(f'SELECT tick FROM "{TABLE}_ticks" WHERE tick >= ? AND n > 0 '
                                           "ORDER BY tick LIMIT 256", (first,))]
                done = not ticks
                if ticks and (ticks[0] < first or ticks != sorted(set(ticks))):   # or it walks back for ever
                    raise StoreError(f"{f.path}: the file is damaged (its tick counters are out of order)")
                for t in ticks:
                    left = [] if want is None else [want - len(out) + 1]
                    if keep(f.q(f'SELECT key, {RECORD}, pos FROM "{TABLE}" WHERE pos >= ? AND pos < ?'
                                f"{only} ORDER BY pos, key" + (" LIMIT ?" if left else ""),
                                [*positions.cell_range(t, self.wheel.slots), *named, *left])):
                        done = True
                        break
                else:
                    first = ticks[-1] + 1 if ticks else first
        merged = sorted(out + [r for r in fresh if mark is None or (eta_us(r.eta), r.id) > mark],
                        key=lambda r: (eta_us(r.eta), r.id))
        return merged[:want]

    def info(self) -> dict[str, Any]:
        """Journal mode and file sizes, for ``timewheel inspect``."""
        f = self._file
        with f.reading():
            mode = f.q("PRAGMA journal_mode")[0][0]
            immutable = f.conn().immutable
        if immutable:
            # an immutable connection (see connection.ro_uri) says "delete" whatever the file
            # is in; the file header says what it is: read/write versions 2 mean WAL
            header = read_header(f.path)
            if header is not None and header[18:20] == b"\x02\x02":
                mode = "wal"
        wal = f.path + "-wal"
        return {"path": f.path, "journal_mode": mode, "size_bytes": os.path.getsize(f.path),
                "wal_bytes": os.path.getsize(wal) if os.path.exists(wal) else 0,
                "slots": self.wheel.slots, "tick": self.wheel.tick}


def _broken(key: str, blob: Any, name: Optional[str], pos: Optional[str] = None) -> TaskRecord:
    """The placeholder of an undecodable row: when it finished (or who runs it) as its
    position says, so that it sorts where it sits."""
    finished = owner = None
    try:
        at = positions.parse(pos) if pos else None
    except ValueError:
        at = None
    if at is not None and at.kind == "x":
        finished = at.finished_ms / 1000          # type: ignore[operator]
    elif at is not None and at.kind == "r":
        owner = at.owner
    return broken_record(key[2:], blob, name, finished=finished, owner=owner)
