"""The file store's inbox (timewheel/inbox.py): the table another tool inserts entries into.

``timewheel_inbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, entry TEXT NOT NULL, error TEXT)``:
a tool inserts ``entry`` (one JSON document) and nothing else.  The ticking process takes the
oldest entries whose ``error`` is NULL in, in one write transaction: each becomes a task (added
as ``add`` adds one: its row, its position, the counters) and its row is deleted, or it is set
aside -- its ``error`` set, its row kept for the operator.  Part of the format timewheel/5
(created with the store; a /5 file made before the inbox gets it at its next write open).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from .. import inbox
from ..records import TaskRecord
from .connection import TABLE
from .rules import log
from .sqlite_file import StoreFile

__all__ = ["INBOX", "SCHEMA", "FileInboxStore"]

INBOX = f"{TABLE}_inbox"
SCHEMA = (f'CREATE TABLE IF NOT EXISTS "{INBOX}" (seq INTEGER PRIMARY KEY AUTOINCREMENT, '
          "entry TEXT NOT NULL, error TEXT)",)


class FileInboxStore:
    """The inbox methods of the file store (a mixin of
    :class:`~timewheel.store.sqlite.SqliteDictStore`, which provides what is declared here)."""

    file: StoreFile
    _bells: Any
    _add_in_transaction: Any
    inbox_kept = True

    def take_inbox(self, build: Callable[[inbox.Entry], TaskRecord],
                   limit: int = inbox.PAGE) -> tuple[int, int]:
        f = self.file
        if f.readonly:
            return 0, 0
        with f.reading():    # every tick: an empty inbox costs a read, not the write lock
            if not f.q(f'SELECT 1 FROM "{INBOX}" WHERE error IS NULL LIMIT 1'):
                return 0, 0
        earliest: Optional[int] = None
        with f.writing():
            rows = f.q(f'SELECT seq, entry FROM "{INBOX}" WHERE error IS NULL ORDER BY seq LIMIT ?', (limit,))
            if not rows:
                return 0, 0
            tasks, bad = inbox.sort(rows, build, lambda ids: [k[2:] for (k,) in f.q(
                f'SELECT key FROM "{TABLE}" WHERE key IN ({",".join("?" * len(ids))})',
                ["t:" + i for i in ids])])
            if tasks:
                _, earliest = self._add_in_transaction([rec for _, rec in tasks], "fail")
                f.many(f'DELETE FROM "{INBOX}" WHERE seq = ?', [(seq,) for seq, _ in tasks])
            f.many(f'UPDATE "{INBOX}" SET error = ? WHERE seq = ?', [(why, seq) for seq, why in bad])
        for seq, why in bad:
            log.error("inbox entry %s of %s set aside: %s", seq, f.path, why)
        self._bells.ring_if_near(earliest)
        return len(tasks), len(bad)

    def inbox_sizes(self) -> Optional[tuple[int, int]]:
        with self.file.reading():
            if not self.file.has_table(INBOX):
                return None
            ((waiting, aside),) = self.file.q(f'SELECT count(*) - count(error), count(error) FROM "{INBOX}"')
        return int(waiting), int(aside)

    def inbox_rejected(self, limit: int = 100) -> list[tuple[str, str]]:
        with self.file.reading():
            if not self.file.has_table(INBOX):        # a read-only open of an older format
                return []
            return [(str(e), str(w)) for e, w in self.file.q(
                f'SELECT entry, error FROM "{INBOX}" WHERE error IS NOT NULL ORDER BY seq LIMIT ?', (limit,))]
