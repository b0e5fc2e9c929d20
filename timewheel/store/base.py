"""The storage interface: the only thing the wheel, the boss and the CLI know about a store.

A backend keeps :class:`~timewheel.records.TaskRecord` values and four indexes over them:

* the *wheel*: pending tasks by (slot, cycle, eta) -- the ring buffer of the design;
* *late markers*: pending tasks added into a tick some boss has already loaded;
* *running*: claimed tasks and the process that owns each;
* *expiry*: finished tasks by the time their result may be purged.

Every method is atomic and, when it returns, durable against a process kill.  Methods that
change several tasks do so all-or-nothing.  Backends raise :class:`~timewheel.errors.StoreBusy`
when they could not get the write lock in time and :class:`~timewheel.errors.StoreError` for
other I/O failures; in both cases nothing was changed.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Callable, Iterable, NamedTuple, Optional, Sequence

from ..records import (
    CANCELLED,
    FAILED,
    MISFIRED,
    PENDING,
    RUNNING,
    SUCCEEDED,
    TERMINAL,
    TaskRecord,
)
from ..wheel import Wheel

__all__ = [
    "WheelStore", "Due", "Claim", "Outcome", "StoreState", "start_run", "end_run",
    "requeue_crashed", "reset_for_retry", "cancel_record", "RETRYABLE", "ordered", "purge_statuses",
]


class Due(NamedTuple):
    """A pending task as the boss sees it before claiming: when, and which."""

    eta: float
    id: str
    late: bool = False        #: found through a late marker (its tick was loaded before it arrived)
    key: Optional[str] = None  #: the backend's wheel key, handed back to claim()


@dataclass
class Claim:
    """What :meth:`WheelStore.claim` did."""

    run: list[TaskRecord] = field(default_factory=list)       #: now RUNNING, owned by the caller
    misfired: list[TaskRecord] = field(default_factory=list)  #: now MISFIRED, not to be run
    gone: list[str] = field(default_factory=list)             #: no longer pending (cancelled, ...)
    not_due: list[Due] = field(default_factory=list)          #: exact eta still in the future


@dataclass
class Outcome:
    """How one claimed run ended, for :meth:`WheelStore.finish`."""

    id: str
    ok: bool
    result: Optional[bytes] = None          #: pickled return value when ok
    error: Optional[str] = None
    traceback: Optional[str] = None
    retry_at: Optional[float] = None        #: failed but has attempts left: pending again at this eta
    finished: float = 0.0
    started: Optional[float] = None         #: when the worker really started it


@dataclass
class StoreState:
    """Bookkeeping shared by every process using the store."""

    horizon: int        #: ticks <= horizon have been loaded by a boss (later adds get a late marker)
    done_through: int   #: every task due in a tick <= this has been claimed
    leader: Optional[str] = None   #: owner token of the last process that took the ticking lock


class WheelStore(abc.ABC):
    """Persistent wheel of task records.  One instance per process; thread-safe."""

    wheel: Wheel
    path: Optional[str] = None
    #: seconds a finished task (and its result or error) is kept before purge() deletes it
    result_ttl: float = 7 * 86400.0

    # -- producers ------------------------------------------------------------------------
    @abc.abstractmethod
    def add(self, records: Sequence[TaskRecord]) -> None:
        """Store new PENDING tasks, all or none, and commit before returning.

        Each goes into the wheel at ``wheel.due_tick(eta)``; one whose tick is <= the stored
        horizon also gets a late marker so the ticking process still finds it.
        Raises ``ValueError`` if an id already exists (nothing is written).
        """

    @abc.abstractmethod
    def get(self, task_id: str) -> Optional[TaskRecord]:
        """The record for ``task_id``, or None.  Raises RecordDecodeError for a corrupt one."""

    @abc.abstractmethod
    def cancel(self, task_id: str, now: float) -> bool:
        """PENDING -> CANCELLED; True if it was pending (it will never run), else False."""

    @abc.abstractmethod
    def retry(self, task_id: str, now: float) -> bool:
        """FAILED/MISFIRED/CANCELLED -> PENDING due at ``now`` with fresh attempts; else False."""

    # -- the ticking process ----------------------------------------------------------------
    @abc.abstractmethod
    def state(self) -> StoreState:
        """The shared bookkeeping (see :class:`StoreState`)."""

    @abc.abstractmethod
    def load(self, after: int, through: int, done_through: int,
             leader: Optional[str] = None) -> list[Due]:
        """Raise the horizon to ``through`` and return the PENDING tasks of ticks
        ``(after, through]`` plus every late marker, in one transaction.

        Also records ``done_through`` (and ``leader`` if given).  Order is unspecified.
        """

    @abc.abstractmethod
    def late(self) -> list[Due]:
        """Every PENDING task that carries a late marker."""

    @abc.abstractmethod
    def claim(self, due: Sequence[Due], owner: str, now: float, starting: int) -> Claim:
        """Atomically move still-PENDING tasks among ``due`` to RUNNING owned by ``owner``.

        The first ``starting`` of them start at once (idle workers): they get ``started``
        set, and count as a crash if their process dies.  The others wait for a worker and
        only get ``started`` when they finish, so a crash while they merely waited is free.

        A task past its ``misfire_grace`` becomes MISFIRED instead; one whose exact eta is
        still after ``now`` is left alone and returned in ``not_due`` (never early).  Ids that
        are no longer pending are reported in ``gone``; a record that cannot be decoded is
        taken off the wheel and listed by :meth:`broken`.  No task is ever claimed twice,
        across processes.
        """

    @abc.abstractmethod
    def finish(self, outcomes: Sequence[Outcome]) -> list[Due]:
        """Record how claimed runs ended: SUCCEEDED, FAILED, or PENDING again for a retry.

        Finished tasks become purgeable ``result_ttl`` seconds after they finished.  Returns
        the tasks that are pending again (retries), so the ticking process can schedule them.
        """

    @abc.abstractmethod
    def recover(self, is_dead: Callable[[str], bool], now: float, max_crashes: int) -> list[str]:
        """Put RUNNING tasks whose owner ``is_dead`` back to PENDING (they run again), or
        FAILED once they have crashed their process ``max_crashes`` times.  Returns their ids.
        """

    @abc.abstractmethod
    def purge(self, now: float, limit: int = 1000, statuses: Optional[Iterable[str]] = None,
              finished_before: Optional[float] = None) -> int:
        """Delete finished tasks whose TTL ran out (or, with ``finished_before``, those that
        finished before it, in ``statuses``).  Returns how many were deleted."""

    # -- observers (CLI) -----------------------------------------------------------------------
    @abc.abstractmethod
    def counts(self) -> dict[str, int]:
        """Number of tasks per status (every status key present)."""

    @abc.abstractmethod
    def tasks(self, status: Optional[str] = None, name: Optional[str] = None,
              limit: Optional[int] = None, id_prefix: Optional[str] = None) -> list[TaskRecord]:
        """Records, filtered; pending ones in due order, others most recently finished first.
        With ``id_prefix`` only ids starting with it are read (cheap, whatever else is stored).
        Undecodable records are skipped here (see :meth:`broken`)."""

    @abc.abstractmethod
    def broken(self) -> list[tuple[str, str]]:
        """(id, reason) of every stored record that cannot be decoded."""

    @abc.abstractmethod
    def occupancy(self) -> list[tuple[int, int, int]]:
        """(slot, cycle, count) for every non-empty (slot, cycle) of the wheel."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the backend's resources; the instance is unusable afterwards."""


# -- record transitions shared by every backend (pure: they only edit the record) -----------

def start_run(rec: TaskRecord, owner: str, now: float, starting: bool) -> bool:
    """PENDING -> RUNNING, or -> MISFIRED when too late.  Returns True if it is to be run."""
    if rec.misfire_grace is not None and now - rec.eta > rec.misfire_grace:
        rec.status = MISFIRED
        rec.finished = now
        rec.error = (f"skipped: would have started {now - rec.eta:.3f}s after its eta, "
                     f"misfire_grace is {rec.misfire_grace}s")
        return False
    rec.status = RUNNING
    rec.owner = owner
    rec.started = now if starting else None
    rec.attempts += 1
    return True


def end_run(rec: TaskRecord, out: Outcome) -> None:
    """RUNNING -> SUCCEEDED / FAILED / PENDING (retry), as ``out`` says."""
    rec.owner = None
    rec.finished = out.finished
    if out.started is not None:
        rec.started = out.started
    if out.ok:
        rec.status, rec.result, rec.error, rec.traceback = SUCCEEDED, out.result, None, None
        return
    rec.error, rec.traceback = out.error, out.traceback
    if out.retry_at is not None:
        rec.status, rec.eta = PENDING, out.retry_at
    else:
        rec.status = FAILED


def requeue_crashed(rec: TaskRecord, now: float, max_crashes: int) -> None:
    """RUNNING whose process died -> PENDING again (the documented re-run), or FAILED.

    Only a task that had started counts as a crash: one still waiting for a worker is just
    handed back."""
    rec.owner = None
    if rec.started is not None:
        rec.crashes += 1
    rec.started = None
    rec.attempts = max(0, rec.attempts - 1)
    if rec.crashes >= max_crashes:
        rec.status, rec.finished = FAILED, now
        rec.error = f"the process running it died {rec.crashes} times; not run again"
    else:
        rec.status = PENDING


def reset_for_retry(rec: TaskRecord, now: float) -> None:
    """A finished task -> PENDING now, with a fresh attempt budget."""
    rec.status, rec.eta = PENDING, now
    rec.attempts = rec.crashes = 0
    rec.started = rec.finished = rec.owner = None
    rec.result = None


def cancel_record(rec: TaskRecord, now: float) -> None:
    rec.status, rec.finished, rec.error = CANCELLED, now, "cancelled"


RETRYABLE = frozenset({FAILED, MISFIRED, CANCELLED})


def ordered(recs: list[TaskRecord]) -> list[TaskRecord]:
    """Pending first in due order, then the rest most recently finished first."""
    pending = sorted((r for r in recs if r.status == PENDING), key=lambda r: r.eta)
    rest = sorted((r for r in recs if r.status != PENDING),
                  key=lambda r: -(r.finished or r.started or r.created))
    return pending + rest


def purge_statuses(statuses: Optional[Iterable[str]]) -> list[str]:
    """The statuses purge() may delete: finished ones only (default: all of them)."""
    wanted = sorted(TERMINAL) if statuses is None else list(statuses)
    unknown = [s for s in wanted if s not in TERMINAL]
    if unknown:
        raise ValueError(f"can only purge finished tasks ({', '.join(sorted(TERMINAL))}), "
                         f"not {', '.join(unknown)}")
    return wanted
