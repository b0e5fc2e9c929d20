"""The rules every store applies the same way, pure: backends only read, write and index.

:mod:`timewheel.records` says what a task becomes; this module says what a store does with
that when it writes, so that the memory, file and Redis backends (and the next one) cannot
drift apart:

* :func:`admit` -- what ``add(existing=...)`` stores for a record, given what its id holds:
  nothing, a record, or one that cannot be decoded (:class:`Unreadable`);
* :func:`claimed` and :func:`swapped` -- the stamp of a write: a claim is
  :func:`~timewheel.records.start_run` with the next ``rev`` (its fence), any other
  compare-and-set the next ``rev``;
* :func:`set_aside` -- whether a record that cannot be decoded is set aside as broken, and the
  one line that says so;
* :func:`outcome_event` -- the hook event of a run's recorded outcome;
* :func:`abort_step` -- what ``abort()`` writes for a task in each state (issue 23).

**Revisions.**  ``rev`` counts the writes of an id and is the fencing token: a run claimed at
``rev`` f records its outcome only while the stored ``rev`` is still f.  So it never goes
backwards, not even across a replacement: a record replaced by :meth:`~timewheel.store.WheelStore.add`
continues its predecessor's ``rev``, or a stale fence could match the newcomer after a few
writes.  For a predecessor that cannot be decoded the backend reads its ``rev`` where it keeps
one outside the record (the file store's ``rev`` column, the Redis hash's ``v`` field); where
none is readable (a row last written by timewheel 0.2, a field edited by hand) the newcomer
starts at :data:`UNKNOWN_REV`, beyond any number of writes one id can have had.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, NamedTuple, Optional, Sequence, Union

from ..errors import DuplicateTask
from ..records import (
    ABORTED,
    FAILED,
    PENDING,
    RUNNING,
    SUCCEEDED,
    TERMINAL,
    TaskRecord,
    cancel,
    request_abort,
    start_run,
)

__all__ = ["Unreadable", "UNKNOWN_REV", "stored_rev", "admit", "admit_all", "claimed", "swapped", "set_aside",
           "outcome_event", "abort_step", "NOTES", "noted"]

log = logging.getLogger("timewheel.store")

#: the ``rev`` of a record that replaces an undecodable one whose ``rev`` nobody can read:
#: 2**48 writes of one id would take 9,000 years at 1,000 a second
UNKNOWN_REV = 2 ** 48
_MAX_REV = 2 ** 62 - 2          # records hold revs below 2**62 (records._is_int); +1 must fit


class Unreadable(NamedTuple):
    """What a backend knows of a stored record it cannot decode."""

    rev: Optional[int]       #: its rev, kept outside the record; None where none is readable


def stored_rev(value: Any) -> Optional[int]:
    """A ``rev`` kept outside a record (an SQLite column, a Redis field: int, text or bytes),
    or None if it is missing or not a rev any write of ours makes."""
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if isinstance(value, str):
        value = int(value) if value.isascii() and value.isdigit() and len(value) < 20 else None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_REV:
        return None
    return value


def check_distinct(records: Sequence[TaskRecord]) -> None:
    """``add(existing="fail")``: each id at most once in one call, else DuplicateTask."""
    seen: set[str] = set()
    for rec in records:
        if rec.id in seen:
            raise DuplicateTask(f"task id {rec.id!r} is given twice; nothing was added")
        seen.add(rec.id)


def admit(new: TaskRecord, old: Union[TaskRecord, Unreadable, None], existing: str
          ) -> tuple[TaskRecord, bool]:
    """What ``add(existing=...)`` does with ``new`` when its id holds ``old`` (None: nothing;
    a record given earlier in the same batch counts as stored).

    Returns (the record ``add`` returns for it, whether that record is written):

    * nothing stored: ``new``, written as it is;
    * ``"fail"``: :class:`DuplicateTask`;
    * ``"keep"``: ``old``, not written; ``"reuse"``: the same while ``old`` is pending or
      running; ``"replace"``: :class:`DuplicateTask` while ``old`` is running;
    * otherwise ``new``, continuing ``old``'s rev.

    A record that cannot be decoded is replaced by every policy but ``"fail"``: it never runs
    again, and ``add`` has nothing it could return for it.
    """
    if old is None:
        return new, True
    if existing == "fail":
        raise DuplicateTask(f"task id {new.id!r} already exists; nothing was added")
    if isinstance(old, Unreadable):
        return new._replace(rev=UNKNOWN_REV if old.rev is None else old.rev + 1), True
    if existing == "keep" or (existing == "reuse" and old.status not in TERMINAL):
        return old, False
    if old.status == RUNNING:
        raise DuplicateTask(f"task {new.id!r} is running and cannot be replaced; nothing was added")
    return swapped(old, new), True


def admit_all(records: Sequence[TaskRecord],
              stored: Callable[[str], Union[TaskRecord, Unreadable, None]], existing: str
              ) -> tuple[list[TaskRecord], dict[str, TaskRecord]]:
    """:func:`admit` over one batch: what ``add`` returns for each record, and the record it
    writes per id (an id given twice sees its earlier record as stored).  ``stored(id)`` is
    what the id holds."""
    out: list[TaskRecord] = []
    plan: dict[str, TaskRecord] = {}
    for rec in records:
        new, write = admit(rec, plan.get(rec.id) or stored(rec.id), existing)
        out.append(new)
        if write:
            plan[rec.id] = new
    return out, plan


def claimed(rec: TaskRecord, owner: str, now: float, *, lease: Optional[float] = None,
            queued: bool = False) -> TaskRecord:
    """``rec`` claimed by ``owner`` at ``now``: running (:func:`~timewheel.records.start_run`),
    with the next ``rev``, which fences the run."""
    return start_run(rec, owner, now, lease, queued)._replace(rev=rec.rev + 1)


def swapped(old: TaskRecord, new: TaskRecord) -> TaskRecord:
    """``new`` as a compare-and-set over ``old`` stores it: with the next ``rev``."""
    return new._replace(rev=old.rev + 1)


def set_aside(task_id: str, reason: BaseException, *, readonly: bool = False,
              marked: bool = False) -> bool:
    """Whether a backend that met the undecodable record ``task_id`` sets it aside, logging so.

    Set aside -- status broken: kept, never deleted, off every queue, never claimed or
    requeued again, counted and listed as ``"broken"``, replaceable by ``add`` -- by whoever
    may write, once (not when ``marked`` already); a read-only opener leaves it.  Never
    dropped, never retried in a loop.
    """
    if readonly or marked:
        return False
    log.error("task %s: %s; left in the store as broken", task_id, reason)
    return True


#: the hook event of each status a run's outcome can leave (see records.end_run)
_OUTCOME_EVENTS = {SUCCEEDED: "succeeded", FAILED: "failed", PENDING: "retrying", ABORTED: "aborted"}


def outcome_event(new: TaskRecord) -> Optional[str]:
    """The hook event of a run's outcome as stored (:func:`~timewheel.records.end_run`'s
    result): ``"succeeded"``, ``"failed"``, ``"retrying"`` (pending again, at its retry
    eta) or ``"aborted"``; None for any other status."""
    return _OUTCOME_EVENTS.get(new.status)


def abort_step(rec: Optional[TaskRecord], now: float) -> tuple[str, Optional[TaskRecord]]:
    """What ``abort()`` does with the task as stored (None: none): ``("swap", cancelled)`` for a
    pending one (it never runs, as ``cancel()``); ``("note", asked)`` for a running one --
    :func:`~timewheel.records.request_abort`, written by :meth:`WheelStore.note`, which keeps
    the run's ``rev``; ``("done", None)`` when an abort of this run was asked for already (it is
    recorded); ``("refuse", None)`` for a finished or unknown task."""
    if rec is None or rec.status in TERMINAL:
        return "refuse", None
    if rec.status == PENDING:
        return "swap", cancel(rec, now)
    if rec.abort is not None:
        return "done", None
    return "note", request_abort(rec, now)


#: the fields :meth:`WheelStore.note` writes into a running record without bumping its rev
NOTES = ("abort", "progress")


def kept_notes(cur: TaskRecord, new: TaskRecord) -> TaskRecord:
    """``new``, written over ``cur`` as stored (the same run: the rev matched), with the notes
    (:data:`NOTES`) it does not set itself kept, while the task stays running.  A writer's copy
    lacks a note another process wrote after it read the record -- an abort asked for just
    before a queued task's start is recorded (records.start_queued) -- and a note, which keeps
    the rev, must outlive such a write as it outlives nothing else of the run."""
    if cur.status != RUNNING or new.status != RUNNING:
        return new
    kept = {f: getattr(cur, f) for f in NOTES if getattr(new, f) is None and getattr(cur, f) is not None}
    return new._replace(**kept) if kept else new


def noted(old: TaskRecord, new: TaskRecord) -> dict[str, object]:
    """The notes ``new`` changes on ``old`` (both the same run): what
    :meth:`WheelStore.note` writes, field by field, over whatever the store holds -- so that a
    progress note never undoes an abort asked for meanwhile by another process, nor the
    reverse.  Any other difference is a ValueError: a note never changes the run itself."""
    if new.id != old.id or new._replace(abort=old.abort, progress=old.progress) != old:
        raise ValueError(f"a note of task {old.id} changes more than {', '.join(NOTES)}")
    return {f: getattr(new, f) for f in NOTES if getattr(new, f) != getattr(old, f)}
