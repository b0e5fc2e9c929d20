"""A stateful model test of the store interface, on every backend of ``conftest.BACKENDS``.

Hypothesis drives random sequences of add (every ``existing=`` mode), cancel, retry, claim,
finish (ok, failed, failed-and-retried), crash recovery (``abandoned`` + ``requeue_crashed``
for tasks claimed under a dead owner's token), stale compare-and-sets, purge, advance and
clock moves, and after every step compares the store with a plain model kept here: the same
records field by field (statuses, revs, etas), nothing early (no task claimed before its
eta), nothing lost or extra (every scan lists exactly the model's ids, in order), nothing
claimed twice, ``counts()`` and ``ticks()`` equal to a recount, the horizon never lowered.
Flow control (issue 21): tasks come in two queues and a few priorities, some counting against
a limit of one slot; claims serve every queue or one; a claim takes only the served queues'
tasks, the highest priority first, never lets two runs hold the slot nor queues a limited task,
and while nothing holds the slot a due task of it is claimed within a few claims (on the
backends with flow control: a store whose ``flow_control`` is False gets plain tasks only).
SQLite, Redis and PostgreSQL stores are also checked by their own invariant checkers (every
task where its status says, counters equal to a recount): ``conftest.check_file_store`` after
every step, ``redis_check.check_redis_store`` (a scan of the server's keys) and
``pg_check.check_pg_store`` (plain SQL) after every sequence.

Time: the memory and SQLite stores judge due-ness by the ``now`` they are given, so the
machine keeps its own clock and moves it forward and backward (the clock moves of the
issue).  A backend whose server keeps the clock (Redis, PostgreSQL) is driven by real time only: the
machine then reads ``store.now()`` and checks claims against the time before and after the
call.  All times are whole milliseconds, the granularity of finished-time ordering.

Each example starts from an empty store: a new one on the machine's clock for memory and
SQLite, so that replaying an example (Hypothesis shrinks by replaying) meets the same state;
for any other backend the one store of ``conftest.store_factory``, emptied after each
example -- so a backend added to ``BACKENDS`` and served by the factory runs this machine.
"""

from __future__ import annotations

import math
import os
import pickle
from collections import Counter
from typing import Any, Callable, Optional

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from timewheel.errors import DuplicateTask
from timewheel.records import (
    MAX_ETA,
    PENDING,
    RETRYABLE,
    RUNNING,
    STATUSES,
    TERMINAL,
    Outcome,
    TaskRecord,
    cancel,
    end_run,
    requeue_crashed,
    reset_for_retry,
    start_run,
)
from timewheel.store import MemoryStore, SqliteDictStore
from timewheel.store.base import BROKEN, EXISTING, Claimed, WheelStore, eta_us, finished_ms
from timewheel.wheel import Wheel

from .conftest import check_file_store, examples, make_record, tally

pytestmark = pytest.mark.properties

IDS = list("abcdefghij")
NAMES = ["n1", "n2"]
# flow control: two queues, a few priorities, one concurrency limit of one slot
QUEUES = ["default", "default", "q2"]
PRIORITIES = [0, 0, 0, 7, -3]
LIMIT = ("L", 1, 0, 0.0)
SERVED = st.sampled_from([None, None, frozenset({"default"}), frozenset({"q2"})])
MAX_CRASHES = 2
EXACT_CLOCK = ("memory", "sqlite")      # stores that judge time by the now they are given


def ms(t: float) -> float:
    """A time on the millisecond grid (see the module docstring)."""
    return round(t, 3)


T0 = 1_800_000_000.0        # where the machine's clock starts (exact-clock backends)


class Backend:
    """How the machine gets an empty store for each example.

    Memory and SQLite: a new store per example whose clock is the machine's own, so every
    replay of an example (Hypothesis shrinks by replaying) meets the same state.  A SQLite
    store is a new file at one path (the process keeps one lock file open per path).  Other
    backends: the one store of ``store_factory``, emptied after each example, on real time.
    """

    def __init__(self, name: str, store_factory: Any, tmp_path: Any, server_url: Optional[str]) -> None:
        self.name = name
        self.exact = name in EXACT_CLOCK
        self.path = str(tmp_path / "model.db") if name == "sqlite" else None
        self.shared = None if self.exact else store_factory()
        self.server_url = server_url

    def check(self, store: WheelStore, last: bool) -> None:
        """The backend's own invariant checker on what the store holds: a file's after every
        step; a server's, a scan of all its keys, once a sequence is done."""
        if self.path is not None:
            check_file_store(self.path)
        elif self.name == "redis" and last:
            from .redis_check import check_redis_store
            check_redis_store(self.server_url, store.namespace)   # type: ignore[attr-defined]
        elif self.name == "postgres" and last:
            from .pg_check import check_pg_store
            check_pg_store(self.server_url, store.namespace)      # type: ignore[attr-defined]

    def open(self, clock: Callable[[], float]) -> WheelStore:
        if self.name == "memory":
            return MemoryStore(Wheel(), clock=clock)
        if self.path is not None:
            return SqliteDictStore(self.path, Wheel(), clock=clock)
        assert self.shared is not None
        return self.shared

    def done(self, store: WheelStore) -> None:
        if self.path is not None:
            store.close()
            for suffix in ("", "-wal", "-shm"):
                if os.path.exists(self.path + suffix):
                    os.remove(self.path + suffix)
        elif self.shared is not None:
            drain(store)


def drain(store: WheelStore) -> None:
    """Empty a shared store for the next example, from what it holds (the model may be wrong:
    this runs after a failed step too)."""
    now = store.now()
    for _ in range(10):
        changes = [(r, cancel(r, now)) for r in store.scan(PENDING)]
        changes += [(r, end_run(r, Outcome(True, r.started or now, now))) for r in store.scan(RUNNING)]
        store.swap(changes)
        while store.purge(MAX_ETA, None, 1000):
            pass
        if not store.counts():
            return


class StoreModel(RuleBasedStateMachine):
    def __init__(self, backend: Backend, dead_owner: str) -> None:
        super().__init__()
        self.backend = backend
        self.exact = backend.exact
        self._now = T0
        self.store = store = backend.open(lambda: self._now)
        self.label = f"model: {backend.name}"
        tally(self.label + " sequences")
        self.live = store.liveness.token
        self.dead = dead_owner
        assert store.counts() == {}, "the store of a new example is not empty"
        self.horizon = store.state().horizon
        self.model: dict[str, TaskRecord] = {}
        self.ready: set[str] = set()          # pending, certainly ready (claimable once due)
        self.maybe: set[str] = set()          # pending, perhaps made ready by a partial advance
        self.stale: list[TaskRecord] = []     # records superseded by a later write
        if not self.exact:
            self.advance(4, 20_000)           # a shared store's horizon may lag real time

    # -- time -------------------------------------------------------------------------------
    def now(self) -> float:
        return self._now if self.exact else ms(self.store.now())

    def when(self) -> float:
        """The time a change is made at.  On real time, ten seconds ago: a time certainly
        past, so that whether a retried task is due never depends on how fast a step ran."""
        return self._now if self.exact else ms(self.store.now()) - 10.0

    @precondition(lambda self: self.exact)
    @rule(step=st.sampled_from([0.001, 0.2, 0.5, 0.999, 1.0, 1.0, 1.5, 2.0, 3.0, 3.0,
                                -0.001, -0.5, -1.0, -2.0, 3600.0, 86400.0, -3600.0]))
    def clock(self, step: float) -> None:
        """The clock moves: forward (time passes, the host slept), or back (NTP, a VM)."""
        self._now = ms(self._now + step)

    # -- model helpers ----------------------------------------------------------------------
    def tick(self, rec: TaskRecord) -> int:
        return self.store.wheel.due_tick(rec.eta)

    def put(self, rec: TaskRecord) -> None:
        """Record ``rec`` as the stored version; place it as the store must."""
        old = self.model.get(rec.id)
        if old is not None:
            self.stale = (self.stale + [old])[-20:]
        self.model[rec.id] = rec
        self.ready.discard(rec.id)
        self.maybe.discard(rec.id)
        if rec.status == PENDING and self.tick(rec) <= self.horizon:
            self.ready.add(rec.id)

    def ids(self, *statuses: str, owner: Optional[str] = None) -> list[str]:
        return sorted(i for i, r in self.model.items()
                      if r.status in statuses and (owner is None or r.owner == owner))

    def swap_one(self, old: TaskRecord, new: TaskRecord) -> TaskRecord:
        (got,) = self.store.swap([(old, new)])
        expected = new._replace(rev=old.rev + 1)
        assert got == expected, f"swap stored {got}, expected {expected}"
        self.put(got)
        return got

    # -- tasks ------------------------------------------------------------------------------
    OFFSETS = (st.sampled_from([-5.0, -1.0, -0.001, 0.0, 0.001, 0.3, 1.0, 2.5, 86400.0])
               | st.integers(-3000, 6000).map(lambda k: k / 1000))
    #: on real time, etas far from now: due or not whatever the speed of a step
    REAL_OFFSETS = st.sampled_from([-30.0, -10.0, 60.0, 86400.0])

    @initialize(data=st.data())
    def populate(self, data: st.DataObject) -> None:
        """Start with a few tasks due about now, so that claims and finishes happen early."""
        self.add(data, 4, "keep")

    @rule(data=st.data(), n=st.integers(1, 3), existing=st.sampled_from(EXISTING))
    def add(self, data: st.DataObject, n: int, existing: str) -> None:
        now = self.now()
        batch = []
        for _ in range(n):
            offset = data.draw(self.OFFSETS if self.exact else self.REAL_OFFSETS)
            batch.append(make_record(
                data.draw(st.sampled_from(IDS)), ms(now + offset),
                name=data.draw(st.sampled_from(NAMES)), created=now, retries=data.draw(st.integers(0, 2)),
                retry_delay=data.draw(st.sampled_from([0.0, 0.5, 2.0] if self.exact else [0.0, 120.0])),
                **(self.flow_fields(data) if self.store.flow_control else {})))
        expected = self._plan_add(batch, existing)
        if expected is None:
            with pytest.raises(DuplicateTask):
                self.store.add(batch, existing=existing)
            return
        got = self.store.add(batch, existing=existing)
        assert got == expected, f"add(existing={existing}) returned {got}, expected {expected}"
        for rec in got:
            if self.model.get(rec.id) != rec:
                self.put(rec)

    @staticmethod
    def flow_fields(data: st.DataObject) -> dict:
        """A task's queue, priority and limits (flow control)."""
        return dict(queue=data.draw(st.sampled_from(QUEUES)), priority=data.draw(st.sampled_from(PRIORITIES)),
                    limits=data.draw(st.sampled_from([(), (), (), (LIMIT,)])))

    def _plan_add(self, batch: list[TaskRecord], existing: str) -> Optional[list[TaskRecord]]:
        """What add() must return, or None if it must raise DuplicateTask and write nothing."""
        plan: dict[str, TaskRecord] = {}
        out = []
        for rec in batch:
            old = plan.get(rec.id) or self.model.get(rec.id)
            if old is None:
                plan[rec.id] = rec
                out.append(rec)
                continue
            if existing == "fail" or (existing == "replace" and old.status == RUNNING):
                return None
            if existing == "keep" or (existing == "reuse" and old.status not in TERMINAL):
                out.append(old)
                continue
            new = rec._replace(rev=old.rev + 1)
            plan[rec.id] = new
            out.append(new)
        return out

    @precondition(lambda self: any(r.status in RETRYABLE | {PENDING} for r in self.model.values()))
    @rule(data=st.data())
    def cancel_or_retry(self, data: st.DataObject) -> None:
        """What hu.cancel() and hu.retry() do: a pending task is cancelled, a failed,
        misfired or cancelled one is put back, due now."""
        old = self.model[data.draw(st.sampled_from(self.ids(PENDING, *RETRYABLE)))]
        change = cancel if old.status == PENDING else reset_for_retry
        allowed = (lambda r: r.status == PENDING) if change is cancel else (lambda r: r.status in RETRYABLE)
        at = self.when()
        seen, got = self.store.change(old.id, allowed, lambda r, _now: change(r, at))
        assert seen == old, seen
        expected = change(old, at)._replace(rev=old.rev + 1)
        assert got == expected, f"change stored {got}, expected {expected}"
        self.put(got)

    @precondition(lambda self: bool(self.stale))
    @rule(data=st.data())
    def stale_swap_is_refused(self, data: st.DataObject) -> None:
        """A compare-and-set on an old rev (a fenced-out worker) changes nothing."""
        old = data.draw(st.sampled_from(self.stale))
        assert self.model.get(old.id) != old
        assert self.store.swap([(old, cancel(old, self.when()))]) == [None]

    # -- workers ----------------------------------------------------------------------------
    @rule(data=st.data(), limit=st.integers(1, 4), queued=st.integers(0, 2), dead=st.booleans(),
          served=SERVED)
    def boss_round(self, data: st.DataObject, limit: int, queued: int, dead: bool,
                   served: Optional[frozenset]) -> None:
        """What a boss does each tick: advance the wheel a few ticks ahead, then in one call
        record the outcomes of (some of) its running tasks and claim for its idle workers and
        its queue (``record_and_claim``)."""
        self.advance(4, 20_000)
        done = [i for i in data.draw(st.lists(st.sampled_from(IDS), max_size=3, unique=True))
                if i in self.ids(RUNNING, owner=self.live)]
        changes = [(self.model[i], self.outcome(self.model[i], data.draw(st.sampled_from(
            ["ok", "fail", "retryable"])))) for i in done]
        owner = self.dead if dead else self.live
        before = self._now if self.exact else self.store.now()
        if not self.store.flow_control:
            served = None
        out, got = self.store.record_and_claim(changes, owner, before, limit, queued, **self.serving(served))
        assert out == [new._replace(rev=old.rev + 1) for old, new in changes], out
        for rec in out:
            self.put(rec)
        self.check_claim(got, owner, before, limit, queued, served)

    @rule(limit=st.integers(1, 4) | st.just(0), queued=st.sampled_from([0, 0, 1, 3]), dead=st.booleans(),
          served=SERVED)
    def claim(self, limit: int, queued: int, dead: bool, served: Optional[frozenset]) -> None:
        """A claim of ``limit`` tasks started now and ``queued`` more waiting for a worker, of
        the queues ``served`` (None: every queue)."""
        owner = self.dead if dead else self.live
        before = self._now if self.exact else self.store.now()
        if not self.store.flow_control:
            served = None
        self.check_claim(self.store.claim(owner, before, limit, queued, **self.serving(served)), owner,
                         before, limit, queued, served)

    def serving(self, served: Optional[frozenset]) -> dict:
        """claim()'s queues= where some are named (a store without flow control takes none)."""
        return {} if served is None or not self.store.flow_control else {"queues": served}

    def holds(self) -> int:
        """Runs holding the slot of the limit (claimed, outcome not yet recorded)."""
        return sum(1 for r in self.model.values() if r.status == RUNNING and LIMIT in r.limits)

    @rule()
    def no_parked_task_waits_for_ever(self) -> None:
        """While nothing holds the limit's slot, a due task of it is claimed within a few
        claims (one to let a parked one back in, one to take it)."""
        waiting = [i for i in self.ready if LIMIT in self.model[i].limits
                   and eta_us(self.model[i].eta) <= math.floor((self._now if self.exact else
                                                                 self.store.now() - 1) * 1e6)]
        if self.holds() or not waiting:
            return
        tally(self.label + " idle limits with due tasks checked")
        taken: list[str] = []
        for _ in range(3):
            before = self._now if self.exact else self.store.now()
            got = self.store.claim(self.live, before, 4, 0)
            self.check_claim(got, self.live, before, 4, 0, None)
            taken += [r.id for r in got.records if LIMIT in r.limits]
            if taken:
                break
        assert taken, f"due tasks of the limit wait with nothing holding it: {waiting}"

    def check_claim(self, got: Claimed, owner: str, before: float, limit: int, queued: int,
                    served: Optional[frozenset] = None) -> None:
        tally(self.label + " tasks claimed", len(got.records))
        after = before if self.exact else self.store.now()
        claimable = self.ready | self.maybe
        taken = [r.id for r in got.records]
        assert len(taken) == len(set(taken)) <= limit + queued, taken
        held = self.holds()
        for n, rec in enumerate(got.records):
            old = self.model.get(rec.id)
            assert old is not None and old.status == PENDING, f"claimed {rec.id}, which is {old}"
            assert rec.id in claimable, f"claimed {rec.id} before its tick was made ready"
            assert old.eta <= after, f"claimed {rec.id} early"
            assert served is None or old.queue in served, f"claimed {rec.id} of queue {old.queue}"
            if LIMIT in old.limits:
                tally(self.label + " tasks with a limit claimed")
                assert n < limit, f"claimed {rec.id}, which has a limit, to wait in a queue"
                held += 1
                assert held <= 1, f"claimed {rec.id} while its limit's slot was held"
            if n < limit:
                assert rec.started is not None and rec.started >= old.eta, f"started {rec.id} early"
                if self.exact:
                    assert rec.started == before
            expected = start_run(old, owner, rec.started, rec.lease, queued=n >= limit)
            expected = expected._replace(rev=old.rev + 1)
            assert rec == expected, f"claim stored {rec}, expected {expected}"
        for rec in got.records:
            self.put(rec)
        # Nothing due and ready of the served queues is left behind: below the limit every
        # such task was taken, the highest priority and then the earliest first.  (A task with
        # the limit may be left: parked while the slot is held, or not queued.)
        bound = math.floor(before * 1e6)
        due = [self.model[i] for i in self.ready if eta_us(self.model[i].eta) <= bound
               and (served is None or self.model[i].queue in served) and LIMIT not in self.model[i].limits]
        if len(taken) < limit + queued:
            assert due == [], f"due and ready but not claimed: {[r.id for r in due]}"
        if taken and due:
            def order(r: TaskRecord) -> tuple:
                return (-r.priority, eta_us(r.eta))
            assert max(order(self.model[r.id]) for r in got.records) <= min(order(r) for r in due)
        self.check_next_eta(got.next_eta, served)

    @rule()
    def look(self) -> None:
        """next_ready_eta(): what the next claim would report as its next_eta, and nothing
        changes (the observer the boss asks instead of claiming nothing)."""
        counts = self.store.counts()
        self.check_next_eta(self.store.next_ready_eta())
        assert self.store.counts() == counts

    def check_next_eta(self, next_eta: "float | None", served: Optional[frozenset] = None) -> None:
        """``next_eta`` is the eta of the earliest ready task of the served queues (or of one
        that may be ready; a task with the limit may be parked instead)."""
        left = [self.model[i] for i in self.ready | self.maybe
                if served is None or self.model[i].queue in served]
        sure = [r for r in left if r.id in self.ready and LIMIT not in r.limits]
        if next_eta is None:
            assert not sure, "next_eta None with ready tasks left"
        else:
            assert any(abs(r.eta - next_eta) <= 2e-6 for r in left), next_eta
            if sure:
                assert next_eta <= min(r.eta for r in sure) + 2e-6

    @precondition(lambda self: any(r.status == RUNNING for r in self.model.values()))
    @rule(data=st.data(), how=st.sampled_from(["ok", "fail", "retryable"]))
    def finish(self, data: st.DataObject, how: str) -> None:
        """An outcome recorded, by this process or a late one (a dead owner's task)."""
        self.finish_task(data.draw(st.sampled_from(self.ids(RUNNING))), how)

    def finish_task(self, task_id: str, how: str) -> None:
        old = self.model[task_id]
        self.swap_one(old, self.outcome(old, how))

    def outcome(self, old: TaskRecord, how: str) -> TaskRecord:
        """``old`` after a run that ended ``how``: ok, failed for good, failed to be retried."""
        now = self.when()
        started = old.started if old.started is not None else now       # a queued one starts now
        finished = ms(max(now, started)) if self.exact else now
        out = Outcome(ok=how == "ok", started=started, finished=finished,
                      result=pickle.dumps(old.id) if how == "ok" else None,
                      error=None if how == "ok" else "Boom: x", retryable=how == "retryable")
        return end_run(old, out)

    @rule()
    def recover_crashed(self) -> None:
        """The ticking process's recovery: tasks of a dead owner go back (or fail)."""
        now = self.when()
        lost = self.store.abandoned(now)
        ids = sorted(r.id for r in lost)
        dead = self.ids(RUNNING, owner=self.dead)
        assert set(ids) <= set(dead), f"abandoned() lists live tasks: {set(ids) - set(dead)}"
        if self.exact:
            assert ids == dead, f"abandoned() missed {set(dead) - set(ids)}"
        tally(self.label + " crashed tasks recovered", len(lost))
        for rec in lost:
            assert rec == self.model[rec.id]
            self.swap_one(rec, requeue_crashed(rec, now, MAX_CRASHES))

    # -- the ticking process ----------------------------------------------------------------
    @rule(ahead=st.integers(-3, 6), limit=st.integers(1, 4))
    def advance(self, ahead: int, limit: int) -> None:
        # (on real time never behind the clock: which tasks move must not depend on timing)
        through = self.store.wheel.current_tick(self.now()) + (ahead if self.exact else max(ahead, 0))
        old = self.horizon
        adv = self.store.advance(through, limit, "model")
        assert adv.horizon >= old, "advance lowered the horizon"
        assert adv.horizon <= max(old, through)
        assert 0 <= adv.moved <= limit
        waiting = [r for i, r in self.model.items()
                   if r.status == PENDING and i not in self.ready]
        full = [r for r in waiting if old < self.tick(r) <= adv.horizon]
        partial = [r for r in waiting if self.tick(r) == adv.horizon + 1 and adv.horizon < through]
        # Every task of the ticks now within the horizon is ready; those a partial advance
        # may have moved already are the only uncertainty in the count.
        certain = [r for r in full if r.id not in self.maybe]
        assert len(certain) <= adv.moved <= len(full) + len(partial), (adv, full, partial)
        if adv.complete:
            assert adv.horizon == max(old, through) and adv.moved <= len(full)
        else:
            self.maybe |= {r.id for r in partial}
        self.horizon = adv.horizon
        for r in full:
            self.ready.add(r.id)
            self.maybe.discard(r.id)

    @rule(data=st.data(), before=st.sampled_from([-1.0, 0.0, 0.001, 1.0, 90000.0, 90000.0]),
          statuses=st.none() | st.sets(st.sampled_from(sorted(TERMINAL)), min_size=1))
    def purge(self, data: st.DataObject, before: float, statuses: Optional[set[str]]) -> None:
        if not self.exact:      # on real time: none or all, never a bound near a finish time
            before = -3600.0 if before < 90000 else before
        finished_before = ms(self.now() + before)
        wanted = TERMINAL if statuses is None else statuses
        eligible = {i for i, r in self.model.items() if r.status in wanted
                    and finished_ms(r.finished) < finished_ms(finished_before)}
        limit = data.draw(st.integers(1, max(1, len(eligible) + 1)))    # often fewer than eligible
        n = self.store.purge(finished_before, statuses, limit)
        assert n == min(limit, len(eligible)), (n, limit, sorted(eligible))
        gone = {i for i in eligible if self.store.get(i) is None}
        assert len(gone) == n, (gone, n)
        tally(self.label + " tasks purged", n)
        for i in gone:
            del self.model[i]
        # A purged id may be added again, starting at rev 0 again: records of the purged
        # task are no fence against the new one, so they leave the stale list.
        self.stale = [r for r in self.stale if r.id not in gone]

    # -- the checks after every step --------------------------------------------------------
    @invariant()
    def store_matches_model(self) -> None:
        tally(self.label + " steps checked")
        for task_id, rec in self.model.items():
            assert self.store.get(task_id) == rec, f"{task_id}: stored {self.store.get(task_id)}, model {rec}"
        for task_id in IDS:
            if task_id not in self.model:
                assert self.store.get(task_id) is None, f"{task_id} should not be stored"
        orders = {
            PENDING: lambda r: (eta_us(r.eta), r.id),
            RUNNING: lambda r: (r.started or 0.0, r.id),
        }
        for status in STATUSES:
            want = [r for r in self.model.values() if r.status == status]
            if status in orders:
                want.sort(key=orders[status])
            else:
                want.sort(key=lambda r: (finished_ms(r.finished), r.id), reverse=True)
            got = self.store.scan(status)
            assert [r.id for r in got] == [r.id for r in want], f"scan({status})"
        assert self.store.scan(BROKEN) == []
        assert self.store.counts() == dict(Counter((r.status, r.name) for r in self.model.values()))
        ticks = Counter(self.tick(r) for r in self.model.values() if r.status == PENDING)
        assert self.store.ticks() == sorted(ticks.items())
        assert self.store.ticks(limit=2) == sorted(ticks.items())[:2]
        assert self.store.wheel_stats() == (len(ticks), len({t % self.store.wheel.slots for t in ticks}))
        if ticks:                                    # per name, in buckets of 3 ticks
            lo, hi = min(ticks) - 1, max(ticks) + 2
            for name in {r.name for r in self.model.values() if r.status == PENDING}:
                want = [0] * -(-(hi - lo) // 3)
                for r in self.model.values():
                    if r.status == PENDING and r.name == name:
                        want[(self.tick(r) - lo) // 3] += 1
                assert self.store.histogram(lo, hi, 3, name=name) == want, f"histogram of {name}"
        assert self.store.state().horizon == self.horizon
        self.backend.check(self.store, last=False)

    def teardown(self) -> None:
        try:
            self.backend.check(self.store, last=True)
        finally:
            self.backend.done(self.store)


# Shrinking a failure on a file store replays hundreds of sequences: give it time to finish
# (Hypothesis stops shrinking by itself after a few minutes) rather than cut it off.
@pytest.mark.timeout(900)
def test_store_against_the_model(backend: str, store_factory, dead_owner: str, tmp_path, request) -> None:
    server = {"redis": "redis_db", "postgres": "pg_db"}.get(backend)
    b = Backend(backend, store_factory, tmp_path, request.getfixturevalue(server) if server else None)
    # (a server round trip per call: fewer sequences there, for the same time)
    n = examples(40 if b.exact else 20)
    run_state_machine_as_test(lambda: StoreModel(b, dead_owner),
                              settings=settings(max_examples=n, stateful_step_count=50))
