"""Dependencies on Redis (issue 23): what the store's PUT script is handed so that a dependent
is added, released or cancelled in the same script as the write it follows from (see
:mod:`timewheel.store.redis_lua`, PUT: the keys ``waiting``, ``dq:<id>``, ``dl:<id>``).

A script cannot re-encode a record, so :mod:`timewheel.deps` decides in Python, on what it
read, and the script writes all of it or nothing, checking that what was read is still what is
stored: each dependency an add waits for is still at the ``rev`` read (it has not finished
meanwhile, or the add is planned again), and an outcome's script holds the changes to every
task that waits for it (the SET ``dq:<id>`` still has the members read; else planned again).
An outcome written without them -- the common case: a task nobody waits for costs one EXISTS
in the script, no round trip -- is refused by the script if someone does wait, and written
again here with its dependents' changes.  A mixin of :class:`~timewheel.store.redis.RedisStore`.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from .. import deps
from ..errors import DuplicateTask, StoreError
from ..records import TERMINAL, RecordDecodeError, TaskRecord
from . import rules
from .redis_client import text as _text

__all__ = ["RedisDeps"]

#: PUT's batch values when it touches no batch (see redis_lua.PUT)
_NO_BATCH = ("", "", "", 0)


class RedisDeps:
    """The dependency methods of the Redis store (it provides what is declared here)."""

    _put: Any
    _item: Any
    _io: Any
    _hashes: Any
    _plan: Any
    _record_of: Any
    keys: Any
    location: str
    now: Any
    dependencies_kept = True  #: see WheelStore.dependencies_kept

    def dependents(self, task_id: str) -> list[str]:
        key = self.keys.prefix + "dl:" + task_id
        return [_text(i) for i in self._io(lambda c: c.lrange(key, 0, -1))]

    def sweep_dependents(self, limit: int = 100) -> int:
        """One SCAN step over the ``dq:`` sets (a cursor kept between calls, once a minute):
        those of a finished task are handed its outcome again (its record rewritten as it is,
        with its dependents' changes: redis_deps._conclude)."""
        pattern = self.keys.prefix.replace("{", "\\{").replace("}", "\\}") + "dq:*"
        at = self.__dict__.get("_sweep_at", 0)
        cursor, keys = self._io(lambda c: c.scan(at, match=pattern, count=limit))
        self.__dict__["_sweep_at"] = int(cursor)
        found = 0
        for key in keys:
            task_id = _text(key)[len(self.keys.prefix) + 3:]
            fields = self._io(lambda c, i=task_id: c.hgetall(self.keys.prefix + "t:" + i))
            try:
                rec = self._record_of(fields) if fields else None
            except RecordDecodeError:
                rec = None
            if rec is not None and rec.status in TERMINAL:
                self._conclude(rec, rules.swapped(rec, rec))
                found += 1
        return found

    def _add_with_deps(self, records: Sequence[TaskRecord], existing: str) -> list[TaskRecord]:
        """add() of records with dependencies (issue 23: redis_deps.py), planned again while a
        dependency or a stored record changes under it."""
        if existing == "fail":
            rules.check_distinct(records)
        while True:
            if existing == "fail":
                out, plan, expect = list(records), {r.id: r for r in records}, {}
            else:
                out, plan, expect = self._plan(records, existing)
                if not plan:
                    return out
            try:
                written = self._add_dependent(list(plan.values()), expect)
            except _Refused:
                if existing == "fail":
                    raise DuplicateTask("a task id is given twice or already exists; nothing was added"
                                        ) from None
                continue
            if written is not None:
                by_id = {r.id: r for r in written}
                return [by_id[r.id] if plan.get(r.id) is r else r for r in out]

    def _swapped(self, changes: Sequence[tuple[TaskRecord, TaskRecord]], planned: list[Optional[TaskRecord]],
                 done: Sequence[Any]) -> list[Optional[TaskRecord]]:
        """What PUT 'each' did with each planned record: written (1), refused (0), or left for
        the tasks that wait for it (2): then written with their changes (redis_deps.py)."""
        results = iter(int(x) for x in done)
        out: list[Optional[TaskRecord]] = []
        for (old, _), p in zip(changes, planned):
            r = 0 if p is None else next(results)
            out.append(p if r == 1 else self._conclude(old, p) if r == 2 and p is not None else None)
        return out

    def _with_deps(self, plan: Sequence[TaskRecord]) -> tuple[list[TaskRecord], list[Any]]:
        """An add's records with their dependencies resolved (TaskNotFound: nothing is written)
        and PUT's operations: the index entries, and a check of each unfinished dependency's
        rev (if it finished meanwhile, the add is planned again)."""
        new_ids = {r.id for r in plan}
        ids = list(dict.fromkeys(d for r in plan for d in r.depends_on if d not in new_ids))
        known: dict[str, TaskRecord] = {}
        revs: dict[str, str] = {}
        for task_id, fields in zip(ids, self._hashes(ids)):
            if fields:
                try:
                    known[task_id] = self._record_of(fields)
                except RecordDecodeError:
                    continue                       # no task one can depend on
                revs[task_id] = _text(fields.get(b"v", b""))
        resolved = deps.resolve_all(list(plan), known.get, self.now())
        seen = {**known, **{r.id: r for r in resolved}}
        ops: list[Any] = []
        checked: set[str] = set()
        for rec in resolved:
            waits = set(deps.edges_of(rec, seen.get))
            for d in rec.depends_on:
                ops += ["edge", d, rec.id]
                if d in waits:
                    ops += ["wait", d, rec.id]
                    if d in revs and d not in checked:
                        ops += ["rev", d, revs[d]]
                        checked.add(d)
        return resolved, ops

    def _add_dependent(self, plan: Sequence[TaskRecord], expect: dict[str, Any],
                       batch: Sequence[Any] = _NO_BATCH) -> Optional[list[TaskRecord]]:
        """PUT 'all' of an add's ``plan`` with dependencies: the records written, or None if
        a dependency changed meanwhile (plan again).  Raises what PUT's other refusals mean
        as the caller's ``_refused`` says (their codes are returned in ``res``)."""
        resolved, ops = self._with_deps(plan)
        res = self._put("all", [self._item(r, expect.get(r.id)) for r in resolved], batch, ops)
        if res[0] == 1:
            return resolved
        if res[1] == -4:
            return None
        if res[1] == -5:
            raise StoreError(f"{self.location}: a task others wait for cannot be replaced by one that is "
                             "cancelled at once (a dependency of it failed); nothing was added")
        raise _Refused(res[1])

    def _conclude(self, old: TaskRecord, new: TaskRecord) -> Optional[TaskRecord]:
        """Write the outcome ``new`` over ``old`` (``new`` has its next rev) together with what
        it does to the tasks waiting for it, and for those it cancels, and so on (a work list):
        one script.  None if ``old`` is no longer what is stored (as a swap refuses)."""
        while True:
            now = self.now()
            changed: dict[str, tuple[TaskRecord, TaskRecord]] = {}    # id -> (as stored, as it becomes)
            ops: list[Any] = []
            todo = [new]
            while todo:
                dep = todo.pop()
                key = self.keys.prefix + "dq:" + dep.id
                members = sorted(_text(m) for m in self._io(lambda c, k=key: c.smembers(k)))
                ops += ["set", dep.id, len(members)]
                unread = [m for m in members if m not in changed]
                for task_id, fields in zip(unread, self._hashes(unread)):
                    try:
                        rec = self._record_of(fields) if fields else None
                    except RecordDecodeError:
                        rec = None
                    if rec is not None:
                        changed[task_id] = (rec, rec)
                todo += deps.tell(dep, members, changed, now)
            items = [self._item(new, old.rev)] + [self._item(rules.swapped(s, c), s.rev)
                                                  for s, c in changed.values() if c is not s]
            res = self._put("all", items, _NO_BATCH, ops)
            if res[0] == 1:
                return new
            if res[1] == 1:
                return None                         # the outcome's own record changed
            # a waiting task, or who waits, changed meanwhile: plan again


class _Refused(Exception):
    """PUT refused an add for a reason its caller names (a code of redis_lua.PUT)."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code
