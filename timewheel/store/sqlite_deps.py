"""Dependencies in the file store (issue 23): the index a write reads and changes besides the
tasks, inside that write's transaction -- what :mod:`timewheel.deps` decides is applied here.

=====================  ===========================================================================
``timewheel_deps``     (dependency id, dependent id, open): one row per dependency of each task
                       added with ``depends_on``, in the order added; ``open`` while the dependent
                       still waits for that dependency's outcome (the write that records it
                       reads the open rows -- one index range -- and closes them); the rows stay,
                       for ``timewheel show``, until the dependency is purged
=====================  ===========================================================================

A waiting dependent is pending at a parked position of its own (``l:`` + :data:`WAITING`, see
store/positions.py): not in the wheel, never ready, never claimed; counted as pending at its
eta's tick, as a task parked on a limit is.  Released, it moves to the wheel or the ready queue.
"""

from __future__ import annotations

import sqlite3
from typing import Any, Iterable, Optional, Sequence

from .. import deps
from ..errors import DuplicateTask
from ..records import PENDING, RecordDecodeError, TaskRecord, decode_record, encode_record
from . import positions
from .connection import TABLE
from .sqlite_file import StoreFile
from .sqlite_flow import FileFlow

__all__ = ["SCHEMA", "DEPS", "FileDeps", "FileDepsStore"]

DEPS = f"{TABLE}_deps"

SCHEMA = (
    f'CREATE TABLE IF NOT EXISTS "{DEPS}" (dep TEXT NOT NULL, task TEXT NOT NULL, '
    "open INTEGER NOT NULL DEFAULT 1, UNIQUE (dep, task))",
    f'CREATE INDEX IF NOT EXISTS "{DEPS}_open" ON "{DEPS}" (dep) WHERE open = 1',
)


class FileDeps:
    """The dependency index, inside the caller's transaction of ``file``."""

    def __init__(self, file: StoreFile) -> None:
        self._file = file

    def add(self, edges: Iterable[tuple[str, str, bool]]) -> None:
        """(dependency, dependent, open) rows; a row already there is left as it is."""
        self._file.many(f'INSERT OR IGNORE INTO "{DEPS}" (dep, task, open) VALUES (?, ?, ?)',
                        [(d, t, int(o)) for d, t, o in edges])

    def take(self, dep: str) -> list[str]:
        """The dependents still waiting for ``dep``'s outcome, which is being recorded: their
        rows close (a dependency reaches a final status once per run; a later run, after a
        retry by hand or a replacement, finds nothing open)."""
        f = self._file
        ids = [t for (t,) in f.q(f'SELECT task FROM "{DEPS}" WHERE dep = ? AND open = 1 ORDER BY rowid',
                                 (dep,))]
        if ids:
            f.x(f'UPDATE "{DEPS}" SET open = 0 WHERE dep = ? AND open = 1', (dep,))
        return ids

    def any_open(self) -> bool:
        """Whether any task waits for any other (most stores: none)."""
        return bool(self._file.q(f'SELECT 1 FROM "{DEPS}" WHERE open = 1 LIMIT 1'))

    def dependents(self, dep: str) -> list[str]:
        return [t for (t,) in self._file.q(f'SELECT task FROM "{DEPS}" WHERE dep = ? ORDER BY rowid', (dep,))]

    def forget(self, deps: Sequence[str]) -> None:
        """The rows of purged dependencies."""
        self._file.many(f'DELETE FROM "{DEPS}" WHERE dep = ?', [(d,) for d in deps])


class FileDepsStore:
    """The dependency methods of the file store (a mixin of
    :class:`~timewheel.store.sqlite.SqliteDictStore`, which provides what is declared here)."""

    file: StoreFile
    wheel: Any
    _reader: Any
    now: Any
    ring: Any
    _swap_in_transaction: Any

    def _resolve(self, records: Sequence[TaskRecord]) -> tuple[list[TaskRecord], dict[str, TaskRecord]]:
        """An add's new records with their dependencies resolved (deps.resolve_all: TaskNotFound
        before anything is written), and the dependencies' records as the add sees them."""
        ids = {d for r in records for d in r.depends_on}
        rows = self._reader.fetch(["t:" + i for i in ids])
        known = {key[2:]: rec for key, row in rows.items() if (rec := _record(row)) is not None}
        out = deps.resolve_all(records, known.get, self.now())
        known.update((r.id, r) for r in out)
        return out, known

    def _index(self, records: Sequence[TaskRecord], known: dict[str, TaskRecord], horizon: int) -> None:
        """In the add's transaction: the dependency index of its records (open rows for the
        dependencies each waits for; closed ones for those already finished, for show)."""
        waits = {r.id: set(deps.edges_of(r, known.get)) for r in records if r.depends_on}
        FileDeps(self.file).add((d, r.id, d in waits[r.id]) for r in records if r.depends_on
                                for d in r.depends_on)

    def _finished_at_add(self, records: Sequence[TaskRecord], horizon: int, counters: Any
                         ) -> list[TaskRecord]:
        """In the add's transaction: insert its dependents cancelled at once (a dependency had
        already failed), counted; the pending records are left for the store's insert."""
        done = [r for r in records if r.status != PENDING]
        if done:
            try:
                self.file.many(f'INSERT INTO "{TABLE}" (key, value, pos, name) VALUES (?, ?, ?, ?)',
                               [("t:" + r.id, encode_record(r), positions.of(r, horizon, self.wheel), r.name)
                                for r in done])
            except sqlite3.IntegrityError:
                raise DuplicateTask("a task id is given twice or already exists; nothing was added") from None
            for r in done:
                counters.move(None, (r.status, r.name, None))
        return [r for r in records if r.status == PENDING]

    def sweep_dependents(self, limit: int = 100) -> int:
        from .sqlite_format import horizon_of  # (it imports this module)
        f = self.file
        if not self._reader.layout.batches:
            return 0
        finished = (f'SELECT DISTINCT d.dep FROM "{DEPS}" d JOIN "{TABLE}" '
                    f'ON "{TABLE}".key = \'t:\' || d.dep WHERE d.open = 1 AND {positions.IS_FINISHED} '
                    "LIMIT ?")
        with f.reading():                        # one join over the open rows, once a minute
            if not f.q(finished, (1,)):
                return 0
        with f.writing():
            ids = [d for (d,) in f.q(finished, (limit,))]
            rows = self._reader.fetch(["t:" + i for i in ids])
            done = [rec for row in rows.values() if (rec := _record(row)) is not None]
            fl = FileFlow(f, self.wheel)
            self._tell_dependents([(None, rec) for rec in done], horizon_of(f), fl)
        self.ring()
        return len(done)

    def dependents(self, task_id: str) -> list[str]:
        if not self._reader.layout.batches:
            return []
        with self.file.reading():
            return FileDeps(self.file).dependents(task_id)

    def _tell_dependents(self, written: Sequence[tuple[TaskRecord, Optional[TaskRecord]]], horizon: int,
                         fl: Any) -> None:
        """In the caller's transaction: the dependents of the outcomes it recorded are released
        or cancelled (deps.on_outcome), and the dependents of those it cancelled, and so on:
        a work list, level by level, never a recursion."""
        todo = [new for old, new in written if new is not None and deps.concluded(old, new)]
        fd = FileDeps(self.file)
        if not todo or not fd.any_open():         # one index probe per write, not per outcome
            return
        now = self.now()
        while todo:
            dep = todo.pop()
            ids = fd.take(dep.id)
            if not ids:
                continue
            rows = self._reader.fetch(["t:" + i for i in ids])
            changes = []
            for i in ids:
                cur = _record(rows["t:" + i]) if "t:" + i in rows else None
                new = None if cur is None else deps.on_outcome(dep, cur, now)
                if new is not None and cur is not None:
                    changes.append((cur, new))
            stored = self._swap_in_transaction(changes, horizon, fl, tell=False)
            todo += [s for (c, _), s in zip(changes, stored) if s is not None and deps.concluded(c, s)]
            fl.released += sum(1 for s in stored if s is not None and s.status == PENDING)



def _record(row: tuple) -> Optional[TaskRecord]:
    """The record of a (value, ...) row; None if it cannot be decoded (no task one can depend
    on, nor one to release: it is set aside as broken when it is claimed)."""
    try:
        return decode_record(row[0])
    except RecordDecodeError:
        return None
