"""Aborting a running task in the file store (issue 23): the request (and a run's progress)
written into the running record without moving its ``rev``
(:meth:`~timewheel.store.WheelStore.note`), and read back for all of one process's runs at
once (:meth:`~timewheel.store.WheelStore.aborting`).  A mixin of
:class:`~timewheel.store.sqlite.SqliteDictStore`, which provides what is declared here."""

from __future__ import annotations

from typing import Sequence

from ..records import RUNNING, RecordDecodeError, TaskRecord, decode_record, encode_record
from . import positions, rules
from .connection import RECORD, TABLE
from .sqlite_file import StoreFile

__all__ = ["FileAborts"]


class FileAborts:
    file: StoreFile

    def note(self, old: TaskRecord, new: TaskRecord) -> bool:
        fields = rules.noted(old, new)
        f, key = self.file, "t:" + old.id
        with f.writing():
            rows = f.q(f'SELECT {RECORD} FROM "{TABLE}" WHERE key = ?', (key,))
            try:
                cur = decode_record(rows[0][0]) if rows else None
            except RecordDecodeError:
                cur = None
            if cur is None or cur.status != RUNNING or cur.rev != old.rev:
                return False
            f.x(f'UPDATE "{TABLE}" SET value = ? WHERE key = ?', (encode_record(cur._replace(**fields)), key))
        return True

    def aborting(self, owner: str, running: Sequence[TaskRecord]) -> dict[str, float]:
        # The rows of this owner's runs, by the position index: a few records a tick, read
        # from the page cache, not a query per task.
        revs = {r.id: r.rev for r in running}
        with self.file.reading():
            rows = self.file.q(f'SELECT key, {RECORD} FROM "{TABLE}" WHERE pos = ?',
                               (positions.running(owner),))
        out: dict[str, float] = {}
        for key, blob in rows:
            try:
                cur = decode_record(blob)
            except RecordDecodeError:
                continue                  # (the ticking process sets it aside)
            if cur.abort is not None and revs.get(key[2:]) == cur.rev:
                out[cur.id] = cur.abort
        return out
