"""The storage interface: all that the runner, the API, the CLI and the web view know of a store.

A store keeps :class:`~timewheel.records.TaskRecord` values.  Where a pending task sits is the
store's business -- a ring of ``wheel.slots`` slots, each holding the tasks of its cycles, in
every backend -- and a task moves through three places a caller can observe:

* **pending** in the wheel, at the tick ``wheel.due_tick(eta)``;
* **ready**: pending, and its tick is at or below the *horizon*, the tick through which the
  ticking process has *advanced* the wheel.  Only ready tasks are claimed, earliest eta
  first, and only once their exact eta has passed (never early);
* **running** under an *owner* (a :class:`Liveness` token), then finished.

Every state change goes through the pure transitions of :mod:`timewheel.records`; a store
applies them with :meth:`WheelStore.swap`, a compare-and-set on the record's ``rev``, which it
bumps at every write.  A claim's ``rev`` is its fencing token: an outcome recorded with an
older one (a process that lost its task to a crash recovery while it was paused) is refused.

Each method says what it does atomically.  Every write is durable when the method returns
(to the backend's own durability: see docs/stores.md).  Errors: :class:`~timewheel.errors.StoreBusy`
when the backend stayed locked or unreachable for longer than its timeout, and
:class:`~timewheel.errors.StoreError` for other failures; in both cases nothing was written.
:class:`~timewheel.errors.DuplicateTask` when :meth:`add` finds an id taken.

**Flow control** (issue 21, :mod:`timewheel.flow`) is part of :meth:`WheelStore.claim`'s
transaction on every backend: the queues a claimer serves, the stored pauses, priorities
among due tasks and the limits each record counts against are decided there, atomically with
the claim, never by a check in Python before it.  A limit's slot is held from the claim until
the outcome of that run is recorded (it is freed in the same transaction as the outcome, or as
the requeue of a crashed run -- never sooner); its starts are logged at the store's clock.  A
due task held back by a full limit is *parked* off the ready queue, per limit, and comes back
when a slot frees (in the transaction that frees it) or its rate window reopens (at that time:
:meth:`claim` reports it as ``next_eta``); its eta stays what it was.  A paused queue and a
queue the claimer does not serve are not read at all.

Ten methods are abstract.  The observers below them (``next_ready_eta``, ``ticks``,
``wheel_stats``, ...) have defaults built on :meth:`scan` that real backends override with a
cheap query, so that an operator's view of a store holding a million tasks costs what it
prints.  The rules every backend applies alike (what ``add`` does with an id that is taken,
the stamp of a claim, when a record is set aside as broken) are in :mod:`timewheel.store.rules`.
"""

from __future__ import annotations

import abc
import math
import threading
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Optional, Sequence

from ..errors import StoreError, StoreMismatch, shown
from ..records import PENDING, RUNNING, STATUSES, TERMINAL, TaskRecord
from ..wheel import Wheel

if TYPE_CHECKING:
    from ..batches import BatchState
    from ..inbox import Entry

__all__ = [
    "WheelStore", "Liveness", "Doorbell", "Claimed", "Advanced", "StoreState", "EXISTING",
    "LimitState", "QueueState",
    "BROKEN", "LISTABLE", "scan_order", "page", "broken_record", "eta_us", "finished_ms",
]

#: what :meth:`WheelStore.add` does with an id that is already stored
EXISTING = ("fail", "keep", "reuse", "replace")
#: the pseudo-status of records that cannot be decoded; :meth:`WheelStore.scan` lists them
BROKEN = "broken"
LISTABLE = STATUSES + (BROKEN,)


@dataclass(frozen=True)
class Claimed:
    """What :meth:`WheelStore.claim` took, and when the next ready task is due."""

    records: list[TaskRecord]       #: now RUNNING, owned by the caller, earliest eta first
    next_eta: Optional[float]       #: eta of the earliest ready task left; None if none


@dataclass(frozen=True)
class Advanced:
    """What :meth:`WheelStore.advance` did."""

    horizon: int        #: the stored horizon after the call
    moved: int          #: tasks this call made ready
    complete: bool      #: False: more is to be made ready below ``through``; call again
    led: bool = True    #: False: another process holds the ticking role; nothing was done


@dataclass(frozen=True)
class LimitState:
    """A limit as the store holds it now (flow control's observers)."""

    key: str                 #: see :class:`timewheel.flow.Limit`
    concurrency: int         #: as the last task claimed or parked under it said (0: none)
    rate: int
    per: float
    running: int             #: slots held: runs claimed and not yet recorded
    parked: int              #: due tasks waiting for it
    recent: int              #: starts in its rate window now
    reopen: Optional[float]  #: when its closed rate window lets parked tasks in again


@dataclass(frozen=True)
class QueueState:
    """One queue now (flow control's observers)."""

    queue: str
    pending: int             #: pending tasks, due or not
    waiting: int             #: due and not running: ready, parked on a limit, or paused
    running: int
    paused: bool


@dataclass(frozen=True)
class StoreState:
    """Bookkeeping shared by every process using the store."""

    horizon: int                    #: ticks <= horizon are ready
    leader: Optional[str] = None    #: token of the last process that advanced the wheel
    advanced_at: Optional[float] = None  #: when it last did (the store's clock)


class Liveness(abc.ABC):
    """Who is alive and who ticks, for one store: file locks for a file, leases for a server.

    One instance per process and store; thread-safe.
    """

    #: seconds between calls of :meth:`keepalive` while this process is started (None: never)
    renew_every: Optional[float] = None

    @property
    @abc.abstractmethod
    def token(self) -> str:
        """This process incarnation's name, stored as the ``owner`` of the tasks it claims."""

    @abc.abstractmethod
    def try_lead(self) -> bool:
        """Take (or keep) the ticking role if no live process has it.  Never blocks."""

    @abc.abstractmethod
    def resign(self) -> None:
        """Give the ticking role up; another process may take it at once."""

    @abc.abstractmethod
    def leader(self) -> Optional[str]:
        """The token of the process that holds the ticking role now, if it is alive."""

    @abc.abstractmethod
    def is_dead(self, token: str) -> bool:
        """True if the process incarnation ``token`` certainly no longer runs its tasks."""

    def keepalive(self, running: Sequence[TaskRecord]) -> list[str]:
        """Renew the leases of ``running`` (tasks this process claimed and still runs, maybe
        none), every :attr:`renew_every` seconds.

        Returns the ids whose lease was already lost (the task will run again elsewhere).
        The default does nothing.
        """
        return []

    def verify(self) -> Optional[str]:
        """Check, once a tick, that what this liveness stands on is still there (the file
        store's lock file: deleted or replaced?) and repair it if it can; returns what
        happened, for the log, or None.  Raises StoreError when it cannot go on."""
        return None

    def close(self) -> None:  # noqa: B027 - optional: most hold nothing
        """Release what the liveness holds (the ticking role included)."""


class Doorbell:
    """Wakes a waiting runner when a task becomes ready sooner than it planned to look.

    This default reaches the runners of this process only; a backend shared by several
    processes returns one that crosses process boundaries from :meth:`WheelStore.doorbell`.
    """

    def __init__(self, store: "Optional[WheelStore]" = None) -> None:
        self._event = threading.Event()
        self._store = store

    def ring(self) -> None:
        """Wake every runner of the store (a task became ready)."""
        if self._store is not None:
            self._store.ring()
        else:
            self.poke()

    def poke(self) -> None:
        """Wake this bell's own runner (an outcome arrived, it is stopping)."""
        self._event.set()

    def wait(self, timeout: Optional[float]) -> bool:
        """Sleep until rung or ``timeout`` seconds passed; True if rung."""
        rung = self._event.wait(timeout)
        self._event.clear()
        return rung

    def close(self) -> None:
        self._event.set()


class WheelStore(abc.ABC):
    """Persistent wheel of task records.  One instance per process; thread-safe."""

    #: True where :meth:`claim` enforces queues, pauses, priorities and limits (issue 21): a
    #: backend without it refuses flow-controlled tasks rather than ignoring what they ask
    flow_control: bool = False
    wheel: Wheel
    #: the file path or URL, for messages and the CLI
    location: str
    #: who is alive and who ticks (see :class:`Liveness`)
    liveness: Liveness

    def now(self) -> float:
        """The store's clock: what etas, claims and leases are judged by.  A backend whose
        server has the authoritative clock (Redis) overrides this."""
        return self._clock()

    # -- tasks --------------------------------------------------------------------------------
    @abc.abstractmethod
    def add(self, records: Sequence[TaskRecord], *, existing: str = "fail") -> list[TaskRecord]:
        """Store new PENDING tasks in one atomic write; returns what is stored for each.

        ``existing`` says what happens to an id that is already stored (or given twice):

        * ``"fail"``: raise :class:`DuplicateTask`; nothing is written;
        * ``"keep"``: leave the stored task, whatever its state, and return it;
        * ``"reuse"``: keep a pending or running one; replace a finished one;
        * ``"replace"``: replace a pending or finished one; a running one raises
          :class:`DuplicateTask` and nothing is written.

        A replacement continues the old record's ``rev`` -- also of a record that cannot be
        decoded, which every policy but ``"fail"`` replaces (see :mod:`timewheel.store.rules`).

        A record written with ``depends_on`` (a store that keeps dependencies, issue 23) is
        resolved first (:func:`timewheel.deps.resolve_all`: waiting, or cancelled if a
        dependency already failed); an unknown dependency raises :class:`TaskNotFound` and
        nothing is written.  Every write that records a final status releases or cancels the
        dependents of that task in the same transaction (:class:`timewheel.deps.Cascade`).
        """

    @abc.abstractmethod
    def get(self, task_id: str) -> Optional[TaskRecord]:
        """The record for ``task_id``, or None.  Raises RecordDecodeError for a broken one."""

    @abc.abstractmethod
    def swap(self, changes: Sequence[tuple[TaskRecord, TaskRecord]]) -> list[Optional[TaskRecord]]:
        """Compare-and-set: for each ``(old, new)`` (same id), if the stored record's ``rev``
        is still ``old.rev``, store ``new`` with ``rev = old.rev + 1`` and return that;
        otherwise return None and change nothing.

        Each pair is atomic on its own; a batch costs one transaction (round trip) but its
        pairs succeed or fail independently.  ``new.status`` decides where the task goes:
        pending -> the wheel at its eta (ready at once if its tick is within the horizon);
        running -> running under ``new.owner``; finished -> purgeable (see :meth:`purge`).
        """

    # -- workers ------------------------------------------------------------------------------
    @abc.abstractmethod
    def claim(self, owner: str, now: float, limit: int, queued: int = 0, *,
              queues: Optional[frozenset] = None) -> Claimed:
        """Atomically take up to ``limit + queued`` ready tasks whose eta is <= ``now`` and
        make them RUNNING for ``owner`` (:func:`~timewheel.records.start_run`, with a lease
        where the backend has them): the first ``limit`` started at ``now``, the others
        ``queued`` (``started`` None: they wait for a worker of the owner).

        Only tasks of ``queues`` (None: every queue) that are not paused; among the due ones
        the highest priority first, then the earliest eta.  A task that counts against limits
        (``rec.limits``) is taken only to start now and only as :class:`timewheel.flow.Admission`
        admits it: its slots and its start are counted in this transaction, and a task a full
        limit holds back is parked (see the module's docstring).  ``next_eta`` is the earliest
        of the served ready tasks' etas and the parked tasks' reopening windows.

        No task is ever claimed twice, across threads, processes and hosts, and no limit is
        exceeded.  A backend with an authoritative clock judges ``now`` by it and ignores the
        argument.  With no room (``limit + queued == 0``) it claims nothing; to look without
        claiming, ask :meth:`next_ready_eta`.
        """

    def change(self, task_id: str, allowed: Callable[[TaskRecord], bool],
               transition: Callable[[TaskRecord, float], TaskRecord], attempts: int = 100
               ) -> tuple[Optional[TaskRecord], Optional[TaskRecord]]:
        """Apply ``transition`` (a function of :mod:`timewheel.records`) to one task if
        ``allowed`` says its current state permits it: a compare-and-set, looked at again
        while another process changes the task meanwhile (up to ``attempts`` times).

        Returns ``(the record as last read, the stored result)``: ``(None, None)`` for an
        unknown id, ``(rec, None)`` when not allowed (or still changing after ``attempts``).
        Raises RecordDecodeError for a broken record.
        """
        rec = None
        for _ in range(attempts):
            rec = self.get(task_id)
            if rec is None or not allowed(rec):
                return rec, None
            new = self.swap([(rec, transition(rec, self.now()))])[0]
            if new is not None:
                return rec, new
        return rec, None

    # -- aborting a running task (issue 23) ---------------------------------------------------
    def note(self, old: TaskRecord, new: TaskRecord) -> bool:
        """Write the notes ``new`` changes on the running ``old`` -- its ``abort``
        (:func:`~timewheel.records.request_abort`) or its ``progress``
        (:func:`~timewheel.records.with_progress`), field by field (:func:`rules.noted`) -- if
        the stored record is still ``old``'s run (running, at ``old.rev``), *keeping* its
        ``rev``: the run's fence, its lease and its outcome stay valid, and the outcome's write
        replaces this one.  One atomic write; nothing moves, nothing is counted.  False if the
        record changed meanwhile."""
        raise StoreError(f"{self.location}: this store cannot abort a running task")

    def abort(self, task_id: str, attempts: int = 100) -> tuple[Optional[TaskRecord], str]:
        """Stop a task (:func:`~timewheel.store.rules.abort_step`): cancel it if pending, ask
        its run to abort if running (:meth:`note`), looked at again while another process
        changes it meanwhile.  Returns (the record as last read, what was done): ``"cancelled"``,
        ``"asked"``, ``"asked already"``, ``"refused"`` (finished, or no such task: None) or
        ``"changing"`` (still changing after ``attempts``).  RecordDecodeError for a broken one."""
        from .rules import abort_step
        rec = None
        for _ in range(attempts):
            rec = self.get(task_id)
            kind, new = abort_step(rec, self.now())
            if kind == "refuse" or kind == "done":
                return rec, "refused" if kind == "refuse" else "asked already"
            assert rec is not None and new is not None
            if kind == "swap" and self.swap([(rec, new)])[0] is not None:
                return rec, "cancelled"
            if kind == "note" and self.note(rec, new):
                return rec, "asked"
        return rec, "changing"

    def aborting(self, owner: str, running: Sequence[TaskRecord]) -> dict[str, float]:
        """Of ``running`` (the runs ``owner`` holds, at their claim's ``rev``), those whose
        abort was asked for, with when: one read for all of them (the boss asks once a tick
        while it runs tasks: never a poll per task)."""
        return {}

    def record_and_claim(self, changes: Sequence[tuple[TaskRecord, TaskRecord]], owner: str,
                         now: float, limit: int, queued: int = 0, *,
                         queues: Optional[frozenset] = None
                         ) -> tuple[list[Optional[TaskRecord]], Claimed]:
        """:meth:`swap` the outcomes of finished runs, then :meth:`claim` more: a worker's
        round.  Each part keeps its own guarantees; a backend that can do both in one
        transaction or round trip overrides this."""
        return (self.swap(changes) if changes else []), self.claim(owner, now, limit, queued,
                                                                   queues=queues)

    #: True where the store keeps dependencies (``depends_on``: issue 23, :mod:`timewheel.deps`);
    #: the others refuse them rather than run a dependent early
    dependencies_kept: bool = False

    def sweep_dependents(self, limit: int = 100) -> int:
        """Release or cancel the tasks still waiting for dependencies that have finished (none
        should: the write of each outcome tells its dependents; this is the ticking process's
        backstop, once a minute).  Returns how many finished dependencies were found."""
        return 0

    def dependents(self, task_id: str) -> list[str]:
        """The ids of the tasks added with ``task_id`` among their dependencies, in the order
        they were added (kept until ``task_id`` is purged)."""
        return []

    # -- batches (issue 23, :mod:`timewheel.batches`) ------------------------------------------
    #: True where the store keeps batches; the others refuse them rather than lose callbacks
    batches_kept: bool = False

    def add_batch(self, batch_id: str, members: Sequence[TaskRecord], *,
                  callbacks: "Optional[Mapping[str, TaskRecord]]" = None, opened: Optional[float] = None
                  ) -> list[TaskRecord]:
        """Add ``members`` (new pending records whose ``batch`` is ``batch_id``) in one atomic
        write; with ``callbacks`` (templates by event: :func:`timewheel.batches.callback_template`)
        open the batch in that same write, at ``opened``.

        Opening an id that is taken raises :class:`BatchClosed`; adding to a batch that is not
        stored :class:`BatchNotFound`, to one that is done :class:`BatchClosed`; a member id
        that is taken :class:`DuplicateTask`.  Nothing is written then.  A batch that has no
        open member when the write ends (opened empty) is done in it: its callbacks added."""
        raise StoreError(f"{self.location}: this store keeps no batches (issue 23: memory, file and "
                         "Redis stores do)")

    def batch(self, batch_id: str) -> "Optional[BatchState]":
        """The batch as stored (member counts kept by the writes: O(1)), or None."""
        return None

    def batch_members(self, batch_id: str, start: int = 0, limit: Optional[int] = None) -> list[str]:
        """The ids of a batch's members in the order they were added, from ``start``."""
        return []

    def batches(self, *, limit: int = 100) -> "list[BatchState]":
        """The most recently opened batches, newest first, up to ``limit``."""
        return []

    def sweep_batches(self, limit: int = 100) -> int:
        """Finish the batches that have no open member but are not done (none should: each is
        finished by the write that records its last member's outcome; this is the ticking
        process's backstop): add their callbacks, mark them done.  Returns how many."""
        return 0

    # -- flow control: pauses, who serves what, limits and queues ------------------------------
    def pause(self, queue: str) -> bool:
        """Stop claims of ``queue``'s tasks in every process until :meth:`resume` (stored:
        it survives restarts).  True if it was not paused."""
        raise StoreError(f"{self.location}: this store keeps no pauses")

    def resume(self, queue: str) -> bool:
        """Let ``queue``'s tasks be claimed again, and wake the runners.  True if it was paused."""
        raise StoreError(f"{self.location}: this store keeps no pauses")

    def paused(self) -> frozenset:
        """The paused queues."""
        return frozenset()

    def serve(self, token: str, queues: Optional[frozenset]) -> None:  # noqa: B027 - optional
        """Record that the started process ``token`` claims ``queues`` (None: every queue),
        for :meth:`served`; :meth:`unserve` when it stops.  Dead processes' entries are ignored."""

    def unserve(self, token: str) -> None:  # noqa: B027 - optional
        """Forget what :meth:`serve` recorded for ``token``."""

    def served(self) -> dict[str, Optional[frozenset]]:
        """What each live started process claims (None: every queue)."""
        return {}

    # -- the serializer of the tasks' arguments (timewheel/serialize.py) -----------------------
    def agree_serializer(self, name: str) -> None:
        """Check that the store's tasks are written with ``name`` ("pickle" or "json"), and
        record "json" in a store that has no tasks yet: a wheel refuses a store written with
        the other one (a store that never recorded one was written with pickle).  Raises
        :class:`StoreMismatch` naming both."""
        recorded = self.stored_serializer()
        if (recorded or "pickle") == name:
            return
        if recorded is None and not any(self.counts().values()):
            self.record_serializer(name)
            return
        raise StoreMismatch(f"{self.location} holds tasks written with serializer={recorded or 'pickle'!r}; "
                            f"a wheel with serializer={name!r} cannot use it (a store keeps one serializer)")

    def stored_serializer(self) -> Optional[str]:
        """The serializer the store recorded (None: none, pickle)."""
        return None

    def record_serializer(self, name: str) -> None:
        raise StoreError(f"{self.location}: this store keeps no serializer")

    # -- the inbox other tools enqueue through (timewheel/inbox.py) -----------------------------
    #: True where a tool that is not timewheel can add tasks through the store's inbox
    inbox_kept: bool = False

    def take_inbox(self, build: "Callable[[Entry], TaskRecord]", limit: int = 200) -> tuple[int, int]:
        """Take up to ``limit`` of the oldest inbox entries in, atomically each with its removal
        from the inbox: an entry becomes the task ``build`` makes of it (added as :meth:`add`
        adds one, ``existing="fail"``), or -- unreadable, ``build`` refusing it (InboxError), its
        id taken -- is set aside with the reason, never taken again.  Returns (tasks added,
        entries set aside).  The ticking process calls it every tick."""
        return 0, 0

    def inbox_rejected(self, limit: int = 100) -> list[tuple[str, str]]:
        """The entries set aside, oldest first: (entry text, reason)."""
        return []

    def inbox_sizes(self) -> Optional[tuple[int, int]]:
        """(entries waiting to be taken in, entries set aside), or None without an inbox."""
        return None

    # -- the processes registry (timewheel/processes.py) -----------------------------------------
    def report_process(self, token: str, report: str) -> None:
        """Keep ``report`` (a process's JSON report, see :mod:`timewheel.processes`) under
        ``token``, replacing its previous one."""
        raise StoreError(f"{self.location}: this store keeps no processes")

    def process_reports(self) -> dict[str, str]:
        """Every kept report by token (dead and stopped processes' too)."""
        return {}

    def forget_processes(self, tokens: Sequence[str]) -> None:  # noqa: B027 - optional
        """Delete the reports of ``tokens``."""

    def limit_states(self, keys: Optional[Iterable[str]] = None) -> list[LimitState]:
        """The limits that hold slots, parked tasks or recent starts (only ``keys``, if
        given, whether or not they hold anything), by key."""
        return []

    def queue_states(self, now: float) -> list[QueueState]:
        """Every queue that has pending or running tasks, or is paused, by name."""
        return []

    # -- the ticking process ------------------------------------------------------------------
    @abc.abstractmethod
    def advance(self, through: int, limit: int, leader: str) -> Advanced:
        """Make ready every pending task of the ticks ``<= through``, at most ``limit`` per
        call, oldest ticks first, and raise the horizon to ``through`` once none is left
        below it; record ``leader`` and the time.  Never lowers the horizon.

        Several processes may call it at once; each task is made ready once.  Fenced: while
        another process holds the ticking role, it changes nothing and returns ``led=False``
        (the caller was a leader that stalled and lost the role).
        """

    @abc.abstractmethod
    def abandoned(self, now: float, limit: int = 1000) -> list[TaskRecord]:
        """RUNNING tasks whose owner is gone: the owning process died (file locks), or its
        lease ran out by the store's clock (leases).  The caller requeues them through
        :meth:`swap` (:func:`~timewheel.records.requeue_crashed`)."""

    @abc.abstractmethod
    def purge(self, finished_before: float, statuses: Optional[Iterable[str]] = None,
              limit: int = 1000) -> int:
        """Delete up to ``limit`` finished tasks (in ``statuses``, default all finished ones)
        that finished before ``finished_before``; returns how many.  Pending and running
        tasks are never purged.  Atomic per call."""

    # -- observers ----------------------------------------------------------------------------
    @abc.abstractmethod
    def state(self) -> StoreState:
        """The shared bookkeeping (see :class:`StoreState`)."""

    @abc.abstractmethod
    def counts(self) -> dict[tuple[str, str], int]:
        """Number of tasks per (status, name), broken records under ``"broken"``.

        Kept by the writes themselves: its cost does not grow with the store."""

    @abc.abstractmethod
    def scan(self, status: str, *, name: Optional[str] = None, id_prefix: Optional[str] = None,
             after: Optional[TaskRecord] = None, limit: Optional[int] = None) -> list[TaskRecord]:
        """Records of one status (or ``"broken"``) in its natural order, up to ``limit``:
        pending by (:func:`eta_us`, id); running by (started, id); finished by
        (:func:`finished_ms`, id), most recent first.  ``after`` (a record from the previous
        page) continues after it.  Reads about as many records as it returns unless ``name``
        is given.  With ``id_prefix``, only ids starting with it, in id order (``after``
        continues after that id), read from an index of ids: the cost follows the number of
        matching ids, whatever else is stored.

        Broken records come as placeholders: status ``"broken"``, the reason in ``error``.
        """

    def claimed(self) -> dict[str, int]:
        """Tasks claimed but not started, by name: RUNNING, waiting in their owner's queue
        for a worker (``started`` None until the owner records the start:
        :func:`~timewheel.records.start_queued`).  :meth:`counts` holds them under RUNNING; a
        view shows them apart, as ``claimed`` (``query.counts_by_status``: issue 26).  Read from
        the running tasks -- as many as the processes' workers and queues hold -- the same
        way on every backend."""
        out: dict[str, int] = {}
        for rec in self.scan(RUNNING):
            if rec.status == RUNNING and rec.started is None:
                out[rec.name] = out.get(rec.name, 0) + 1
        return out

    def next_ready_eta(self) -> Optional[float]:
        """The eta of the earliest ready task (the ``next_eta`` a claim would report), None if
        none is ready; writes nothing.  (Ready is a prefix of pending in due order: if any
        pending task is ready, the earliest is.)"""
        first = self.scan(PENDING, limit=1)
        if first and self.wheel.due_tick(first[0].eta) <= self.state().horizon:
            return first[0].eta
        return None

    def ticks(self, start: Optional[int] = None, stop: Optional[int] = None, *,
              limit: Optional[int] = None) -> list[tuple[int, int]]:
        """``(tick, pending tasks due in it)`` for every non-empty tick in ``[start, stop)``,
        in tick order, up to ``limit`` ticks."""
        per: dict[int, int] = {}
        for rec in self.scan(PENDING):
            t = self.wheel.due_tick(rec.eta)
            if (start is None or t >= start) and (stop is None or t < stop):
                per[t] = per.get(t, 0) + 1
        return sorted(per.items())[:limit]

    def histogram(self, start: int, stop: int, bucket: int, *, name: Optional[str] = None) -> list[int]:
        """Pending tasks (of task ``name`` only, if given) per run of ``bucket`` ticks from
        ``start`` to ``stop``."""
        out = [0] * max(0, -(-(stop - start) // bucket))
        if name is None:
            for t, n in self.ticks(start, stop):
                out[(t - start) // bucket] += n
            return out
        after: Optional[TaskRecord] = None
        order = scan_order(PENDING)
        while True:              # that name's pending tasks in due order, a page at a time
            page = self.scan(PENDING, name=name, after=after, limit=1000)
            for rec in page:
                t = self.wheel.due_tick(rec.eta)
                if t >= stop:
                    return out
                if rec.status == PENDING and t >= start:
                    out[(t - start) // bucket] += 1
            if len(page) < 1000:
                return out
            if after is not None and order(page[-1]) <= order(after):   # damaged: it would never end
                raise StoreError(f"{self.location}: the store is damaged (its pending index is out of order)")
            after = page[-1]

    def wheel_stats(self) -> tuple[int, int]:
        """(occupied cells, occupied slots): non-empty (slot, cycle) pairs and slots."""
        cells = self.ticks()
        return len(cells), len({t % self.wheel.slots for t, _ in cells})

    def info(self) -> dict[str, Any]:
        """What the backend tells of itself for ``timewheel inspect`` (``store`` in its
        ``--json``): a file's sizes and journal mode, a server's version, memory and lease.
        The default tells nothing."""
        return {}

    def through(self, connection: Any) -> Any:
        """An object whose ``add(records, existing=...)`` writes through the application's own
        database ``connection``, in its transaction (transactional enqueue).  Only a store kept
        in the application's database has one: PostgreSQL's."""
        raise TypeError(f"transactional enqueue (hu.using(connection), connection=) needs a PostgreSQL "
                        f"store; this wheel's store is {self.location}")

    def doorbell(self) -> Doorbell:
        """A bell for one runner (see :class:`Doorbell`); close it when done."""
        bell = Doorbell(self)
        self.__dict__.setdefault("_local_bells", weakref.WeakSet()).add(bell)
        return bell

    def ring(self) -> None:
        """Wake every runner of this store (a task became ready).  The default reaches the
        runners of this process; backends shared by processes reach theirs too."""
        for bell in list(self.__dict__.get("_local_bells", ())):
            bell.poke()

    def close(self) -> None:  # noqa: B027 - optional: a memory store holds nothing
        """Release the backend's resources; the instance is unusable afterwards."""

    def _clock(self) -> float:
        raise NotImplementedError


def purge_statuses(statuses: Optional[Iterable[str]]) -> list[str]:
    """The statuses purge() may delete: finished ones only (default: all of them)."""
    wanted = sorted(TERMINAL) if statuses is None else sorted(set(statuses))
    unknown = [s for s in wanted if s not in TERMINAL]
    if unknown:
        raise ValueError(f"can only purge finished tasks ({', '.join(sorted(TERMINAL))}), "
                         f"not {', '.join(unknown)}")
    return wanted


def check_existing(existing: str) -> None:
    if existing not in EXISTING:
        raise ValueError(f"existing must be one of {', '.join(EXISTING)}, got {shown(existing)}")


def check_listable(status: str) -> None:
    if not isinstance(status, str) or status not in LISTABLE:
        raise ValueError(f"unknown status {shown(status)}; one of {', '.join(LISTABLE)}")


def scan_order(status: str) -> Callable[[TaskRecord], tuple]:
    """The natural order of ``status`` in :meth:`WheelStore.scan`, as an ascending sort key:
    pending by (eta_us, id), running by (started, id), finished by (finished_ms, id) from
    the most recent."""
    if status == PENDING:
        return lambda r: (eta_us(r.eta), r.id)
    if status == RUNNING:
        return lambda r: (r.started or 0.0, r.id)
    return lambda r: (-finished_ms(r.finished), _Descending(r.id))


class _Descending(str):
    """A string that sorts in reverse, for ties broken by id descending."""

    def __lt__(self, other: str) -> bool:
        return str.__gt__(self, other)

    def __gt__(self, other: str) -> bool:
        return str.__lt__(self, other)


def page(recs: Iterable[TaskRecord], status: str, after: Optional[TaskRecord],
         limit: Optional[int]) -> list[TaskRecord]:
    """``recs`` of one status in their natural order, from just after ``after``, up to
    ``limit``: :meth:`WheelStore.scan` for a backend that reads them unordered."""
    key = scan_order(status)
    out = sorted(recs, key=key)
    if after is not None:
        mark = key(after)
        out = [r for r in out if key(r) > mark]
    return out[:limit]


def broken_record(task_id: str, blob: Any, name: Optional[str], *, finished: Optional[float] = None,
                  owner: Optional[str] = None) -> TaskRecord:
    """The placeholder :meth:`WheelStore.scan` lists for a record that cannot be decoded:
    status ``"broken"``, the reason in ``error``; ``finished``/``owner`` as far as the
    backend knows them, so that it sorts where it sits."""
    from ..records import MAX_RECORD_BYTES, RecordDecodeError, decode_record
    if blob is None:
        reason = f"record larger than {MAX_RECORD_BYTES} bytes"
    else:
        try:
            decode_record(blob)
            reason = "record could not be decoded when it was read"
        except RecordDecodeError as exc:
            reason = str(exc)
    size = len(blob) if isinstance(blob, (bytes, str)) else 0
    return TaskRecord(id=task_id or "?", name=name or "?", eta=0.0, payload=b"", status=BROKEN,
                      finished=finished, owner=owner, error=f"{reason} ({size} bytes)")


def eta_us(eta: float) -> int:
    """An eta in whole microseconds, rounded up: a key or score of this value is never before
    the eta, so comparing it with ``floor(now)`` in microseconds is never early."""
    return math.ceil(eta * 1e6)


def finished_ms(finished: Optional[float]) -> int:
    """When a task finished, in milliseconds: the order of finished tasks (most recent first)."""
    return round((finished or 0.0) * 1000)
