"""Dependencies on PostgreSQL (issue 23): adds of dependents and outcomes that tasks wait for,
each in one transaction of this store's own (see :mod:`timewheel.deps` for the rules, applied
here in Python on rows read under lock; the SQL functions only write and index).

* An add with ``depends_on`` locks its dependencies' rows (``FOR SHARE``), resolves the new
  records on what they hold, writes them (parked as ``'~deps'`` while they wait: never claimed)
  and the rows of ``deps`` in the same transaction.
* An outcome is written by ``swap`` alone when no task waits for it (one index probe in the
  function); when one does, ``swap`` refuses (SQLSTATE ``TW023``: nothing written) and the
  outcome is written again here, in one transaction with its dependents' changes: its row
  locked and checked, the open ``deps`` rows of every outcome of the walk closed, the
  dependents read ``FOR UPDATE`` and changed as :func:`timewheel.deps.on_outcome` says, and
  all of it written by one ``swap``.  ``swap`` checks after its writes, in a statement of its
  own, so an add that committed while it waited for a row's lock is seen.

A mixin of :class:`~timewheel.store.postgres.PostgresStore`.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Optional, Sequence

from .. import deps
from ..errors import DuplicateTask, StoreError
from ..records import TERMINAL, RecordDecodeError, TaskRecord
from . import rules

try:
    import psycopg
except ImportError:  # pragma: no cover - the store itself says what is missing
    psycopg = None

__all__ = ["PostgresDeps", "DependentsWait", "waits_refused", "depends_json", "depends_from", "Query",
           "Again"]

#: the SQLSTATE of postgres_sql.DEPENDENTS_WAIT
_WAIT = "TW023"


def waits_refused(exc: BaseException) -> bool:
    """Whether a write failed because tasks wait for an outcome it held (nothing written)."""
    return getattr(exc, "sqlstate", None) == _WAIT


class DependentsWait(Exception):
    """A write of this store's was refused because tasks wait for an outcome it held."""


class Again(Exception):
    """What was read changed before the write: roll back and plan again."""


class PostgresDeps:
    """The dependency methods of the PostgreSQL store (which provides what is declared here)."""

    s: str
    readonly: bool
    location: str
    wheel: Any
    liveness: Any
    channel: Any
    _store_id: str
    _pool: Any
    _dog: Any
    _call: Any
    _error: Any
    ring: Any
    now: Any
    dependencies_kept = True  #: see WheelStore.dependencies_kept

    def dependents(self, task_id: str) -> list[str]:
        return [t for (t,) in self._call(f"SELECT e.task FROM {self.s}.deps e WHERE e.dep = %s "
                                         "ORDER BY e.seq", (task_id,))]

    def sweep_dependents(self, limit: int = 100) -> int:
        # (any final status: one a later version adds too)
        rows = self._call(f"SELECT t.id FROM {self.s}.tasks t WHERE t.status NOT IN ('pending', 'running', "
                          f"'broken') AND EXISTS (SELECT FROM {self.s}.deps e WHERE e.dep = t.id AND e.open) "
                          "LIMIT %s", (limit,))
        found = 0
        for (task_id,) in rows:
            rec = self._read_one(task_id)
            if rec is not None and rec.status in TERMINAL:
                self._transaction(lambda conn, rec=rec: self._tell(conn, [rec]))
                found += 1
        if found:
            self.ring()
        return found

    def _read_one(self, task_id: str) -> Optional[TaskRecord]:
        from .postgres import _COLS, decode_row
        rows = self._call(f"SELECT {_COLS} FROM {self.s}.tasks t WHERE t.id = %s", (task_id,))
        try:
            return decode_row(rows[0]) if rows else None
        except RecordDecodeError:
            return None

    def _transaction(self, work: Callable[[Any], Any]) -> Any:
        """``work(conn)`` in one transaction of this store's, again while it raises Again."""
        if self.readonly:
            raise StoreError(f"{self.location} is open read-only")
        while True:
            with self._pool.connection() as conn, self._dog.watch(conn) as done:
                try:
                    with conn.transaction():
                        return work(conn)
                except Again:
                    continue
                except psycopg.errors.DeadlockDetected:
                    continue
                except psycopg.Error as exc:
                    raise self._error(exc, True, done) from None

    def _rows(self, q: "Query", ids: Sequence[str], lock: str) -> dict[str, TaskRecord]:
        """The decodable records of ``ids``, locked (``FOR SHARE``/``FOR UPDATE``) in id order."""
        from .postgres import _COLS, decode_row
        out: dict[str, TaskRecord] = {}
        if not ids:
            return out
        for row in q(f"SELECT {_COLS} FROM {self.s}.tasks t WHERE t.id = ANY(%s::text[]) ORDER BY t.id "
                     f"FOR {lock}", [list(ids)]):
            try:
                out[row[0]] = decode_row(row)
            except RecordDecodeError:
                pass                               # no task one can depend on, or release
        return out

    # -- adds -------------------------------------------------------------------------------------
    def _add_dependent(self, records: Sequence[TaskRecord], existing: str) -> list[TaskRecord]:
        """add() of records of which some have dependencies: one transaction."""
        from .postgres import _COLS, _plan, stored_by_id

        def work(conn: Any) -> tuple[list[TaskRecord], bool]:
            if existing == "fail":
                out, plan, expect = list(records), {r.id: r for r in records}, {}
            else:
                ids = list(dict.fromkeys(r.id for r in records))
                rows = conn.execute(f"SELECT {_COLS} FROM {self.s}.tasks t WHERE t.id = ANY(%s)",
                                    (ids,)).fetchall()
                out, plan, expect = _plan(records, existing, stored_by_id(rows))
                if not plan:
                    return out, False
            resolved, ring = self._add_resolved(_query(conn), list(plan.values()), expect, existing)
            by_id = {r.id: r for r in resolved}
            return [by_id[r.id] if plan.get(r.id) is r else r for r in out], ring

        out, ring = self._transaction(work)
        if ring:
            self.ring()
        return out

    def _add_resolved(self, q: "Query", plan: list[TaskRecord], expect: dict[str, Optional[int]],
                      existing: str = "fail") -> tuple[list[TaskRecord], bool]:
        """In the transaction ``q`` runs statements in (this store's, or an application's):
        ``plan`` (new records, some with dependencies) resolved on its dependencies' rows,
        locked ``FOR SHARE`` (an outcome waits for this add), and written with its rows of
        ``deps``; (the records written, whether to ring)."""
        from .postgres import add_call
        wanted = sorted({d for r in plan for d in r.depends_on} - {r.id for r in plan})
        known = self._rows(q, wanted, "SHARE")
        resolved = deps.resolve_all(plan, known.get, self.now())
        seen = {**known, **{r.id: r for r in resolved}}
        (conflict, ring), = q(*add_call(self.s, [(r, expect.get(r.id)) for r in resolved], self.wheel,
                                        self._store_id))
        if conflict < 0:
            raise StoreError(f"{self.location}: schema holds another store than the one opened")
        if conflict:
            if existing == "fail":
                raise DuplicateTask(f"task id {resolved[conflict - 1].id!r} already exists; "
                                    "nothing was added")
            raise Again()
        edges = [(d, r.id, d in set(deps.edges_of(r, seen.get))) for r in resolved for d in r.depends_on]
        q(f"INSERT INTO {self.s}.deps (dep, task, open) SELECT * FROM unnest(%s::text[], %s::text[], "
          "%s::boolean[]) ON CONFLICT DO NOTHING RETURNING dep",
          [[e[0] for e in edges], [e[1] for e in edges], [e[2] for e in edges]])
        return resolved, ring

    # -- outcomes ---------------------------------------------------------------------------------
    def _swap_waited(self, changes: Sequence[tuple[TaskRecord, TaskRecord]],
                     planned: list[Optional[TaskRecord]]) -> list[Optional[TaskRecord]]:
        """swap() of ``changes`` (``planned``: each new record with its next rev) when tasks
        wait for an outcome among them: one transaction with their changes."""
        from .postgres import _rounds
        out: list[Optional[TaskRecord]] = [None] * len(changes)
        for part in _rounds([k for k, p in enumerate(planned) if p is not None], planned):
            done = self._transaction(lambda conn, part=part: self._write_told(conn, changes, planned, part))
            for k in part:
                out[k] = planned[k] if planned[k].id in done else None      # type: ignore[union-attr]
        self.ring()
        return out

    def _write_told(self, conn: Any, changes: Sequence[tuple[TaskRecord, TaskRecord]],
                    planned: list[Optional[TaskRecord]], part: list[int]) -> set[str]:
        """In ``conn``'s transaction: the changes of ``part`` whose rows are still as expected
        (locked first, as swap would find them), and what their outcomes do to the tasks that
        wait for them; the ids of ``part`` written."""
        ids = [planned[k].id for k in part]                             # type: ignore[union-attr]
        ok = {i for (i,) in conn.execute(
            f"SELECT t.id FROM {self.s}.tasks t JOIN unnest(%s::text[], %s::bigint[]) AS x(id, rev) "
            "ON t.id = x.id AND t.rev = x.rev WHERE t.status <> 'running' OR t.lease IS NULL "
            "OR t.lease <= extract(epoch FROM clock_timestamp()) OR t.owner = %s "
            "ORDER BY t.id FOR UPDATE OF t",
            (ids, [changes[k][0].rev for k in part], self.liveness.token)).fetchall()}
        keep = [k for k in part if planned[k].id in ok]                 # type: ignore[union-attr]
        told = self._walk(conn, [(changes[k][0], planned[k]) for k in keep])   # type: ignore[misc]
        items = [(planned[k], changes[k][0].rev) for k in keep] + told
        self._swap_in(conn, items)
        return {planned[k].id for k in keep}                            # type: ignore[union-attr]

    def _tell(self, conn: Any, outcomes: Sequence[TaskRecord]) -> None:
        """The sweep's: tell the waiting tasks of outcomes already written."""
        self._swap_in(conn, self._walk(conn, [(None, r) for r in outcomes]))

    def _walk(self, conn: Any, written: Sequence[tuple[Optional[TaskRecord], TaskRecord]]
              ) -> list[tuple[TaskRecord, int]]:
        """The work list over the outcomes in ``written``: their open deps rows closed, their
        dependents read under lock and changed (transitively); (record, expected rev) each."""
        todo = [new for old, new in written if deps.concluded(old, new)]
        changed: dict[str, tuple[TaskRecord, TaskRecord]] = {}
        now = self.now()
        while todo:
            dep = todo.pop()
            ids = [t for (t,) in conn.execute(f"UPDATE {self.s}.deps e SET open = false "
                                              "WHERE e.dep = %s AND e.open RETURNING e.task",
                                              (dep.id,)).fetchall()]
            fresh = self._rows(_query(conn), sorted(set(ids) - set(changed)), "UPDATE")
            changed.update((i, (r, r)) for i, r in fresh.items())
            todo += deps.tell(dep, ids, changed, now)
        return [(rules.swapped(s, c), s.rev) for s, c in changed.values() if c is not s]

    def _swap_in(self, conn: Any, items: list[tuple[TaskRecord, int]]) -> None:
        """``swap`` of ``items`` in ``conn``'s transaction; Again unless all were written."""
        from .postgres import _casts, write_args
        if not items:
            return
        rows = conn.execute(f"SELECT * FROM {self.s}.swap(%s, {_casts()}, %s)",
                            [self.liveness.token, *write_args(items, self.wheel), self.channel]).fetchall()
        if len(rows) != len(items):
            raise Again()


#: runs one statement in a transaction and returns its rows
Query = Callable[[str, Sequence[Any]], list]


def _query(conn: Any) -> "Query":
    """A psycopg connection's statements as a Query."""
    return lambda sql, params: conn.execute(sql, params).fetchall()


def depends_json(rec: TaskRecord) -> Optional[str]:
    """A record's dependencies as the ``depends_on`` column keeps them (JSON text; None: none)."""
    return json.dumps(rec.depends_on) if rec.depends_on else None


def depends_from(text: Any) -> Any:
    """The inverse of :func:`depends_json`; anything else is returned as it is, for the
    record's check to name."""
    if text is None:
        return ()
    try:
        value = json.loads(text)
    except (TypeError, ValueError, RecursionError):
        return text
    return tuple(value) if type(value) is list else text
