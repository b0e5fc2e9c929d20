"""Batches in the file store (issue 23): the tables a write reads and changes besides the
tasks, inside that write's transaction -- what :mod:`timewheel.batches` decides is applied
here and nowhere else.

=======================  ======================================================================
``timewheel_batches``    batch id -> when it was opened, when it was done (NULL: not yet), its
                         members per class (``open``, ``succeeded``, ``failed``, ``cancelled``,
                         ``misfired``, ``aborted``: kept by the writes, as the per-status
                         counters are) and
                         its callbacks (:func:`timewheel.batches.encode_callbacks`)
``timewheel_members``    (batch id, seq) -> task key: the members in the order they were added,
                         and, by key, whether a finished task may be purged yet
=======================  ======================================================================

The transaction that changes a member changes its batch's row; the one that leaves a batch
with no open member adds its callbacks (INSERT only where the key is free) and sets ``done``.
Two writers cannot both do that: the file has one writer at a time.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional, Sequence

from .. import batches as batch_rules
from ..errors import BatchClosed, BatchNotFound, StoreError
from ..records import RecordDecodeError, TaskRecord
from .connection import TABLE
from .sqlite_file import StoreFile

__all__ = ["SCHEMA", "BATCHES", "MEMBERS", "FileBatches", "FileBatchStore", "KEPT_FOR_BATCH"]

BATCHES = f"{TABLE}_batches"
MEMBERS = f"{TABLE}_members"
_COUNTS = ", ".join(batch_rules.CLASSES)            # the count columns, in CLASSES order

SCHEMA = (
    f'CREATE TABLE IF NOT EXISTS "{BATCHES}" (id TEXT PRIMARY KEY, created REAL NOT NULL, done REAL, '
    + ", ".join(f"{c} INTEGER NOT NULL DEFAULT 0" for c in batch_rules.CLASSES)
    + ", callbacks BLOB NOT NULL) WITHOUT ROWID",
    f'CREATE INDEX IF NOT EXISTS "{BATCHES}_created" ON "{BATCHES}" (created)',
    f'CREATE INDEX IF NOT EXISTS "{BATCHES}_open" ON "{BATCHES}" (open) WHERE done IS NULL',
    f'CREATE TABLE IF NOT EXISTS "{MEMBERS}" (batch TEXT NOT NULL, seq INTEGER NOT NULL, key TEXT NOT NULL, '
    "PRIMARY KEY (batch, seq)) WITHOUT ROWID",
    f'CREATE INDEX IF NOT EXISTS "{MEMBERS}_key" ON "{MEMBERS}" (key)',
)

#: a purge's condition on a task row: not a member of a batch that is not done yet (one index
#: probe per finished row; nothing when the store holds no batches)
KEPT_FOR_BATCH = (f'NOT EXISTS (SELECT 1 FROM "{MEMBERS}" m JOIN "{BATCHES}" b ON b.id = m.batch '
                  f'WHERE m.key = "{TABLE}".key AND b.done IS NULL)')


class FileBatches:
    """The batch tables, inside the caller's transaction of ``file``."""

    def __init__(self, file: StoreFile) -> None:
        self._file = file

    def open(self, batch_id: str, created: float, templates: Mapping[str, TaskRecord]) -> None:
        f = self._file
        if f.q(f'SELECT 1 FROM "{BATCHES}" WHERE id = ?', (batch_id,)):
            raise BatchClosed(f"batch {batch_id!r} already exists; nothing was added")
        f.x(f'INSERT INTO "{BATCHES}" (id, created, callbacks) VALUES (?, ?, ?)',
            (batch_id, created, batch_rules.encode_callbacks(templates)))

    def check_open(self, batch_id: str) -> None:
        """That members may be added to ``batch_id``: it is stored and not done."""
        rows = self._file.q(f'SELECT done FROM "{BATCHES}" WHERE id = ?', (batch_id,))
        if not rows:
            raise BatchNotFound(f"no batch {batch_id!r} in {self._file.path}; nothing was added")
        if rows[0][0] is not None:
            raise BatchClosed(f"batch {batch_id} is done (its callbacks were added); nothing was added")

    def add_members(self, batch_id: str, ids: Sequence[str]) -> None:
        f = self._file
        first = f.q(f'SELECT coalesce(max(seq), -1) + 1 FROM "{MEMBERS}" WHERE batch = ?', (batch_id,))[0][0]
        f.many(f'INSERT INTO "{MEMBERS}" (batch, seq, key) VALUES (?, ?, ?)',
               [(batch_id, first + i, "t:" + task_id) for i, task_id in enumerate(ids)])

    def apply(self, moves: Mapping[str, Mapping[str, int]], now: float,
              add: Callable[[list[TaskRecord]], object]) -> int:
        """Change the counts of each batch by ``moves`` (:func:`timewheel.batches.moves`) and
        finish the batches that have no open member left: ``add`` their callbacks (as
        ``existing="keep"``), mark them done.  Returns how many callbacks were offered."""
        f = self._file
        for batch_id, deltas in moves.items():
            sets = ", ".join(f"{c} = {c} + ?" for c in deltas)
            f.x(f'UPDATE "{BATCHES}" SET {sets} WHERE id = ?', (*deltas.values(), batch_id))
        return self.settle(list(moves), now, add)

    def settle(self, batch_ids: Sequence[str], now: float, add: Callable[[list[TaskRecord]], object]) -> int:
        f = self._file
        offered = 0
        for batch_id in batch_ids:
            rows = f.q(f'SELECT {_COUNTS}, callbacks FROM "{BATCHES}" WHERE id = ? AND done IS NULL',
                       (batch_id,))
            if not rows:
                continue
            counts = batch_rules.counts_of(rows[0][:-1])
            if not batch_rules.finished(counts):
                continue
            try:
                templates = batch_rules.decode_callbacks(rows[0][-1])
            except (RecordDecodeError, ValueError) as exc:
                raise StoreError(f"{f.path}: batch {batch_id}'s callbacks are damaged ({exc})") from None
            recs = batch_rules.callback_records(templates, counts)
            if recs:
                add(recs)
                offered += len(recs)
            f.x(f'UPDATE "{BATCHES}" SET done = ? WHERE id = ?', (now, batch_id))
        return offered

    def stalled(self, limit: int) -> list[str]:
        """Batches with no open member that are not done (the sweep's backstop)."""
        return [r[0] for r in self._file.q(
            f'SELECT id FROM "{BATCHES}" WHERE done IS NULL AND open <= 0 LIMIT ?', (limit,))]

    def state(self, batch_id: str) -> "Optional[batch_rules.BatchState]":
        rows = self._file.q(f'SELECT id, created, done, {_COUNTS}, callbacks FROM "{BATCHES}" WHERE id = ?',
                            (batch_id,))
        return _state(rows[0]) if rows else None

    def newest(self, limit: int) -> "list[batch_rules.BatchState]":
        return [_state(r) for r in self._file.q(
            f'SELECT id, created, done, {_COUNTS}, callbacks FROM "{BATCHES}" ORDER BY created DESC, id '
            'LIMIT ?', (limit,))]

    def members(self, batch_id: str, start: int, limit: Optional[int]) -> list[str]:
        return [r[0][2:] for r in self._file.q(
            f'SELECT key FROM "{MEMBERS}" WHERE batch = ? AND seq >= ? ORDER BY seq LIMIT ?',
            (batch_id, start, -1 if limit is None else limit))]


def _state(row: tuple) -> "batch_rules.BatchState":
    n = len(batch_rules.CLASSES)
    try:
        described = batch_rules.described(batch_rules.decode_callbacks(row[3 + n]))
    except (RecordDecodeError, ValueError):
        described = ()
    return batch_rules.BatchState(row[0], row[1], row[2], batch_rules.counts_of(row[3:3 + n]), described)


class FileBatchStore:
    """The batch methods of the file store (a mixin of
    :class:`~timewheel.store.sqlite.SqliteDictStore`, which provides what is declared here)."""

    file: StoreFile
    _reader: Any
    _bells: Any
    now: Any
    ring: Any
    _add_in_transaction: Any

    def add_batch(self, batch_id: str, members: Sequence[TaskRecord], *,
                  callbacks: "Optional[Mapping[str, TaskRecord]]" = None, opened: Optional[float] = None
                  ) -> list[TaskRecord]:
        batch_rules.check_members(batch_id, members)
        fb = FileBatches(self.file)
        earliest: Optional[int] = None
        with self.file.writing():
            if callbacks is not None:
                fb.open(batch_id, self.now() if opened is None else opened, callbacks)
            else:
                fb.check_open(batch_id)
            if members:
                added, earliest = self._add_in_transaction(members, "fail")
                fb.add_members(batch_id, [r.id for r in members])
                self._count_members([(None, r) for r in added])   # (a dependent may be cancelled at once)
            offered = fb.settle([batch_id], self.now(), self._add_callbacks)
        self._bells.ring_if_near(earliest)
        if offered:
            self.ring()
        return list(members)

    def _count_members(self, pairs: Sequence[tuple[Optional[TaskRecord], TaskRecord]]) -> int:
        """In the caller's transaction: members changed; their batches' counts follow, and a
        batch left with no open member adds its callbacks (how many were offered)."""
        moves = batch_rules.moves(pairs)
        return FileBatches(self.file).apply(moves, self.now(), self._add_callbacks) if moves else 0

    def _add_callbacks(self, recs: list[TaskRecord]) -> None:
        self._add_in_transaction(recs, "keep")

    def batch(self, batch_id: str) -> "Optional[batch_rules.BatchState]":
        if not self._reader.layout.batches:
            return None
        with self.file.reading():
            return FileBatches(self.file).state(batch_id)

    def batch_members(self, batch_id: str, start: int = 0, limit: Optional[int] = None) -> list[str]:
        if not self._reader.layout.batches:
            return []
        with self.file.reading():
            return FileBatches(self.file).members(batch_id, start, limit)

    def batches(self, *, limit: int = 100) -> "list[batch_rules.BatchState]":
        if not self._reader.layout.batches:
            return []
        with self.file.reading():
            return FileBatches(self.file).newest(limit)

    def sweep_batches(self, limit: int = 100) -> int:
        fb = FileBatches(self.file)
        with self.file.reading():
            if not fb.stalled(1):
                return 0                 # the common case: no write transaction
        with self.file.writing():
            stalled = fb.stalled(limit)
            offered = fb.settle(stalled, self.now(), self._add_callbacks)
        if offered:
            self.ring()
        return len(stalled)
