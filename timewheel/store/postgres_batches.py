"""Batches on PostgreSQL (issue 23): opening a batch and adding its members in one transaction,
and reading batches back.  The batch functions of :mod:`timewheel.store.postgres_sql` keep the
counts and add the callbacks in the transaction of each member's outcome.  A mixin of
:class:`~timewheel.store.postgres.PostgresStore`."""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

from .. import batches as batch_rules
from ..errors import BatchClosed, BatchNotFound, DuplicateTask, StoreError
from ..records import TaskRecord
from . import postgres_sql as pgsql

try:
    import psycopg
except ImportError:  # pragma: no cover - the store itself says what is missing
    psycopg = None

__all__ = ["PostgresBatches"]


def _batch_cols(s: str) -> str:
    """What a read of batch rows ``b`` selects: its columns, then (event, id, name) of its callbacks."""
    return ("b.id, b.created, b.done, b.open, b.succeeded, b.failed, b.cancelled, b.misfired, b.aborted, "
            f"ARRAY(SELECT ARRAY[c.event, c.id, c.name] FROM {s}.batch_callbacks c WHERE c.of_batch = b.id)")


def _batch_state(row: Sequence[Any]) -> "batch_rules.BatchState":
    n = len(batch_rules.CLASSES)
    described = {e: (e, i, n) for e, i, n in row[3 + n]}
    return batch_rules.BatchState(row[0], row[1], row[2], batch_rules.counts_of(row[3:3 + n]),
                                  tuple(described[e] for e in batch_rules.EVENTS if e in described))


class PostgresBatches:
    """The batch methods of the PostgreSQL store (which provides what is declared here)."""

    s: str
    schema: str
    location: str
    readonly: bool
    wheel: Any
    _where: str
    _pool: Any
    _dog: Any
    _call: Any
    _copy_in: Any
    _add_resolved: Any
    _first_taken: Any
    _error: Any
    now: Any
    ring: Any

    def add_batch(self, batch_id: str, members: Sequence[TaskRecord], *,
                  callbacks: "Optional[Mapping[str, TaskRecord]]" = None, opened: Optional[float] = None
                  ) -> list[TaskRecord]:
        batch_rules.check_members(batch_id, members)
        if self.readonly:
            raise StoreError(f"{self.location} is open read-only")
        from .postgres import _columns  # (it imports this module)
        s, ring = self.s, False
        cols = ", ".join(c for c, _ in pgsql.WRITE_COLUMNS)
        with self._pool.connection() as conn, self._dog.watch(conn) as done:
            try:
                with conn.transaction():
                    if callbacks is not None:
                        made = conn.execute(f"INSERT INTO {s}.batches (id, created) VALUES (%s, %s) "
                                            "ON CONFLICT (id) DO NOTHING RETURNING id",
                                            (batch_id, self.now() if opened is None else opened)).fetchall()
                        if not made:
                            raise BatchClosed(f"batch {batch_id!r} already exists; nothing was added")
                        for event, rec in callbacks.items():
                            values = _columns(rec, self.wheel)
                            conn.execute(f"INSERT INTO {s}.batch_callbacks (of_batch, event, {cols}) VALUES "
                                         f"(%s, %s, {', '.join(['%s'] * len(values))})",
                                         (batch_id, event, *values))
                    else:
                        state = conn.execute(f"SELECT done FROM {s}.batches WHERE id = %s FOR UPDATE",
                                             (batch_id,)).fetchall()
                        if not state:
                            raise BatchNotFound(f"no batch {batch_id!r} in {self.location}; "
                                                "nothing was added")
                        if state[0][0] is not None:
                            raise BatchClosed(f"batch {batch_id} is done (its callbacks were added); "
                                              "nothing was added")
                    moved = {batch_rules.OPEN: len(members)}
                    if any(r.depends_on for r in members):      # (issue 23: postgres_deps.py)
                        added, ring = self._add_resolved(lambda q, p: conn.execute(q, p).fetchall(),
                                                         list(members), {})
                        moved = batch_rules.moves([(None, r) for r in added])[batch_id]
                    elif members:
                        got = self._copy_in(conn, members)
                        if got is None:
                            raise StoreError(f"{self._where}: schema {self.schema!r} holds another "
                                             "store than the one opened; nothing was written")
                        ring = got
                    if members:
                        conn.execute(f"INSERT INTO {s}.members (batch, seq, id) SELECT %s, b.base + u.k, "
                                     "u.id FROM unnest(%s::text[]) WITH ORDINALITY AS u(id, k), (SELECT "
                                     f"coalesce(max(seq), 0) AS base FROM {s}.members WHERE batch = %s) b",
                                     (batch_id, [r.id for r in members], batch_id))
                        conn.execute(f"UPDATE {s}.batches SET "
                                     + ", ".join(f"{c} = {c} + %s" for c in moved) + " WHERE id = %s",
                                     (*moved.values(), batch_id))
                    (added,), = conn.execute(f"SELECT {s}.finish_batch(%s)", (batch_id,)).fetchall()
                    ring = ring or added > 0
            except psycopg.errors.UniqueViolation:
                raise DuplicateTask(f"task id {members[self._first_taken(members) - 1].id!r} already exists; "
                                    "nothing was added") from None
            except psycopg.Error as exc:
                raise self._error(exc, True, done) from None
        if ring:
            self.ring()
        return list(members)

    def batch(self, batch_id: str) -> "Optional[batch_rules.BatchState]":
        rows = self._call(f"SELECT {_batch_cols(self.s)} FROM {self.s}.batches b WHERE b.id = %s",
                          (batch_id,))
        return _batch_state(rows[0]) if rows else None

    def batch_members(self, batch_id: str, start: int = 0, limit: Optional[int] = None) -> list[str]:
        return [i for (i,) in self._call(
            f"SELECT id FROM {self.s}.members WHERE batch = %s AND seq > %s ORDER BY seq LIMIT %s",
            (batch_id, start, limit))]

    def batches(self, *, limit: int = 100) -> "list[batch_rules.BatchState]":
        return [_batch_state(r) for r in self._call(
            f"SELECT {_batch_cols(self.s)} FROM {self.s}.batches b ORDER BY b.created DESC, b.id LIMIT %s",
            (limit,))]

    def sweep_batches(self, limit: int = 100) -> int:
        stalled = self._call(f"SELECT id FROM {self.s}.batches WHERE done IS NULL AND open <= 0 LIMIT %s",
                             (limit,))
        for (batch_id,) in stalled:
            self._call(f"SELECT {self.s}.finish_batch(%s)", (batch_id,), write=True)
        if stalled:
            self.ring()
        return len(stalled)
