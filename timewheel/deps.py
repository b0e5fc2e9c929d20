"""Dependencies between tasks, pure (issue 23): what a dependency's outcome means for the tasks
that wait for it, and what a new dependent is when it is added.  No I/O, no clock: every store
applies these in the transactions that write records (memory, file, Redis and PostgreSQL: the
last two plan in Python on what they read, and their script or transaction writes it all or
refuses what changed meanwhile).

A task added with ``depends_on=(a, b)`` (its record's :attr:`~timewheel.records.TaskRecord.depends_on`)
runs once every dependency has **succeeded** and its own eta has passed.  Until then it is
pending but *waiting*: its record counts the dependencies that have not succeeded yet
(``waiting``), and the store keeps it out of the wheel and the ready queue -- parked, as flow
control parks a task held back by a limit, never claimed and put back.  The store keeps an
index from each unfinished dependency to its dependents, so that the write that records a
dependency's outcome finds them (O(dependents), never a scan) and applies :func:`on_outcome`
to each *in that same transaction*:

* the dependency **succeeded**: the dependent's count goes down by one; at zero it is released
  (placed in the wheel, or made ready if due) -- a ``then`` dependent gets the dependency's
  stored result copied into ``given``, its first argument when it runs;
* it ended in **any other final status** (failed for good, cancelled, misfired, or a final
  status a later version adds): the dependent is cancelled with a reason naming the dependency
  (:func:`reason`) -- and that cancellation is itself a final status other than succeeded, so
  the dependent's own dependents follow, in the same transaction.  The stores walk the chain
  with a work list, never by recursion: a chain of 1,000 cancels in one write.

A dependent never waits forever: every dependency either reaches a final status (its outcome
is recorded by the same write that applies this) or is still pending or running.  A cycle
cannot be built: a dependency must already be stored, or precede its dependent in the same
atomic add, when the dependent is added (:func:`resolve` raises TaskNotFound otherwise).

Cost: a dependency with N dependents costs N record writes in its outcome's transaction (each
dependent's count), a task with K dependencies K index entries at its add and one write per
dependency that succeeds; nothing else reads the other dependencies.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

from .errors import TaskNotFound
from .records import CANCELLED, MAX_DEPENDENCIES, PENDING, SUCCEEDED, TERMINAL, TaskRecord

__all__ = ["check_dependencies", "reason", "resolve", "resolve_all", "concluded", "on_outcome", "tell",
           "edges_of", "waiting_on", "has_dependencies", "Cascade"]


def check_dependencies(values: Any) -> tuple[str, ...]:
    """``depends_on=``: a list (or tuple, set) of task handles or ids -> the ids, each once, in
    the order given.  A single handle or id is taken as one dependency."""
    if isinstance(values, str) or hasattr(values, "id") and not isinstance(values, (list, tuple)):
        values = (values,)
    if not isinstance(values, (list, tuple, set, frozenset)):
        raise TypeError(f"depends_on= takes task handles or ids (a list of them), "
                        f"got {type(values).__name__}")
    out: dict[str, None] = {}
    for v in values:
        task_id = v if isinstance(v, str) else getattr(v, "id", None)
        if not isinstance(task_id, str) or not 0 < len(task_id) <= 200:
            raise TypeError(f"depends_on= takes task handles or ids, got {type(v).__name__} {str(v)[:60]!r}")
        out[task_id] = None
    if len(out) > MAX_DEPENDENCIES:
        raise ValueError(f"a task may depend on at most {MAX_DEPENDENCIES} tasks, got {len(out)}")
    return tuple(out)


def reason(dependency_id: str, status: str) -> str:
    """The error a dependent is cancelled with, naming the dependency and how it ended."""
    return f"cancelled: its dependency {dependency_id} ended {status}, not succeeded"


def _cancelled(rec: TaskRecord, dependency_id: str, status: str, now: float) -> TaskRecord:
    return rec._replace(status=CANCELLED, finished=now, waiting=0, error=reason(dependency_id, status))


def resolve(rec: TaskRecord, stored: Callable[[str], Optional[TaskRecord]], now: float) -> TaskRecord:
    """What a store writes for a new pending ``rec`` with dependencies, given what each
    dependency's id holds (``stored``: the stored record, or one added earlier in the same
    atomic add; None: nothing).  Raises :class:`TaskNotFound` for an unknown id (the store
    writes nothing).

    * Every dependency succeeded: ``rec`` as it is (runs at its eta), a ``then`` dependent with
      the result ``given``.
    * One ended in another final status: ``rec`` cancelled with the reason, at once -- it can
      never run, and a waiting task nobody could ever release is what this design refuses
      (River and Oban Pro cancel a job whose upstream failed or was cancelled; RQ leaves it
      deferred for ever).
    * Otherwise waiting for the ones not finished yet.
    """
    waiting = 0
    given = rec.given
    for dep_id in rec.depends_on:
        dep = stored(dep_id)
        if dep is None:
            raise TaskNotFound(f"task {rec.id} depends on {dep_id}, which is not in the store (a "
                               "dependency must exist, or precede it in the same batch); nothing was added")
        if dep.status == SUCCEEDED:
            if rec.takes_result:
                given = dep.result
        elif dep.status in TERMINAL:
            return _cancelled(rec, dep_id, dep.status, now)
        else:
            waiting += 1
    return rec._replace(waiting=waiting, given=given)


def concluded(old: Optional[TaskRecord], new: TaskRecord) -> bool:
    """Whether the write of ``new`` over ``old`` is a task's outcome its dependents must hear
    of: it enters a final status."""
    return new.status in TERMINAL and (old is None or old.status not in TERMINAL)


def on_outcome(dependency: TaskRecord, dependent: TaskRecord, now: float) -> Optional[TaskRecord]:
    """What the write recording ``dependency``'s final status does to ``dependent``: its count
    one down (released at zero; a ``then`` dependent gets the result), or cancelled with the
    reason.  None: nothing to change (it waits for no such dependency any more: cancelled or
    retried by hand meanwhile, or replaced by a task that does not depend on it)."""
    if dependent.status != PENDING or dependent.waiting <= 0 or dependency.id not in dependent.depends_on:
        return None
    if dependency.status != SUCCEEDED:
        return _cancelled(dependent, dependency.id, dependency.status, now)
    if dependent.takes_result:
        return dependent._replace(waiting=dependent.waiting - 1, given=dependency.result)
    return dependent._replace(waiting=dependent.waiting - 1)


def tell(dep: TaskRecord, waiting: Iterable[str], changed: dict, now: float) -> list[TaskRecord]:
    """One step of a store's walk: ``dep``'s outcome told to the tasks ``waiting`` for it,
    as ``changed`` holds them (id -> (as stored, as it becomes): updated here).  Returns the
    outcomes it made (cancelled tasks: their own dependents are next)."""
    made = []
    for task_id in waiting:
        if task_id in changed:
            stored, cur = changed[task_id]
            nxt = on_outcome(dep, cur, now)
            if nxt is not None:
                changed[task_id] = (stored, nxt)
                if concluded(cur, nxt):
                    made.append(nxt)
    return made


def edges_of(rec: TaskRecord, stored: Callable[[str], Optional[TaskRecord]]) -> list[str]:
    """The dependencies a just-resolved ``rec`` waits for (the index entries a store adds for
    it): those not finished yet."""
    if not rec.waiting or rec.status != PENDING:
        return []
    out = []
    for dep_id in rec.depends_on:
        dep = stored(dep_id)
        if dep is not None and dep.status not in TERMINAL:
            out.append(dep_id)
    return out


def waiting_on(rec: TaskRecord, status_of: Callable[[str], Optional[str]]) -> list[str]:
    """The dependencies a waiting task still waits for (for listings: ``waiting (on a, b)``)."""
    if rec.status != PENDING or not rec.waiting:
        return []
    return [d for d in rec.depends_on if status_of(d) != SUCCEEDED]


class Cascade:
    """One write's walk over the dependents of the outcomes it records, as a work list (a
    chain of any length, no recursion).  The store gives it what it needs:

    :param dependents: the ids an unfinished dependency's index lists (popped: a dependency
        reaches a final status once, so its entries are done with).
    :param get: a record by id, as the write sees it (its own earlier changes included).
    :param put: write a changed dependent (the store places it, counts it, and calls
        :meth:`wrote` for it, so that its own outcome cascades).
    """

    def __init__(self, dependents: Callable[[str], Iterable[str]], get: Callable[[str], Optional[TaskRecord]],
                 put: Callable[[TaskRecord, TaskRecord], Any], now: float) -> None:
        self._dependents, self._get, self._put, self._now = dependents, get, put, now
        self._todo: list[TaskRecord] = []

    def wrote(self, old: Optional[TaskRecord], new: TaskRecord) -> None:
        """A record was written: if it is an outcome, its dependents are to be told."""
        if concluded(old, new):
            self._todo.append(new)

    def run(self) -> int:
        """Tell every dependent; returns how many changed."""
        changed = 0
        while self._todo:
            dep = self._todo.pop()
            for task_id in self._dependents(dep.id):
                cur = self._get(task_id)
                new = None if cur is None else on_outcome(dep, cur, self._now)
                if new is not None and cur is not None:
                    self._put(cur, new)
                    changed += 1
        return changed


def resolve_all(records: Sequence[TaskRecord], stored: Callable[[str], Optional[TaskRecord]],
                now: float) -> list[TaskRecord]:
    """:func:`resolve` over one atomic add, in order: a record may depend on one before it in
    the same add (which ``stored`` does not know yet).  Records without dependencies, or not
    new and pending, are returned as they are."""
    earlier: dict[str, TaskRecord] = {}
    out = []
    for rec in records:
        if rec.depends_on and rec.status == PENDING:
            rec = resolve(rec, lambda i: earlier.get(i) or stored(i), now)
        earlier[rec.id] = rec
        out.append(rec)
    return out


def has_dependencies(records: Mapping[str, TaskRecord]) -> bool:
    """Whether any record of an add's plan has dependencies (the stores skip all of this if not)."""
    return any(r.depends_on for r in records.values())
