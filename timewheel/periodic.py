"""Recurring tasks: ``@hu.periodic(every=900)`` and ``@hu.periodic(cron="0 3 * * *", tz=...)``.

Two layers, kept apart so the arithmetic can be tested without threads or sleeping:

* **Schedules** (:class:`Every`, :class:`Cron`) are pure: ``next_after(t)`` is the first
  fire time strictly after unix time ``t``.  ``every=`` fires on a grid aligned to the Unix
  epoch (``every=3600`` fires on the hour, UTC), so restarts never shift it.  ``cron=`` is
  evaluated by croniter on the *wall clock* of ``tz`` (default UTC):

  - a wall time that happens twice (the night clocks go back) fires once, the first time;
  - wall times that do not exist (the night clocks go forward) fire once, at the jump;
  - so a daily job fires once every local day, and an hourly cron skips an hour on the
    fall-back night -- use ``every=3600`` for "every 60 minutes of real time".

* **Occurrences** are ordinary wheel tasks with a deterministic id,
  ``periodic-<hash of name and schedule>-<due in microseconds>``, added with
  ``schedule(task_id=..., once=True)``: an id that is stored (whatever its state) is never
  added again, so every process sharing the store can try to add the next occurrence and
  exactly one record results; the store's exclusive claims then run it exactly once.

How the chain is kept: when a process starts (and whenever one of its occurrences falls
due, on a small keeper thread that waits for the next due time), it makes sure the next
occurrence after *now* exists.  Because the next occurrence is added when the previous one
falls *due* -- not when it runs -- a run that fails, is cancelled, misfires or is slow does
not break the chain.  Runs longer than the period overlap with the next occurrence.

After downtime, the occurrence that was pending runs once, late (coalescing every missed
one), and the schedule resumes on its grid.  ``coalesce=False`` instead runs each missed
occurrence (at most :data:`MAX_CATCH_UP`, the most recent ones); ``misfire_grace=S`` skips
an occurrence that would start more than ``S`` s late (it ends ``misfired``, visibly).

At start, a pending occurrence whose task is no longer periodic in this process, or whose
schedule changed, is cancelled: a schedule removed from the code stops, a changed one takes
effect at the next start.  This assumes, as the rest of timewheel does, that every process
that starts the wheel registers the same tasks.  A process that declares no periodic task
at all never reconciles, so the pending occurrence of the last periodic task removed from
the code still fires once (and ends ``failed`` if its function is gone); it is never
re-added.  ``immediate=True`` wheels never start, so they schedule nothing: call the
function directly in tests.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import inspect
import logging
import math
import os
import re
import threading
import weakref
from typing import TYPE_CHECKING, Any, Callable, Optional, TypeVar, Union

if TYPE_CHECKING:
    from .api import Task, TimeWheel

from .errors import shown
from .records import MAX_ETA, PENDING, STATUSES

__all__ = ["Schedule", "Every", "Cron", "Periodics", "periodic", "schedules", "occurrence_id",
           "due_between", "plan", "MAX_CATCH_UP"]

log = logging.getLogger("timewheel.periodic")
R = TypeVar("R")

#: with ``coalesce=False``, at most this many missed occurrences are run after downtime
MAX_CATCH_UP = 1000
_MAX_SLEEP = 1.0                     # the keeper notices stop() and clock jumps this fast
_ID = re.compile(r"^periodic-([0-9a-f]{12})-(\d+)$")


class Schedule:
    """When a periodic task fires.  Pure: no clock, no I/O."""

    #: canonical text of the schedule; its hash is part of every occurrence id
    spec: str

    def next_after(self, t: float) -> float:
        """The first fire time strictly after unix time ``t``."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.spec}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Schedule) and other.spec == self.spec

    def __hash__(self) -> int:
        return hash(self.spec)


class Every(Schedule):
    """Every ``seconds`` seconds, at the multiples of ``seconds`` since the Unix epoch."""

    def __init__(self, seconds: Union[float, _dt.timedelta]) -> None:
        if isinstance(seconds, _dt.timedelta):
            seconds = seconds.total_seconds()
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
            raise TypeError(f"every must be seconds or a timedelta, got {type(seconds).__name__} "
                            f"{shown(seconds)}")
        # nan fails the comparison; an int too large for a float is refused before float()
        if not 0.001 <= seconds <= MAX_ETA:
            raise ValueError(f"every must be from 0.001 s to {MAX_ETA:g} s, got {shown(seconds)}")
        self.seconds = float(seconds)
        self.spec = f"every={self.seconds!r}"

    def next_after(self, t: float) -> float:
        s = self.seconds
        k = math.floor(t / s) + 1
        # Float division can land one off either way; fix it against the products we return.
        while k * s <= t:
            k += 1
        while (k - 1) * s > t:
            k -= 1
        return k * s


class Cron(Schedule):
    """A cron expression (any croniter accepts, incl. a 6th seconds field), on the wall clock
    of ``tz`` (an IANA name or a ``zoneinfo.ZoneInfo``; default UTC)."""

    def __init__(self, expr: str, tz: Union[str, _dt.tzinfo, None] = None) -> None:
        try:
            from croniter import croniter  # optional dependency: timewheel[cron]
        except ImportError:
            raise ImportError("cron= schedules need croniter, which is not installed: "
                              "pip install 'timewheel[cron]'", name="croniter") from None
        if not isinstance(expr, str) or not croniter.is_valid(expr):
            raise ValueError(f"not a valid cron expression: {shown(expr)}")
        self.expr = expr
        self.zone, tz_name = _zone(tz)
        self.spec = f"cron={expr};tz={tz_name}"
        self._croniter = croniter

    def next_after(self, t: float) -> float:
        # Iterate wall times from the wall time of t; _instant() is monotonic, so nothing at
        # or before that wall time can fire after t, and later ones may still be <= t on the
        # second pass of a repeated hour: skip those.
        start = self._wall(math.floor(t))
        it = self._croniter(self.expr, start)
        while True:
            fire = self._instant(it.get_next(_dt.datetime))
            if fire > t:
                return fire

    def _wall(self, t: float) -> _dt.datetime:
        return _dt.datetime.fromtimestamp(t, self.zone).replace(tzinfo=None)

    def _instant(self, wall: _dt.datetime) -> float:
        """The first instant whose wall time is ``wall`` or later.

        That is ``wall`` itself on an ordinary day, its first occurrence when clocks go back,
        and the moment of the jump when clocks go forward over it.
        """
        first = wall.replace(tzinfo=self.zone, fold=0).timestamp()
        if self._wall(first) == wall:
            return first                    # fold=0 is the earlier of two occurrences
        # In a gap: fold=1 reads it with the offset after the jump, fold=0 with the one before,
        # so the jump lies between them.  Transitions are on whole seconds: bisect.
        lo = math.floor(wall.replace(tzinfo=self.zone, fold=1).timestamp())
        hi = math.ceil(first)
        while lo < hi:
            mid = (lo + hi) // 2
            if self._wall(mid) >= wall:
                hi = mid
            else:
                lo = mid + 1
        return float(lo)


def _zone(tz: Union[str, _dt.tzinfo, None]) -> tuple[_dt.tzinfo, str]:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError
    if tz is None:
        return _dt.timezone.utc, "UTC"
    if isinstance(tz, str):
        try:
            return ZoneInfo(tz), tz
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {shown(tz)} (on Windows, install tzdata)") from None
    if isinstance(tz, ZoneInfo):
        return tz, str(tz.key)
    if isinstance(tz, _dt.timezone):      # a fixed offset: no transitions to handle
        return tz, str(tz)
    # pytz and dateutil zones do not implement PEP 495 folds, which the DST rules rely on.
    raise TypeError(f"tz must be an IANA zone name or a zoneinfo.ZoneInfo, got {type(tz).__name__}")


def due_between(schedule: Schedule, after: float, through: float,
                limit: int = MAX_CATCH_UP) -> list[float]:
    """Fire times in ``(after, through]``, oldest first; only the latest ``limit`` of them."""
    out: list[float] = []
    t = schedule.next_after(after)
    while t <= through:
        out.append(t)
        if len(out) > limit:
            del out[0]
        t = schedule.next_after(t)
    return out


def plan(schedule: Schedule, now: float, last: Optional[float], coalesce: bool) -> list[float]:
    """The occurrences that should exist at ``now``: the next one, plus, without coalescing,
    each one missed since ``last`` (the latest occurrence known to exist)."""
    nxt = schedule.next_after(now)
    if coalesce or last is None:
        return [nxt]
    return due_between(schedule, last, now) + [nxt]


def occurrence_id(name: str, schedule: Schedule, due: float) -> str:
    """The task id of the occurrence of ``name`` due at ``due``: the same in every process."""
    return f"periodic-{_digest(name, schedule)}-{round(due * 1e6)}"


def _digest(name: str, schedule: Schedule) -> str:
    return hashlib.sha256(f"{name}\n{schedule.spec}".encode()).hexdigest()[:12]


# -- registration and the keeper ----------------------------------------------------------

class _Entry:
    def __init__(self, task: "Task[..., Any]", schedule: Schedule, coalesce: bool) -> None:
        self.task = task
        self.schedule = schedule
        self.coalesce = coalesce
        self.digest = _digest(task.name, schedule)
        self.last: Optional[float] = None     # latest occurrence known to exist


class Periodics:
    """The periodic tasks of one TimeWheel, and the thread that keeps their chains going.

    Made by ``TimeWheel.periodic()``; its ``start()``/``stop()`` follow the wheel's.  It uses
    the wheel's public API only: occurrences are added with ``schedule(task_id=..., once=True)``
    (an id that exists, finished or not, is never added again) and reconciled through the
    store's ``scan``.
    """

    def __init__(self, hu: "TimeWheel") -> None:
        self.hu = hu
        self.entries: dict[str, _Entry] = {}
        self.lock = threading.RLock()        # guards entries and each entry's ``last``
        self.wake = threading.Event()
        self._keeper: Optional[threading.Thread] = None
        self._stop = threading.Event()
        _all.add(self)

    def decorator(self, *, every: Union[float, _dt.timedelta, None] = None,
                  cron: Optional[str] = None, tz: Union[str, _dt.tzinfo, None] = None,
                  name: Optional[str] = None, coalesce: bool = True,
                  **options: Any) -> Callable[[Callable[[], R]], "Task[[], R]"]:
        """``@hu.periodic(...)``: see :func:`periodic`."""
        schedule = _schedule(every, cron, tz, coalesce, self.hu.clock())   # no store opened yet

        def register(fn: Callable[[], R]) -> "Task[[], R]":
            try:
                inspect.signature(fn).bind()
            except TypeError:
                raise TypeError(f"a periodic task is called without arguments; {shown(fn)} "
                                "needs some") from None
            except ValueError:
                pass                           # no signature to check (some builtins)
            task = self.hu.task(name=name, **options)(fn)
            entry = _Entry(task, schedule, coalesce)
            with self.lock:
                self.entries[task.name] = entry
                if self.hu.running:            # registered after start(): begin at once
                    self._ensure(entry, self.hu.now())
                    self.wake.set()
            return task

        return register

    def reconcile(self) -> None:
        """At start: cancel pending occurrences whose schedule is gone or changed, and make
        sure each chain has its next occurrence.  Failures are logged; the keeper retries."""
        try:
            self._reconcile()
        except Exception:        # start() must not fail for this
            log.exception("could not reconcile periodic tasks with %s", self.hu.location)

    def start(self) -> None:
        self._stop.clear()
        self.wake.clear()
        self._keeper = threading.Thread(target=self._keep, daemon=True, name="timewheel-periodic")
        self._keeper.start()

    def stop(self) -> None:
        self._stop.set()
        self.wake.set()
        if self._keeper is not None and self._keeper is not threading.current_thread():
            self._keeper.join(5.0)
        self._keeper = None

    def _reconcile(self) -> None:
        hu = self.hu
        with self.lock:
            entries = list(self.entries.values())
        wanted = {(e.task.name, e.digest) for e in entries}
        for rec in hu.store.scan(PENDING, id_prefix="periodic-"):
            m = _ID.match(rec.id)
            if m is not None and (rec.name, m.group(1)) not in wanted and hu.cancel(rec.id):
                log.warning("cancelled %s (%s): the task is no longer periodic with that "
                            "schedule in this code", rec.id, rec.name)
        now = hu.now()
        with self.lock:
            for e in entries:
                if not e.coalesce:
                    e.last = self._latest(e)
                self._ensure(e, now)

    def _latest(self, e: _Entry) -> Optional[float]:
        dues = [int(m.group(2)) / 1e6
                for status in STATUSES
                for rec in self.hu.store.scan(status, name=e.task.name, id_prefix=f"periodic-{e.digest}-")
                if (m := _ID.match(rec.id)) is not None and m.group(1) == e.digest]
        return max(dues, default=None)

    def _ensure(self, e: _Entry, now: float) -> float:
        """Add the occurrences ``e`` should have at ``now``; return the next due time."""
        dues = plan(e.schedule, now, e.last, e.coalesce)
        if len(dues) > 1:
            log.warning("periodic %s: running %d missed occurrence(s)", e.task.name, len(dues) - 1)
        for due in dues:
            if due > MAX_ETA:
                raise ValueError(f"periodic {e.task.name}: next occurrence is after 9999")
            task_id = occurrence_id(e.task.name, e.schedule, due)
            e.task.schedule((), {}, eta=due, task_id=task_id, once=True)
        e.last = dues[-1]
        return dues[-1]

    def _keep(self) -> None:
        hu = self.hu
        while not self._stop.is_set():
            with self.lock:
                now = hu.now()
                wake_at = now + _MAX_SLEEP
                for e in list(self.entries.values()):
                    try:
                        wake_at = min(wake_at, self._ensure(e, now))
                    except Exception:     # StoreBusy, ...: try again within _MAX_SLEEP
                        log.exception("periodic %s: could not add the next occurrence; retrying",
                                      e.task.name)
            # Wake just after the next due time, when next_after() moves on to the one after.
            self.wake.wait(min(_MAX_SLEEP, max(0.0, wake_at - hu.now()) + 0.001))
            self.wake.clear()


_all: "weakref.WeakSet[Periodics]" = weakref.WeakSet()


def _schedule(every: Any, cron: Optional[str], tz: Any, coalesce: Any, now: float) -> Schedule:
    if not isinstance(coalesce, bool):
        raise TypeError(f"coalesce must be a bool, got {shown(coalesce)}")
    schedule: Schedule
    if cron is not None and every is None:
        schedule = Cron(cron, tz)
    elif every is not None and cron is None:
        if tz is not None:
            raise ValueError("tz= applies to cron= schedules only")
        schedule = Every(every)
    else:
        raise ValueError("give every= or cron=, exactly one")
    # An expression like "0 0 31 2 *" never fires: say so now, not in the keeper thread.
    try:
        first = schedule.next_after(now)
    except ValueError as exc:
        raise ValueError(f"schedule {schedule.spec} never fires: {exc}") from None
    if first > MAX_ETA:
        raise ValueError(f"schedule {schedule.spec} first fires after 9999")
    return schedule


def periodic(hu: "TimeWheel", *, every: Union[float, _dt.timedelta, None] = None,
             cron: Optional[str] = None, tz: Union[str, _dt.tzinfo, None] = None,
             name: Optional[str] = None, coalesce: bool = True,
             **options: Any) -> Callable[[Callable[[], R]], "Task[[], R]"]:
    """Register a recurring task on ``hu``; the same as ``@hu.periodic(...)``.

    Exactly one of ``every`` (seconds or a timedelta) and ``cron`` (with an optional ``tz``).
    ``coalesce``: after downtime run the missed occurrences once (default) or each of them.
    Other ``options`` (``retries``, ``retry_delay``, ``misfire_grace``, ``timeout``) go to
    ``hu.task()``.  The function takes no arguments; it is also an ordinary task.
    """
    return hu.periodic(every=every, cron=cron, tz=tz, name=name, coalesce=coalesce, **options)


def schedules(hu: "TimeWheel") -> dict[str, Schedule]:
    """The periodic tasks registered on ``hu``, by task name."""
    p = hu._periodics
    if p is None:
        return {}
    with p.lock:
        return {n: e.schedule for n, e in p.entries.items()}


def _after_fork_in_child() -> None:
    # A lock held by a thread of the parent would stay held forever in the child.
    for p in list(_all):
        p.lock = threading.RLock()
        p.wake = threading.Event()
        p._stop = threading.Event()
        p._keeper = None


os.register_at_fork(after_in_child=_after_fork_in_child)
