"""The PostgreSQL store's inbox (timewheel/inbox.py): the table ``{schema}.inbox`` another tool
inserts entries into (``INSERT INTO timewheel.inbox (entry) VALUES ('{...}')``), part of the
schema's version 4.

The ticking process takes the oldest entries whose ``error`` is NULL in, in one transaction on
one of its connections: their rows locked (``FOR UPDATE SKIP LOCKED``: a second taker takes
others or none), the tasks added by the store's own ``add`` function, the rows of the tasks
deleted and the others' ``error`` set.  A rollback leaves every entry where it was.
"""

from __future__ import annotations

from typing import Any, Callable

from .. import inbox
from ..records import TaskRecord
from .rules import log

__all__ = ["PostgresInbox", "schema"]


def schema(s: str) -> list[str]:
    """The inbox table of schema ``s`` (quoted)."""
    return [f"CREATE TABLE IF NOT EXISTS {s}.inbox (seq bigserial PRIMARY KEY, entry text NOT NULL, "
            "error text)"]


class PostgresInbox:
    """The inbox methods of the PostgreSQL store (a mixin of
    :class:`~timewheel.store.postgres.PostgresStore`, which provides what is declared here)."""

    s: str
    readonly: bool
    location: str
    _pool: Any
    _dog: Any
    _error: Any
    _call: Any
    through: Any
    ring: Any
    inbox_kept = True

    def take_inbox(self, build: Callable[[inbox.Entry], TaskRecord],
                   limit: int = inbox.PAGE) -> tuple[int, int]:
        if self.readonly:
            return 0, 0
        import psycopg
        s = self.s
        # every tick: an empty inbox costs one round trip (the transaction below costs three)
        if not self._call(f"SELECT 1 FROM {s}.inbox WHERE error IS NULL LIMIT 1"):
            return 0, 0
        with self._pool.connection() as conn, self._dog.watch(conn) as done:
            try:
                with conn.transaction():
                    rows = conn.execute(f"SELECT seq, entry FROM {s}.inbox WHERE error IS NULL ORDER BY seq "
                                        "LIMIT %s FOR UPDATE SKIP LOCKED", (limit,)).fetchall()
                    if not rows:
                        return 0, 0
                    tasks, bad = inbox.sort(rows, build, lambda ids: [r[0] for r in conn.execute(
                        f"SELECT id FROM {s}.tasks WHERE id = ANY(%s::text[])", (ids,)).fetchall()])
                    if tasks:
                        self.through(conn).add([rec for _, rec in tasks])
                        conn.execute(f"DELETE FROM {s}.inbox WHERE seq = ANY(%s::bigint[])",
                                     ([seq for seq, _ in tasks],))
                    for seq, why in bad:
                        conn.execute(f"UPDATE {s}.inbox SET error = %s WHERE seq = %s", (why, seq))
            except psycopg.Error as exc:
                raise self._error(exc, True, done) from None
        for seq, why in bad:
            log.error("inbox entry %s of %s set aside: %s", seq, self.location, why)
        if tasks:
            self.ring()
        return len(tasks), len(bad)

    def inbox_sizes(self) -> "tuple[int, int] | None":
        ((waiting, aside),) = self._call(f"SELECT count(*) - count(error), count(error) FROM {self.s}.inbox")
        return int(waiting), int(aside)

    def inbox_rejected(self, limit: int = 100) -> list[tuple[str, str]]:
        return [(e, w) for e, w in self._call(
            f"SELECT entry, error FROM {self.s}.inbox WHERE error IS NOT NULL ORDER BY seq LIMIT %s",
            (limit,))]
