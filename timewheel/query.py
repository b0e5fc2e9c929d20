"""What the CLI and the web view show, as plain dicts: the keys of ``timewheel ... --json``.

Every function takes an open :class:`~timewheel.store.WheelStore` and reads it through the
store interface only, so it works on every backend.  Costs follow what is shown, not what
the store holds: counts come from :meth:`~WheelStore.counts`, the ring from
:meth:`~WheelStore.ticks` and :meth:`~WheelStore.wheel_stats`, the timeline from
:meth:`~WheelStore.histogram`, listings from :meth:`~WheelStore.scan` pages -- no function
reads every record (except the dry run of a purge, which counts what it would delete).

Whatever comes out of a store is checked before it is used: a tampered store raises
:class:`~timewheel.errors.StoreError` naming what is damaged, never a ``TypeError`` from deep
inside.  Bad arguments raise ``ValueError``.  Text from the store is returned as stored;
:func:`timewheel.text.clean` makes it safe for a terminal.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable, Iterable, Optional, Sequence

from . import deps, flow
from .errors import BatchNotFound, StoreError, TaskNotFound, shown
from .records import (
    ABORTED,
    CANCELLED,
    FAILED,
    MISFIRED,
    PENDING,
    RETRYABLE,
    RUNNING,
    SUCCEEDED,
    Attempt,
    RecordDecodeError,
    TaskRecord,
    cancel,
    reset_for_retry,
)
from .store.base import BROKEN, LISTABLE, WheelStore, finished_ms, purge_statuses, scan_order
from .text import first_line

__all__ = [
    "inspect_data", "tasks_data", "show_data", "stats_data", "timeline_data", "change_tasks",
    "retry_failed", "purge_data", "task_row", "counts_by_status", "store_details", "check_hours",
    "wheel_data", "slot_data", "series_data", "MAX_HOURS", "MAX_RECENT", "MAX_REVOLUTIONS", "FINISHED",
    "flow_data", "waiting_reason", "pause_data", "batches_data", "batch_data",
]

#: statuses whose ``started - eta`` is the lateness of a run.  A pending record may still
#: carry the start of a failed attempt next to the eta of its retry: that pair measures nothing.
RAN = (RUNNING, SUCCEEDED, FAILED)
#: finished statuses, merged most recent first in a listing without a status
FINISHED = (SUCCEEDED, FAILED, CANCELLED, MISFIRED, ABORTED)
#: the longest timeline: ten years ahead
MAX_HOURS = 10 * 366 * 24.0
#: the most runs stats_data() measures lateness over (each is a record read)
MAX_RECENT = 100_000
#: text fields (error, traceback) longer than this are cut unless ``full``
TEXT_LIMIT = 20_000
_PAGE = 1000
_BUCKETS = (60, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 7 * 86400)


# -- checking what the store returns -----------------------------------------------------------

def _damaged(store: WheelStore, what: str, value: Any) -> StoreError:
    return StoreError(f"{store.location}: the store's {what} are damaged ({_short(value)})")


def _count(store: WheelStore, value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value < 0 or value != int(value) or value > 2 ** 62:
        raise _damaged(store, what, value)
    return int(value)


def _finite(value: Any) -> bool:
    """Whether ``value`` is a finite int or float (not a bool); an int too large for a float
    is not (math.isfinite() would raise OverflowError)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _short(value: Any) -> str:
    text = shown(value)      # bounded, whatever the value holds
    return text if len(text) <= 60 else text[:57] + "..."


CLAIMED = "claimed"
#: the counts a view shows: every listable status, ``running`` meaning started on a worker, and
#: ``claimed``: running in the store but waiting in its process's queue (issue 26)
COUNTED = LISTABLE + (CLAIMED,)


def counts_by_status(store: WheelStore) -> tuple[dict[str, int], dict[str, dict[str, int]]]:
    """({status: n} for :data:`COUNTED`, {name: {status: n}}) from the store's counters, the
    tasks claimed but not started (:meth:`WheelStore.claimed`) taken out of ``running`` and
    counted as ``claimed``: the one definition every view shows."""
    totals = dict.fromkeys(COUNTED, 0)
    by_name: dict[str, dict[str, int]] = {}
    for key, n in store.counts().items():
        if not (isinstance(key, tuple) and len(key) == 2 and key[0] in LISTABLE and isinstance(key[1], str)):
            raise _damaged(store, "task counters", key)
        n = _count(store, n, "task counters")
        totals[key[0]] += n
        by_name.setdefault(key[1], dict.fromkeys(COUNTED, 0))[key[0]] += n
    if totals[RUNNING]:
        for name, n in store.claimed().items():
            row = by_name.setdefault(name, dict.fromkeys(COUNTED, 0))
            n = min(n, row[RUNNING])          # (a task may have finished between the two reads)
            row[RUNNING] -= n
            row[CLAIMED] += n
            totals[RUNNING] -= n
            totals[CLAIMED] += n
    return totals, dict(sorted(by_name.items()))


# -- rows ------------------------------------------------------------------------------------------

class _Owners:
    """Whether the owners of running tasks are alive, asked once per owner."""

    def __init__(self, store: WheelStore) -> None:
        self._store = store
        self._known: dict[str, bool] = {}

    def alive(self, rec: TaskRecord) -> Optional[bool]:
        if rec.status != RUNNING or rec.owner is None:
            return None
        if rec.owner not in self._known:
            self._known[rec.owner] = not self._store.liveness.is_dead(rec.owner)
        return self._known[rec.owner]


def task_row(rec: TaskRecord, now: float, owner_alive: Optional[bool] = None) -> dict[str, Any]:
    """The keys of one row of ``timewheel tasks --json``."""
    broken = rec.status == BROKEN
    return {"id": rec.id, "name": rec.name, "status": rec.status,
            "eta": None if broken else rec.eta, "due_in": None if broken else rec.eta - now,
            "attempts": rec.attempts, "max_attempts": rec.retries + 1, "crashes": rec.crashes,
            "created": None if broken else rec.created, "started": rec.started,
            "finished": rec.finished, "owner": rec.owner, "owner_alive": owner_alive,
            "lease": rec.lease, "error": first_line(rec.error), "queue": rec.queue, "priority": rec.priority,
            "retrying": is_retrying(rec), "abort_requested": None if broken else rec.abort,
            "progress": None if broken or rec.progress is None else dict(zip(_PROGRESS_KEYS, rec.progress)),
            "depends_on": list(rec.depends_on), "waiting_for": rec.waiting if rec.status == PENDING else 0}


_PROGRESS_KEYS = ("done", "total", "note", "at")


def is_retrying(rec: TaskRecord) -> bool:
    """Whether ``rec`` is pending because a run failed and it waits for its retry (shown as
    ``retrying``; its status stays ``pending``): not a new task, nor one put back after a
    crash or by a manual retry (those keep no error)."""
    return rec.status == PENDING and rec.attempts > 0 and rec.error is not None


def history_rows(rec: TaskRecord) -> list[dict[str, Any]]:
    """The ``history`` of ``timewheel show --json``: the task's last runs, oldest first."""
    return [{"attempt": a.number, "outcome": a.outcome, "eta": a.eta, "started": a.started,
             "finished": a.finished, "lateness": a.lateness,
             "duration": None if a.started is None or a.finished is None else a.finished - a.started,
             "owner": a.owner, "error": a.error} for a in map(Attempt._make, rec.history)]


def _live(recs: Iterable[TaskRecord], status: str) -> list[TaskRecord]:
    """Records of ``status`` as they should be: a placeholder (a broken record a scan
    returns in place) is kept, anything else out of place is a damaged store's doing."""
    return [r for r in recs if r.status in (status, BROKEN)]


# -- inspect ---------------------------------------------------------------------------------------

def store_details(store: WheelStore) -> dict[str, Any]:
    """Where the store is and its geometry, plus what the backend tells of itself (its
    ``info()``): a file's sizes and journal mode, a Redis server's version, memory, namespace
    and lease."""
    details: dict[str, Any] = {"path": store.location, "backend": type(store).__name__,
                               "journal_mode": None, "size_bytes": None, "wal_bytes": None}
    details.update({k: v for k, v in store.info().items() if k not in ("path", "url", "backend")})
    details.update(slots=store.wheel.slots, tick=store.wheel.tick)
    return details


def _ticker(store: WheelStore, now: float, head: Optional[TaskRecord]) -> dict[str, Any]:
    wheel = store.wheel
    st = store.state()
    if isinstance(st.horizon, bool) or not isinstance(st.horizon, int):
        raise _damaged(store, "bookkeeping (horizon)", st.horizon)
    current = wheel.current_tick(now)
    # Every task due in a tick up to done_through has been claimed: the earliest pending
    # task, if it is ready (within the horizon), marks the first tick not done yet.
    done = st.horizon if head is None else min(st.horizon, wheel.due_tick(head.eta) - 1)
    lag = max(0, current - done)
    leader = store.liveness.leader()
    return {"now": now, "current_tick": current, "horizon": st.horizon, "done_through": done,
            "lag_ticks": lag, "lag_seconds": lag * wheel.tick,
            # the liveness of the ticking role itself (a lock probe, a lease), not a guess
            # from how recently the horizon moved: false within a tick of the leader's death
            "ticking": leader is not None, "leader": leader,
            "last_leader": st.leader, "advanced_at": st.advanced_at}


def _cell(store: WheelStore, tick: Any, count: Any, now: float) -> dict[str, Any]:
    if isinstance(tick, bool) or not isinstance(tick, int):
        raise _damaged(store, "tick counters", tick)
    wheel = store.wheel
    due = wheel.tick_end(tick)
    return {"slot": wheel.slot(tick), "cycle": wheel.cycle(tick), "tick": tick, "due": due,
            "due_in": due - now, "count": _count(store, count, "tick counters")}


def inspect_data(store: WheelStore, now: float, *, all_slots: bool = False, next_n: int = 5,
                 running_n: int = 10) -> dict[str, Any]:
    """The wheel at a glance: ``timewheel inspect --json``.

    ``ring.cells`` holds the first 10 occupied (slot, cycle) cells in due order, every one
    with ``all_slots``; ``running`` the ``running_n`` longest-running tasks, each saying
    whether its owner is alive.
    """
    _check_int(next_n, "next_n", 0, 10_000)
    _check_int(running_n, "running_n", 0, 10_000)
    totals, by_name = counts_by_status(store)
    pending = [r for r in store.scan(PENDING, limit=max(1, next_n)) if r.status == PENDING]
    owners = _Owners(store)
    running = _live(store.scan(RUNNING, limit=running_n), RUNNING) if running_n else []
    occupied_cells, occupied_slots = store.wheel_stats()
    cells = [_cell(store, t, n, now) for t, n in store.ticks(limit=None if all_slots else 10)]
    occupied_cells = _count(store, occupied_cells, "tick counters")
    pending_by_name = {n: c[PENDING] for n, c in by_name.items() if c[PENDING]}
    return {
        "store": store_details(store),
        "counts": totals,
        "processes": process_totals(store),
        "inbox": inbox_totals(store),
        "ticker": _ticker(store, now, pending[0] if pending else None),
        "next_due": [{"id": r.id, "name": r.name, "eta": r.eta, "due_in": r.eta - now}
                     for r in pending[:next_n]],
        "running": [{**task_row(r, now, owners.alive(r)),
                     "running_for": None if r.started is None else now - r.started} for r in running],
        "pending_by_name": dict(sorted(pending_by_name.items(), key=lambda kv: (-kv[1], kv[0]))),
        "ring": {"occupied_slots": _count(store, occupied_slots, "tick counters"),
                 "occupied_cells": occupied_cells, "cells": cells,
                 "complete": len(cells) >= occupied_cells},
        **flow_data(store, now),
    }


# -- flow control ----------------------------------------------------------------------------------

def flow_data(store: WheelStore, now: float) -> dict[str, Any]:
    """Per queue and per limit, now: the ``queues`` and ``limits`` keys of ``inspect`` and
    ``stats --json``.  A queue ``served`` by no live started process waits for one."""
    served = store.served()
    everything = any(q is None for q in served.values())
    queues = [{"queue": q.queue, "pending": q.pending, "waiting": q.waiting, "running": q.running,
               "paused": q.paused,
               "served": everything or any(q.queue in (s or ()) for s in served.values())}
              for q in store.queue_states(now)]
    return {"queues": queues, "limits": [_limit_row(s) for s in store.limit_states()]}


def _limit_row(s: Any) -> dict[str, Any]:
    return {"key": s.key, "concurrency": s.concurrency or None,
            "rate": flow.rate_text(s.rate, s.per) if s.rate else None,
            "running": s.running, "parked": s.parked, "recent_starts": s.recent, "reopens": s.reopen}


def waiting_reason(store: WheelStore, rec: TaskRecord, now: float) -> Optional[str]:
    """Why a due pending task has not started (None: it is not due yet, or not pending): its
    queue is paused or served by no live process, a limit is full or its rate window closed,
    or it waits for a free worker."""
    if rec.status != PENDING:
        return None
    if rec.waiting:
        on = deps.waiting_on(rec, lambda i: _status_of(store, i))
        more = f" (and {len(on) - 10} more)" if len(on) > 10 else ""
        return f"waiting for {len(on)} of its {len(rec.depends_on)} dependencies: {', '.join(on[:10])}{more}"
    if rec.eta > now:
        return (f"retrying: attempt {rec.attempts} failed ({first_line(rec.error)}); attempt "
                f"{rec.attempts + 1} is due in {rec.eta - now:.3f}s") if is_retrying(rec) else None
    if rec.queue in store.paused():
        return f"queue {rec.queue!r} is paused"
    served = store.served()
    if not any(q is None or rec.queue in q for q in served.values()):
        return (f"queue {rec.queue!r} is served by no started process" if served
                else "no process has called start()")
    for s in store.limit_states([lim[0] for lim in rec.limits]):
        spec = next(flow.Limit._make(x) for x in rec.limits if x[0] == s.key)
        if spec.concurrency and s.running >= spec.concurrency:
            return f"limit {s.key} is full ({s.running}/{spec.concurrency} running)"
        if spec.rate and s.recent >= spec.rate:
            when = "" if s.reopen is None else f"; it reopens in {max(0.0, s.reopen - now):.3f}s"
            return (f"the rate window of limit {s.key} is full ({s.recent} starts, "
                    f"{flow.rate_text(spec.rate, spec.per)}){when}")
    return "due: waiting for a free worker"


def pause_data(store: WheelStore, queue: str, paused: bool) -> dict[str, Any]:
    """Pause or resume a queue: ``timewheel pause|resume --json``."""
    flow.check_queue(queue)
    changed = store.pause(queue) if paused else store.resume(queue)
    return {"queue": queue, "paused": paused, "changed": changed, "paused_queues": sorted(store.paused())}


# -- tasks / show ----------------------------------------------------------------------------------

def _check_int(value: Any, what: str, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"{what} must be an integer from {lo} to {hi}, got {shown(value)}")


def _check_status(status: Optional[str]) -> None:
    if status is not None and (not isinstance(status, str) or status not in LISTABLE):
        raise ValueError(f"unknown status {shown(status)}; one of {', '.join(LISTABLE)}")


def _recency(rec: TaskRecord) -> tuple[int, str]:
    return finished_ms(rec.finished), rec.id


def _placeholder(store: WheelStore, task_id: str) -> Optional[tuple[str, TaskRecord]]:
    """(the status it is listed under, the placeholder) of a record that cannot be decoded."""
    for status in LISTABLE:
        for r in store.scan(status, id_prefix=task_id):
            if r.id == task_id and r.status == BROKEN:
                return status, r
    return None


def _mark(store: WheelStore, task_id: str) -> TaskRecord:
    """The record a page continues after (``after=`` is the id of the previous page's last row)."""
    try:
        rec = store.get(task_id)
    except RecordDecodeError:
        found = _placeholder(store, task_id)       # a finished one sorts where it sits
        rec = None if found is None else found[1]._replace(status=found[0])
    if rec is None:
        raise TaskNotFound(f"no task {task_id} in {store.location} (to continue a listing after)")
    return rec


def tasks_data(store: WheelStore, now: float, *, status: Optional[str] = None, name: Optional[str] = None,
               id_prefix: Optional[str] = None, limit: Optional[int] = 50,
               after: Optional[str] = None, queue: Optional[str] = None) -> dict[str, Any]:
    """One row per task: ``timewheel tasks --json``, plus ``next_after`` (the ``after`` of the
    next page, None on the last one).

    Without ``status``: pending in due order, then running (longest first), then finished
    tasks of every status most recent first, then broken records.  Reads about ``limit``
    records per status (with ``queue``: pages of them until enough are of that queue).
    ``limit=None`` lists all.
    """
    _check_status(status)
    if queue is not None:
        flow.check_queue(queue)
    if limit is not None:
        _check_int(limit, "limit", 0, 10 ** 9)
    mark = None if after is None else _mark(store, after)
    phases: list[tuple[str, ...]] = ([(status,)] if status is not None else
                                     [(PENDING,), (RUNNING,), FINISHED, (BROKEN,)])
    if mark is not None and status is None:
        # continue in the phase of the previous page's last row
        phases = phases[next((i for i, p in enumerate(phases) if mark.status in p), 0):]
    want = None if limit is None else limit + 1       # one more: is there a next page?
    rows: list[TaskRecord] = []
    for i, phase in enumerate(phases):
        left = None if want is None else want - len(rows)
        if left is not None and left <= 0:
            break
        since = mark if i == 0 else None
        got: list[TaskRecord] = []
        for s in phase:
            got += _scan_queue(store, s, name, id_prefix or None, since, left, queue)
        if len(phase) > 1:
            got.sort(key=_recency, reverse=True)
        rows += got[:left]
    more = limit is not None and len(rows) > limit
    rows = rows[:limit]
    owners = _Owners(store)
    return {"now": now, "tasks": [task_row(r, now, owners.alive(r)) for r in rows],
            "next_after": rows[-1].id if more and rows else None}


def _scan_queue(store: WheelStore, status: str, name: Optional[str], id_prefix: Optional[str],
                after: Optional[TaskRecord], limit: Optional[int], queue: Optional[str]) -> list[TaskRecord]:
    """Records of one status (and ``queue``, if given: read a page at a time until ``limit``)."""
    if queue is None or status == BROKEN:
        got = _live(store.scan(status, name=name, id_prefix=id_prefix, after=after, limit=limit), status)
        return got if queue is None else []
    out: list[TaskRecord] = []
    while limit is None or len(out) < limit:
        page = store.scan(status, name=name, id_prefix=id_prefix, after=after, limit=_PAGE)
        out += [r for r in _live(page, status) if r.queue == queue]
        if len(page) < _PAGE:
            break
        after = page[-1]
    return out[:limit]


def show_data(store: WheelStore, task_id: str, now: float, *, full: bool = False) -> dict[str, Any]:
    """Everything about one task: ``timewheel show --json``.  Raises TaskNotFound.

    Arguments and result are decoded without importing anything (:mod:`timewheel.decode`),
    within bounds; ``full`` raises the bounds and shows error and traceback uncut.
    """
    from . import decode

    try:
        rec = store.get(task_id)
    except RecordDecodeError as exc:
        found = _placeholder(store, task_id)
        rec = found[1] if found is not None else TaskRecord(
            id=task_id, name="?", eta=0.0, payload=b"", status=BROKEN, error=str(exc))
    if rec is None:
        raise TaskNotFound(f"no task {task_id} in {store.location}")
    limits = decode.FULL if full else decode.LIMITS
    if rec.status == BROKEN:
        args = kwargs = decode.Shown(None, "the record cannot be decoded")
        result = None
    else:
        args, kwargs = decode.show_call(rec.payload, limits)
        result = decode.show_value(rec.result, limits)
    text_limit = None if full else TEXT_LIMIT
    lateness = rec.started - rec.eta if rec.started is not None and rec.status in RAN else None
    return {**task_row(rec, now, _Owners(store).alive(rec)),
            "error": _cut(rec.error, text_limit), "traceback": _cut(rec.traceback, text_limit),
            "retries": rec.retries, "retry_delay": rec.retry_delay, "misfire_grace": rec.misfire_grace,
            "timeout": rec.timeout, "lease": rec.lease, "lateness": lateness,
            "args": args.text, "kwargs": kwargs.text, "args_error": args.error or kwargs.error,
            "args_truncated": args.truncated or kwargs.truncated, "payload_bytes": len(rec.payload),
            "result": None if result is None else result.text,
            "result_error": None if result is None else result.error,
            "result_truncated": bool(result and result.truncated),
            "result_bytes": None if rec.result is None else len(rec.result),
            "limits": [{"key": k, "concurrency": c or None, "rate": flow.rate_text(r, p) if r else None}
                       for k, c, r, p in rec.limits],
            "first_call": rec.first_call, "max_wait": rec.max_wait,
            "waiting": None if rec.status == BROKEN else waiting_reason(store, rec, now),
            "history": history_rows(rec),
            "dependencies": [{"id": i, "status": _status_of(store, i)} for i in rec.depends_on[:SHOWN_DEPS]],
            "dependents": [{"id": i, "status": _status_of(store, i)}
                           for i in store.dependents(task_id)[:SHOWN_DEPS]],
            "takes_result": rec.takes_result}


#: the dependencies and dependents ``show`` lists (the record and the index hold them all)
SHOWN_DEPS = 100


def _status_of(store: WheelStore, task_id: str) -> Optional[str]:
    """A task's status for a listing of dependencies (None: purged; ``broken``: unreadable)."""
    try:
        rec = store.get(task_id)
    except RecordDecodeError:
        return BROKEN
    return None if rec is None else rec.status


def _cut(text: Optional[str], limit: Optional[int]) -> Optional[str]:
    if text is None or limit is None or len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} chars in all)"


# -- processes -------------------------------------------------------------------------------------

def process_totals(store: WheelStore) -> dict[str, int]:
    """The live processes, their workers running a task (``busy``) and the tasks they claimed
    that wait for a worker (``queued``), as their last reports say (the store's counts say it
    by :func:`counts_by_status`: ``running`` and ``claimed``)."""
    from . import processes
    alive = [r for _, r, state in processes.listed(store.process_reports(), store.liveness.is_dead)
             if state == "alive"]
    return {"alive": len(alive), "busy": sum(r.busy for r in alive), "queued": sum(r.queued for r in alive)}


def inbox_totals(store: WheelStore) -> Optional[dict[str, Any]]:
    """The inbox other tools enqueue through (timewheel/inbox.py): entries ``waiting`` to be
    taken in and ``set_aside``; None for a store without one.  An inbox another tool damaged
    (a Redis key of another type) says so in ``error``, and the rest of a view still shows."""
    try:
        sizes = store.inbox_sizes()
    except StoreError as exc:
        return {"waiting": None, "set_aside": None, "error": first_line(str(exc))}
    return None if sizes is None else {"waiting": sizes[0], "set_aside": sizes[1]}


def processes_data(store: WheelStore, now: float) -> dict[str, Any]:
    """Every started process's last report (timewheel/processes.py): ``timewheel processes
    --json``.  Live ones first; stopped and dead ones for an hour after their last heartbeat."""
    from . import processes
    rows = []
    for token, r, state in processes.listed(store.process_reports(), store.liveness.is_dead):
        rows.append({"token": token, "state": state, "host": r.host, "pid": r.pid, "started": r.started,
                     "queues": None if r.queues is None else list(r.queues), "workers": r.workers,
                     "busy": r.busy, "queued": r.queued, "heartbeat": r.heartbeat,
                     "heartbeat_age": now - r.heartbeat, "stopped": r.stopped})
    return {"now": now, "report_every": processes.REPORT_EVERY, "processes": rows}


# -- stats -----------------------------------------------------------------------------------------

def _quantile(xs: Sequence[float], q: float) -> float:
    """Nearest-rank quantile of sorted ``xs``."""
    return xs[min(len(xs) - 1, max(0, math.ceil(q * len(xs)) - 1))]


def _lateness(values: Sequence[float]) -> dict[str, Any]:
    xs = sorted(values)
    if not xs:
        return {"runs": 0, "min": None, "p50": None, "p95": None, "max": None, "mean": None}
    return {"runs": len(xs), "min": xs[0], "p50": _quantile(xs, 0.5), "p95": _quantile(xs, 0.95),
            "max": xs[-1], "mean": sum(xs) / len(xs)}


def stats_data(store: WheelStore, now: float, *, recent: int = 1000) -> dict[str, Any]:
    """Counts per status and name, and how late the ``recent`` most recent runs started:
    ``timewheel stats --json``.  Reads at most ``recent`` records per status that runs."""
    _check_int(recent, "recent", 1, MAX_RECENT)
    totals, by_name = counts_by_status(store)
    runs = [r for s in RAN for r in store.scan(s, limit=recent) if r.status == s and r.started is not None]
    runs.sort(key=lambda r: r.started or 0.0, reverse=True)
    late_by_name: dict[str, list[float]] = {}
    for r in runs[:recent]:
        late_by_name.setdefault(r.name, []).append((r.started or 0.0) - r.eta)
    return {"now": now, "counts": totals, "by_name": by_name,
            "lateness": _lateness([x for xs in late_by_name.values() for x in xs]),
            "lateness_by_name": {n: _lateness(xs) for n, xs in sorted(late_by_name.items())},
            **flow_data(store, now)}


# -- timeline --------------------------------------------------------------------------------------

def check_hours(hours: Any) -> float:
    """``hours`` as a float, or ValueError: finite, above 0, at most :data:`MAX_HOURS`."""
    if not _finite(hours) or not 0 < hours <= MAX_HOURS:
        raise ValueError(f"hours must be a number above 0 and at most {MAX_HOURS:g} (ten years), "
                         f"got {shown(hours)}")
    return float(hours)


def timeline_data(store: WheelStore, now: float, *, hours: float = 24.0,
                  name: Optional[str] = None) -> dict[str, Any]:
    """When pending tasks come due, in about 24 buckets over ``hours`` (at most a few hundred):
    ``timewheel timeline --json``.  Buckets start on local clock boundaries (14:00, 14:15, ...);
    ``overdue`` counts tasks due in ticks that have ended, ``later`` those after the window.

    It reads the store's per-tick counters (of that name's tasks, with ``name``), not tasks.
    """
    hours = check_hours(hours)
    wheel = store.wheel
    window = hours * 3600
    bucket_s = next((b for b in _BUCKETS if b * 24 >= window), _BUCKETS[-1])
    per = max(1, round(bucket_s / wheel.tick))            # ticks per bucket
    bucket_s = per * wheel.tick
    offset = time.localtime(now).tm_gmtoff
    start = math.floor((now + offset) / bucket_s) * bucket_s - offset
    n = max(1, math.ceil((now + window - start) / bucket_s))
    first = wheel.current_tick(start) + 1                 # the first tick ending after start
    current = wheel.current_tick(now)
    counts, overdue, total = _tick_counts(store, first, current, per, n, name)
    later = max(0, total - overdue - sum(counts))
    return {"now": now, "hours": hours, "name": name, "bucket_seconds": bucket_s, "pending": total,
            "overdue": overdue, "later": later,
            "buckets": [{"start": start + i * bucket_s, "end": start + (i + 1) * bucket_s, "count": c}
                        for i, c in enumerate(counts)]}


def _tick_counts(store: WheelStore, first: int, current: int, per: int, n: int,
                 name: Optional[str]) -> tuple[list[int], int, int]:
    """(pending per bucket, overdue, pending in all) -- of task ``name`` only, if given."""
    totals, by_name = counts_by_status(store)
    counts = [_count(store, c, "tick counters")
              for c in store.histogram(first, first + n * per, per, name=name)]
    lowest = store.wheel.due_tick(-1e12)
    overdue = _count(store, sum(store.histogram(lowest, current + 1, current + 1 - lowest, name=name)),
                     "tick counters")
    if current + 1 > first:      # the part of the first buckets that is already overdue
        for i, c in enumerate(store.histogram(first, current + 1, per, name=name)):
            counts[i] = max(0, counts[i] - _count(store, c, "tick counters"))
    total = totals[PENDING] if name is None else by_name.get(name, {}).get(PENDING, 0)
    return counts, overdue, total


# -- changes ---------------------------------------------------------------------------------------

#: verb -> (who may change, the transition, the key of the changed ids)
_VERBS: dict[str, tuple[Callable[[TaskRecord], bool], Callable[[TaskRecord, float], TaskRecord], str]] = {
    "cancel": (lambda r: r.status == PENDING, cancel, "cancelled"),
    "retry": (lambda r: r.status in RETRYABLE, reset_for_retry, "retried"),
}
_ATTEMPTS = 20          # compare-and-set rounds for a task another process keeps changing


def change_tasks(store: WheelStore, ids: Sequence[str], verb: str) -> dict[str, Any]:
    """Cancel (pending -> cancelled) or retry (failed, misfired, cancelled -> pending now)
    each task, once per id, in the order given: ``timewheel cancel|retry --json``.

    ``{"cancelled"|"retried": [ids], "skipped": [{"id", "status"}], "unknown": [ids]}``.
    Each change is a compare-and-set, so a task another process changes meanwhile is looked
    at again, never overwritten.
    """
    if not isinstance(verb, str) or verb not in _VERBS:
        raise ValueError(f"verb must be 'cancel' or 'retry', got {shown(verb)}")
    allowed, transition, key = _VERBS[verb]
    done: list[str] = []
    skipped: list[dict[str, str]] = []
    unknown: list[str] = []
    for task_id in dict.fromkeys(ids):
        try:
            rec, new = store.change(task_id, allowed, transition, attempts=_ATTEMPTS)
        except RecordDecodeError:
            skipped.append({"id": task_id, "status": BROKEN})
            continue
        if new is not None:
            done.append(task_id)
        elif rec is None:
            unknown.append(task_id)
        else:
            skipped.append({"id": task_id, "status": rec.status if not allowed(rec) else "changing"})
    return {key: done, "skipped": skipped, "unknown": unknown}


def abort_tasks(store: WheelStore, ids: Sequence[str]) -> dict[str, Any]:
    """Stop each task, once per id, in the order given (:meth:`WheelStore.abort`): ``timewheel
    abort --json``.  ``{"aborting": [ids of running tasks asked to abort, now or before],
    "cancelled": [ids of pending tasks cancelled], "skipped": [{"id", "status"}], "unknown": [ids]}``."""
    out: dict[str, Any] = {"aborting": [], "cancelled": [], "skipped": [], "unknown": []}
    for task_id in dict.fromkeys(ids):
        try:
            rec, done = store.abort(task_id, attempts=_ATTEMPTS)
        except RecordDecodeError:
            out["skipped"].append({"id": task_id, "status": BROKEN})
            continue
        if rec is None:
            out["unknown"].append(task_id)
        elif done == "cancelled":
            out["cancelled"].append(task_id)
        elif done in ("asked", "asked already"):
            out["aborting"].append(task_id)
        else:
            out["skipped"].append({"id": task_id, "status": rec.status if done == "refused" else done})
    return out


def retry_failed(store: WheelStore, *, name: Optional[str] = None) -> dict[str, Any]:
    """Retry every failed task (of ``name``), a page per transaction: ``retry --all-failed``."""
    done: list[str] = []
    seen: set[str] = set()
    lost = 0
    while True:
        # Each task once: on a damaged store a retried one may still be listed as failed.
        page = [r for r in store.scan(FAILED, name=name, limit=_PAGE)
                if r.status == FAILED and r.id not in seen]
        if not page:
            break
        seen.update(r.id for r in page)
        now = store.now()
        back = store.swap([(r, reset_for_retry(r, now)) for r in page])
        done += [b.id for b in back if b is not None]
        lost += sum(b is None for b in back)
        if lost > _ATTEMPTS * _PAGE:      # another process keeps changing them: stop here
            break
    return {"retried": done, "skipped": [], "unknown": []}


def purge_data(store: WheelStore, now: float, *, older_than: float,
               statuses: Optional[Iterable[str]] = None, dry_run: bool = False) -> dict[str, Any]:
    """Delete finished tasks that finished more than ``older_than`` seconds before ``now``
    (``statuses``: default every finished one): ``timewheel purge --json``.

    ``dry_run`` deletes nothing and counts what would go (reading those records).
    """
    if not _finite(older_than) or older_than < 0:
        raise ValueError(f"older_than must be a number of seconds >= 0, got {shown(older_than)}")
    wanted = purge_statuses(statuses)
    before = now - older_than
    matching = 0
    if dry_run:
        for status in wanted:
            # a record that finished at ``before``, with an id below every id: the scan
            # continues after it, through what purge() would delete
            mark: TaskRecord = TaskRecord(id="", name="", eta=0.0, payload=b"", status=status,
                                          finished=before)
            order = scan_order(status)
            while True:
                page = store.scan(status, after=mark, limit=_PAGE)
                matching += sum(r.status == status for r in page)
                if len(page) < _PAGE:
                    break
                if order(page[-1]) <= order(mark):     # a damaged index: it would never end
                    raise StoreError(f"{store.location}: the store is damaged (its {status} index "
                                     "is out of order)")
                mark = page[-1]
        purged = 0
    else:
        purged = 0
        while True:
            n = store.purge(before, wanted, limit=_PAGE)
            purged += n
            if n < _PAGE:
                break
        matching = purged
    return {"purged": purged, "matching": matching, "finished_before": before,
            "statuses": wanted, "dry_run": dry_run}


# -- the web view: the ring, one slot, the last hour ----------------------------------------------

#: the ring is drawn with at most this many sectors; larger wheels fold slots into sectors
MAX_SECTORS = 3600
#: how many revolutions ahead the web view's ring may look (each is one ``slots``-tick window)
MAX_REVOLUTIONS = 24


def wheel_data(store: WheelStore, now: float, *, revolutions: int = 24) -> dict[str, Any]:
    """The ring: pending tasks per slot over the next ``revolutions`` turns of the wheel.

    The ``revolutions * slots`` ticks after the current one are folded slot by slot
    (``sector_slots`` slots per sector when the wheel has more than 3600): ``load`` (tasks),
    ``cells`` (cycles that hold any) and ``next_turn`` (tasks of the first revolution only);
    ``by_revolution`` sums each turn.  ``overdue`` are pending tasks of ticks already over
    (ready, or waiting for a ticker); ``later`` those due after the window.  Costs one
    :meth:`~WheelStore.ticks` call over the window: it reads the occupied ticks in it.
    """
    _check_int(revolutions, "revolutions", 1, MAX_REVOLUTIONS)
    w = store.wheel
    current = w.current_tick(now)
    start, stop = current + 1, current + 1 + revolutions * w.slots
    per = -(-w.slots // MAX_SECTORS)
    sectors = -(-w.slots // per)
    load, cells, next_turn = [0] * sectors, [0] * sectors, [0] * sectors
    by_revolution = [0] * revolutions
    for tick, n in store.ticks(start, stop):
        # (checked inline: this loop runs once per occupied tick of the window, ~70,000 times
        # for a day of a store of a million tasks spread over a week)
        if type(tick) is not int or type(n) is not int or not start <= tick < stop or n < 0:
            raise _damaged(store, "tick counters", (tick, n))
        sector = (tick % w.slots) // per
        load[sector] += n
        cells[sector] += 1
        by_revolution[(tick - start) // w.slots] += n
        if tick - start < w.slots:
            next_turn[sector] += n
    totals, _ = counts_by_status(store)
    lowest = w.due_tick(-1e12)
    overdue = _count(store, sum(store.histogram(lowest, start, start - lowest)), "tick counters")
    return {"now": now, "slots": w.slots, "tick": w.tick, "current_tick": current,
            "current_slot": w.slot(current), "current_cycle": w.cycle(current),
            "horizon": store.state().horizon, "revolutions": revolutions,
            "window": {"start": start, "stop": stop, "until": w.tick_end(stop - 1)},
            "sector_slots": per, "load": load, "cells": cells, "next_turn": next_turn,
            "by_revolution": by_revolution, "pending": totals[PENDING], "overdue": overdue,
            "in_window": sum(load), "later": max(0, totals[PENDING] - overdue - sum(load))}


def slot_data(store: WheelStore, now: float, slot: int, *, revolutions: int = 24,
              cycle: Optional[int] = None, limit: int = 50) -> dict[str, Any]:
    """One slot of the ring: its occupied cells (``slot``, ``cycle``, ``tick``, ``due``,
    ``due_in``, ``count``) over the next ``revolutions`` turns, and the pending tasks of one
    cell (``cycle``, default the first occupied one), in due order, up to ``limit``.

    One :meth:`~WheelStore.ticks` call per revolution, and one :meth:`~WheelStore.scan` page
    that starts at the chosen tick.
    """
    w = store.wheel
    _check_int(slot, "slot", 0, w.slots - 1)
    _check_int(revolutions, "revolutions", 1, MAX_REVOLUTIONS)
    _check_int(limit, "limit", 1, 10_000)
    if cycle is not None:
        _check_int(cycle, "cycle", 0, 2 ** 53)
    current = w.current_tick(now)
    first = current + 1 + (slot - current - 1) % w.slots       # the slot's next tick
    cells = [_cell(store, t, n, now) for r in range(revolutions)
             for t, n in store.ticks(first + r * w.slots, first + r * w.slots + 1)]
    chosen = cycle * w.slots + slot if cycle is not None else cells[0]["tick"] if cells else None
    tasks: list[dict[str, Any]] = []
    cell = None
    if chosen is not None:
        # A page from the end of the previous tick (an id below every id) onward: the tasks
        # of this tick come first, in due order.
        mark = TaskRecord(id="", name="", eta=w.tick_end(chosen - 1), payload=b"")
        tasks = [task_row(r, now) for r in store.scan(PENDING, after=mark, limit=limit + 1)
                 if r.status == PENDING and w.due_tick(r.eta) == chosen][:limit]
        cell = next((c for c in cells if c["tick"] == chosen), _cell(store, chosen, 0, now))
    return {"now": now, "slot": slot, "slots": w.slots, "tick": w.tick, "current_tick": current,
            "revolutions": revolutions, "cells": cells, "cycle": None if chosen is None else w.cycle(chosen),
            "cell": cell, "tasks": tasks}


#: the outcomes :func:`series_data` counts per minute
_SERIES = (SUCCEEDED, FAILED, MISFIRED, ABORTED)


def series_data(store: WheelStore, now: float, *, minutes: int = 60, cap: int = 2000) -> dict[str, Any]:
    """Runs that finished in the last ``minutes``, per minute: how many succeeded, failed,
    were skipped as misfired or were aborted, and how late they started (``lateness_p50``, ``_p95``, ``_max``
    of ``started - eta``; None in a minute without runs).

    Reads the ``cap`` most recent records of each of those statuses, no more.  When one had
    more in the window, ``sampled`` is true and ``complete_since`` says from when the counts
    are complete: the minutes before it have None for counts (not known, rather than wrong).
    """
    _check_int(minutes, "minutes", 1, 24 * 60)
    _check_int(cap, "cap", 1, MAX_RECENT)
    since = now - minutes * 60
    start = math.floor(since / 60) * 60
    n = max(1, math.ceil((now - start) / 60))
    buckets: list[dict[str, Any]] = [{"start": start + 60 * i, **dict.fromkeys(_SERIES, 0)}
                                     for i in range(n)]
    late: list[list[float]] = [[] for _ in range(n)]
    complete = since
    for status in _SERIES:
        recs = [r for r in store.scan(status, limit=cap) if r.status == status and r.finished is not None]
        if len(recs) == cap:
            complete = max(complete, recs[-1].finished or 0.0)
        for r in recs:
            if since <= (r.finished or 0.0) <= now + 60:
                i = min(n - 1, int(((r.finished or 0.0) - start) // 60))
                buckets[i][status] += 1
                if r.started is not None and status in RAN:
                    late[i].append(r.started - r.eta)
    for b, xs in zip(buckets, late):
        stats = _lateness(xs)
        b.update(lateness_p50=stats["p50"], lateness_p95=stats["p95"], lateness_max=stats["max"])
        if complete > since and b["start"] < complete:    # partly before what was read: unknown
            b.update(dict.fromkeys(_SERIES, None))
    return {"now": now, "minutes": minutes, "bucket_seconds": 60, "sampled": complete > since,
            "complete_since": complete, "buckets": buckets}


# -- batches (issue 23) ------------------------------------------------------------------------------

def _batch_row(st: Any) -> dict[str, Any]:
    """The keys of one row of ``timewheel batches --json``."""
    from .batches import CLASSES
    return {"id": st.id, "status": st.status, "created": st.created, "done": st.done,
            "total": st.total, "finished": st.finished_members,
            "counts": {c: int(st.counts.get(c, 0)) for c in CLASSES},
            "callbacks": [{"event": e, "id": i, "name": n} for e, i, n in st.callbacks]}


def batches_data(store: WheelStore, now: float, *, limit: int = 50) -> dict[str, Any]:
    """The most recently opened batches: ``timewheel batches --json``."""
    _check_int(limit, "limit", 1, 10_000)
    return {"now": now, "batches": [_batch_row(st) for st in store.batches(limit=limit)]}


def batch_data(store: WheelStore, batch_id: str, now: float, *, limit: int = 20, start: int = 0
               ) -> dict[str, Any]:
    """One batch, its callbacks (with their tasks' status: null until added) and its members
    from ``start`` in the order they were added, up to ``limit``: ``timewheel batch --json``.
    Raises BatchNotFound."""
    _check_int(limit, "limit", 0, 10_000_000)
    _check_int(start, "start", 0, 10 ** 12)
    st = store.batch(batch_id)
    if st is None:
        raise BatchNotFound(f"no batch {batch_id} in {store.location}")
    row = _batch_row(st)
    for cb in row["callbacks"]:
        rec = _readable(store, cb["id"])
        cb["status"] = None if rec is None else rec.status
    ids = store.batch_members(batch_id, start, limit or None)
    owners = _Owners(store)
    members = []
    for task_id in ids:
        rec = _readable(store, task_id)
        members.append({"id": task_id, "status": "purged"} if rec is None
                       else task_row(rec, now, owners.alive(rec)))
    more = len(ids) == limit and start + limit < st.total
    return {**row, "now": now, "members": members, "next_start": start + limit if more else None}


def _readable(store: WheelStore, task_id: str) -> Optional[TaskRecord]:
    """The record of ``task_id``, a broken placeholder for one that cannot be decoded, None if
    there is none."""
    try:
        return store.get(task_id)
    except RecordDecodeError as exc:
        return TaskRecord(id=task_id, name="?", eta=0.0, payload=b"", status=BROKEN, error=str(exc))
