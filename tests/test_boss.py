"""The boss, driven step by step with a fake clock: no threads, no sleeping.

The pool is replaced by a recorder that keeps what it was handed (the boss's contract with
the pool is only ``submit``); real threads are exercised in test_api and test_durability.
"""

from __future__ import annotations

import pickle

import pytest
from timewheel.locks import ProcessLocks, locks_for

from timewheel.boss import Boss
from timewheel.records import MISFIRED, PENDING, RUNNING, SUCCEEDED, TaskRecord
from timewheel.store import Outcome, SqliteDictStore
from timewheel.wheel import Wheel

T0 = 1_700_000_000


class Recorder:
    """Stands in for WorkerPool: remembers what was submitted and when."""

    workers = 4

    def __init__(self, clock: "FakeClock") -> None:
        self.clock = clock
        self.got: list[tuple[float, TaskRecord]] = []

    def submit(self, rec: TaskRecord) -> None:
        self.got.append((self.clock.now, rec))

    @property
    def ids(self) -> list[str]:
        return [r.id for _, r in self.got]


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def env(tmp_path):
    clock = FakeClock(T0 + 0.5)
    store = SqliteDictStore(str(tmp_path / "tasks.db"), Wheel(), now=clock.now)
    pool = Recorder(clock)
    boss = Boss(store, ProcessLocks(store.path), pool, capacity=1000, clock=clock, late_poll=0.2)
    yield clock, store, pool, boss
    boss.locks.resign(boss)
    store.close()


def add(store, i: str, eta: float, **kw) -> None:
    store.add([TaskRecord(id=i, name="t", eta=eta, payload=pickle.dumps(((), {})), **kw)])


def run_until(clock: FakeClock, boss: Boss, until: float, max_steps: int = 100_000) -> None:
    """Advance the fake clock exactly as the boss asks, as its thread would."""
    for _ in range(max_steps):
        delay = boss.step()
        nxt = clock.now + max(delay, 1e-6)
        if nxt > until:
            clock.now = until
            boss.step()
            return
        clock.now = nxt
    raise AssertionError("boss never went idle")


def test_each_task_is_submitted_at_its_exact_eta(env) -> None:
    clock, store, pool, boss = env
    etas = [T0 + 1.3, T0 + 2.0, T0 + 2.001, T0 + 7.75, T0 + 3600.4, T0 + 4.5]
    for n, eta in enumerate(etas):
        add(store, f"t{n}", eta)
    run_until(clock, boss, T0 + 3700)
    assert sorted(pool.ids) == sorted(f"t{n}" for n in range(len(etas)))
    for at, rec in pool.got:
        assert at == rec.eta                 # not early, and not a tick late
        assert store.get(rec.id).status == RUNNING


def test_never_early_even_if_woken_early(env) -> None:
    clock, store, pool, boss = env
    add(store, "a", T0 + 2.5)
    for t in (T0 + 1.0, T0 + 2.0, T0 + 2.4999):  # spurious early wake-ups
        clock.now = t
        boss.step()
        assert pool.got == []
    clock.now = T0 + 2.5
    boss.step()
    assert pool.ids == ["a"]


def test_ticks_are_loaded_on_absolute_boundaries(env) -> None:
    clock, store, pool, boss = env
    boss.step()                                # takes the lead at T0 + 0.5
    assert boss.loaded_through == T0 + 1       # current tick + one of look-ahead
    delay = boss.step()
    assert delay <= 0.5 + 1e-9                 # wakes at the next boundary (or a late poll)
    clock.now = T0 + 1.0
    boss.step()
    assert boss.loaded_through == T0 + 2
    assert store.state().horizon == T0 + 2


def test_catch_up_after_downtime_runs_every_missed_task_once(env) -> None:
    clock, store, pool, boss = env
    boss.step()
    missed = [T0 + 5 + 37 * k for k in range(200)]     # spread over ~2 h: > one revolution
    for n, eta in enumerate(missed):
        add(store, f"m{n}", eta)
    clock.now = T0 + 3 * 3600                          # the process was paused for 3 hours
    boss.step()
    assert sorted(pool.ids) == sorted(f"m{n}" for n in range(200))
    boss.step()
    assert len(pool.ids) == 200                         # nothing twice


def test_clock_going_back_reloads_nothing(env) -> None:
    clock, store, pool, boss = env
    add(store, "a", T0 + 3.5)
    clock.now = T0 + 10
    boss.step()
    assert pool.ids == ["a"]
    loaded = boss.loaded_through
    clock.now = T0 + 2                                  # NTP stepped the clock back
    add(store, "b", T0 + 3.2)                           # lands in an already-loaded tick
    boss.step()
    assert boss.loaded_through == loaded
    assert pool.ids == ["a"]                            # a not again; b not early
    clock.now = T0 + 3.2
    boss.step()
    clock.now = T0 + 3.3
    boss.step()
    assert pool.ids == ["a", "b"]


def test_task_added_into_a_loaded_tick_from_elsewhere_is_found_by_the_late_poll(env) -> None:
    clock, store, pool, boss = env
    boss.step()                                 # loaded through T0 + 1
    other = SqliteDictStore(store.path)         # another process's connection
    add(other, "late", T0 + 0.6)
    clock.now = T0 + 0.6
    boss.step()
    assert pool.ids == []                       # not seen yet: no late poll due
    clock.now = T0 + 0.71
    boss.step()
    assert pool.ids == ["late"]                 # within one late_poll (0.2 s)
    other.close()


def test_claims_no_more_than_the_pool_can_take(env) -> None:
    clock, store, pool, boss = env
    boss.capacity = 5
    for n in range(20):
        add(store, f"b{n}", T0 + 1)
    clock.now = T0 + 1
    for _ in range(5):
        boss.step()
    assert len(pool.ids) == 5
    assert store.counts()[PENDING] == 15       # the rest waits on disk, not in a queue
    boss.report(Outcome(pool.ids[0], True, result=pickle.dumps(None), finished=clock.now))
    boss._accepting = True                     # as when the thread runs
    boss.report(Outcome(pool.ids[1], True, result=pickle.dumps(None), finished=clock.now))
    boss.step()
    assert len(pool.ids) == 6                  # one outcome recorded through the boss -> one more
    assert store.get(pool.ids[1]).status == SUCCEEDED


def test_misfire_grace_skips_visibly(env) -> None:
    clock, store, pool, boss = env
    add(store, "strict", T0 + 1, misfire_grace=2.0)
    add(store, "lenient", T0 + 1)
    clock.now = T0 + 60
    boss.step()
    assert pool.ids == ["lenient"]
    assert store.get("strict").status == MISFIRED


def test_new_leader_resumes_where_the_last_one_stopped(env, tmp_path) -> None:
    clock, store, pool, boss = env
    add(store, "early", T0 + 1.5)
    add(store, "later", T0 + 30)
    run_until(clock, boss, T0 + 2)
    assert pool.ids == ["early"]
    store.finish([Outcome("early", True, finished=clock.now)])
    boss.locks.resign(boss)                     # the old leader is gone
    # a second process: its own store connection and lock file handle
    store2 = SqliteDictStore(store.path)
    pool2 = Recorder(clock)
    boss2 = Boss(store2, ProcessLocks(store.path + ".other"), pool2, capacity=100, clock=clock)
    clock.now = T0 + 40
    boss2.step()
    assert pool2.ids == ["later"]
    assert boss2.loaded_through == T0 + 41
    boss2.locks.resign(boss2)
    store2.close()


def test_one_leader_per_process_and_store(tmp_path) -> None:
    path = str(tmp_path / "x.db")
    a = locks_for(path)
    assert locks_for(str(tmp_path / "." / "x.db")) is a       # one instance per file
    boss1, boss2 = object(), object()
    assert a.try_lead(boss1) and a.leading
    assert not a.try_lead(boss2)                              # a second TimeWheel on the file
    assert a.try_lead(boss1)
    a.resign(boss2)                                           # not the holder: no effect
    assert a.leading
    a.resign(boss1)
    assert a.try_lead(boss2)
    a.resign(boss2)
    assert a.is_dead("999999999:deadbeef")                    # no such pid holds its bytes
    assert not a.is_dead(a.token)
    assert a.is_dead(a.token.split(":")[0] + ":00000000")     # same pid, another incarnation


def test_lookahead_loads_several_ticks_per_write_and_stays_exact(tmp_path) -> None:
    clock = FakeClock(T0 + 0.5)
    store = SqliteDictStore(str(tmp_path / "tasks.db"), Wheel(), now=clock.now)
    pool = Recorder(clock)
    boss = Boss(store, ProcessLocks(store.path), pool, capacity=1000, clock=clock, lookahead=4)
    etas = [T0 + 0.75, T0 + 3.9, T0 + 4.0, T0 + 4.01, T0 + 9.5]
    for n, eta in enumerate(etas):
        add(store, f"t{n}", eta)
    loads = []
    real_load = store.load

    def counting_load(*args, **kw):
        loads.append(clock.now)
        return real_load(*args, **kw)
    store.load = counting_load
    run_until(clock, boss, T0 + 12)
    assert [at for at, _ in pool.got] == [rec.eta for _, rec in pool.got] == sorted(etas)
    assert len(loads) <= 4                    # 12 ticks, loaded 4 at a time
    # a task added by another process into the loaded ticks is still found (late marker)
    other = SqliteDictStore(store.path)
    add(other, "late", clock.now + 1.5)
    run_until(clock, boss, clock.now + 2)
    assert pool.ids[-1] == "late" and pool.got[-1][0] == pool.got[-1][1].eta
    boss.locks.resign(boss)
    other.close()
    store.close()
